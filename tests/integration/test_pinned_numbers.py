"""Pinned numbers, like Pyserini's regression tests: the SQuAD systems table at CPU-minutes scale, seeded.

`experiments/sweeps/pinned.yaml` runs the four systems of the open-domain SQuAD table (generator only, fixed
retriever, RAG-original, RAG-end2end) for 40 steps on the real SQuAD v1.1 dev knowledge base (2,067 paragraphs,
pretrained MiniLM retriever) and evaluates 60 test questions. The numbers recorded in
`experiments/pinned/expected.json` must come back within TOLERANCE: one question in 60 is 0.0167, so 0.035 allows
two questions to flip between machines (different BLAS, thread counts) and nothing more.
"""

import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SQUAD_DEV

from rag_e2e.sweep import run_sweep

TOLERANCE = 0.035
EXPECTED = json.loads((REPO / "experiments" / "pinned" / "expected.json").read_text())


@pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"SQuAD v1.1 dev not found at {SQUAD_DEV}")
def test_pinned_squad_table(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # experiment paths and data paths in the configs are relative to the repo root
    summary = run_sweep(REPO / "experiments" / "sweeps" / "pinned.yaml", [f"output_dir={tmp_path}"])
    assert summary.returncode == 0
    measured = {}
    for run in summary.runs:
        run_dir = Path(run.run_dir)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        name = yaml.safe_load((run_dir / "config.yaml").read_text())["name"]
        measured[name] = {key: metrics[key] for key in EXPECTED["metrics"]}
    assert measured.keys() == EXPECTED["systems"].keys()
    for system, expected in EXPECTED["systems"].items():
        for key, value in expected.items():
            assert abs(measured[system][key] - value) <= TOLERANCE, (system, key, measured[system][key], value)
