"""Finished run directories, found and loaded: what `rag-e2e report` and the HTML page read.

A run directory (written by `rag-e2e train`) holds config.yaml, metrics.json once the run finished, and
csv/metrics.csv from Lightning's CSVLogger.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rag_e2e.errors import DataFormatError, RagE2EError

CURVE_METRICS = ("val/em", "val/recall@5")  # the validation curves the reports plot
RECALL_KEY = re.compile(r"^test/recall@(\d+)$")
# configs/config.yaml is the entry config (a `defaults:` list), not a run that died before writing metrics.json.
_ENTRY_CONFIG = re.compile(r"^defaults:", re.MULTILINE)


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
