"""The results as text: Markdown (means ± std per system, then the paired differences) and a LaTeX tabular."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rag_e2e.eval.aggregate import SummaryRow
from rag_e2e.eval.paired import PairedDiff
from rag_e2e.eval.runs import RECALL_KEY, RunResult

_COLUMN_NAMES = {"test/em": "EM", "test/f1": "F1", "test/mrr": "MRR"}
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def _column_name(metric: str) -> str:
    """test/recall@5 -> R@5, test/em -> EM; other splits keep their prefix (init/recall@5 -> init R@5)."""
    split, _, name = metric.rpartition("/")
    short = _COLUMN_NAMES.get(f"test/{name}", name) if split else metric
    recall = RECALL_KEY.match(f"test/{name}")
    short = f"R@{recall.group(1)}" if recall else short
    return short if split == "test" else f"{split} {short}"


def _cell(row: SummaryRow, metric: str, pm: str) -> str:
    """Percent with one decimal, "mean ± std" when several seeds logged it, "–" when none did."""
    mean, std = row.mean[metric], row.std[metric]
    if mean is None:
        return "–"
    return f"{100 * mean:.1f}" + (f" {pm} {100 * std:.1f}" if std is not None else "")


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _footer(rows: list[SummaryRow], runs: Sequence[RunResult]) -> list[str]:
    seeds = "; ".join(f"{row.label}: {', '.join(str(s) for s in row.seeds)}" for row in rows)
    total = sum(run.metrics.get("time/total_s", 0.0) for run in runs)
    return [f"Seeds: {seeds}.",
            f"Total time: {_format_seconds(total)} over {len(runs)} run{'s' * (len(runs) != 1)}; "
            "the time column is the mean per run."]


def markdown_table(rows: list[SummaryRow], runs: Sequence[RunResult], title: str, metrics: Sequence[str]) -> str:
    header = ["system", "seeds", *(_column_name(m) for m in metrics), "time"]
    align = ["---"] + ["--:"] * (len(header) - 1)  # numbers right-aligned
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [row.label.replace("|", r"\|"), str(row.n_seeds), *(_cell(row, m, "±") for m in metrics),
                 _format_seconds(row.time_s)]
        lines.append("| " + " | ".join(cells) + " |")
    note = "Test-set percentages, mean ± sample std over seeds where there are several."
    return "\n".join([*lines, "", note, *_footer(rows, runs)]) + "\n"


def paired_markdown(diffs: Sequence[PairedDiff], metrics: Sequence[str]) -> str:
    """One table per baseline: system minus baseline per metric, the mean difference in points with its 95% CI,
    and questions won/lost."""
    baselines = list(dict.fromkeys(d.baseline for d in diffs))
    return "".join(_paired_table([d for d in diffs if d.baseline == b], metrics) for b in baselines)


def _paired_table(diffs: Sequence[PairedDiff], metrics: Sequence[str]) -> str:
    baseline = diffs[0].baseline
    by_system: dict[str, dict[str, PairedDiff]] = defaultdict(dict)
    for d in diffs:
        by_system[d.system][d.metric] = d
    header = ["system", *(f"Δ {_column_name('test/' + m)}" for m in metrics)]
    lines = ["", f"#### Paired against {baseline}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["--:"] * len(metrics)) + "|"]
    for system, cells in by_system.items():
        row = [system.replace("|", r"\|")]
        for m in metrics:
            d = cells.get(m)
            row.append("–" if d is None else f"{100 * d.mean:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
                       f"{' *' if d.excludes_zero else ''} ({d.wins}↑ {d.losses}↓ of {d.n_questions})")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Points (percent), system minus baseline, per question with each system's seeds averaged; "
              "[95% paired bootstrap CI, 10,000 resamples of the questions]; * the CI excludes 0; ↑/↓ questions "
              "scored higher/lower. EM/F1 on the questions both answered."]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(rows: list[SummaryRow], runs: Sequence[RunResult], title: str, metrics: Sequence[str]) -> str:
    """A booktabs `tabular`, to \\input inside the paper's own table environment."""
    header = ["System", "Seeds", *(_column_name(m) for m in metrics), "Time"]
    lines = [f"% {line}" for line in [" ".join(title.split()), *_footer(rows, runs)]]
    lines += [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
              " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
    for row in rows:
        cells = [_latex_escape(row.label), str(row.n_seeds), *(_cell(row, m, r"$\pm$") for m in metrics),
                 _format_seconds(row.time_s)]
        lines.append(" & ".join(cells).replace("–", "--") + r" \\")
    return "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"
