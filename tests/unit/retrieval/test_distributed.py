"""ShardedIndex over two gloo ranks returns what one process's exact search returns; merge_topk; shard_bounds.

Bitwise equality with one process needs the local index to give a (query, passage) pair the same fp32 bits whatever
the batch and shard shapes, since merging only moves scores. The raw kernel does not: MKL's sgemm (torch backend)
rounds small shapes differently, and the Triton interpreter's matmul rounds by position inside its tile. So the
raw-kernel tests use small-integer vectors (dot products exact in any order), and ExactIndex, which rescores its
candidates in float64 and rounds once, is checked bit for bit on float data, in-process and over two gloo ranks.
"""

import functools
import secrets
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rag_e2e.kernels import topk as topk_mod
from rag_e2e.kernels import topk_scores
from rag_e2e.retrieval.distributed import (
    ShardedIndex,
    _local_candidates,
    all_gather_objects,
    merge_topk,
    shard_bounds,
)
from rag_e2e.retrieval.index import build_index
from rag_e2e.retrieval.index_base import Index

pytestmark = pytest.mark.distributed

HAS_TRITON = topk_mod._topk_kernel is not None and (torch.cuda.is_available() or topk_mod._topk_kernel.INTERPRET)
BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="needs triton (CUDA or interpreter)")),
    "torch",
]
DUPLICATED = (50, 600, 900)  # one vector stored at these rows: shard 0 holds 50, shard 1 holds 600 and 900


@pytest.fixture
def seed() -> int:
    """Fresh seed per test; assertion messages carry it so a failure can be replayed."""
    value = secrets.randbits(31)
    torch.manual_seed(value)
    return value


# ---- shard_bounds ----


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("n", [7, 8, 1001])
def test_shard_bounds_cover_the_corpus_contiguously(n, world):
    bounds = [shard_bounds(n, world, r) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(end == next_start for (_, end), (next_start, _) in zip(bounds, bounds[1:]))
    sizes = [end - start for start, end in bounds]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] - sizes[-1] <= 1 and min(sizes) >= 1


def test_shard_bounds_refuse_empty_shards_and_bad_ranks():
    with pytest.raises(ValueError, match="every rank needs at least one passage"):
        shard_bounds(3, 4, 0)
    with pytest.raises(ValueError, match="rank=2"):
        shard_bounds(10, 2, 2)


# ---- merge_topk ----


def _reference64(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force in float64: each query's candidates sorted by (-score, row), first k."""
    out_scores, out_rows = [], []
    for s, r in zip(scores.double().tolist(), rows.tolist()):
        best = sorted(zip(s, r), key=lambda pair: (-pair[0], pair[1]))[:k]
        out_scores.append([score for score, _ in best])
        out_rows.append([row for _, row in best])
    return torch.tensor(out_scores, dtype=torch.float64), torch.tensor(out_rows)


@pytest.mark.parametrize(("batch", "shards", "k"), [(1, 1, 1), (6, 2, 7), (5, 3, 50), (4, 5, 2)])
def test_merge_topk_matches_float64_brute_force(seed, batch, shards, k):
    # Few distinct values (quarters, and -0.0 next to +0.0) so that most candidates tie with others.
    scores = torch.randint(-6, 6, (batch, shards * k)).float() / 4
    scores[scores == 0] = torch.tensor([0.0, -0.0])[torch.randint(0, 2, ((scores == 0).sum().item(),))]
    rows = torch.stack([torch.randperm(10 * shards * k)[: shards * k] for _ in range(batch)])  # unique per query
    got_scores, got_rows = merge_topk(scores, rows, k)
    ref_scores, ref_rows = _reference64(scores, rows, k)
    assert got_scores.dtype == torch.float32 and got_rows.dtype == torch.int64, f"seed={seed}"
    assert torch.equal(got_rows, ref_rows), f"seed={seed}"
    assert torch.equal(got_scores.double(), ref_scores), f"seed={seed}"


def test_merge_topk_refuses_k_above_candidates():
    with pytest.raises(ValueError, match="k=5"):
        merge_topk(torch.zeros(2, 4), torch.arange(8).view(2, 4), 5)


# ---- sharded search in one process: shard-local searches + merge, as ShardedIndex does ----


class _BackendIndex(Index):
    """ExactIndex with its topk_scores backend pinned."""

    def __init__(self, p_reps: torch.Tensor, backend: str):
        super().__init__(p_reps)
        self.backend = backend

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return topk_scores(q_reps.float().contiguous(), self.p_reps.to(q_reps.device), k, backend=self.backend)


def _integer_valued(*shape: int, device: str = "cpu") -> torch.Tensor:
    """Small-integer fp32 entries: dot products (|s| <= 9 d) are exact in fp32 whatever the summation order."""
    return torch.randint(-3, 4, shape, device=device).float()


def _simulated_sharded_search(make_index, full, queries, world, k):
    """Every rank's (scores, rows), computed as ShardedIndex does but without processes."""
    q_all = torch.cat(queries)  # (B_total, d)
    candidates = [
        _local_candidates(make_index(full[start:end]), start, q_all, k)
        for start, end in (shard_bounds(len(full), world, r) for r in range(world))
    ]
    scores, rows = merge_topk(torch.cat([s for s, _ in candidates], 1), torch.cat([r for _, r in candidates], 1), k)
    return list(zip(scores.split([len(q) for q in queries]), rows.split([len(q) for q in queries])))


# (N, d, world, per-rank batch sizes): odd sizes, empty and single-query batches, shards smaller than k = 50.
SHAPES = [(1001, 48, 2, (5, 3)), (777, 33, 3, (1, 2, 0)), (300, 130, 4, (3, 1, 7, 2)), (90, 64, 3, (4, 4, 1))]


def _device(backend: str) -> str:
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sharded_search_is_single_process_search_bitwise_on_exact_arithmetic(seed, backend):
    make_index = functools.partial(_BackendIndex, backend=backend)
    for n, d, world, batches in SHAPES:
        full = _integer_valued(n, d, device=_device(backend))
        queries = [_integer_valued(b, d, device=_device(backend)) for b in batches]
        for k in (1, 50):
            single = make_index(full)
            for q, (scores, rows) in zip(queries, _simulated_sharded_search(make_index, full, queries, world, k)):
                ref_scores, ref_rows = single.search(q, k)
                where = f"seed={seed} n={n} d={d} world={world} B={len(q)} k={k}"
                assert torch.equal(rows, ref_rows), where  # integer scores: ties everywhere, smaller row first
                assert torch.equal(scores.view(torch.int32), ref_scores.view(torch.int32)), where


@pytest.mark.parametrize("backend", BACKENDS)
def test_sharded_search_on_float_data_matches_float64_reference(seed, backend):
    make_index = functools.partial(_BackendIndex, backend=backend)
    for n, d, world, batches in SHAPES:
        full = torch.randn(n, d, device=_device(backend))
        queries = [torch.randn(b, d, device=_device(backend)) for b in batches]
        for q, (scores, rows) in zip(queries, _simulated_sharded_search(make_index, full, queries, world, 7)):
            ref = q.double() @ full.double().T  # (B, N)
            ref_scores = ref.topk(7, dim=1).values
            where = f"seed={seed} n={n} d={d} world={world} B={len(q)}"
            torch.testing.assert_close(scores.double(), ref_scores, rtol=1e-5, atol=1e-5, msg=where)  # fp32 sums
            torch.testing.assert_close(ref.gather(1, rows), ref_scores, rtol=1e-5, atol=1e-5, msg=where)


def test_exact_index_sharded_search_on_float_data_is_bitwise_single_process_search(seed):
    """ExactIndex rescores its candidates in float64 (rounded once), so float data matches bit for bit too."""

    def make_index(p_reps):
        return build_index("exact", p_reps)

    for n, d, world, batches in SHAPES:
        full = torch.randn(n, d)
        queries = [torch.randn(b, d) for b in batches]
        single = make_index(full)
        for q, (scores, rows) in zip(queries, _simulated_sharded_search(make_index, full, queries, world, 50)):
            ref_scores, ref_rows = single.search(q, 50)
            where = f"seed={seed} n={n} d={d} world={world} B={len(q)}"
            assert torch.equal(scores.view(torch.int32), ref_scores.view(torch.int32)), where
            assert torch.equal(rows, ref_rows), where


def test_sharded_index_without_torch_distributed_is_the_local_index(seed):
    full, q = torch.randn(40, 8), torch.randn(3, 8)
    sharded, exact = ShardedIndex(build_index("exact", full), 0, 40), build_index("exact", full)
    scores, rows, vectors = sharded.search_with_vectors(q, 5)
    ref_scores, ref_rows = exact.search(q, 5)
    assert torch.equal(rows, ref_rows) and torch.equal(scores, ref_scores), f"seed={seed}"
    assert torch.equal(vectors, full[rows]) and torch.equal(sharded.gather(rows), full[rows]), f"seed={seed}"
    assert sharded.size == 40 and sharded.dim == 8
    with pytest.raises(ValueError, match="must tile the corpus"):
        ShardedIndex(build_index("exact", full[:30]), 0, 40).search(q, 5)


# ---- two gloo ranks ----

CORPUS_N, DIM = 1001, 48
ROUNDS = [  # (k, batch size per rank, corpus): different batches per rank, empty ones, a corpus with shards < k
    (1, (5, 3), "big"), (7, (5, 3), "big"), (50, (5, 3), "big"), (7, (2, 0), "big"), (3, (0, 0), "big"),
    (50, (3, 4), "small"),
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, tmp_path) -> None:
    """One rank: every round searched through a ShardedIndex over this rank's shard; results saved for the parent."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        inputs = torch.load(tmp_path / "inputs.pt")
        results = []
        for (k, _, corpus), queries in zip(ROUNDS, inputs["queries"]):
            full, q = inputs[corpus], queries[rank]
            start, end = shard_bounds(len(full), world, rank)
            sharded = ShardedIndex(build_index("exact", full[start:end]), start, len(full))
            scores, rows, vectors = sharded.search_with_vectors(q, k)
            plain = sharded.search(q, k) if k == 7 else (scores, rows)  # same path as search_with_vectors
            results.append({"scores": scores, "rows": rows, "vectors": vectors, "plain": plain})
        errors = []
        for k in (len(full) + 1, 2 + rank):  # too large on every rank; different on each rank
            try:
                sharded.search(q, k)
            except ValueError as err:  # raised on every rank alike, so no rank waits in a collective
                errors.append(str(err))
        gather_ok = torch.equal(sharded.gather(torch.arange(start, end).view(-1, 1)), full[start:end].unsqueeze(1))
        try:
            sharded.gather(torch.tensor([[end % len(full)]]))
        except ValueError as err:
            errors.append(str(err))
        records = all_gather_objects([f"rank{rank}-item{i}" for i in range(rank + 1)])
        torch.save({"results": results, "errors": errors, "gather_ok": gather_ok, "records": records},
                   tmp_path / f"rank{rank}.pt")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_process(tmp_path, monkeypatch, seed):
    world = 2
    # Float data: ExactIndex rescores its candidates so that scores do not depend on the shard shapes.
    big, small = torch.randn(CORPUS_N, DIM), torch.randn(61, DIM)
    big[list(DUPLICATED)] = big[DUPLICATED[0]].clone()
    queries = [[torch.randn(b, DIM) for b in batches] for _, batches, _ in ROUNDS]
    for round_, rank in ((0, 0), (1, 1), (2, 0)):  # queries whose top hits are the three duplicates
        queries[round_][rank][0] = big[DUPLICATED[0]]
    torch.save({"big": big, "small": small, "queries": queries}, tmp_path / "inputs.pt")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two ranks on a small machine; spawned children read the env
    mp.spawn(_rank_main, args=(world, _free_port(), tmp_path), nprocs=world, join=True)

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for rank, out in enumerate(ranks):
        assert out["gather_ok"] and out["records"] == ["rank0-item0", "rank1-item0", "rank1-item1"]
        too_large, unequal_k, non_local = out["errors"]
        assert "k=62" in too_large and "same k" in unequal_k and "search_with_vectors" in non_local
        for (k, batches, corpus), res, q in zip(ROUNDS, out["results"], (qs[rank] for qs in queries)):
            where = f"seed={seed} rank={rank} k={k} corpus={corpus}"
            full = big if corpus == "big" else small
            ref_scores, ref_rows = build_index("exact", full).search(q, k)  # one process, this rank's queries
            assert res["rows"].shape == (batches[rank], k) and res["vectors"].shape == (batches[rank], k, DIM), where
            assert torch.equal(res["rows"], ref_rows), where
            assert torch.equal(res["scores"].view(torch.int32), ref_scores.view(torch.int32)), where
            assert torch.equal(res["plain"][0], res["scores"]) and torch.equal(res["plain"][1], res["rows"]), where
            assert torch.equal(res["vectors"], full[res["rows"]]), where
    # Ties go to the smaller global row, across shards: 50 (shard 0) before 600 and 900 (shard 1).
    assert ranks[0]["results"][0]["rows"][0].tolist() == [DUPLICATED[0]]
    assert ranks[1]["results"][1]["rows"][0, :3].tolist() == list(DUPLICATED)
    assert ranks[0]["results"][2]["rows"][0, :3].tolist() == list(DUPLICATED)
