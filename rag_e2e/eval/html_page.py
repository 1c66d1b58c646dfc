"""The run's page as one self-contained HTML string: metrics, SVG plots, then every test question with its passages,
answers and verdicts, and filters for wrong answers and retrieval misses (inline CSS and JS, nothing from the
network)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from rag_e2e.data.types import Passage
from rag_e2e.eval import metrics as qa_metrics
from rag_e2e.eval.html_plots import f1_histogram, rank_histogram, svg_bars, svg_lines
from rag_e2e.eval.predictions import Prediction
from rag_e2e.eval.runs import CURVE_METRICS

DEFAULT_KS = (1, 5, 10)
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
    plots = [svg_bars("per-question F1 (bins of 0.1)", [f"{b / 10:.1f}" for b in range(10)], f1_histogram(f1s)),
             svg_bars("rank of the first gold passage", *rank_histogram(predictions))]
    shown_curves = {m: curves[m] for m in CURVE_METRICS if curves.get(m)}
    if shown_curves:
        plots.append(svg_lines("validation curves vs step", shown_curves))
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
