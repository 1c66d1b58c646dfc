"""IndexRefreshCallback: builds the retrieval index, and rebuilds it on a schedule as the passage tower trains.

sync: training waits while the corpus is re-encoded. async: a worker thread encodes a frozen snapshot of the
passage tower while training goes on against the stale index; the finished index is swapped in between two steps
(all ranks agree on the step). Each refresh logs wall time, passages/s and staleness (overlap@k and score drift of
the stale vs fresh index on fixed probe questions). The checkpoint records the schedule position and the live index
(path + encoder fingerprint); resuming reloads it, or re-encodes when it is missing or does not match.

scope="partial" re-encodes a fraction of the corpus between full rebuilds (`refresh_scope.py`). The worker thread:
`refresh_worker.py`; the saved indexes on disk: `refresh_saves.py`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from rag_e2e.lightning.refresh_saves import SavedIndexes
from rag_e2e.lightning.refresh_scope import RefreshScope
from rag_e2e.lightning.refresh_worker import RefreshWorker
from rag_e2e.retrieval.encoders import eval_mode
from rag_e2e.retrieval.index_base import Index
from rag_e2e.retrieval.refresh import BuildStats, IndexBuilder, snapshot_passage_tower, staleness
from rag_e2e.schedule import RefreshSchedule


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text)


class IndexRefreshCallback(L.Callback):
    """Owns the live index of `pl_module.rag`.

    Args:
        builder: encodes the corpus and builds an index.
        schedule: steps at which to refresh (ignored when mode is "off").
        mode: "off" (build once), "sync" or "async".
        probe: (q_ids, q_mask) of fixed probe questions for staleness.
        k: staleness cut-off (the retriever's k).
        index_dir: where the live index is saved (None: not saved, resume re-encodes).
        progress: show encoding progress bars.
        cpu_worker_threads: async on CPU: intra-op threads of the background encoder, its own (training keeps its
            threads); 0 leaves torch's setting. More would oversubscribe the cores training already uses.
        cpu_yield_threads: async on CPU: while the worker encodes, the training thread runs on its own thread count
            minus `cpu_worker_threads` (at least 1) and gets it back when the new index is swapped in.
        cpu_worker_nice: async on CPU: the worker thread's nice value (0: training's). Above 0 the encoder runs at a
            lower priority and takes the cycles training leaves; 19 (the default) measured best (README).
        scope: "full" (re-encode everything) or "partial" (`RefreshScope`).
        partial_fraction: partial: share of the corpus re-encoded per partial refresh.
        full_every: partial: every full_every-th refresh is a full rebuild (0: never).
        probe_share: partial: share of a partial refresh's budget spent on the random drift probe.
        audit: partial: also encode the whole corpus after each partial refresh (untimed, not installed) and log
            overlap@k of the patched index against that fresh one (`refresh/overlap_vs_full`): a benchmark's
            measure of what partial refresh leaves stale.
    """

    def __init__(self, builder: IndexBuilder, schedule: RefreshSchedule, mode: str = "off",
                 probe: tuple[torch.Tensor, torch.Tensor] | None = None, k: int = 5, index_dir: Path | None = None,
                 progress: bool = False, cpu_worker_threads: int = 1, cpu_yield_threads: bool = False,
                 cpu_worker_nice: int = 19, scope: str = "full",
                 partial_fraction: float = 0.1, full_every: int = 4, probe_share: float = 0.25, audit: bool = False):
        self.builder, self.schedule, self.mode, self.audit = builder, schedule, mode, audit
        self.scope = RefreshScope(len(builder.corpus), scope, partial_fraction, full_every, probe_share)
        self.probe, self.k, self.progress = probe, k, progress
        self.worker = RefreshWorker(cpu_worker_threads, cpu_yield_threads, cpu_worker_nice)  # async mode only
        self.corpus_fingerprint = builder.corpus_fingerprint
        self.saved = SavedIndexes(index_dir, self.corpus_fingerprint)  # the live index on disk, for checkpoints
        self.version = 0  # 0 = the index built from the initial passage tower
        self.index_step = 0  # training step of the passage-tower weights the live index was encoded with
        self.encoder_fingerprint: str | None = None
        self.history: list[dict] = []  # one record per refresh (also logged)
        self.skipped = 0  # async refreshes not started because the previous one was still running
        self._restored: dict | None = None
        self._world_size = 1  # saved indexes are per-rank shards: reloadable only under the same world size
        self._initial_embeddings: Path | None = None  # the initial encoding's memmap: kept, other runs may reuse it
        self._live_embeddings: Path | None = None  # the memmap the live index searches

    @property
    def in_flight(self) -> bool:
        """An async refresh is encoding now (training steps overlap it)."""
        return self.worker.in_flight

    # ---- building and swapping ------------------------------------------------------------------------------------
    def _build(self, trainer: L.Trainer, encoder) -> tuple[Index, BuildStats]:
        return self.builder.build(encoder, rank=trainer.global_rank, world_size=trainer.world_size,
                                  progress=self.progress)

    def _build_refresh(self, trainer: L.Trainer, pl_module, encoder, version: int, step: int, hits: torch.Tensor,
                       full: bool = False, audit: bool = True) -> tuple[Index, BuildStats, dict]:
        """Refresh number `version`: a full build, or a partial one from the live index and `hits`. The dict holds
        what the record logs beyond the build's cost (rows, drift; overlap_vs_full when auditing)."""
        if full or not self.scope.partial_due(version):
            index, stats = self._build(trainer, encoder)
            return index, stats, {"partial": 0.0, "rows": float(stats.passages), "_rows": None}
        index, stats, chosen, info = self.builder.build_partial(
            encoder, pl_module.rag.index, hits, fraction=self.scope.partial_fraction,
            probe_share=self.scope.probe_share, seed=trainer.global_rank * 1_000_003 + version,
            previous_fingerprint=self.encoder_fingerprint or "")
        info = {"partial": 1.0, **info, "_rows": chosen.rows}
        if audit and self.audit and self.probe is not None:  # staleness against a full re-encode, after and before
            fresh, _ = self._build(trainer, encoder)
            probe = self._probe_reps(pl_module)
            info["overlap_vs_full"] = staleness(index, fresh, probe, self.k)["overlap"]
            info["stale_overlap_vs_full"] = staleness(pl_module.rag.index, fresh, probe, self.k)["overlap"]
        return index, stats, info

    def _discard(self, embeddings_path: Path | None) -> None:
        """Remove an encoding no index searches any more (never the initial one, which other runs may reuse)."""
        if embeddings_path not in (None, self._initial_embeddings, self._live_embeddings):
            self.builder.discard(embeddings_path)

    def _install(self, trainer: L.Trainer, pl_module, index: Index, stats: BuildStats, step: int,
                 log: bool = True, saved: str | None = None, info: dict | None = None) -> None:
        """Make `index` live: measure staleness against the old one, swap, save (unless the worker did), log."""
        old = pl_module.rag.index
        info = dict(info or {})
        rows = info.pop("_rows", None)
        record = {"version": self.version + 1, "step": trainer.global_step, "encoder_step": step,
                  "lag_steps": trainer.global_step - step, "wall_s": stats.wall_s,
                  "passages_per_s": stats.passages_per_s, **info}
        if old is not None and self.probe is not None:
            record.update(staleness(old, index, self._probe_reps(pl_module), self.k))
        record["fresh_fraction"] = self.scope.mark_encoded(rows, step)
        pl_module.swap_index(index)
        previous, self._live_embeddings = self._live_embeddings, stats.embeddings_path
        self._discard(previous)  # its memmap, if any, is no longer searched
        self.version, self.index_step, self.encoder_fingerprint = self.version + 1, step, stats.encoder_fingerprint
        self.saved.keep(saved if saved is not None else self.saved.save(trainer.global_rank, trainer.world_size,
                                                                        index, stats, self.version, step))
        self.history.append(record)
        if log:  # Lightning allows self.log in batch hooks, not in on_train_start / on_train_end
            for name, value in record.items():
                pl_module.log(f"refresh/{name}", float(value), rank_zero_only=True, batch_size=1)

    @torch.no_grad()
    def _probe_reps(self, pl_module) -> torch.Tensor:
        q_ids, q_mask = (t.to(pl_module.device) for t in self.probe)
        with eval_mode(pl_module.rag.encoder) as encoder:
            return encoder.encode_query(q_ids, q_mask)

    def _ensure_index(self, trainer: L.Trainer, pl_module) -> None:
        if pl_module.rag.index is None:
            index, stats = self._build(trainer, pl_module.rag.encoder)
            pl_module.swap_index(index)
            self.encoder_fingerprint = stats.encoder_fingerprint
            self._initial_embeddings = self._live_embeddings = stats.embeddings_path

    # ---- Lightning hooks ------------------------------------------------------------------------------------------
    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._ensure_index(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        self._ensure_index(trainer, pl_module)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._world_size = trainer.world_size
        self.scope.check(self.mode, trainer.world_size, self.builder.embeddings_dir)
        self.scope.count_hits(pl_module)
        if self.mode == "async":
            self.worker.start()
        if self._restored is not None:
            if not self._restore(trainer, pl_module):  # no usable saved index: encode the restored tower again
                self._rebuild(trainer, pl_module)
            elif self.mode != "off" and self.schedule.last_due(trainer.global_step) > self.index_step:
                self._refresh_now(trainer, pl_module)  # due (or in flight) when the checkpoint was written: redo
            return
        self._ensure_index(trainer, pl_module)
        if self.saved.path is None:
            self.saved.keep(self.saved.save(trainer.global_rank, trainer.world_size, pl_module.rag.index,
                                            BuildStats(0, 0.0, 0.0, self.encoder_fingerprint or ""), self.version,
                                            self.index_step))

    def _restore(self, trainer: L.Trainer, pl_module) -> bool:
        """Reload the index that was live at the checkpoint; False when it is missing or does not match."""
        state, self._restored = self._restored, None
        self.history, self.skipped = state.get("history", []), state.get("skipped", 0)
        self.version, self.index_step = state["version"], state["index_step"]
        self.scope.load_state_dict(state, self.index_step)
        self._initial_embeddings = _path(state.get("initial_embeddings"))
        self._live_embeddings = _path(state.get("live_embeddings"))
        path = state.get("index_path")
        self.saved.restore(path, state.get("checkpointed", []))
        if path is None or state.get("world_size") != trainer.world_size:
            return False
        loaded = self.saved.load(path, state["encoder_fingerprint"])
        if loaded is None:
            return False
        local, meta = loaded
        self.encoder_fingerprint = meta.encoder_fingerprint
        pl_module.swap_index(self.builder.shard_index(local, trainer.global_rank, trainer.world_size))
        return True

    def _rebuild(self, trainer: L.Trainer, pl_module) -> None:
        """The checkpoint's live index again, from the restored tower: the same version, not a new refresh."""
        index, stats = self._build(trainer, pl_module.rag.encoder)
        pl_module.swap_index(index)
        self.encoder_fingerprint, self._live_embeddings = stats.encoder_fingerprint, stats.embeddings_path
        self.saved.path = None
        self.saved.keep(self.saved.save(trainer.global_rank, trainer.world_size, index, stats, self.version,
                                        self.index_step))

    def _refresh_now(self, trainer: L.Trainer, pl_module, log: bool = False, full: bool = False) -> None:
        hits = self.scope.take_hits(pl_module)
        index, stats, info = self._build_refresh(trainer, pl_module, pl_module.rag.encoder, self.version + 1,
                                                 trainer.global_step, hits, full=full)
        self._install(trainer, pl_module, index, stats, trainer.global_step, log=log, info=info)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if not self.worker.in_flight:
            return
        # Every rank swaps at the same step, or their collective searches would mix index versions.
        if trainer.strategy.reduce_boolean_decision(self.worker.done(), all=True):
            (index, stats, saved, info), step = self.worker.collect()
            self._install(trainer, pl_module, index, stats, step, saved=saved, info=info)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.mode == "off" or not self.schedule.due(step):
            return
        if self.mode == "sync":
            self._refresh_now(trainer, pl_module, log=True)
            return
        if self.worker.in_flight:  # the previous refresh is still encoding: skip this one, do not queue
            self.skipped += 1
            pl_module.log("refresh/skipped", float(self.skipped), rank_zero_only=True, batch_size=1)
            return
        snapshot = snapshot_passage_tower(pl_module.rag.encoder)
        hits = self.scope.take_hits(pl_module)
        self.worker.submit(self._build_async, trainer, pl_module, snapshot, self.version + 1, step, hits,
                           device=pl_module.device, step=step)

    def _build_async(self, encoding, trainer: L.Trainer, pl_module, snapshot, version: int, step: int,
                     hits: torch.Tensor) -> tuple[Index, BuildStats, str | None, dict]:
        """Encode, build and save in the worker thread; the training thread only swaps the result in. (A partial
        refresh reads the live index, which only the training thread replaces, after this returns; no audit here:
        it would run the live query tower in this thread.)"""
        with encoding():  # on CPU: the worker's cores; on CUDA: a side stream, once the snapshot copy has finished
            index, stats, info = self._build_refresh(trainer, pl_module, snapshot, version, step, hits, audit=False)
        saved = self.saved.save(trainer.global_rank, trainer.world_size, index, stats, version, step)
        return index, stats, saved, info

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self.worker.in_flight:  # let the in-flight refresh finish
            (index, stats, saved, info), step = self.worker.collect()
            if step == trainer.global_step and not info.get("partial"):  # the final tower, fully: use it
                self._install(trainer, pl_module, index, stats, step, log=False, saved=saved, info=info)
            else:  # superseded by the final refresh below: drop what it wrote
                self._discard(stats.embeddings_path)
                self.saved.drop(saved)
        self.worker.shutdown()
        # Evaluate with an index that matches the final passage tower (in full, whatever the scope).
        if self.mode != "off" and (self.index_step < trainer.global_step or self.scope.patched(self.index_step)):
            self._refresh_now(trainer, pl_module, full=True)
        self.saved.prune([])  # training is over: only the live index stays

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        self.worker.take_back_threads()  # on_train_end will not run: do not leave training on its reduced count

    def state_dict(self) -> dict:  # called as each checkpoint is written
        self.saved.on_checkpoint()
        return {"version": self.version, "index_step": self.index_step, "index_path": self.saved.path,
                "encoder_fingerprint": self.encoder_fingerprint, "world_size": self._world_size,
                "history": self.history, "skipped": self.skipped, "corpus_fingerprint": self.corpus_fingerprint,
                "initial_embeddings": _str(self._initial_embeddings), "live_embeddings": _str(self._live_embeddings),
                **self.scope.state_dict(),
                "checkpointed": list(self.saved.checkpointed)}  # saved indexes that checkpoints on disk may name

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = dict(state_dict)
