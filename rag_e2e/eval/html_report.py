"""One static, self-contained HTML page per run: `rag-e2e report --html`, `python -m rag_e2e.eval.html_report`.

The page shows the run's aggregate metrics (recomputed from predictions.jsonl, beside metrics.json), SVG plots
(per-question F1, rank of the gold passage, validation curves from csv/metrics.csv), then every test question with
the passages the reader read, the predicted and gold answers and verdicts. It loads nothing from the network.

predictions.jsonl holds passage ids and scores only; titles and texts come from the corpus the run's config.yaml
names (regenerated for synthetic data). Where that corpus cannot be loaded the page shows ids and says why.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.data.types import Passage
from rag_e2e.errors import RagE2EError
from rag_e2e.eval.html_page import render_page
from rag_e2e.eval.predictions import read_predictions  # rag_e2e.cli imports it from here too
from rag_e2e.eval.runs import RunResult, read_config, read_curves, read_metrics
from rag_e2e.eval.screenshot import screenshot

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._=-]+")


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
