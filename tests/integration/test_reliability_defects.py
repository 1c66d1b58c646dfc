"""The defects of the reliability review (issue #16), one test each (or more), each failing on the code before its fix.

Numbers refer to the review's list. Defects 3 (config side), 7 and 9 are config checks, tested with the other bad
overrides in tests/unit/config/test_compose.py; 8 (exact resume) has its kill -9 tests in test_kill_resume.py.
"""

import json
import os
import threading

import lightning as L
import numpy as np
import pytest
import torch
from helpers import DDP_CPU, TINY, tiny_config, train_in_subprocess

from rag_e2e.errors import ConfigError
from rag_e2e.lightning import refresh_saves
from rag_e2e.retrieval.index import state_fingerprint
from rag_e2e.train import assemble, build_trainer

FAST = ["trainer.val_check_interval=100", "model.reader_warmup_steps=0", "eval.ks=[1,3]", "retriever.k=3"]


def _fit(cfg, run_dir, callbacks=(), parts=None):
    parts = parts or assemble(cfg, progress=False, run_dir=run_dir)
    trainer = build_trainer(cfg, run_dir, parts.refresh, progress=False, log=False)
    trainer.callbacks.extend(callbacks)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts, trainer


def _record_builds(parts, gate_worker_call: int | None = None, gate: threading.Event | None = None):
    """Wrap the builder: record every build's stats; hold the `gate_worker_call`-th worker-thread build at the gate."""
    builds, original = [], parts.refresh.builder.build

    def build(encoder, **kwargs):
        in_worker = threading.current_thread().name.startswith("index-refresh")
        if in_worker and gate is not None and sum(b[0] for b in builds) + 1 == gate_worker_call:
            assert gate.wait(120)
        index, stats = original(encoder, **kwargs)
        builds.append((in_worker, stats))
        return index, stats

    parts.refresh.builder.build = build
    return builds


# ---- 1. async refresh with index.embeddings_dir -------------------------------------------------------------------
def test_async_refresh_in_flight_at_the_end_and_a_second_run_share_one_embeddings_dir(tmp_path):
    """Was: the final refresh reused the dropped async build's `v{n}` directory and died on its fingerprint; and the
    first refresh deleted `v0`, the initial encoding another run could reuse."""
    emb = tmp_path / "emb"
    overrides = [*FAST, "retriever=end2end", "refresh=async", "refresh.schedule=10", "trainer.max_steps=11",
                 "model.passage_lr=1e-2", f"index.embeddings_dir={emb}"]
    cfg = tiny_config(*overrides)
    parts = assemble(cfg, progress=False, run_dir=tmp_path / "a")
    gate = threading.Event()
    builds = _record_builds(parts, gate_worker_call=1, gate=gate)

    class OpenGateAtLastStep(L.Callback):  # the step-10 snapshot is still encoding when training ends
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 11:
                gate.set()

    _, trainer = _fit(cfg, tmp_path / "a", [OpenGateAtLastStep()], parts=parts)
    assert trainer.global_step == 11
    initial, dropped, final = (stats.embeddings_path for _, stats in builds)
    assert [in_worker for in_worker, _ in builds] == [False, True, False]
    assert len({initial, dropped, final}) == 3  # three towers, three directories
    assert sorted(p.name for p in emb.iterdir()) == sorted([initial.name, final.name])  # the dropped one is gone
    tower = parts.module.rag.encoder.passage_model
    assert parts.refresh.encoder_fingerprint == state_fingerprint(tower)  # test searched the final tower's index

    # A second run with the same seed and directory reuses the initial encoding: not one vector is re-encoded.
    stamp = (initial / "embeddings.npy").stat().st_mtime_ns
    cfg2 = tiny_config(*overrides[:-4], "refresh=sync", "refresh.schedule=100", "trainer.max_steps=2",
                       f"index.embeddings_dir={emb}")
    parts2 = assemble(cfg2, progress=False, run_dir=tmp_path / "b")
    calls = []
    parts2.refresh.builder._encode_memmap = lambda *a, _orig=parts2.refresh.builder._encode_memmap: (
        calls.append(a[2]), _orig(*a))[1]
    _fit(cfg2, tmp_path / "b", parts=parts2)
    assert calls[0] == initial and (initial / "embeddings.npy").stat().st_mtime_ns == stamp


# ---- 2. end-to-end validation retrieves what the index retrieves --------------------------------------------------
def test_evaluation_retrieves_what_the_index_retrieves_not_a_rerank_by_the_live_tower(tmp_path):
    """Was: with fresh passage vectors, validation re-sorted the stale index's top-k by the live passage tower."""
    parts = assemble(tiny_config("retriever=end2end", "refresh=sync", "eval.ks=[1,5]"), progress=False)
    rag = parts.module.eval().rag  # as Lightning's evaluation loop runs it
    index, _ = parts.refresh.builder.build(rag.encoder)
    parts.module.swap_index(index)
    torch.manual_seed(1)
    with torch.no_grad():  # the passage tower moves on after the build: the index is now stale
        for p in rag.encoder.passage_model.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp_min(1e-3))
    batch = parts.datamodule.collator(parts.datamodule.dev[:16])
    parts.module._eval_step(batch, answered=None)  # None: every question answered
    with torch.no_grad():
        scores, rows = index.search(rag.encoder.encode_query(batch.q_ids, batch.q_mask), 5)
    got = [rec["retrieved"] for rec in parts.module._records]
    assert got == [[rag.corpus[r].pid for r in row[: rag.k]] for row in rows.tolist()]
    np.testing.assert_allclose([rec["scores"] for rec in parts.module._records], scores[:, : rag.k].numpy(),
                               atol=1e-4)  # the index's scores (rounded to 4 places in the records)


# ---- 3. reader warm-up: no reader examples; DDP ------------------------------------------------------------------
def test_reader_warmup_without_reader_examples_is_refused(tmp_path):
    """Was: with no reader batches the warm-up returned a constant zero loss and backward raised."""
    qa = tmp_path / "qa.jsonl"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "title": f"t{i}", "text": f"passage {i} says {i}"}) + "\n"
                              for i in range(12)))
    qa.write_text("".join(json.dumps({"question": f"what does passage {i} say?", "answers": [str(i)],
                                      "gold_passage_ids": [f"p{i}"]}) + "\n" for i in range(12)))
    cfg = tiny_config("data=files", f"data.qa_path={qa}", f"data.corpus_path={corpus}", "model.reader_loss_weight=1",
                      "model.reader_warmup_steps=5", "trainer.max_steps=10")
    with pytest.raises(ConfigError, match=r"`model.reader_warmup_steps` trains the reader alone .* gives none"):
        assemble(cfg, progress=False)


@pytest.mark.distributed
def test_reader_warmup_under_ddp_with_two_gloo_processes(tmp_path):
    """Was: the warm-up leaves the retriever unused, which DDP (find_unused_parameters=False) rejects."""
    metrics = train_in_subprocess(*TINY, *FAST, *DDP_CPU, "model.reader_loss_weight=1", "model.reader_warmup_steps=3",
                                  "trainer.max_steps=6", "eval.before_training=false", f"run_dir={tmp_path / 'ddp'}")
    assert metrics["train/steps"] == 6 and metrics["train/rag_start_step"] == 3


# ---- 4. warm-up state in checkpoints ------------------------------------------------------------------------------
def test_warmup_running_averages_survive_a_checkpoint():
    """Was: `_reader_nll_ema` and `_recall_ema`, which decide when each phase starts, were lost on resume."""
    saved = assemble(tiny_config(), progress=False).module
    saved._reader_nll_ema, saved._recall_ema = float(torch.rand(())) + 0.5, float(torch.rand(()))
    checkpoint = {"state_dict": saved.state_dict()}
    saved.on_save_checkpoint(checkpoint)
    loaded = assemble(tiny_config(), progress=False).module
    loaded.on_load_checkpoint(checkpoint)
    assert (loaded._reader_nll_ema, loaded._recall_ema) == (saved._reader_nll_ema, saved._recall_ema)


# ---- 5. saving the index: no copy, not on the training thread -----------------------------------------------------
def test_saved_index_links_the_embeddings_and_async_saves_in_the_worker(tmp_path, monkeypatch):
    """Was: every refresh copied the whole index into <run>/index on the training thread, async mode included."""
    saves, original = [], refresh_saves.save_index

    def recording_save(index, path, meta):
        saves.append(threading.current_thread().name)
        return original(index, path, meta)

    monkeypatch.setattr(refresh_saves, "save_index", recording_save)
    emb = tmp_path / "emb"
    cfg = tiny_config(*FAST, "retriever=end2end", "refresh=async", "refresh.schedule=3", "trainer.max_steps=9",
                      "model.passage_lr=1e-2", f"index.embeddings_dir={emb}")
    parts, _ = _fit(cfg, tmp_path / "run")
    # the initial index is saved by the training thread at the start (and a final refresh after training would be);
    # every scheduled refresh (3, 6, 9; the last in flight at the end is used) is saved by the worker
    assert saves[0] == "MainThread" and len(saves) >= 3  # 4 unless one refresh was skipped (still running)
    assert all(name.startswith("index-refresh") for name in saves[1:])
    saved = os.stat(os.path.join(parts.refresh.saved.path, "vectors.npy"))
    live = os.stat(parts.refresh._live_embeddings / "embeddings.npy")
    assert (saved.st_ino, saved.st_dev) == (live.st_ino, live.st_dev)  # a hard link: no bytes copied


# ---- 6. FAISS on GPU: each rank its own device --------------------------------------------------------------------
def test_faiss_gpu_index_goes_to_this_process_device_only(monkeypatch):
    """Was: `index_cpu_to_all_gpus`, so every DDP rank put a copy of its shard on every GPU."""
    faiss = pytest.importorskip("faiss")
    from rag_e2e.retrieval import faiss_index
    from rag_e2e.retrieval.index import build_index

    calls = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 4, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda idx, *a, **k: calls.append("all") or idx,
                        raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, device, idx: calls.append(device) or idx,
                        raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)  # Lightning sets the rank's device
    monkeypatch.setattr(faiss_index, "_GPU_RESOURCES", {})
    p_reps = torch.randn(50, 8)
    built = build_index("faiss_flat", p_reps)
    assert calls == [2]
    scores, rows = built.search(p_reps[:3], 1)
    assert rows[:, 0].tolist() == (p_reps[:3] @ p_reps.T).argmax(1).tolist()


# ---- 7. k above what the corpus holds ----------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["retriever.k=121", "eval.ks=[1,121]", "retriever.rerank_candidates=125"])
def test_k_larger_than_the_corpus_is_one_error_naming_the_key(override):
    """Was: silently clamped to the corpus (k) or failed deep inside the search (eval.ks)."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"`{key}`=\d+ asks for more passages than the corpus holds \(120 in"):
        assemble(tiny_config(override), progress=False)


# ---- the catalogue's remaining rows --------------------------------------------------------------------------------
def test_nan_loss_stops_naming_the_step_and_the_batch():
    from helpers import assemble_with_index

    from rag_e2e.errors import TrainingDivergedError

    parts = assemble_with_index()
    with torch.no_grad():
        for p in parts.module.rag.generator.parameters():
            p.fill_(float("nan"))
    batch = next(iter(parts.datamodule.train_dataloader()))
    qids = [ex.qid for ex in batch.examples]
    with pytest.raises(TrainingDivergedError, match=r"^step 0: the training loss is nan on the batch of questions") \
            as err:
        parts.module.training_step(batch, 0)
    assert str(qids[:4])[1:-1] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["corpus", "questions"])
def test_an_empty_corpus_or_question_file_is_refused(tmp_path, kind):
    from rag_e2e.data.corpus import load_corpus
    from rag_e2e.data.qa import load_qa
    from rag_e2e.errors import DataFormatError

    path = tmp_path / f"{kind}.jsonl"
    path.write_text("\n\n")
    load, message = (load_corpus, "no passages") if kind == "corpus" else (load_qa, "no questions")
    with pytest.raises(DataFormatError, match=rf"^{path}: {message}"):
        load(path)


def test_a_corrupted_saved_index_is_one_error_naming_the_file(tmp_path):
    from rag_e2e.retrieval.index import IndexMeta, build_index, load_index, save_index
    from rag_e2e.retrieval.index_io import IndexMismatchError

    index = build_index("exact", torch.randn(10, 4))
    save_index(index, tmp_path / "ix", IndexMeta.for_index(index, corpus_fingerprint="c", encoder_fingerprint="e"))
    (tmp_path / "ix" / "vectors.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(IndexMismatchError, match=r"ix: vectors.npy contents mismatch") as err:
        load_index(tmp_path / "ix", corpus_fingerprint="c")
    assert "\n" not in str(err.value)


def test_a_gold_id_absent_from_the_corpus_is_one_error_naming_it(tmp_path):
    from rag_e2e.data.sources import load_data
    from rag_e2e.errors import DataFormatError

    corpus, qa = tmp_path / "c.jsonl", tmp_path / "q.jsonl"
    corpus.write_text(json.dumps({"id": "p1", "text": "one"}) + "\n")
    qa.write_text(json.dumps({"id": "q1", "question": "which?", "answers": ["one"], "gold_passage_ids": ["p9"]}) + "\n")
    cfg = tiny_config("data=files", f"data.qa_path={qa}", f"data.corpus_path={corpus}")
    with pytest.raises(DataFormatError, match=r"field 'gold_passage_ids': question q1 names passage id p9 not in"):
        load_data(cfg.data)
