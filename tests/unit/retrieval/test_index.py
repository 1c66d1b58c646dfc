"""Exact and FAISS flat indexes return the float64 top-k."""

import pytest
import torch

from rag_e2e.retrieval.index import build_index


@pytest.mark.parametrize("kind", ["exact", "faiss_flat"])
@pytest.mark.parametrize(("n", "d", "k"), [(97, 33, 5), (10, 8, 10), (300, 64, 1)])
def test_search_matches_float64_reference(kind, n, d, k):
    p_reps, q_reps = torch.randn(n, d), torch.randn(7, d)
    index = build_index(kind, p_reps)
    scores, rows = index.search(q_reps, k)
    ref = q_reps.double() @ p_reps.double().T  # (7, n)
    ref_scores = ref.topk(k, dim=1).values
    assert scores.dtype == torch.float32 and rows.dtype == torch.int64 and rows.shape == (7, k)
    torch.testing.assert_close(scores.double(), ref_scores, rtol=1e-5, atol=1e-5)  # fp32 accumulation
    torch.testing.assert_close(ref.gather(1, rows), ref_scores, rtol=1e-5, atol=1e-5)  # right rows, ties aside
    assert torch.equal(index.gather(rows), p_reps[rows])


@pytest.mark.parametrize("kind", ["exact", "faiss_flat"])
def test_k_larger_than_corpus_is_refused(kind):
    index = build_index(kind, torch.randn(4, 8))
    with pytest.raises(ValueError, match="k=5"):
        index.search(torch.randn(2, 8), 5)


def test_empty_corpus_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        build_index("exact", torch.zeros(0, 8))
