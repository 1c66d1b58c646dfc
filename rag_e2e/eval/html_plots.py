"""The HTML page's inline SVG plots: bar charts (per-question F1, rank of the gold passage) and line charts (curves)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from rag_e2e.eval.predictions import Prediction

_MAX_RANK_BARS = 10  # ranks above this share one "> 10" bar


def f1_histogram(f1s: Sequence[float]) -> list[int]:
    """Counts in ten bins [0, 0.1), ..., [0.9, 1.0]."""
    counts = [0] * 10
    for f1 in f1s:
        counts[min(int(f1 * 10), 9)] += 1
    return counts


def rank_histogram(predictions: Sequence[Prediction]) -> tuple[list[str], list[int]]:
    """Bar labels and counts: each rank up to _MAX_RANK_BARS, then "> 10" if any, then "miss"."""
    ranks = [p.gold_rank for p in predictions]
    top = min(max([r for r in ranks if r is not None] + [len(p.retrieved) for p in predictions]), _MAX_RANK_BARS)
    labels = [str(r) for r in range(1, top + 1)]
    counts = [sum(r == rank for r in ranks) for rank in range(1, top + 1)]
    beyond = sum(r is not None and r > top for r in ranks)
    if beyond:
        labels, counts = [*labels, f"> {top}"], [*counts, beyond]
    return [*labels, "miss"], [*counts, sum(r is None for r in ranks)]


def svg_bars(title: str, labels: Sequence[str], counts: Sequence[int], width: int = 360, height: int = 200) -> str:
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


def svg_lines(title: str, series: Mapping[str, list[tuple[int, float]]], width: int = 360, height: int = 200) -> str:
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
