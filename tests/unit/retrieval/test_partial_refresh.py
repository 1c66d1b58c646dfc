"""Partial refresh: which rows it re-encodes, that the patch equals a full re-encode of them, and the fingerprint."""

import secrets

import pytest
import torch
from helpers import assemble_with_index

from rag_e2e.retrieval import partial_refresh


@pytest.fixture
def seed() -> int:
    value = secrets.randbits(31)
    torch.manual_seed(value)
    return value


def _fake_encoder(new: torch.Tensor, calls: list):
    def encode_rows(rows):
        calls.append(rows.clone())
        return new[rows].clone()

    return encode_rows


def test_plan_spends_the_budget_retrieved_first_then_probe_then_predicted_drift(seed):
    n, d = 200, 16
    # Two groups in orthogonal subspaces (so every row's nearest probe is in its own group): rows 0-149 around one
    # direction in dims 4-15, which do not move; rows 150-199 around one in dims 0-3, which all move. The probe sees
    # part of the moving group, so prediction should pick the rest of it.
    old, cluster = torch.zeros(n, d), torch.arange(150, 200)
    old[:150, 4:] = 3 + torch.randn(150, 12)
    old[150:, :4] = 5 * torch.randn(1, 4) + 0.1 * torch.randn(50, 4)
    new = old.clone()
    new[cluster, :4] += 3 * torch.randn(1, 4)
    hits = torch.zeros(n, dtype=torch.int64)
    hits[[3, 7, 9]] = torch.tensor([1, 5, 5])
    calls = []
    chosen, vecs, stats = partial_refresh.plan(hits, old, 0.2, 0.5, torch.Generator().manual_seed(seed),
                                               _fake_encoder(new, calls))
    rows = chosen.rows
    assert rows.numel() == 40 == rows.unique().numel(), f"seed={seed}"  # ceil(0.2 * 200), no row twice
    assert chosen.retrieved.tolist() == [7, 9, 3]  # most retrieved first, ties by row
    assert chosen.probe.numel() == 20 and not set(chosen.probe.tolist()) & {3, 7, 9}
    assert torch.equal(vecs, new[rows])  # every chosen row is encoded, in plan order
    assert sum(c.numel() for c in calls) == 40  # and nothing else
    # Predicted rows: the unprobed members of the drifting cluster come first whenever the probe touched it.
    probed_cluster = set(chosen.probe.tolist()) & set(cluster.tolist())
    if probed_cluster:
        expected = min(chosen.predicted.numel(), 50 - len(probed_cluster))
        assert set(chosen.predicted[:expected].tolist()) <= set(cluster.tolist()), f"seed={seed}"
    assert stats["rows"] == 40 and stats["retrieved_rows"] == 3


def test_more_hits_than_budget_keeps_the_most_retrieved_and_the_probe(seed):
    hits = torch.randint(1, 50, (100,))
    old, calls = torch.randn(100, 8), []
    chosen, _, _ = partial_refresh.plan(hits, old, 0.1, 0.25, torch.Generator().manual_seed(seed),
                                        _fake_encoder(old, calls))
    # Budget ceil(0.1 * 100) = 10: the probe keeps its round(0.25 * 10) = 2 rows, retrieved rows take the other 8.
    assert chosen.retrieved.numel() == 8 and chosen.probe.numel() == 2 and chosen.predicted.numel() == 0
    top = torch.sort(hits, descending=True, stable=True).indices[: chosen.retrieved.numel()]
    assert torch.equal(chosen.retrieved, top)


def test_patched_index_equals_a_full_reencode_of_those_rows_and_leaves_the_rest(seed):
    parts = assemble_with_index()
    builder, rag = parts.refresh.builder, parts.module.rag
    live = rag.index
    stale = live.p_reps.clone()
    with torch.no_grad():  # move the passage tower, as training would
        for p in rag.encoder.passage_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    full = builder.encode(rag.encoder)  # (N, d): a full refresh's vectors
    hits = torch.zeros(live.size, dtype=torch.int64)
    hits[torch.randperm(live.size)[:3]] = 1
    index, stats, chosen, _ = builder.build_partial(rag.encoder, live, hits, fraction=0.25, probe_share=0.25,
                                                    seed=seed, previous_fingerprint="base")
    rows = chosen.rows
    untouched = torch.ones(live.size, dtype=torch.bool)
    untouched[rows] = False
    assert stats.passages == rows.numel() == -(-live.size // 4)
    # Batches of other passages pad differently: equal to a full re-encode up to fp32 rounding.
    torch.testing.assert_close(index.p_reps[rows], full[rows], rtol=1e-5, atol=1e-6)
    assert torch.equal(index.p_reps[untouched], stale[untouched])  # bit for bit
    assert torch.equal(live.p_reps, stale)  # the live index is not modified
    assert not torch.allclose(full[untouched], stale[untouched])  # the tower did move: the check has teeth


def test_fingerprint_names_the_tower_and_the_exact_rows():
    rows = torch.tensor([5, 1, 9])
    fp = partial_refresh.patched_fingerprint("base", "tower", rows)
    assert fp == partial_refresh.patched_fingerprint("base", "tower", torch.tensor([9, 5, 1]))  # a set of rows
    assert fp != partial_refresh.patched_fingerprint("base", "tower", torch.tensor([5, 1, 8]))
    assert fp != partial_refresh.patched_fingerprint("base", "other", rows)
    assert fp != partial_refresh.patched_fingerprint("other", "tower", rows)
