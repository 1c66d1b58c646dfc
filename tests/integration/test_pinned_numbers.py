"""Pinned numbers, like Pyserini's regression tests: the SQuAD systems table at CPU scale, seeded.

`experiments/sweeps/pinned.yaml` runs the four systems of the open-domain SQuAD table (generator only, fixed
retriever, RAG-original, RAG-end2end) on the real SQuAD v1.1 dev knowledge base (2,067 paragraphs, pretrained
MiniLM retriever) for 10 steps and evaluates 30 test questions; `pinned_long.yaml` (slow marker) does 40 steps and 60
questions. Every number recorded in `experiments/pinned/expected*.json` must come back within TOLERANCE: 0.035
lets one question in 30 (0.033), or two in 60, flip between machines (BLAS, thread counts) and no more.
"""

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SQUAD_DEV

from rag_e2e.sweep import run_sweep

TOLERANCE = 0.035
needs_squad = pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"SQuAD v1.1 dev not found at {SQUAD_DEV}")


def _check(sweep: str, expected_file: str, tmp_path: Path, monkeypatch) -> None:
    expected = json.loads((REPO / "experiments" / "pinned" / expected_file).read_text())
    monkeypatch.chdir(REPO)  # experiment and data paths in the configs are relative to the repo root
    summary = run_sweep(REPO / "experiments" / "sweeps" / sweep, [f"output_dir={tmp_path}"])
    assert summary.returncode == 0, [run.error for run in summary.runs]
    measured = {}
    for run in summary.runs:
        run_dir = Path(run.run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        name = yaml.safe_load((run_dir / "config.yaml").read_text())["name"]
        measured[name] = {key: metrics[key] for key in expected["metrics"]}
    assert measured.keys() == expected["systems"].keys()
    for system, values in expected["systems"].items():
        for key, value in values.items():
            assert abs(measured[system][key] - value) <= TOLERANCE, (system, key, measured[system][key], value)


@needs_squad
def test_pinned_squad_table(tmp_path, monkeypatch):
    _check("pinned.yaml", "expected.json", tmp_path, monkeypatch)


@pytest.mark.slow
@needs_squad
def test_pinned_squad_table_long(tmp_path, monkeypatch):
    _check("pinned_long.yaml", "expected_long.json", tmp_path, monkeypatch)
