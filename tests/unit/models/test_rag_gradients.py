"""The generator's marginal loss reaches the retriever towers that train in each mode, and no others."""

import lightning as L
import pytest
import torch
from helpers import assemble_with_index, tiny_config

from rag_e2e.losses import OBJECTIVES, rag_sequence_nll
from rag_e2e.train import assemble, build_trainer


def _one_step(module, datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    batch = batch["rag"] if isinstance(batch, dict) else batch
    terms, out = module.objective_terms(batch)
    terms.total.mean().backward()
    return terms.reader, out.retrieved


@pytest.mark.parametrize("loss", ["sequence", "token"])
def test_query_encoder_receives_gradient(loss):
    parts = assemble_with_index(f"model.loss={loss}")
    nll, ret = _one_step(parts.module, parts.datamodule)
    assert torch.isfinite(nll).all() and ret.doc_scores.shape == ret.rows.shape
    grads = [p.grad for p in parts.module.rag.encoder.query_model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    # the index vectors are constants in this stage: the passage tower must not learn
    assert all(not p.requires_grad for p in parts.module.rag.encoder.passage_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.module.rag.generator.parameters())


def test_frozen_query_encoder_gets_no_gradient_and_no_optimizer_group():
    parts = assemble_with_index("retriever.freeze_query_encoder=true")
    _one_step(parts.module, parts.datamodule)
    assert all(p.grad is None for p in parts.module.rag.encoder.query_model.parameters())
    optimizer = parts.module.configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 1  # the generator only


def test_doc_scores_equal_query_times_index_vectors():
    parts = assemble_with_index()
    rag = parts.module.rag.eval()  # no dropout, so two encodings of a query agree
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    q = rag.encoder.encode_query(batch.q_ids, batch.q_mask).double()
    ref = torch.einsum("bd,bkd->bk", q, rag.index.p_reps.double()[ret.rows])
    torch.testing.assert_close(ret.doc_scores.double(), ref, rtol=1e-5, atol=1e-5)  # fp32 vs fp64
    full = q @ rag.index.p_reps.double().T
    assert torch.equal(ret.rows, full.topk(3, dim=1).indices) or torch.allclose(
        full.gather(1, ret.rows), full.topk(3, dim=1).values, atol=1e-5)


def _grad_norm(module) -> float:
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("loss", ["sequence", "token"])
def test_end_to_end_trains_both_towers_with_their_own_lr(loss):
    parts = assemble_with_index(f"model.loss={loss}", "retriever.train_passage_encoder=true", "refresh=stale",
                                "model.passage_lr=3e-5")
    _one_step(parts.module, parts.datamodule)
    encoder = parts.module.rag.encoder
    assert _grad_norm(encoder.query_model) > 0 and _grad_norm(encoder.passage_model) > 0
    groups = parts.module.configure_optimizers()["optimizer"].param_groups
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-4, 3e-5]  # generator, query tower, passage tower
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in encoder.passage_model.parameters()}


def test_fresh_doc_scores_come_from_the_current_passage_tower():
    parts = assemble_with_index("retriever.train_passage_encoder=true", "refresh=stale")
    rag = parts.module.rag.eval()
    with torch.no_grad():  # move the passage tower away from the weights the index was built with
        for p in rag.encoder.passage_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    q = rag.encoder.encode_query(batch.q_ids, batch.q_mask).double()
    fresh = rag.encode_rows(ret.rows).double()  # (B, k, d) from the moved tower
    ref = torch.einsum("bd,bkd->bk", q, fresh)
    torch.testing.assert_close(ret.doc_scores.double(), ref, rtol=1e-5, atol=1e-5)
    assert (ret.doc_scores[:, :-1] >= ret.doc_scores[:, 1:]).all()  # re-sorted best first
    stale = torch.einsum("bd,bkd->bk", q, rag.index.p_reps.double()[ret.rows])
    assert not torch.allclose(ref, stale, atol=1e-3)


def test_fresh_passage_vectors_match_the_index_while_the_tower_is_unchanged():
    # Training mode (dropout on in the query tower): the in-graph passage vectors are encoded without dropout, as
    # the index was, so before the tower learns anything fresh doc scores are the query-side ones.
    parts = assemble_with_index("retriever.train_passage_encoder=true", "refresh=stale")
    rag = parts.module.rag.train()
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    fresh = rag.encode_rows(ret.rows).double()  # (B, k, d)
    torch.testing.assert_close(fresh, rag.index.p_reps.double()[ret.rows], rtol=1e-5, atol=1e-5)
    assert rag.encoder.passage_model.training  # eval mode was only for the encoding
    assert ret.doc_scores.requires_grad


def test_rerank_keeps_the_best_k_of_k_prime_under_the_current_towers():
    parts = assemble_with_index("retriever.rerank_candidates=12")
    rag = parts.module.rag.eval()
    with torch.no_grad():
        for p in rag.encoder.passage_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    q = rag.encoder.encode_query(batch.q_ids, batch.q_mask).double()
    _, candidates = rag.index.search(q.float(), 12)  # the stale index's k' candidates
    fresh = torch.einsum("bd,bkd->bk", q, rag.encode_rows(candidates).double())  # (B, 12)
    best = fresh.topk(3, dim=1)
    torch.testing.assert_close(ret.doc_scores.double(), best.values, rtol=1e-5, atol=1e-5)
    assert torch.equal(ret.rows, candidates.gather(1, best.indices))
    assert all(not p.requires_grad for p in rag.encoder.passage_model.parameters())  # rerank alone: query side


@pytest.mark.parametrize("ready", [None, 0.5])
def test_passage_tower_waits_for_the_running_train_recall(tmp_path, monkeypatch, ready):
    # Retrieval "misses" every gold for 3 steps, then finds each: the running recall (EMA, 0.9) is 0, 0, 0, 0.1,
    # 0.19, ..., 0.469 at step 8 and 0.522 at step 9, so with a 0.5 gate the passage tower's rate is 0 through step
    # 9 and on from step 10. Both towers get gradients throughout (fresh doc scores are in-graph), so only the gate
    # can keep the passage weights unchanged; with no gate (None) they move from the first step.
    cfg = tiny_config("retriever=end2end", "refresh=stale", "model.reader_warmup_steps=0", "model.passage_lr=1e-3",
                      "trainer.max_steps=12", "trainer.val_check_interval=100", "eval.ks=[1,3]",
                      *([] if ready is None else [f"model.passage_ready_recall={ready}"]))
    parts = assemble(cfg, progress=False)
    module = parts.module
    monkeypatch.setattr(type(module), "_ranks", lambda self, batch, rows: [
        None if self.global_step < 3 else 1 for _ in batch.examples])
    tower, query = module.rag.encoder.passage_model, module.rag.encoder.query_model
    before = {name: p.detach().clone() for name, p in tower.named_parameters()}
    query_before = {name: p.detach().clone() for name, p in query.named_parameters()}
    moved, query_moved = [], []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            moved.append(any(not torch.equal(p, before[n]) for n, p in tower.named_parameters()))
            query_moved.append(any(not torch.equal(p, query_before[n]) for n, p in query.named_parameters()))

    trainer = build_trainer(cfg, tmp_path, parts.refresh, progress=False, log=False)
    trainer.callbacks.append(Watch())
    trainer.fit(module, datamodule=parts.datamodule)
    assert module.rag_start_step == 0 and all(query_moved)  # the query tower trains from the first step
    if ready is None:
        assert all(moved) and module.passage_start_step is None
    else:
        assert module.passage_start_step == 9
        assert moved == [False] * 10 + [True] * 2


def test_read_gold_reads_each_questions_gold_passage_with_prior_one():
    parts = assemble_with_index("retriever.read_gold=true", "generator.train=true")
    rag = parts.module.rag.eval()  # no dropout: the two reader passes below must agree
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    read = rag.to_read(ret, batch.examples, rag.k)
    assert read.rows.shape == (len(batch.examples), 1)
    assert [rag.corpus[r].pid for r in read.rows[:, 0].tolist()] == [ex.gold_pids[0] for ex in batch.examples]
    terms, out = parts.module.objective_terms(batch)
    nll, used = terms.reader, out.retrieved
    assert torch.equal(used.rows, read.rows) and rag.k == 1
    gold = [rag.corpus[r] for r in read.rows[:, 0].tolist()]
    reader_nll = rag.reader_nll([p.title for p in gold], [p.text for p in gold], batch.questions,
                                [ex.answers[0] for ex in batch.examples])
    torch.testing.assert_close(nll, reader_nll)  # one passage with prior 1: the marginal is the reader's NLL


@pytest.mark.parametrize("loss", sorted(OBJECTIVES))
def test_every_objective_trains_the_query_encoder_and_the_reader_through_the_module(loss):
    parts = assemble_with_index(f"model.loss={loss}", "retriever.k=3")
    batch = next(iter(parts.datamodule.train_dataloader()))
    batch = batch["rag"] if isinstance(batch, dict) else batch
    terms, out = parts.module.objective_terms(batch)
    assert terms.reader.shape == terms.retriever.shape == (len(batch.examples),)
    assert torch.isfinite(terms.total).all() and out.scores.token_ll.shape[:2] == out.retrieved.rows.shape
    terms.total.mean().backward()
    assert _grad_norm(parts.module.rag.encoder.query_model) > 0
    assert _grad_norm(parts.module.rag.generator) > 0


def test_label_smoothing_reads_full_distributions_and_matches_the_logits_loss():
    parts = assemble_with_index("model.label_smoothing=0.1", "retriever.k=3")
    rag = parts.module.rag.eval()
    batch = next(iter(parts.datamodule.val_dataloader()))
    terms, out = parts.module.objective_terms(batch)
    assert out.scores.token_logprobs is not None
    k = out.retrieved.rows.shape[1]
    pairs = rag.pairs(batch.questions, out.retrieved.rows)
    logits = rag.reader.answer_logits(pairs, batch.labels.repeat_interleave(k, 0), rag.max_source_length)
    want = rag_sequence_nll(logits, out.retrieved.doc_scores, batch.labels, k, temperature=rag.temperature,
                            epsilon=0.1)
    torch.testing.assert_close(terms.reader, want, rtol=1e-6, atol=1e-6)
