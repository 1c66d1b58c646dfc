"""kill -9 at several points of a seeded end-to-end run, then resume with the same `run_dir=`: the resumed run ends
exactly where the uninterrupted one does (CPU, one thread; tolerance zero).

Compared: every metric in metrics.json except wall times and speeds, predictions.jsonl, the saved final index's
encoder fingerprint and step, and a fingerprint of the final weights. Async refresh is compared on query-side
training, where the rebuilt index does not depend on when the worker finishes; with a training passage tower the
swap step depends on timing, so async end-to-end runs are not bit-reproducible even uninterrupted.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY

from rag_e2e.retrieval.index import state_fingerprint

HARNESS = REPO / "tests" / "kill_harness.py"
RUN = [*TINY, "retriever.k=3", "eval.ks=[1,3]", "model.reader_warmup_steps=0", "trainer.max_steps=24",
       "trainer.val_check_interval=8", "trainer.num_threads=1", "eval.before_training=false"]
END2END_SYNC = [*RUN, "retriever=end2end", "refresh=sync", "refresh.schedule=4", "model.passage_lr=1e-2"]
QUERY_ASYNC = [*RUN, "refresh=async", "refresh.schedule=4"]
TIMING = ("time/", "refresh/mean_wall_s", "refresh/total_wall_s", "refresh/mean_passages_per_s",
          "refresh/mean_lag_steps")


def _run(point: str, n: int, overrides: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HARNESS), point, str(n), *overrides, f"run_dir={run_dir}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _outcome(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    saved = sorted(p.name for p in (run_dir / "index").iterdir())
    assert len(saved) == 1, saved  # only the live index is kept (and no temporary files of a killed write)
    index_dir = run_dir / "index" / saved[0]
    meta = json.loads((index_dir / "meta.json").read_text())
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {"metrics": {k: v for k, v in metrics.items() if not k.startswith(TIMING)},
            "predictions": (run_dir / "predictions.jsonl").read_text(),
            "index": (meta["encoder_fingerprint"], meta["encoder_step"]), "weights": state_fingerprint(weights)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted runs, one per setting, computed once."""
    cache = {}

    def get(name: str, overrides: list[str]) -> dict:
        if name not in cache:
            run_dir = tmp_path_factory.mktemp(name) / "run"
            proc = _run("none", 0, overrides, run_dir)
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[name] = _outcome(run_dir)
        return cache[name]

    return get


def _kill_and_resume(tmp_path: Path, point: str, n: int, overrides: list[str]) -> dict:
    run_dir = tmp_path / "run"
    killed = _run(point, n, overrides, run_dir)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL, not an error
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").exists()
    resumed = _run("none", 0, overrides, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    return _outcome(run_dir)


def test_killed_mid_step_resumes_to_the_same_result(tmp_path, reference):
    # step 11 of 24: the last checkpoint is step 8's, taken between two refreshes; the loader is mid-epoch
    assert _kill_and_resume(tmp_path, "step", 11, END2END_SYNC) == reference("end2end_sync", END2END_SYNC)


@pytest.mark.slow
@pytest.mark.parametrize("point, n", [
    ("build", 4),  # the sync refresh at step 12 (builds: initial, 4, 8, 12), half encoded
    ("checkpoint", 3),  # writing step16.ckpt (files: step8, last, step16, ...): last.ckpt stays step 8's
    ("checkpoint", 4),  # writing last.ckpt at step 16, step16.ckpt complete
    ("index_save", 4),  # writing the saved index of the refresh at step 12
])
def test_killed_during_refresh_or_a_write_resumes_to_the_same_result(tmp_path, reference, point, n):
    assert _kill_and_resume(tmp_path, point, n, END2END_SYNC) == reference("end2end_sync", END2END_SYNC)


@pytest.mark.slow
def test_killed_during_an_async_refresh_resumes_to_the_same_result(tmp_path, reference):
    # the worker's build for the refresh at step 12 (builds: initial, 4, 8, 12)
    assert _kill_and_resume(tmp_path, "build", 4, QUERY_ASYNC) == reference("query_async", QUERY_ASYNC)
