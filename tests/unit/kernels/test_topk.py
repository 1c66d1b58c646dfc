"""Fused score + top-k (Triton, interpreted on CPU) and its torch reference against a float64 reference."""

import os

# Must precede any triton import; the lead moves this to tests/conftest.py later.
os.environ.setdefault("TRITON_INTERPRET", "1")

import secrets  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from rag_e2e.kernels import topk as topk_mod  # noqa: E402
from rag_e2e.kernels import topk_scores, topk_scores_reference  # noqa: E402

HAS_TRITON = topk_mod._topk_kernel is not None and (torch.cuda.is_available() or topk_mod._topk_kernel.INTERPRET)
BACKENDS = [
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="needs triton (CUDA or interpreter)")),
    "torch",
    "torch_pruned",
    "torch_fp32",
    pytest.param("faiss", marks=pytest.mark.skipif(not topk_mod._cpu.faiss_available() or torch.cuda.is_available(),
                                                   reason="needs faiss-cpu and CPU tensors")),
]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, N, d, k, num_splits): nothing a multiple of the 16/128/32 interpreter tiles; k = 1, N, non-pow2, 128.
CASES = [
    (1, 300, 37, 1, None),
    (4, 1, 16, 1, None),
    (2, 77, 20, 77, None),
    (17, 700, 70, 7, 3),
    (33, 520, 24, 33, 2),
    (5, 260, 40, 128, 2),
    (3, 300, 384, 10, None),
]


@pytest.fixture
def seed() -> int:
    """Fresh seed per test; assertion messages carry it so a failure can be replayed."""
    value = secrets.randbits(31)
    torch.manual_seed(value)
    return value


def _reference64(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 top-k from the (already rounded) inputs, ties by smaller index; also returns all (B, N) scores."""
    all_scores = queries.double() @ docs.double().T  # (B, N)
    order = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, :k]  # stable: index asc on ties
    return all_scores.gather(1, order), order, all_scores


def _tolerance(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """(B, 1) bound on |fp32 score - exact score|.

    The kernel and the reference accumulate in fp32 from the rounded inputs, and fp16/bf16 products are exact in
    fp32, so every dtype gets the fp32 summation bound: d * 2^-24 * sum_i |q_i * x_i|, doubled for margin.
    """
    d = queries.shape[1]
    abs_dots = queries.double().abs() @ docs.double().abs().T  # (B, N)
    return 2 * d * 2.0**-24 * abs_dots.amax(dim=1, keepdim=True) + 1e-30


def _check(queries, docs, k, scores, indices, seed) -> None:
    ref_scores, ref_idx, all_scores = _reference64(queries, docs, k)
    tol = _tolerance(queries, docs)
    msg = f"seed={seed}"
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64, msg
    assert scores.shape == indices.shape == (queries.shape[0], k), msg
    scores, indices = scores.cpu().double(), indices.cpu()
    assert ((indices >= 0) & (indices < docs.shape[0])).all(), msg
    assert (indices.sort(dim=1).values.diff(dim=1) > 0).all(), f"duplicate indices; {msg}"
    assert (scores.diff(dim=1) <= 0).all(), f"not sorted descending; {msg}"
    # Returned scores are the true scores of the returned rows, and the k best ones.
    assert ((scores - all_scores.cpu().gather(1, indices)).abs() <= tol).all(), msg
    assert ((scores - ref_scores.cpu()).abs() <= tol).all(), msg
    # Indices match except inside near-ties, where either order is a correct answer.
    differ = indices != ref_idx.cpu()
    assert ((ref_scores.cpu() - all_scores.cpu().gather(1, indices)).abs() <= 2 * tol)[differ].all(), msg


def _run(backend: str, queries, docs, k, num_splits=None, chunk_size=64, **kwargs):
    """Triton with forced N-splits, the torch reference with small chunks, FAISS with 16-bit passages widened in
    blocks of chunk_size rows: so that every code path (and the merge across chunks) gets exercised."""
    if backend in ("torch", "torch_pruned", "torch_fp32"):
        return topk_scores(queries, docs, k, backend=backend, chunk_size=chunk_size, **kwargs)
    if backend == "faiss":
        saved, topk_mod._cpu.FAISS_BLOCK_ROWS = topk_mod._cpu.FAISS_BLOCK_ROWS, chunk_size
        try:
            return topk_scores(queries, docs, k, backend="faiss", **kwargs)
        finally:
            topk_mod._cpu.FAISS_BLOCK_ROWS = saved
    return topk_scores(queries, docs, k, backend="triton", num_splits=num_splits, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}-N{}-d{}-k{}-s{}".format(*c))
def test_matches_float64_reference(backend, dtype, case, seed):
    n_queries, n_docs, dim, k, num_splits = case
    queries = torch.randn(n_queries, dim, device=DEVICE).to(dtype)
    docs = torch.randn(n_docs, dim, device=DEVICE).to(dtype)
    scores, indices = _run(backend, queries, docs, k, num_splits)
    _check(queries, docs, k, scores, indices, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_exact_ties_pick_smaller_index(backend, dtype, seed):
    # Small integers: every score is exact in fp32 and fp64, so ties are exact and the order is fully determined.
    base = torch.randint(-2, 3, (40, 24), device=DEVICE)
    docs = base[torch.randint(0, 40, (300,), device=DEVICE)].to(dtype)  # (300, 24): many duplicate rows
    queries = torch.randint(-2, 3, (19, 24), device=DEVICE).to(dtype)
    scores, indices = _run(backend, queries, docs, 45, num_splits=2, chunk_size=37)
    ref_scores, ref_idx, _ = _reference64(queries, docs, 45)
    assert torch.equal(indices.cpu(), ref_idx.cpu()), f"seed={seed}"
    assert torch.equal(scores.cpu().double(), ref_scores.cpu()), f"seed={seed}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_and_partials_fully_overwritten(backend, seed, monkeypatch):
    splits_seen = []

    def poisoned_partials(n_queries, num_splits, k_pad, device):
        splits_seen.append(num_splits)
        # Max int64 outranks every real key and decodes to a NaN score: any unwritten slot shows in the output.
        return torch.full((n_queries, num_splits, k_pad), 2**63 - 1, dtype=torch.int64, device=device)

    monkeypatch.setattr(topk_mod, "_alloc_partial_keys", poisoned_partials)
    queries = torch.randn(20, 33, device=DEVICE)
    docs = torch.randn(1100, 33, device=DEVICE)
    out = (torch.full((20, 10), float("nan"), device=DEVICE), torch.full((20, 10), -1, device=DEVICE))
    scores, indices = _run(backend, queries, docs, 10, num_splits=4, chunk_size=100, out=out)
    assert scores is out[0] and indices is out[1]
    assert not scores.isnan().any() and (indices >= 0).all(), f"seed={seed}"
    _check(queries, docs, 10, scores, indices, seed)
    if backend == "triton":
        assert splits_seen and splits_seen[0] > 1  # the split-N + merge path ran


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton (CUDA or interpreter)")
def test_triton_tile_overrides_and_auto_backend(seed):
    queries = torch.randn(21, 50, device=DEVICE, dtype=torch.float16)
    docs = torch.randn(400, 50, device=DEVICE, dtype=torch.float16)
    scores, indices = topk_scores(queries, docs, 5, backend="triton", block_b=32, block_n=64, block_d=16, num_splits=2)
    _check(queries, docs, 5, scores, indices, seed)
    assert topk_mod._resolve_backend("auto", queries.device) == "triton"
    _check(queries, docs, 5, *topk_scores(queries, docs, 5), seed)  # autotuned tiles
    with pytest.raises(ValueError, match="powers of two"):
        topk_scores(queries, docs, 5, backend="triton", block_n=48)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs(backend, seed):
    # Views with non-unit strides: the kernel must use the strides it is given, not assume contiguity.
    queries = torch.randn(40, 9, device=DEVICE)[::2]  # (20, 9), row stride 18
    docs = torch.randn(9, 500, device=DEVICE).T  # (500, 9), column-major
    _check(queries, docs, 12, *_run(backend, queries, docs, 12, num_splits=2), seed)


@pytest.mark.parametrize("chunk_size", [1, 8, 333, None])
def test_reference_any_chunk_size(chunk_size, seed):
    queries = torch.randn(6, 40)
    docs = torch.randn(333, 40)
    _check(queries, docs, 9, *topk_scores_reference(queries, docs, 9, chunk_size=chunk_size), seed)


def test_zero_queries_return_empty():
    scores, indices = topk_scores(torch.randn(0, 8), torch.randn(10, 8), 3, backend="torch")
    assert scores.shape == indices.shape == (0, 3)


@pytest.mark.parametrize(
    ("queries", "docs", "k", "kwargs", "match"),
    [
        (torch.randn(2, 8), torch.randn(10, 8), 0, {}, r"k=0 must be >= 1"),
        (torch.randn(2, 8), torch.randn(10, 8), 11, {}, r"k=11 exceeds the number of passages N=10"),
        (torch.randn(2, 8), torch.randn(200, 8), 129, {}, r"k=129 exceeds the supported maximum 128"),
        (torch.randn(2, 8), torch.randn(10, 8).half(), 3, {}, "dtype mismatch"),
        (torch.randn(2, 8).double(), torch.randn(10, 8).double(), 3, {}, "unsupported dtype"),
        (torch.randn(2, 8), torch.randn(10, 8, device="meta"), 3, {}, "device mismatch"),
        (torch.randn(2, 8), torch.randn(10, 9), 3, {}, "dim mismatch"),
        (torch.randn(8), torch.randn(10, 8), 3, {}, "must be 2-D"),
        (torch.randn(2, 8), torch.randn(10, 8), 3, {"backend": "cuda"}, "backend='cuda'"),
        (torch.randn(2, 8), torch.randn(10, 8), 3, {"out": (torch.empty(2, 4), torch.empty(2, 3).long())}, "out"),
    ],
    ids=["k0", "k>N", "k>128", "dtype", "float64", "device", "dim", "1d", "backend", "out-shape"],
)
def test_bad_inputs_raise(queries, docs, k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        topk_scores(queries, docs, k, **kwargs)


def test_auto_on_cpu_runs_the_measured_backend_and_is_exact(monkeypatch, tmp_path, seed):
    monkeypatch.setattr(topk_mod, "_topk_kernel", None)  # no Triton: the CPU dispatch as users get it
    monkeypatch.setenv("RAG_E2E_CACHE", str(tmp_path))
    topk_mod._autotune.forget()
    assert topk_mod._resolve_backend("auto", torch.device("cpu")) == "measure"
    ran = []
    for name in topk_mod._autotune.CANDIDATES:  # whichever the probe picks, "auto" runs it and stays exact
        monkeypatch.setattr(topk_mod._autotune, "measured_choice", lambda kind, key, measure, name=name: name)
        for dtype in DTYPES:
            docs = torch.randn(900, 24).to(dtype)
            for n_queries in (1, 19, 40):
                topk_mod._autotune.forget()
                queries = torch.randn(n_queries, 24).to(dtype)
                chosen = topk_mod._autotune.choose(queries, docs, 17, topk_mod._search)
                ran.append(chosen)
                _check(queries, docs, 17, *topk_scores(queries, docs, 17), seed)
    bf16 = topk_mod._cpu.bf16_filter_applies(torch.empty(1, 1).bfloat16(), torch.empty(1, 1).bfloat16())
    assert set(ran) == {"torch"} | ({"torch_pruned", "torch_fp32"} if bf16 else set()) | (
        {"faiss"} if topk_mod._cpu.faiss_available() else set())  # a choice this install cannot run falls to torch


@pytest.mark.parametrize("n_queries,m,dim", [(7, 5, 3), (5, 300, 4000)])  # one block; one query per block
def test_candidate_scores_equal_each_querys_float64_products(seed, n_queries, m, dim):
    gen = torch.Generator().manual_seed(seed)
    docs = torch.randn(400, dim, generator=gen).bfloat16()
    queries = torch.randn(n_queries, dim, generator=gen).bfloat16()
    rows = torch.randint(0, 400, (n_queries, m), generator=gen)
    got = topk_mod._candidate_scores(queries.float(), docs, rows)
    terms = queries.double()[:, None, :] * docs.double()[rows]  # (B, m, d): bf16 products, exact in fp32
    want = terms.sum(-1)
    # fp32 summation of `dim` exact products: |error| <= dim * 2^-24 * sum |terms| (the worst-case bound)
    bound = dim * 2**-24 * terms.abs().sum(-1)
    assert ((got.double() - want).abs() <= bound).all(), f"seed={seed}"


def test_candidate_scores_of_equal_rows_are_bitwise_equal_at_any_position(seed):
    # The tie rule needs duplicates to tie: the same passage listed at several candidate positions (first, middle,
    # last, and past a vector width) scores the same fp32 value there.
    gen = torch.Generator().manual_seed(seed)
    docs = torch.randn(500, 96, generator=gen).bfloat16()
    queries = torch.randn(9, 96, generator=gen)
    rows = torch.randint(0, 500, (9, 37), generator=gen)
    rows[:, [0, 17, 18, 36]] = rows[:, :1]
    got = topk_mod._candidate_scores(queries, docs, rows)
    assert (got[:, [17, 18, 36]] == got[:, :1]).all(), f"seed={seed}"


@pytest.mark.skipif(torch.cuda.is_available() or not topk_mod._cpu.bf16_filter_applies(
    torch.empty(1, 1, dtype=torch.bfloat16), torch.empty(1, 1, dtype=torch.bfloat16)),
    reason="needs a CPU with oneDNN bf16 matmul")
@pytest.mark.parametrize("k", [1, 10, 100])
def test_bf16_filter_ranks_exactly_and_falls_back_only_where_unsure(monkeypatch, seed, k):
    fallback_rows = []
    reference = topk_mod._reference_keys

    def spy(queries, docs, k, chunk_size):
        fallback_rows.append(queries.shape[0])
        return reference(queries, docs, k, chunk_size)

    monkeypatch.setattr(topk_mod, "_reference_keys", spy)
    queries = torch.randn(40, 96).bfloat16()
    docs = torch.randn(3000, 96).bfloat16()
    for chunk_size in (None, 700):  # one chunk, and merged candidate lists across chunks
        _check(queries, docs, k, *topk_scores(queries, docs, k, backend="torch", chunk_size=chunk_size), seed)
    assert sum(fallback_rows) < 2 * 40 // 4, f"seed={seed}"  # random scores: the bound rarely leaves doubt
    # Ties among the candidates: packing applies the tie rule, no doubt. Ties past the m = 10 candidates of k = 2: the
    # query searches again with 4m = 40, and ties past those go the exact way. Always the smaller rows first.
    q = docs[0:1].clone()
    docs[[5, 6]] = docs[0].clone()
    fallback_rows.clear()
    assert topk_scores(q, docs, 2, backend="torch")[1].tolist() == [[0, 5]] and fallback_rows == []
    wider = []  # each search's m: None for the first one
    filtered = topk_mod._bf16_filtered_keys

    def spy_filtered(queries, docs, k, chunk_size, prune=False, m=None):
        wider.append(m)
        return filtered(queries, docs, k, chunk_size, prune, m)

    monkeypatch.setattr(topk_mod, "_bf16_filtered_keys", spy_filtered)
    docs[100:120] = docs[0].clone()  # 23 copies: within 40
    assert topk_scores(q, docs, 2, backend="torch")[1].tolist() == [[0, 5]] and fallback_rows == []
    assert wider == [None, 40]
    docs[200:240] = docs[0].clone()  # 63 copies
    wider.clear()
    assert topk_scores(q, docs, 2, backend="torch")[1].tolist() == [[0, 5]] and fallback_rows == [1]
    assert wider == [None, 40]  # one wider search, then the exact way
