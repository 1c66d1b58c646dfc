"""The distributed-search benchmark on 2 gloo ranks: what each search sends is exactly what the merge needs."""

import json

import pytest

from rag_e2e.benchmarks import distributed as bench

pytestmark = pytest.mark.distributed


def test_sharded_search_sends_queries_own_candidates_and_only_remote_vectors(tmp_path):
    out = tmp_path / "distributed.json"
    dim, k, batch, rounds = 16, 4, 3, 2
    assert bench.main(["n=500", f"dim={dim}", f"k={k}", f"batch={batch}", f"rounds={rounds}",
                                   f"out={out}"]) == 0
    result = json.loads(out.read_text())
    plain, with_vectors = result["methods"]["search"], result["methods"]["search_with_vectors"]
    for row in (plain, with_vectors):
        parts = row["by_purpose_per_query"]
        assert parts["queries"] == 4 * dim  # each query goes to the one other shard, as fp32
        assert parts["candidates"] == k * (4 + 8)  # the other shard's k (score, row) pairs, to the asking rank only
        assert parts["sizes"] == 2 * 5 * 8 / (2 * batch)  # the (B, k, d, start, end) check, per search call
    assert "vectors" not in plain["by_purpose_per_query"]  # search alone moves no vectors
    # search_with_vectors: each distinct remote result row is asked for (8 bytes) and sent once (4d bytes).
    remote_rows = with_vectors["by_purpose_per_query"]["vectors"] / (4 * dim)
    assert 0 < remote_rows <= k
    counts = 2 * 8 / (2 * batch)  # the per-rank request counts
    assert with_vectors["by_purpose_per_query"]["requests"] == pytest.approx(8 * remote_rows + counts)
