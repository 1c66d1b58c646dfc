"""One static, self-contained HTML page per run: `rag-e2e report --html`, `python -m rag_e2e.eval.html_report`.

The page shows the run's aggregate metrics (recomputed from predictions.jsonl, beside metrics.json), SVG plots
(per-question F1, rank of the gold passage, validation curves from csv/metrics.csv), then every test question with
the passages the reader read, the predicted and gold answers and verdicts. It loads nothing from the network.

predictions.jsonl holds passage ids and scores only; titles and texts come from the corpus the run's config.yaml
names (regenerated for synthetic data). Where that corpus cannot be loaded the page shows ids and says why.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_e2e import atomic
from rag_e2e.data.corpus import iter_jsonl, json_field
from rag_e2e.data.types import Passage
from rag_e2e.errors import DataFormatError, RagE2EError
from rag_e2e.eval import metrics as qa_metrics
from rag_e2e.eval.report import CURVE_METRICS, RunResult, read_config, read_curves, read_metrics

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._=-]+")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DEFAULT_KS = (1, 5, 10)
_MAX_RANK_BARS = 10  # ranks above this share one "> 10" bar
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1150px;padding:16px;color:#222}
h1{margin:0 0 4px}.sub{color:#666}table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd}
td.num{text-align:right;font-variant-numeric:tabular-nums}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;color:#555;text-align:center}svg text{font-size:10px;fill:#333}
.bar{fill:#4c78a8}.s0{stroke:#4c78a8}.s1{stroke:#f58518}.s0f{fill:#4c78a8}.s1f{fill:#f58518}
.filters{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:2px solid #ccc;z-index:1}
.q{border:1px solid #ccc;border-left:6px solid #2a9d2a;border-radius:4px;margin:12px 0;padding:8px 12px}
.q.wrong{border-left-color:#d33}.q.filtered{display:none}.q h3{margin:0 0 4px;font-size:15px}
.verdict{font-weight:600;padding:0 6px;border-radius:3px;color:#fff}.verdict.correct,.verdict.hit{background:#2a9d2a}
.verdict.wrong,.verdict.miss{background:#d33}.answers th{text-align:left;color:#555;font-weight:normal}
.passages{margin:6px 0 0;padding-left:24px}.passage{margin:4px 0;padding:3px 6px;border-radius:3px}
.passage.gold{background:#fff6d5;outline:1px solid #e0b400}.badge{background:#e0b400;color:#000;font-size:11px;
font-weight:700;padding:0 5px;border-radius:3px}.score{font-family:monospace;color:#555}.ptitle{font-weight:600}
.pid{color:#888;font-size:12px}.ptext{margin:2px 0 0;color:#333}.note{background:#fdecea;padding:6px}
#shown{margin-left:16px;color:#555}
"""
# Filters: a `#only-wrong,only-miss` address ticks the boxes on load (links to a filtered view).
_JS = """
const boxes = [document.getElementById("only-wrong"), document.getElementById("only-miss")];
const blocks = document.querySelectorAll(".q");
function applyFilters() {
  let shown = 0;
  for (const q of blocks) {
    const hide = (boxes[0].checked && q.dataset.correct !== "0") || (boxes[1].checked && q.dataset.hit === "1");
    q.classList.toggle("filtered", hide);
    shown += hide ? 0 : 1;
  }
  document.getElementById("shown").textContent = `showing ${shown} of ${blocks.length} questions`;
}
for (const box of boxes) {
  box.checked = location.hash.slice(1).split(",").includes(box.id);
  box.addEventListener("change", applyFilters);
}
applyFilters();
"""


@dataclass(frozen=True)
class Prediction:
    """One line of predictions.jsonl (written by `RagLitModule._eval_step`).

    Attributes:
        qid: question id.
        question: the question text.
        answer: the generated answer; None for a question outside `eval.generation_questions` (retrieval only).
        gold: reference answers.
        gold_pids: ids of passages known to hold the answer; empty when relevance is answer-string matching.
        gold_rank: 1-based rank of the first relevant passage among max(retriever.k, eval.ks) retrieved, or None.
        retrieved: ids of the passages the reader read, best first (the top retriever.k).
        scores: retrieval scores aligned with `retrieved`.
    """

    qid: str
    question: str
    answer: str | None
    gold: tuple[str, ...]
    gold_pids: tuple[str, ...]
    gold_rank: int | None
    retrieved: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def hit(self) -> bool:
        """Whether a relevant passage is among those the reader read."""
        return self.gold_rank is not None and self.gold_rank <= len(self.retrieved)


# ---------------------------------------------------------------------------------------------------- reading


def read_predictions(path: Path) -> list[Prediction]:
    """Load and check a run's predictions.jsonl.

    Args:
        path: the file; blank lines are skipped.

    Returns:
        The records in file order.

    Raises:
        DataFormatError: the file is missing, empty or not JSON lines, or a record lacks a field or mistypes it.
    """
    predictions = [_prediction(path, line, record) for line, record in iter_jsonl(path)]
    if not predictions:
        raise DataFormatError(path, None, None, "no predictions (the file is empty)")
    return predictions


def _prediction(path: Path, line: int, record: dict[str, Any]) -> Prediction:
    def field(key: str, types: type | tuple[type, ...], expected: str) -> Any:
        return json_field(path, line, record, key, types, expected)

    rank = field("gold_rank", (int, type(None)), "a positive integer or null")
    if rank is not None and rank < 1:
        raise DataFormatError(path, line, "gold_rank", f"expected a positive integer or null, got {rank}")
    retrieved = _strings(path, line, record, "retrieved")
    scores = field("scores", list, "a list of numbers")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise DataFormatError(path, line, "scores", "expected a list of numbers")
    if len(scores) != len(retrieved):
        raise DataFormatError(path, line, "scores", f"{len(scores)} scores for {len(retrieved)} retrieved passages")
    gold = _strings(path, line, record, "gold")
    if not gold:
        raise DataFormatError(path, line, "gold", "no reference answer")
    return Prediction(qid=str(field("qid", (str, int), "a string")), question=field("question", str, "a string"),
                      answer=field("answer", (str, type(None)), "a string or null"), gold=gold,
                      gold_pids=_strings(path, line, record, "gold_pids"), gold_rank=rank, retrieved=retrieved,
                      scores=tuple(float(s) for s in scores))


def _strings(path: Path, line: int, record: dict[str, Any], key: str) -> tuple[str, ...]:
    values = json_field(path, line, record, key, list, "a list of strings")
    if not all(isinstance(v, str) for v in values):
        raise DataFormatError(path, line, key, "expected a list of strings")
    return tuple(values)


def load_passages(run_dir: Path, base_dir: Path | None = None) -> tuple[dict[str, Passage], str | None]:
    """The corpus that the run's config.yaml names, by passage id.

    Args:
        run_dir: the run directory.
        base_dir: folder that relative data paths are resolved against (the current directory when None).

    Returns:
        (passages by id, None), or ({}, why) when the config or the corpus cannot be loaded.
    """
    from rag_e2e.compose import load_run_config  # hydra: only when a page is written
    from rag_e2e.data.sources import load_corpus_of

    config = run_dir / "config.yaml"
    if not config.is_file():
        return {}, f"{config}: not found"
    try:
        corpus, _ = load_corpus_of(load_run_config(config).data, base_dir)
    except RagE2EError as err:
        return {}, str(err)
    return {p.pid: p for p in corpus}, None


# ---------------------------------------------------------------------------------------------------- writing


def write_html_report(run_dir: Path, out_path: Path | None = None, *, label: str | None = None,
                      passages: Mapping[str, Passage] | None = None, base_dir: Path | None = None) -> Path:
    """Write the run's page, atomically: a failure leaves no page, or the previous one, behind.

    Args:
        run_dir: a run directory with predictions.jsonl (config.yaml, metrics.json, csv/metrics.csv if present).
        out_path: the page; default `<run_dir>/report.html`.
        label: the page title; default the config's `name`, else the directory's name.
        passages: passages by id for titles and texts; None loads the corpus the run's config names (a warning on
            stderr, and ids only, where it cannot).
        base_dir: folder that relative data paths in the config are resolved against, as in `load_passages`.

    Returns:
        The page's path.

    Raises:
        DataFormatError: predictions.jsonl is missing or malformed, or config.yaml, metrics.json or
            csv/metrics.csv is.
    """
    run_dir = Path(run_dir)
    predictions = read_predictions(run_dir / "predictions.jsonl")
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    config = read_config(run_dir / "config.yaml") if config_text else {}
    logged = read_metrics(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    note = None
    if passages is None:
        passages, note = load_passages(run_dir, base_dir)
    unknown = sorted({pid for p in predictions for pid in p.retrieved} - passages.keys())
    if unknown and not note:
        note = f"{len(unknown)} retrieved passage ids are not in the run's corpus, e.g. {unknown[0]!r}"
    if note:
        print(f"rag-e2e: warning: {run_dir}: passage titles and texts left out: {note}", file=sys.stderr)
    label = label or str(config.get("name") or run_dir.name)
    page = render_page(label, run_dir, predictions, passages, logged, read_curves(run_dir / "csv" / "metrics.csv"),
                       config_text=config_text, note=note)
    return atomic.write_text(Path(out_path) if out_path else run_dir / "report.html", page)


def page_names(runs: Sequence[RunResult]) -> list[str]:
    """File names for the runs' pages side by side in one folder, in the order of `runs`.

    `<label>.html`; `<label>-seed<seed>.html` where runs share a label; `-2`, `-3`, ... added where even that
    repeats. Characters other than letters, digits and `._=-` become `_` ("a retriever.k=5" -> "a_retriever.k=5").
    """
    labels = [run.label for run in runs]
    stems = [run.label if labels.count(run.label) == 1 else f"{run.label}-seed{run.seed}" for run in runs]
    names, seen = [], {}
    for stem in (_UNSAFE_IN_NAME.sub("_", s).strip("._") or "run" for s in stems):
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.html" if seen[stem] == 1 else f"{stem}-{seen[stem]}.html")
    return names


def render_page(label: str, run_dir: Path, predictions: Sequence[Prediction], passages: Mapping[str, Passage],
                logged: Mapping[str, float], curves: Mapping[str, list[tuple[int, float]]], *,
                config_text: str = "", note: str | None = None) -> str:
    """The page as one string.

    Args:
        label: the run's name, the page title.
        run_dir: shown under the title.
        predictions: from `read_predictions`.
        passages: passages by id; ids not in it are shown without title and text.
        logged: metrics.json (may be empty).
        curves: metric -> [(step, value)] from csv/metrics.csv (may be empty).
        config_text: config.yaml, shown folded.
        note: why passage texts are missing, shown as a warning.
    """
    esc = html.escape
    answered = [p for p in predictions if p.answer is not None]
    f1s = [qa_metrics.f1_score(p.answer, p.gold) for p in answered]
    wrong = sum(not qa_metrics.exact_match(p.answer, p.gold) for p in answered)
    misses = sum(not p.hit for p in predictions)
    plots = [_svg_bars("per-question F1 (bins of 0.1)", [f"{b / 10:.1f}" for b in range(10)], _f1_histogram(f1s)),
             _svg_bars("rank of the first gold passage", *_rank_histogram(predictions))]
    shown_curves = {m: curves[m] for m in CURVE_METRICS if curves.get(m)}
    if shown_curves:
        plots.append(_svg_lines("validation curves vs step", shown_curves))
    parts = [
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(label)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(label)}</h1><div class=\"sub\">{esc(str(run_dir))} · {len(predictions)} test questions · "
        f"{wrong} wrong · {misses} retrieval misses</div>",
        f"<p class=\"note\">Passage titles and texts left out: {esc(note)}</p>" if note else "",
        "<h2>Metrics</h2>", _metrics_table(predictions, logged),
        f"<div class=\"plots\">{''.join(plots)}</div>",
        f"<details><summary>config.yaml</summary><pre>{esc(config_text)}</pre></details>" if config_text else "",
        "<h2>Test questions</h2><div class=\"filters\">"
        "<label><input type=\"checkbox\" id=\"only-wrong\"> only wrong answers</label> "
        "<label><input type=\"checkbox\" id=\"only-miss\"> only retrieval misses</label> <span id=\"shown\"></span>"
        "</div>",
        *(_question_block(i, p, passages) for i, p in enumerate(predictions, start=1)),
        f"<script>{_JS}</script></body></html>\n",
    ]
    return "\n".join(part for part in parts if part)


def _metrics_table(predictions: Sequence[Prediction], logged: Mapping[str, float]) -> str:
    """Metrics recomputed from the predictions beside metrics.json's test/* and init/* values, in percent."""
    said = [p for p in predictions if p.answer is not None]  # answer metrics over the answered questions
    answers, golds = [p.answer for p in said], [list(p.gold) for p in said]
    ks = sorted({int(key.rsplit("@", 1)[1]) for key in logged if key.startswith("test/recall@")}) or DEFAULT_KS
    ours: dict[str, float | None] = dict(qa_metrics.retrieval_metrics([p.gold_rank for p in predictions], ks=ks))
    if said:
        ours.update(qa_metrics.answer_metrics(answers, golds))
        ours["rouge_l"] = sum(qa_metrics.rouge_l(a, g) for a, g in zip(answers, golds)) / len(said)
        ours["bleu"] = qa_metrics.corpus_bleu(answers, golds)
    order = ["em", "f1", "rouge_l", "bleu", *(f"recall@{k}" for k in ks), "mrr"]
    names = {"em": "EM", "f1": "F1", "rouge_l": "ROUGE-L", "bleu": "BLEU", "mrr": "MRR"}

    def cell(value: float | None) -> str:
        return f"<td class=\"num\">{'–' if value is None else f'{100 * value:.1f}'}</td>"

    rows = [f"<tr><th>{names.get(key, key)}</th>{cell(ours.get(key))}{cell(logged.get(f'test/{key}'))}"
            f"{cell(logged.get(f'init/{key}'))}</tr>" for key in order]
    return ("<table class=\"metrics\"><tr><th>metric (%)</th><th>from predictions.jsonl</th>"
            "<th>metrics.json test/</th><th>metrics.json init/</th></tr>" + "".join(rows) + "</table>")


def _question_block(number: int, p: Prediction, passages: Mapping[str, Passage]) -> str:
    esc = html.escape
    if p.answer is None:  # retrieval scored only
        em = f1 = rouge = 0.0
        correct, shown = "unanswered", "(not answered: outside eval.generation_questions)"
    else:
        em = qa_metrics.exact_match(p.answer, p.gold)
        f1, rouge = qa_metrics.f1_score(p.answer, p.gold), qa_metrics.rouge_l(p.answer, p.gold)
        correct, shown = ("correct" if em else "wrong"), p.answer
    hit = "hit" if p.hit else "miss"
    verdict = "" if p.answer is None else int(em)  # the "only wrong" filter hides all but "0"
    rank = "not retrieved" if p.gold_rank is None else f"rank {p.gold_rank}" + ("" if p.hit else " (not read)")
    items = [_passage_item(pid, score, _is_gold(p, i, passages), passages.get(pid))
             for i, (pid, score) in enumerate(zip(p.retrieved, p.scores))]
    golds = " ".join(f"<span class=\"gold-answer\">{esc(g)}</span>" for g in p.gold)
    return (f"<section class=\"q {correct} {hit}\" id=\"q{number}\" data-qid=\"{esc(p.qid)}\" "
            f"data-correct=\"{verdict}\" data-hit=\"{int(p.hit)}\" data-em=\"{em:.0f}\" data-f1=\"{f1:.4f}\">"
            f"<h3>{number}. <span class=\"question\">{esc(p.question)}</span></h3>"
            f"<div><span class=\"verdict {correct}\">{correct}</span> <span class=\"verdict {hit}\">{hit}</span> "
            f"EM {em:.0f} · F1 {f1:.2f} · ROUGE-L {rouge:.2f} · gold {rank} · <span class=\"pid\">"
            f"{esc(p.qid)}</span></div>"
            f"<table class=\"answers\"><tr><th>predicted</th><td class=\"prediction\">{esc(shown)}</td></tr>"
            f"<tr><th>gold</th><td>{golds}</td></tr></table>"
            f"<ol class=\"passages\">{''.join(items)}</ol></section>")


def _is_gold(p: Prediction, index: int, passages: Mapping[str, Passage]) -> bool:
    """Relevant as `gold_rank` counts it: a gold id, or (no gold ids) a text holding an answer."""
    pid = p.retrieved[index]
    if p.gold_pids:
        return pid in p.gold_pids
    if pid in passages:
        return qa_metrics.has_answer(passages[pid].text, p.gold)
    return p.gold_rank == index + 1  # no text to match: only the first relevant one is known


def _passage_item(pid: str, score: float, gold: bool, passage: Passage | None) -> str:
    esc = html.escape
    badge = "<span class=\"badge\">gold</span> " if gold else ""
    title = f"<span class=\"ptitle\">{esc(passage.title)}</span> " if passage and passage.title else ""
    text = f"<p class=\"ptext\">{esc(passage.text)}</p>" if passage else ""
    return (f"<li class=\"passage{' gold' if gold else ''}\" data-pid=\"{esc(pid)}\">{badge}"
            f"<span class=\"score\">{score:.4f}</span> {title}<span class=\"pid\">{esc(pid)}</span>{text}</li>")


# ------------------------------------------------------------------------------------------------------ plots


def _f1_histogram(f1s: Sequence[float]) -> list[int]:
    """Counts in ten bins [0, 0.1), ..., [0.9, 1.0]."""
    counts = [0] * 10
    for f1 in f1s:
        counts[min(int(f1 * 10), 9)] += 1
    return counts


def _rank_histogram(predictions: Sequence[Prediction]) -> tuple[list[str], list[int]]:
    """Bar labels and counts: each rank up to _MAX_RANK_BARS, then "> 10" if any, then "miss"."""
    ranks = [p.gold_rank for p in predictions]
    top = min(max([r for r in ranks if r is not None] + [len(p.retrieved) for p in predictions]), _MAX_RANK_BARS)
    labels = [str(r) for r in range(1, top + 1)]
    counts = [sum(r == rank for r in ranks) for rank in range(1, top + 1)]
    beyond = sum(r is not None and r > top for r in ranks)
    if beyond:
        labels, counts = [*labels, f"> {top}"], [*counts, beyond]
    return [*labels, "miss"], [*counts, sum(r is None for r in ranks)]


def _svg_bars(title: str, labels: Sequence[str], counts: Sequence[int], width: int = 360, height: int = 200) -> str:
    esc = html.escape
    top, slot = max(max(counts, default=0), 1), (width - 20) / len(labels)
    shapes = []
    for i, (label, count) in enumerate(zip(labels, counts)):
        bar_h, x = (height - 50) * count / top, 10 + i * slot
        y = height - 25 - bar_h
        shapes.append(f"<rect class=\"bar\" x=\"{x + 2:.1f}\" y=\"{y:.1f}\" width=\"{slot - 4:.1f}\" "
                      f"height=\"{bar_h:.1f}\"><title>{esc(label)}: {count}</title></rect>"
                      f"<text x=\"{x + slot / 2:.1f}\" y=\"{height - 10}\" text-anchor=\"middle\">{esc(label)}</text>"
                      f"<text x=\"{x + slot / 2:.1f}\" y=\"{y - 3:.1f}\" text-anchor=\"middle\">{count}</text>")
    return _figure(title, width, height, "".join(shapes))


def _svg_lines(title: str, series: Mapping[str, list[tuple[int, float]]], width: int = 360, height: int = 200) -> str:
    """Lines of values in [0, 1] against step, one colour per metric, with a legend."""
    esc = html.escape
    steps = [step for points in series.values() for step, _ in points]
    lo, span = min(steps), max(max(steps) - min(steps), 1)
    left, right, top, bottom = 30, width - 10, 20, height - 25

    def xy(step: int, value: float) -> str:
        return f"{left + (right - left) * (step - lo) / span:.1f},{bottom - (bottom - top) * value:.1f}"

    shapes = [f"<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#999\"/>",
              f"<text x=\"{left - 4}\" y=\"{bottom}\" text-anchor=\"end\">0</text>",
              f"<text x=\"{left - 4}\" y=\"{top + 4}\" text-anchor=\"end\">1</text>",
              f"<text x=\"{left}\" y=\"{height - 8}\">{lo}</text>",
              f"<text x=\"{right}\" y=\"{height - 8}\" text-anchor=\"end\">{lo + span}</text>"]
    for i, (metric, points) in enumerate(series.items()):
        coords = " ".join(xy(step, value) for step, value in points)
        shapes.append(f"<polyline class=\"s{i}\" fill=\"none\" stroke-width=\"2\" points=\"{coords}\"/>"
                      f"<rect class=\"s{i}f\" x=\"{left + 10 + 110 * i}\" y=\"6\" width=\"10\" height=\"4\"/>"
                      f"<text x=\"{left + 24 + 110 * i}\" y=\"11\">{esc(metric)}</text>")
    return _figure(title, width, height, "".join(shapes))


def _figure(title: str, width: int, height: int, body: str) -> str:
    esc = html.escape
    return (f"<figure><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
            f"viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{esc(title)}\">{body}</svg>"
            f"<figcaption>{esc(title)}</figcaption></figure>")


# ------------------------------------------------------------------------------------------------- screenshot


def find_chromium() -> str:
    """The first of CHROMIUM_NAMES on PATH.

    Raises:
        RagE2EError: none is installed.
    """
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    raise RagE2EError(f"no headless browser for screenshots: install one of {', '.join(CHROMIUM_NAMES)}")


def screenshot(page: Path, png: Path, window: tuple[int, int] = (1200, 1400), timeout_s: float = 60) -> Path:
    """Render `page` with headless Chromium to the PNG `png` (the top `window` pixels), atomically.

    Raises:
        RagE2EError: no Chromium, or it failed or timed out.
    """
    with tempfile.TemporaryDirectory(prefix="rag-e2e-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        command = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={tmp}/profile", f"--screenshot={shot}", f"--window-size={window[0]},{window[1]}",
                   Path(page).resolve().as_uri()]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RagE2EError(f"{page}: Chromium did not finish the screenshot in {timeout_s:g} s") from None
        if proc.returncode != 0 or not shot.is_file():
            raise RagE2EError(f"{page}: Chromium screenshot failed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return atomic.write_bytes(png, shot.read_bytes())


def window_size(text: str) -> tuple[int, int]:
    """"1200,1400" -> (1200, 1400) (argparse reports the ValueError of anything else)."""
    width, _, height = text.partition(",")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    """`python -m rag_e2e.eval.html_report <run_dir> [--out PAGE] [--screenshot PNG]`."""
    parser = argparse.ArgumentParser(prog="python -m rag_e2e.eval.html_report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="the page (default: <run_dir>/report.html)")
    parser.add_argument("--screenshot", type=Path, help="also render the page to this PNG with headless Chromium")
    parser.add_argument("--window-size", type=window_size, default=(1200, 1400), help="screenshot WIDTH,HEIGHT")
    args = parser.parse_args(argv)
    try:
        page = write_html_report(args.run_dir, args.out)
        print(f"wrote {page}")
        if args.screenshot:
            print(f"wrote {screenshot(page, args.screenshot, args.window_size)}")
    except RagE2EError as err:
        print(f"rag-e2e: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
