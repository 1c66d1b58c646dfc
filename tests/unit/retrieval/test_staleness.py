"""Staleness between a live index and a fresh one: overlap@k and score drift."""

import torch

from rag_e2e.retrieval.index import build_index
from rag_e2e.retrieval.refresh import staleness


def test_identical_indexes_have_full_overlap_and_no_drift():
    p_reps = torch.randn(300, 16)
    out = staleness(build_index("exact", p_reps), build_index("exact", p_reps.clone()), torch.randn(20, 16), 5)
    assert out == {"overlap": 1.0, "score_drift": 0.0}


def test_moved_vectors_lower_overlap_and_drift_matches_float64():
    p_old, q = torch.randn(300, 16), torch.randn(20, 16)
    p_new = p_old + 0.5 * torch.randn(300, 16)
    out = staleness(build_index("exact", p_old), build_index("exact", p_new), q, 5)
    old, new = (q.double() @ p.double().T for p in (p_old, p_new))  # (20, 300) references
    old_top, new_top = old.topk(5, dim=1), new.topk(5, dim=1)
    overlap = sum(len(set(a) & set(b)) for a, b in zip(old_top.indices.tolist(), new_top.indices.tolist())) / 100
    assert 0.0 < out["overlap"] < 1.0 and abs(out["overlap"] - overlap) < 1e-9
    drift = (old_top.values - new_top.values).abs().mean().item()
    assert abs(out["score_drift"] - drift) < 1e-5  # fp32 scores
