"""Runs grouped by label (the config `name` by default), each metric as the mean and sample std over the group's
runs, one run per seed."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rag_e2e.errors import RagE2EError
from rag_e2e.eval.runs import RunResult

DEFAULT_METRICS = ("test/em", "test/f1", "test/recall@1", "test/recall@5", "test/recall@10")


@dataclass
class SummaryRow:
    """One system's results over its runs.

    Attributes:
        label: the system.
        seeds: `trainer.seed` of each run, in collection order.
        n_seeds: number of runs.
        mean: metric -> mean over the runs that logged it (None if none did).
        std: metric -> sample std (ddof=1); None unless at least two runs logged it.
        time_s: mean `time/total_s` per run, None if no run logged it.
    """

    label: str
    seeds: list[int]
    n_seeds: int
    mean: dict[str, float | None]
    std: dict[str, float | None]
    time_s: float | None


def summarize(runs: Sequence[RunResult], metrics: Sequence[str] = DEFAULT_METRICS,
              order: Sequence[str] | None = None) -> list[SummaryRow]:
    """Mean and sample std of each metric over each system's runs.

    Args:
        runs: from `collect_runs`.
        metrics: metrics.json keys to aggregate; a run that lacks one is left out of that metric only.
        order: labels in the order wanted; labels not named follow in first-seen order. Default: first-seen.

    Returns:
        One row per label.

    Raises:
        RagE2EError: `order` names a label that no run has.
    """
    return [_summary_row(label, group, metrics) for label, group in group_runs(runs, order).items()]


def group_runs(runs: Sequence[RunResult], order: Sequence[str] | None) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    missing = [label for label in order or () if label not in groups]
    if missing:
        raise RagE2EError(f"report: order names {missing}, but the runs' labels are {list(groups)}")
    labels = list(dict.fromkeys([*(order or ()), *groups]))
    return {label: groups[label] for label in labels}


def _summary_row(label: str, runs: list[RunResult], metrics: Sequence[str]) -> SummaryRow:
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for metric in metrics:
        values = [run.metrics[metric] for run in runs if metric in run.metrics]
        mean[metric] = statistics.fmean(values) if values else None
        std[metric] = statistics.stdev(values) if len(values) >= 2 else None
    times = [run.metrics["time/total_s"] for run in runs if "time/total_s" in run.metrics]
    return SummaryRow(label=label, seeds=[run.seed for run in runs], n_seeds=len(runs), mean=mean, std=std,
                      time_s=statistics.fmean(times) if times else None)
