"""Index refresh during real (tiny) training: async swap, unchanged-encoder staleness, resume, DDP."""

import json
import os
import threading

import lightning as L
import pytest
import torch
from helpers import DDP_CPU, TINY, tiny_config, train_in_subprocess

from rag_e2e.lightning.refresh_callback import IndexRefreshCallback
from rag_e2e.retrieval.refresh import IndexBuilder
from rag_e2e.train import assemble, build_trainer, train

FAST = ["trainer.val_check_interval=100", "model.reader_warmup_steps=0", "eval.ks=[1,3]"]


def _fit(cfg, tmp_path, extra_callbacks=()):
    parts = assemble(cfg, progress=False, run_dir=tmp_path)
    trainer = build_trainer(cfg, tmp_path, parts.refresh, progress=False, log=False)
    trainer.callbacks.extend(extra_callbacks)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts, trainer


def test_async_refresh_swaps_index_while_training_continues(tmp_path):
    cfg = tiny_config(*FAST, "retriever=end2end", "retriever.k=3", "refresh=async", "refresh.schedule=4",
                      "model.passage_lr=1e-2", "trainer.max_steps=12", "refresh.cpu_worker_nice=3",
                      "refresh.cpu_yield_threads=true")
    parts = assemble(cfg, progress=False, run_dir=tmp_path)
    gate, original, steps_while_pending = threading.Event(), parts.refresh.builder.build, []

    worker_threads, main_threads, threads_while_pending = [], torch.get_num_threads(), []
    nice = {"main": os.getpriority(os.PRIO_PROCESS, threading.get_native_id())}

    def gated_build(encoder, **kwargs):  # the first refresh's encoder "takes" three training steps
        if threading.current_thread().name.startswith("index-refresh") and not worker_threads:  # the first refresh
            worker_threads.append(torch.get_num_threads())
            nice["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            assert gate.wait(60)
        return original(encoder, **kwargs)

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if parts.refresh.in_flight and parts.refresh.version == 0:
                steps_while_pending.append(trainer.global_step)
                threads_while_pending.append(torch.get_num_threads())
                if len(steps_while_pending) >= 4:
                    gate.set()

    parts.refresh.builder.build = gated_build
    trainer = build_trainer(cfg, tmp_path, parts.refresh, progress=False, log=False)
    trainer.callbacks.append(Watch())
    trainer.fit(parts.module, datamodule=parts.datamodule)

    first = parts.refresh.history[0]
    assert steps_while_pending[:4] == [4, 5, 6, 7]  # training went on while the refresh was in flight
    assert first["version"] == 1 and first["encoder_step"] == 4 and first["lag_steps"] >= 3
    assert first["overlap"] < 1.0 and first["score_drift"] > 0  # the trained passage tower retrieves differently
    assert parts.refresh.version == len(parts.refresh.history) >= 2 and trainer.global_step == 12
    assert parts.refresh.index_step == 12  # the final index matches the final passage tower
    assert worker_threads == [1] and torch.get_num_threads() == main_threads  # the worker's own thread count
    # while it encoded, training left the worker its core (refresh.cpu_yield_threads), and took it back after
    assert set(threads_while_pending) == {max(1, main_threads - 1)}
    # the worker thread ran at refresh.cpu_worker_nice; training's thread kept its priority
    assert nice == {"main": nice["main"], "worker": max(3, nice["main"])}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == nice["main"]


def test_a_failed_fit_gives_back_the_threads_training_yielded(tmp_path):
    cfg = tiny_config(*FAST, "refresh=async", "refresh.cpu_yield_threads=true", "trainer.max_steps=2")
    parts, threads = assemble(cfg, progress=False, run_dir=tmp_path), torch.get_num_threads()
    parts.refresh.worker.yield_threads()  # as when an async refresh is submitted on CPU
    assert torch.get_num_threads() == (max(1, threads - 1) if parts.refresh.worker._yielded_from is not None
                                       else threads)
    parts.refresh.on_exception(None, None, RuntimeError("training failed"))
    assert torch.get_num_threads() == threads and parts.refresh.worker._yielded_from is None


def test_refresh_with_unchanged_passage_tower_has_full_overlap(tmp_path):
    # query-side only: the passage tower is frozen, so a re-encoded index equals the live one
    cfg = tiny_config(*FAST, "refresh=sync", "refresh.schedule=3", "trainer.max_steps=6")
    parts, _ = _fit(cfg, tmp_path)
    assert [h["step"] for h in parts.refresh.history] == [3, 6]
    assert all(h["overlap"] == 1.0 and h["score_drift"] == 0.0 for h in parts.refresh.history)
    assert all(h["passages_per_s"] > 0 and h["wall_s"] > 0 for h in parts.refresh.history)


def test_resume_restores_the_live_index_and_schedule(tmp_path, monkeypatch):
    overrides = [*TINY, *FAST, "retriever=end2end", "retriever.k=3", "refresh=sync", "refresh.schedule=4",
                 "trainer.val_check_interval=4", "trainer.max_steps=10", f"run_dir={tmp_path / 'run'}"]
    original_end = IndexRefreshCallback.on_train_batch_end

    def crash_at_6(self, trainer, *args):
        original_end(self, trainer, *args)
        if trainer.global_step == 6:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(IndexRefreshCallback, "on_train_batch_end", crash_at_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(*overrides), progress=False)
    monkeypatch.setattr(IndexRefreshCallback, "on_train_batch_end", original_end)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()

    builds, original_build = [], IndexBuilder.build

    def counting_build(self, encoder, **kwargs):
        builds.append(encoder)
        return original_build(self, encoder, **kwargs)

    monkeypatch.setattr(IndexBuilder, "build", counting_build)
    metrics = json.loads(train(tiny_config(*overrides), progress=False).read_text())
    # The checkpoint at step 4 held index v1 (refreshed at step 4): reloaded, not re-encoded; then 8, then final.
    assert len(builds) == 2
    assert metrics["train/steps"] == 10 and metrics["refresh/count"] == 3
    assert sorted(p.name for p in (tmp_path / "run" / "index").iterdir()) == ["v3-rank0-of-1"]


@pytest.mark.distributed
def test_ddp_two_processes_train_with_sharded_index_and_refresh(tmp_path):
    run_dir = tmp_path / "ddp"
    metrics = train_in_subprocess(*TINY, *FAST, *DDP_CPU, "retriever=end2end", "retriever.k=3", "refresh=sync",
                                  "refresh.schedule=3", "trainer.max_steps=6", f"run_dir={run_dir}")
    assert metrics["train/steps"] == 6 and metrics["refresh/count"] == 2
    assert 0.0 <= metrics["test/recall@3"] <= 1.0
    shards = sorted(p.name for p in (run_dir / "index").iterdir())
    assert shards == ["v2-rank0-of-2", "v2-rank1-of-2"]
    preds = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 40 - 40 // 3  # every test question once, though each rank evaluated half


def test_partial_refresh_patches_between_full_rebuilds_and_evaluates_on_a_full_index(tmp_path):
    cfg = tiny_config(*FAST, "retriever=end2end", "refresh=sync", "refresh.schedule=2", "refresh.scope=partial",
                      "refresh.partial_fraction=0.25", "refresh.full_every=3", "refresh.audit=true",
                      "model.passage_lr=1e-2", "trainer.max_steps=12")
    parts, trainer = _fit(cfg, tmp_path)
    refresh, n = parts.refresh, len(parts.refresh.builder.corpus)
    history = refresh.history
    partial = [r for r in history if r.get("partial") == 1.0]
    full = [r for r in history if r.get("partial") == 0.0]
    assert [r["version"] for r in full[:-1]] == [3]  # the 3rd of 5 scheduled refreshes (then the final one)
    assert len(partial) == 4 and all(r["rows"] == -(-n // 4) for r in partial)  # ceil(0.25 * 40) rows each
    assert all(r["retrieved_rows"] > 0 for r in partial)  # what training retrieved is re-encoded first
    assert all(0 <= r["overlap_vs_full"] <= 1 for r in partial)
    assert all(r["fresh_fraction"] == pytest.approx(r["rows"] / n) for r in partial)
    # Evaluation searches a full re-encode by the final tower: every row fresh, equal to encoding the corpus now.
    assert refresh.index_step == trainer.global_step == 12 and bool((refresh.scope.row_steps == 12).all())
    torch.testing.assert_close(parts.module.rag.index.p_reps, refresh.builder.encode(parts.module.rag.encoder))
