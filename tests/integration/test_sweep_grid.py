"""The shipped example grid (loss x k, 4 points) trains for real through `run_sweep`, then resumes by skipping."""

import json
import time

import yaml
from helpers import REPO, TINY

from rag_e2e.sweep import cmd_sweep, run_sweep

EXAMPLE = REPO / "experiments" / "sweeps" / "example_grid.yaml"
# Every run tiny; retriever.k is swept, so TINY's own value would override the grid's.
SHRINK = [o for o in TINY if not o.startswith("retriever.k=")] + ["trainer.max_steps=4",
                                                                   "trainer.val_check_interval=4"]


def test_example_grid_runs_every_point_then_resumes(tmp_path):
    extras = [*SHRINK, f"output_dir={tmp_path}"]
    summary = run_sweep(EXAMPLE, extras)

    sweep_dir = tmp_path / "sweeps" / "example_grid"
    assert summary.sweep_dir == str(sweep_dir) and summary.returncode == 0
    assert [run.status for run in summary.runs] == ["done"] * 4
    for run in summary.runs:
        metrics = json.loads((sweep_dir / run.name / "metrics.json").read_text())
        assert run.metric == metrics["test/em"] and 0.0 <= run.metric <= 1.0 and metrics["train/steps"] == 4
        cfg = yaml.safe_load((sweep_dir / run.name / "config.yaml").read_text())
        assert (cfg["model"]["loss"], cfg["retriever"]["k"]) == (run.params["model.loss"], run.params["retriever.k"])
        assert cfg["name"] == "synthetic_demo" and cfg["logger"]["group"] == "example_grid"
        assert cfg["run_dir"] == str(sweep_dir / run.name) and cfg["encoder"]["hidden_size"] == 32
    assert {run.name for run in summary.runs} == {"loss_sequence-k1", "loss_sequence-k3", "loss_token-k1",
                                                  "loss_token-k3"}
    assert json.loads((sweep_dir / "summary.json").read_text())["returncode"] == 0

    started = time.monotonic()
    again = run_sweep(EXAMPLE, extras)
    assert time.monotonic() - started < 10  # nothing trains: no subprocess at all
    assert [run.status for run in again.runs] == ["skipped"] * 4
    assert [run.metric for run in again.runs] == [run.metric for run in summary.runs]


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = yaml.safe_load(EXAMPLE.read_text())
    sweep["name"] = "k_fails"
    sweep["parameters"] = {"retriever.k": {"values": [3, 0]}}  # k=0 passes the schema; the run rejects it
    path = tmp_path / "k_fails.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    extras = [*SHRINK, f"output_dir={tmp_path}"]

    summary = run_sweep(path, extras)
    done, failed = summary.runs
    assert (done.name, done.status) == ("k3", "done") and done.metric is not None
    assert (failed.name, failed.status, failed.returncode) == ("k0", "failed", 2)
    assert "retriever.k" in failed.error[-1]
    assert summary.returncode == 1
    assert "retriever.k" in (tmp_path / "sweeps" / "k_fails" / "k0" / "stdout.log").read_text()

    assert cmd_sweep([str(path), *extras]) == 1  # the CLI entry: k3 skipped, k0 fails again
