"""kill -9 at 26 points of seeded runs (one in `make test`, 25 `slow`), then resume with the same `run_dir=`: the
resumed run ends exactly where the uninterrupted one does (CPU, one thread; tolerance zero).

Kill points (tests/kill_harness.py): mid-step, right after an optimizer update, mid-validation, mid-refresh (sync
and async), mid-checkpoint write, mid-index save, mid-embedding write (memmap shards), before and after the first
checkpoint. Compared: every metric in metrics.json except wall times and speeds, predictions.jsonl, the saved final
index's encoder fingerprint and step, fingerprints of the final weights, optimizer and LR-scheduler state, and the
memmap directories left on disk. Async refresh is compared on query-side
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
# 120 passages in shards of 16: 8 shards per encoding, so an encoding is killed part-way through
END2END_MEMMAP = [*END2END_SYNC, "index.shard_size=16"]
SETTINGS = {"end2end_sync": END2END_SYNC, "query_async": QUERY_ASYNC, "end2end_memmap": END2END_MEMMAP}
TIMING = ("time/", "refresh/mean_wall_s", "refresh/total_wall_s", "refresh/mean_passages_per_s",
          "refresh/mean_lag_steps")


def _run(point: str, n: int, overrides: list[str], run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if overrides is END2END_MEMMAP:
        overrides = [*overrides, f"index.embeddings_dir={run_dir / 'embeddings'}"]
    return subprocess.run([sys.executable, str(HARNESS), point, str(n), *overrides, f"run_dir={run_dir}"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _flatten(value, prefix: str = "") -> dict:
    """name -> tensor or scalar for nested dicts/lists (an optimizer or scheduler state), for `state_fingerprint`."""
    if isinstance(value, dict):
        return {k: v for key in sorted(value, key=str) for k, v in _flatten(value[key], f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix: value}


def _outcome(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    saved = sorted(p.name for p in (run_dir / "index").iterdir())
    assert len(saved) == 1, saved  # only the live index is kept (and no temporary files of a killed write)
    index_dir = run_dir / "index" / saved[0]
    meta = json.loads((index_dir / "meta.json").read_text())
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    embeddings = run_dir / "embeddings"
    return {"metrics": {k: v for k, v in metrics.items() if not k.startswith(TIMING)},
            "predictions": (run_dir / "predictions.jsonl").read_text(),
            "index": (meta["encoder_fingerprint"], meta["encoder_step"]),
            "weights": state_fingerprint(last["state_dict"]),
            "optimizer": state_fingerprint(_flatten(last["optimizer_states"])),
            "scheduler": state_fingerprint(_flatten(last["lr_schedulers"])),
            "step": last["global_step"],
            "embeddings": sorted(p.name for p in embeddings.iterdir()) if embeddings.is_dir() else None}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of a setting, computed once per setting."""
    cache = {}

    def get(name: str) -> dict:
        if name not in cache:
            run_dir = tmp_path_factory.mktemp(name) / "run"
            proc = _run("none", 0, SETTINGS[name], run_dir)
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[name] = _outcome(run_dir)
        return cache[name]

    return get


def _kill_and_resume(tmp_path: Path, point: str, n: int, setting: str) -> dict:
    overrides, run_dir = SETTINGS[setting], tmp_path / "run"
    killed = _run(point, n, overrides, run_dir)
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # SIGKILL, not an error
    assert not (run_dir / "metrics.json").exists()
    checkpointed = (run_dir / "checkpoints" / "last.ckpt").is_file()
    resumed = _run("none", 0, overrides, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("resuming from" in resumed.stdout) == checkpointed  # before the first checkpoint: starts over
    return _outcome(run_dir)


# (setting, point, n). end2end_sync: 24 steps; refresh (a build and an index save) at 0, 4, 8, ...; validation and
# checkpoints (step{N}.ckpt, then last.ckpt) at steps 8, 16, 24.
KILL_POINTS = [
    ("end2end_sync", "step", 3),  # before any checkpoint: the rerun starts over among the killed run's files
    ("end2end_sync", "step", 9),  # just after the step-8 checkpoint
    ("end2end_sync", "step", 16),  # the step before the second checkpoint
    ("end2end_sync", "step", 21),
    ("end2end_sync", "optimizer", 8),  # step 8's update done, its validation and checkpoint not
    ("end2end_sync", "optimizer", 12),  # the update before the refresh at step 12
    ("end2end_sync", "optimizer", 24),  # the last update, before the last validation and checkpoint
    ("end2end_sync", "validation", 1),  # step 8's validation: no checkpoint yet
    ("end2end_sync", "validation", 2),  # step 16's
    ("end2end_sync", "validation", 3),  # step 24's: training done
    ("end2end_sync", "build", 2),  # the refresh at step 4, half encoded, before any checkpoint
    ("end2end_sync", "build", 3),  # the refresh at step 8
    ("end2end_sync", "build", 4),  # the refresh at step 12
    ("end2end_sync", "build", 6),  # the refresh at step 20
    ("end2end_sync", "checkpoint", 1),  # writing the first checkpoint file (step8.ckpt): none complete
    ("end2end_sync", "checkpoint", 2),  # writing last.ckpt at step 8, step8.ckpt complete
    ("end2end_sync", "checkpoint", 3),  # writing step16.ckpt: last.ckpt stays step 8's
    ("end2end_sync", "checkpoint", 4),  # writing last.ckpt at step 16
    ("end2end_sync", "index_save", 2),  # the refresh at step 4's saved index
    ("end2end_sync", "index_save", 4),  # the refresh at step 12's
    ("end2end_memmap", "embeddings", 14),  # the encoding at step 4 (9 progress writes per encoding), part-way
    ("end2end_memmap", "embeddings", 32),  # the encoding at step 12, after the step-8 checkpoint
    ("end2end_memmap", "embeddings", 41),  # the encoding at step 16
    ("query_async", "build", 2),  # the background worker's build for step 4, before any checkpoint
    ("query_async", "build", 4),  # the worker's build for step 12
]


def test_killed_mid_step_resumes_to_the_same_result(tmp_path, reference):
    # step 11 of 24: the last checkpoint is step 8's, taken between two refreshes; the loader is mid-epoch
    assert _kill_and_resume(tmp_path, "step", 11, "end2end_sync") == reference("end2end_sync")


@pytest.mark.slow
@pytest.mark.parametrize("setting, point, n", KILL_POINTS, ids=[f"{s}-{p}{n}" for s, p, n in KILL_POINTS])
def test_killed_anywhere_resumes_to_the_same_result(tmp_path, reference, setting, point, n):
    assert _kill_and_resume(tmp_path, point, n, setting) == reference(setting)
