"""Aggregate finished run directories into a results table and plots: `rag-e2e report`.

Runs are found and loaded by `runs`, summarised over seeds by `aggregate`, compared question by question by
`paired`, and rendered by `tables` and `plots`; this module writes them all at once. `readme` puts the table into a
README.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from rag_e2e import atomic
from rag_e2e.errors import RagE2EError
from rag_e2e.eval.aggregate import DEFAULT_METRICS, group_runs, summarize
from rag_e2e.eval.paired import DEFAULT_PAIRED, PairedDiff, paired_difference, per_question, read_records
from rag_e2e.eval.plots import plot_curves, plot_recall_at_k
from rag_e2e.eval.readme import update_readme
from rag_e2e.eval.runs import RunResult, collect_runs
from rag_e2e.eval.tables import latex_table, markdown_table, paired_markdown

# DEFAULT_METRICS, RunResult, collect_runs and update_readme are re-exported: `rag_e2e.cli` imports them from here.
__all__ = ["DEFAULT_METRICS", "RunResult", "collect_runs", "compare_to_baseline", "update_readme", "write_report"]


def compare_to_baseline(groups: dict[str, list[RunResult]], baseline: str, metrics: Sequence[str],
                        resamples: int = 10_000) -> list[PairedDiff]:
    """Every other system against `baseline`, question by question (seeds pooled), with bootstrap 95% CIs.

    Raises:
        RagE2EError: no system has the label `baseline`.
    """
    if baseline not in groups:
        raise RagE2EError(f"report: baseline `{baseline}` is not a label of the runs ({', '.join(groups)})")
    records = {label: [read_records(run.path) for run in runs] for label, runs in groups.items()}
    diffs = []
    for metric in metrics:
        base = per_question(records[baseline], metric)
        for label in groups:
            if label != baseline:
                diff = paired_difference(per_question(records[label], metric), base, system_label=label,
                                         baseline_label=baseline, metric=metric, resamples=resamples)
                if diff is not None:
                    diffs.append(diff)
    return diffs


def write_report(runs: Sequence[RunResult], out_dir: Path, *, title: str, order: Sequence[str] | None = None,
                 metrics: Sequence[str] = DEFAULT_METRICS, baseline: str | Sequence[str] | None = None,
                 paired: Sequence[str] = DEFAULT_PAIRED) -> dict[str, Path]:
    """Write results.md, results.tex, results.json, recall_at_k.png and curves.png into `out_dir`.

    Every file is rendered to a temporary file first and moved into place only once all of them rendered, so a
    failure leaves the previous report (if any) untouched.

    Args:
        runs: from `collect_runs`.
        out_dir: created if missing.
        title: heading of the Markdown table and of the plots.
        order: label order, as in `summarize`.
        metrics: table columns; values are shown as percentages (x100).
        baseline: a label, or several; every other system is compared with each question by question (`paired`
            metrics, seeds pooled, bootstrap 95% CIs from each run's predictions.jsonl), one table per baseline.
        paired: per-question metrics of that comparison (recall@K, mrr, em, f1).

    Returns:
        File name -> path written, e.g. {"results.md": out_dir / "results.md", ...}.
    """
    if not runs:
        raise RagE2EError("report: no runs to report")
    rows = summarize(runs, metrics, order)
    groups = group_runs(runs, order)
    baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
    diffs = [d for base in baselines for d in compare_to_baseline(groups, base, paired)]
    summary = {"systems": [asdict(row) for row in rows],
               "paired": [{**asdict(d), "excludes_zero": d.excludes_zero} for d in diffs]}
    renderers: dict[str, Callable[[Path], None]] = {
        "results.md": _text_writer(markdown_table(rows, runs, title, metrics) + paired_markdown(diffs, paired)),
        "results.tex": _text_writer(latex_table(rows, runs, title, metrics)),
        "results.json": _text_writer(json.dumps(summary, indent=2) + "\n"),
        "recall_at_k.png": lambda tmp: plot_recall_at_k(groups, title, tmp),
        "curves.png": lambda tmp: plot_curves(groups, title, tmp),
    }
    return atomic.write_files(out_dir, renderers)


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(text)
