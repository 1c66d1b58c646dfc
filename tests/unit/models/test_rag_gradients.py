"""The generator's marginal loss reaches the query encoder; the freeze flag stops it."""

import pytest
import torch
from helpers import tiny_config

from rag_e2e.train import assemble


def _one_step(module, datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    batch = batch["rag"] if isinstance(batch, dict) else batch
    nll, ret = module.rag(batch.q_ids, batch.q_mask, batch.questions, batch.labels)
    nll.mean().backward()
    return nll, ret


@pytest.mark.parametrize("loss", ["sequence", "token"])
def test_query_encoder_receives_gradient(loss):
    parts = assemble(tiny_config(f"model.loss={loss}"), progress=False)
    nll, ret = _one_step(parts.module, parts.datamodule)
    assert torch.isfinite(nll).all() and ret.doc_scores.shape == ret.rows.shape
    grads = [p.grad for p in parts.module.rag.encoder.query_model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum().item() for g in grads) > 0
    # the index vectors are constants in this stage: the passage tower must not learn
    assert all(not p.requires_grad for p in parts.module.rag.encoder.passage_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.module.rag.generator.parameters())


def test_frozen_query_encoder_gets_no_gradient_and_no_optimizer_group():
    parts = assemble(tiny_config("retriever.freeze_query_encoder=true"), progress=False)
    _one_step(parts.module, parts.datamodule)
    assert all(p.grad is None for p in parts.module.rag.encoder.query_model.parameters())
    optimizer = parts.module.configure_optimizers()["optimizer"]
    assert len(optimizer.param_groups) == 1  # the generator only


def test_doc_scores_equal_query_times_index_vectors():
    parts = assemble(tiny_config(), progress=False)
    rag = parts.module.rag.eval()  # no dropout, so two encodings of a query agree
    batch = next(iter(parts.datamodule.val_dataloader()))
    ret = rag.retrieve(batch.q_ids, batch.q_mask, 3)
    q = rag.encoder.encode_query(batch.q_ids, batch.q_mask).double()
    ref = torch.einsum("bd,bkd->bk", q, rag.index.p_reps.double()[ret.rows])
    torch.testing.assert_close(ret.doc_scores.double(), ref, rtol=1e-5, atol=1e-5)  # fp32 vs fp64
    full = q @ rag.index.p_reps.double().T
    assert torch.equal(ret.rows, full.topk(3, dim=1).indices) or torch.allclose(
        full.gather(1, ret.rows), full.topk(3, dim=1).values, atol=1e-5)
