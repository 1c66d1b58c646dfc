"""The report's PNG plots (matplotlib, Agg): test recall@k against k, and validation curves against step."""

from __future__ import annotations

import statistics
from pathlib import Path

from rag_e2e.errors import RagE2EError
from rag_e2e.eval.runs import CURVE_METRICS, RECALL_KEY, RunResult


def _new_figure(ncols: int, title: str):
    """A figure outside pyplot's global registry: rendered by Agg, freed with it, no backend switch for the caller."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RagE2EError("report: plots need matplotlib (pip install matplotlib)") from None
    fig = Figure(figsize=(5.0 * ncols, 4.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    fig.suptitle(title)
    return fig, axes


def plot_recall_at_k(groups: dict[str, list[RunResult]], title: str, out: Path) -> None:
    """Test recall@k (percent) against k per system: mean with sample-std error bars over seeds."""
    fig, (ax,) = _new_figure(1, title)
    ks = sorted({int(m.group(1)) for runs in groups.values() for run in runs for key in run.metrics
                 if (m := RECALL_KEY.match(key))})
    for label, runs in groups.items():
        points = [(k, [100 * r.metrics[f"test/recall@{k}"] for r in runs if f"test/recall@{k}" in r.metrics])
                  for k in ks]
        points = [(k, values) for k, values in points if values]
        if points:
            ax.errorbar([k for k, _ in points], [statistics.fmean(v) for _, v in points],
                        yerr=[statistics.stdev(v) if len(v) >= 2 else 0.0 for _, v in points],
                        marker="o", capsize=3, label=label)
    if ks:
        ax.set_xticks(ks)
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no test/recall@k in metrics.json", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="k (retrieved passages)", ylabel="test recall@k (%)")
    ax.grid(alpha=0.3)
    fig.savefig(out, format="png")


def _mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Mean over runs at the steps every run logged (all steps if they share none); a step's last value wins."""
    per_run = [dict(curve) for curve in curves]
    steps = set.intersection(*(set(c) for c in per_run)) or set().union(*per_run)
    return [(step, statistics.fmean(c[step] for c in per_run if step in c)) for step in sorted(steps)]


def plot_curves(groups: dict[str, list[RunResult]], title: str, out: Path) -> None:
    """`val/em` and `val/recall@5` (percent) against training step per system, mean over seeds."""
    fig, axes = _new_figure(len(CURVE_METRICS), title)
    for ax, metric in zip(axes, CURVE_METRICS):
        plotted = False
        for label, runs in groups.items():
            curves = [run.curves[metric] for run in runs if run.curves.get(metric)]
            if curves:
                steps, values = zip(*_mean_curve(curves))
                ax.plot(steps, [100 * v for v in values], marker=".", label=label)
                plotted = True
        if plotted:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"{metric} not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel="training step", ylabel=f"{metric} (%)", title=metric)
        ax.grid(alpha=0.3)
    fig.savefig(out, format="png")
