"""Aggregate finished run directories into a results table and plots: `rag-e2e report`.

A run directory (written by `rag-e2e train`) holds config.yaml, metrics.json once the run finished, and
csv/metrics.csv from Lightning's CSVLogger. Runs are grouped by a label (the config `name` by default), and each
metric is reported as the mean and sample std over the group's runs, one run per seed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rag_e2e import atomic
from rag_e2e.errors import DataFormatError, RagE2EError
from rag_e2e.eval.paired import DEFAULT_PAIRED, PairedDiff, paired_difference, per_question, read_records

DEFAULT_METRICS = ("test/em", "test/f1", "test/recall@1", "test/recall@5", "test/recall@10")
CURVE_METRICS = ("val/em", "val/recall@5")
_COLUMN_NAMES = {"test/em": "EM", "test/f1": "F1", "test/mrr": "MRR"}
_RECALL_KEY = re.compile(r"^test/recall@(\d+)$")
# configs/config.yaml is the entry config (a `defaults:` list), not a run that died before writing metrics.json.
_ENTRY_CONFIG = re.compile(r"^defaults:", re.MULTILINE)
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


@dataclass
class RunResult:
    """One finished run.

    Attributes:
        path: the run directory.
        label: the system it belongs to, e.g. "squad_rag_original" or "squad_rag_original retriever.k=5".
        seed: `trainer.seed` from its config.
        metrics: metrics.json, e.g. {"test/em": 0.41, "time/total_s": 60.2}.
        curves: metric -> [(step, value), ...] for `val/*` and `train/loss`, from csv/metrics.csv.
    """

    path: Path
    label: str
    seed: int
    metrics: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------- collecting runs


def collect_runs(paths: Sequence[Path], label_keys: Sequence[str] = ("name",)) -> list[RunResult]:
    """Load every finished run found at or below `paths`.

    Unfinished runs (config.yaml but no metrics.json) are skipped with one warning line on stderr.

    Args:
        paths: run directories, or directories searched recursively for run directories.
        label_keys: dotted config keys that make the label; `name` contributes its bare value, any other key
            `key=value`, e.g. ("name", "retriever.k") -> "squad_rag_original retriever.k=5".

    Returns:
        The runs, in the order of `paths` and sorted by directory within each.

    Raises:
        RagE2EError: a path does not exist, a run's files are malformed, or no finished run was found.
    """
    if not label_keys:
        raise RagE2EError("report: give at least one config key for the label (e.g. label=name)")
    finished: list[Path] = []
    unfinished: list[Path] = []
    for path in paths:
        done, not_done = _find_run_dirs(Path(path))
        finished += done
        unfinished += not_done
    finished, unfinished = _unique(finished), _unique(unfinished)
    if unfinished:
        listed = ", ".join(str(p) for p in unfinished)
        print(f"rag-e2e: warning: skipping {len(unfinished)} unfinished run(s) without metrics.json: {listed}",
              file=sys.stderr)
    if not finished:
        searched = ", ".join(str(p) for p in paths)
        raise RagE2EError(f"report: no finished run (a directory with metrics.json) under {searched}")
    return [_load_run(run_dir, label_keys) for run_dir in finished]


def _find_run_dirs(path: Path) -> tuple[list[Path], list[Path]]:
    """Finished and unfinished run directories at or below `path`; run directories are not searched further."""
    if not path.is_dir():
        raise RagE2EError(f"{path}: not a directory (give run directories or folders that contain them)")
    finished: list[Path] = []
    unfinished: list[Path] = []
    for root, dirnames, filenames in os.walk(path):
        here = Path(root)
        if "metrics.json" in filenames:
            finished.append(here)
        elif "config.yaml" in filenames and not _ENTRY_CONFIG.search((here / "config.yaml").read_text()):
            unfinished.append(here)
        else:
            # Sorted for a stable label order; hidden folders (.git, .venv) never hold runs.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            continue
        dirnames[:] = []  # checkpoints/, csv/ and the like are not runs
    return finished, unfinished


def _unique(paths: list[Path]) -> list[Path]:
    """`paths` without repeats (a run named directly and again through its parent), first occurrence kept."""
    seen: set[Path] = set()
    kept = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            kept.append(path)
    return kept


def _load_run(run_dir: Path, label_keys: Sequence[str]) -> RunResult:
    config_path = run_dir / "config.yaml"
    config = read_config(config_path)
    seed = _lookup(config, "trainer.seed", config_path)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataFormatError(config_path, None, "trainer.seed", f"expected an integer, got {seed!r}")
    label = " ".join(_label_part(config, key, config_path) for key in label_keys)
    return RunResult(path=run_dir, label=label, seed=seed, metrics=read_metrics(run_dir / "metrics.json"),
                     curves=read_curves(run_dir / "csv" / "metrics.csv"))


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataFormatError(path, None, None, "not found; a run keeps its resolved config beside metrics.json")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataFormatError(path, mark.line + 1 if mark else None, None,
                              f"not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(config, dict):
        raise DataFormatError(path, None, None, "expected a mapping at the top level")
    return config


def _lookup(config: dict[str, Any], dotted: str, path: Path) -> Any:
    """The value at `a.b.c` in a nested mapping; a missing key is an error naming it."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataFormatError(path, None, dotted, "missing from the config")
        node = node[part]
    return node


def _label_part(config: dict[str, Any], key: str, path: Path) -> str:
    value = _lookup(config, key, path)
    text = value if isinstance(value, str) else json.dumps(value)
    return text if key == "name" else f"{key}={text}"


def read_metrics(path: Path) -> dict[str, float]:
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, None, f"not valid JSON: {err.msg}") from None
    if not isinstance(metrics, dict):
        raise DataFormatError(path, None, None, "expected a JSON object mapping metric names to numbers")
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DataFormatError(path, None, key, f"expected a number, got {value!r}")
    return {key: float(value) for key, value in metrics.items()}


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """`val/*` and `train/loss` as (step, value) pairs; empty cells are rows where the metric was not logged."""
    if not path.is_file():
        return {}  # logger.csv=false: no curves, the table still works
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in reader.fieldnames or [] if c.startswith("val/") or c == "train/loss"]
        if columns and "step" not in (reader.fieldnames or []):
            raise DataFormatError(path, 1, "step", "column missing; curves are plotted against it")
        for row in reader:
            cells = {c: row[c] for c in columns if row.get(c)}
            if cells:
                step = int(_parse_float(row["step"], path, reader.line_num, "step"))
                for column, cell in cells.items():
                    curves[column].append((step, _parse_float(cell, path, reader.line_num, column)))
    return dict(curves)


def _parse_float(cell: str | None, path: Path, line: int, column: str) -> float:
    try:
        return float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataFormatError(path, line, column, f"expected a number, got {cell!r}") from None


# ------------------------------------------------------------------------------------------------- summarizing


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
    return [_summary_row(label, group, metrics) for label, group in _group(runs, order).items()]


def _group(runs: Sequence[RunResult], order: Sequence[str] | None) -> dict[str, list[RunResult]]:
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


# ---------------------------------------------------------------------------------------------------- writing


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
    groups = _group(runs, order)
    baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
    diffs = [d for base in baselines for d in compare_to_baseline(groups, base, paired)]
    summary = {"systems": [asdict(row) for row in rows],
               "paired": [{**asdict(d), "excludes_zero": d.excludes_zero} for d in diffs]}
    renderers: dict[str, Callable[[Path], None]] = {
        "results.md": _text_writer(_markdown(rows, runs, title, metrics) + _paired_markdown(diffs, paired)),
        "results.tex": _text_writer(_latex(rows, runs, title, metrics)),
        "results.json": _text_writer(json.dumps(summary, indent=2) + "\n"),
        "recall_at_k.png": lambda tmp: _plot_recall_at_k(groups, title, tmp),
        "curves.png": lambda tmp: _plot_curves(groups, title, tmp),
    }
    return atomic.write_files(out_dir, renderers)


def _text_writer(text: str) -> Callable[[Path], None]:
    return lambda tmp: tmp.write_text(text)


def _column_name(metric: str) -> str:
    """test/recall@5 -> R@5, test/em -> EM; other splits keep their prefix (init/recall@5 -> init R@5)."""
    split, _, name = metric.rpartition("/")
    short = _COLUMN_NAMES.get(f"test/{name}", name) if split else metric
    recall = _RECALL_KEY.match(f"test/{name}")
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


def _markdown(rows: list[SummaryRow], runs: Sequence[RunResult], title: str, metrics: Sequence[str]) -> str:
    header = ["system", "seeds", *(_column_name(m) for m in metrics), "time"]
    align = ["---"] + ["--:"] * (len(header) - 1)  # numbers right-aligned
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [row.label.replace("|", r"\|"), str(row.n_seeds), *(_cell(row, m, "±") for m in metrics),
                 _format_seconds(row.time_s)]
        lines.append("| " + " | ".join(cells) + " |")
    note = "Test-set percentages, mean ± sample std over seeds where there are several."
    return "\n".join([*lines, "", note, *_footer(rows, runs)]) + "\n"


def _paired_markdown(diffs: Sequence[PairedDiff], metrics: Sequence[str]) -> str:
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


def _latex(rows: list[SummaryRow], runs: Sequence[RunResult], title: str, metrics: Sequence[str]) -> str:
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


# --------------------------------------------------------------------------------------------------- plotting


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


def _plot_recall_at_k(groups: dict[str, list[RunResult]], title: str, out: Path) -> None:
    """Test recall@k (percent) against k per system: mean with sample-std error bars over seeds."""
    fig, (ax,) = _new_figure(1, title)
    ks = sorted({int(m.group(1)) for runs in groups.values() for run in runs for key in run.metrics
                 if (m := _RECALL_KEY.match(key))})
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


def _plot_curves(groups: dict[str, list[RunResult]], title: str, out: Path) -> None:
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


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def update_readme(readme: Path, results_md: Path, out_dir: Path, block: str = "") -> None:
    """Replace the block between README_START and README_END in `readme` with the results table and plots
    (`block`: a named block, `<!-- results:NAME:start -->` ... `<!-- results:NAME:end -->`, for a second table)."""
    start_mark, end_mark = (README_START, README_END) if not block else \
        (f"<!-- results:{block}:start -->", f"<!-- results:{block}:end -->")
    text = readme.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise RagE2EError(f"{readme}: no `{start_mark}` ... `{end_mark}` block to put the results in")
    rel = os.path.relpath(out_dir, readme.parent)
    block_text = (f"{start_mark}\n{results_md.read_text().strip()}\n\n"
                  f"![recall@k vs k]({rel}/recall_at_k.png) ![EM and recall@5 vs step]({rel}/curves.png)\n{end_mark}")
    atomic.write_text(readme, text[:start] + block_text + text[end + len(end_mark):])
