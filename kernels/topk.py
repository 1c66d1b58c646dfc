"""Exact maximum-inner-product top-k: fused Triton launcher, chunked torch reference, FAISS on CPU, and dispatch.

Tie rule (every backend): scores are compared as fp32; equal scores rank the smaller passage index first. Both
backends implement it by packing (score, index) into one int64 key (see `_topk_kernel`), so the order is total and
deterministic. -0.0 counts as +0.0; NaN scores are not supported.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from . import _autotune, _cpu, _select

try:  # triton is optional: without it every call takes the torch path
    from . import _topk_kernel

    _TRITON_MISSING = ""
except ImportError as err:  # no triton, or one too old for triton.constexpr_function
    _topk_kernel = None
    _TRITON_MISSING = f"triton is not importable ({err})"

Backend = Literal["auto", "triton", "torch", "torch_pruned", "torch_fp32", "faiss"]

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_EMPTY_KEY = -(2**63)  # = _topk_kernel.EMPTY_KEY, repeated so this module works without triton
_MAX_K = 128
_MAX_DOCS = 2**32 - 1  # the packed key keeps 32 bits of passage index


def topk_scores(
    queries: torch.Tensor,
    docs: torch.Tensor,
    k: int,
    *,
    chunk_size: int | None = None,
    backend: Backend = "auto",
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
    num_splits: int | None = None,
    allow_tf32: bool = False,
    block_b: int | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
    num_warps: int = 4,
    num_stages: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k passages by inner product for each query, without materialising the (B, N) score matrix.

    Args:
        queries: (B, d) query vectors, fp32/fp16/bf16.
        docs: (N, d) passage vectors, same dtype and device as `queries`.
        k: passages per query, 1 <= k <= min(N, 128).
        chunk_size: passages scored per step by the torch backend (memory O(B * chunk_size)); None picks one.
        backend: "triton"; "torch" (chunked; bfloat16 passages on a CPU with oneDNN bf16 matmul are filtered by
            a bf16 product first); "torch_pruned" (that filter ranking only scores that can still enter the
            top list); "torch_fp32" (chunked, always widened to fp32); "faiss" (CPU: FAISS's
            exhaustive search, then the tie rule); or "auto": Triton on CUDA (or on CPU under TRITON_INTERPRET=1),
            the torch path on CUDA without Triton, and on CPU the fastest of the exact CPU backends for this shape
            class as measured on this machine (`kernels/_autotune.py`; `python -m rag_e2e.kernels.bench` shows it).
        out: optional preallocated (scores (B, k) fp32, indices (B, k) int64) to write into.
        num_splits: Triton only: programs per query block along N (merged afterwards); None sizes it to the GPU.
        allow_tf32: Triton only: let fp32 inputs use TF32 tensor cores (faster, ~1e-3 relative score error).
        block_b: Triton only: tile override; giving any of block_b/block_n/block_d skips autotuning.
        block_n: Triton only: tile override, >= next power of two of k.
        block_d: Triton only: tile override.
        num_warps: Triton only: used with tile overrides.
        num_stages: Triton only: used with tile overrides.

    Returns:
        scores: (B, k) fp32, sorted descending.
        indices: (B, k) int64 passage rows; equal scores list the smaller index first.

    Raises:
        ValueError: bad shapes, dtypes, devices or k.
    """
    _check_inputs(queries, docs, k)
    scores, indices = _check_or_alloc_out(out, queries, k)
    resolved = _resolve_backend(backend, queries.device)
    if resolved == "measure":
        resolved = _autotune.choose(queries, docs, k, _search)
    if resolved in ("torch", "torch_pruned") and _cpu.bf16_filter_applies(queries, docs):
        keys = _bf16_filtered_keys(queries, docs, k, chunk_size, prune=resolved == "torch_pruned")
    elif resolved in ("torch", "torch_pruned", "torch_fp32"):
        keys = _reference_keys(queries, docs, k, chunk_size)
    elif resolved == "faiss":
        keys = _faiss_keys(queries, docs, k)
    else:
        keys = _triton_keys(
            queries, docs, k, num_splits=num_splits, allow_tf32=allow_tf32,
            overrides=(block_b, block_n, block_d, num_warps, num_stages),
        )  # fmt: skip
    _unpack_keys(keys, scores, indices)
    return scores, indices


def topk_scores_reference(
    queries: torch.Tensor, docs: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference for `topk_scores`: fp32 scores, chunked over N, same tie rule. Args/returns as there."""
    return topk_scores(queries, docs, k, chunk_size=chunk_size, backend="torch")


def _check_inputs(queries: torch.Tensor, docs: torch.Tensor, k: int) -> None:
    if queries.dim() != 2 or docs.dim() != 2:
        raise ValueError(f"queries and docs must be 2-D (B, d) and (N, d); got {tuple(queries.shape)} and "
                         f"{tuple(docs.shape)}")  # fmt: skip
    if queries.dtype != docs.dtype:
        raise ValueError(f"dtype mismatch: queries are {queries.dtype}, docs are {docs.dtype}")
    if queries.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {queries.dtype}; use one of {_SUPPORTED_DTYPES}")
    if queries.device != docs.device:
        raise ValueError(f"device mismatch: queries on {queries.device}, docs on {docs.device}")
    if queries.shape[1] != docs.shape[1]:
        raise ValueError(f"dim mismatch: queries have d={queries.shape[1]}, docs have d={docs.shape[1]}")
    n_docs = docs.shape[0]
    if n_docs > _MAX_DOCS:
        raise ValueError(f"N={n_docs} passages exceeds the supported maximum {_MAX_DOCS}")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if k > n_docs:
        raise ValueError(f"k={k} exceeds the number of passages N={n_docs}")
    if k > _MAX_K:
        raise ValueError(f"k={k} exceeds the supported maximum {_MAX_K}")


def _check_or_alloc_out(
    out: tuple[torch.Tensor, torch.Tensor] | None, queries: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (queries.shape[0], k)
    if out is None:
        return (torch.empty(shape, dtype=torch.float32, device=queries.device),
                torch.empty(shape, dtype=torch.int64, device=queries.device))  # fmt: skip
    scores, indices = out
    for name, t, dtype in (("scores", scores, torch.float32), ("indices", indices, torch.int64)):
        if t.shape != shape or t.dtype != dtype or t.device != queries.device:
            raise ValueError(f"out {name} must be {dtype} of shape {shape} on {queries.device}; got {t.dtype} "
                             f"{tuple(t.shape)} on {t.device}")  # fmt: skip
    return scores, indices


def _resolve_backend(backend: Backend, device: torch.device) -> Literal["triton", "torch", "torch_pruned",
                                                                      "torch_fp32", "faiss", "measure"]:
    """The backend to run, or "measure": "auto" on CPU, where `_autotune.choose` picks by timing."""
    if backend not in ("auto", "triton", "torch", "torch_pruned", "torch_fp32", "faiss"):
        raise ValueError(f"backend={backend!r} must be 'auto', 'triton', 'torch', 'torch_pruned', 'torch_fp32' or "
                         "'faiss'")
    runnable = _topk_kernel is not None and (device.type == "cuda" or (device.type == "cpu" and _topk_kernel.INTERPRET))
    if backend == "auto":
        if runnable:
            return "triton"
        return "measure" if device.type == "cpu" else "torch"
    if backend == "triton" and not runnable:
        why = _TRITON_MISSING or f"tensors on {device} need CUDA, or TRITON_INTERPRET=1 set before triton is imported"
        raise ValueError(f"backend='triton' unavailable: {why}")
    if backend == "faiss" and (device.type != "cpu" or not _cpu.faiss_available()):
        why = "faiss is not importable" if not _cpu.faiss_available() else f"it runs on CPU tensors, not {device}"
        raise ValueError(f"backend='faiss' unavailable: {why}")
    return backend


def _search(backend: str, queries: torch.Tensor, docs: torch.Tensor, k: int) -> object:
    """One search with a fixed backend: what `_autotune` times."""
    return topk_scores(queries, docs, k, backend=backend)


def _next_pow2(x: int) -> int:
    return 1 << (x - 1).bit_length()


# ---- packed keys (same encoding as _topk_kernel._pack_keys) ----


def _pack_keys(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, c) fp32 scores and their (B, c) or (c,) int64 passage indices -> (B, c) int64 keys."""
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: reverse their order as ints
    return (ordered.to(torch.int64) << 32) | (0xFFFFFFFF - indices)


def _unpack_keys(keys: torch.Tensor, scores: torch.Tensor, indices: torch.Tensor) -> None:
    """(B, k) int64 keys -> writes fp32 scores and int64 indices (the exact inverse of `_pack_keys`)."""
    hi = keys >> 32  # arithmetic shift keeps the sign of `ordered`
    bits = torch.where(hi < 0, hi ^ 0x7FFFFFFF, hi).to(torch.int32)
    scores.copy_(bits.view(torch.float32))
    indices.copy_(0xFFFFFFFF - (keys & 0xFFFFFFFF))


# ---- torch reference ----


def _reference_keys(queries: torch.Tensor, docs: torch.Tensor, k: int, chunk_size: int | None) -> torch.Tensor:
    """(B, k) int64 keys, descending; scores in fp32 one chunk of passages at a time."""
    n_queries, dim = queries.shape
    n_docs = docs.shape[0]
    widen = docs.dtype != torch.float32
    if chunk_size is None and widen and queries.device.type == "cpu":
        # Widened 16-bit chunks are scored while still in cache: ~2^22 fp32 elements (measured 4-6x faster at B=1
        # than 2^24-element chunks, which spill to memory between the copy and the product).
        chunk_size = max(k, 2**22 // max(1, n_queries + dim))
    elif chunk_size is None:
        # ~2^24 fp32 elements for the (B, c) scores, plus the fp32 copy of the (c, d) chunk for 16-bit docs.
        chunk_size = max(k, 2**24 // max(1, n_queries + (dim if widen else 0)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    q = queries.float()
    # On CPU a 16-bit chunk is widened into one reused buffer (copy_ runs ~7x faster there than `.float()`).
    wide_buf = torch.empty(min(chunk_size, n_docs) * dim if widen and queries.device.type == "cpu" else 0)
    best = torch.full((n_queries, 0), _EMPTY_KEY, dtype=torch.int64, device=queries.device)
    for start in range(0, n_docs, chunk_size):
        chunk = docs[start : start + chunk_size]
        chunk = _cpu.widen_into(chunk, wide_buf) if queries.device.type == "cpu" else chunk.float()  # (c, d)
        scores = q @ chunk.T
        keys = torch.cat([best, _chunk_top_keys(scores, start, k)], dim=1)
        # Keys are unique, so topk's order is fully determined.
        best = keys.topk(min(k, keys.shape[1]), dim=1).values
    return best


def _chunk_top_keys(scores: torch.Tensor, start: int, k: int) -> torch.Tensor:
    """(B, c) fp32 scores of passages start..start+c-1 -> (B, min(k, c)) keys of each row's best, tie rule kept.

    Packing all B * c scores costs several times a float topk on CPU, so pack only the float topk, unless some
    row's k-th score ties the next one (float topk keeps an unspecified one of them): then rank the whole chunk.
    """
    n_cols = scores.shape[1]
    kk = min(k, n_cols)
    values, idx = scores.topk(min(kk + 1, n_cols), dim=1)  # (B, kk + 1) unless the chunk is that small
    if kk < n_cols and (values[:, kk - 1] == values[:, kk]).any():
        arange = torch.arange(start, start + n_cols, device=scores.device)  # (c,)
        return _pack_keys(scores, arange).topk(kk, dim=1).values
    values, idx = values[:, :kk], idx[:, :kk]
    return _pack_keys(values, idx + start)


# ---- bfloat16 on CPU: bf16 products select candidates, fp32 ranks them ----


def _bf16_filtered_keys(queries: torch.Tensor, docs: torch.Tensor, k: int, chunk_size: int | None,
                        prune: bool = False, m: int | None = None) -> torch.Tensor:
    """(B, k) int64 keys, descending, for bfloat16 queries and passages on a CPU with native bf16 matmul.

    Stage 1 scores every passage with a bf16 matmul (oneDNN: bf16 products, fp32 accumulation, each score rounded to
    bf16, relative error <= 2^-8) and keeps each query's m best approximate scores (`_select`: through group maxima),
    m = min(N, `_candidates(k)`) unless given. Stage 2 scores the candidates that can still reach the top k in fp32, as
    the chunked path does. Any passage left out has an approximate score <= a, the (m+1)-th best, so its fp32 score is
    at most a + 2^-7 |a| (twice the rounding bound: the two fp32 sums round differently too); where the k-th fp32
    score of the candidates beats that, the top k is among them and packing orders it by the tie rule. Other queries
    (near-ties at the cut, or cancellation) search again with 4m candidates, and past that by the chunked fp32 path.
    Reads N * d * 2 bytes once instead of widening them to fp32 first: 2-4x faster on CPUs with AVX512-BF16 or AMX
    (`kernels.bench`). With `prune`, once the running list holds m + 1 scores only a chunk's groups whose maximum
    beats its smallest are ranked: a count per chunk that the tuner weighs against not counting.
    """
    n_queries, dim = queries.shape
    n_docs = docs.shape[0]
    widen_once = m is None  # the first search may retry its unsure queries with 4m candidates; the retry may not
    m = min(n_docs, m or _candidates(k))
    if chunk_size is None:  # (B, c) bf16 scores of 16 MB: the product's time rose 1.5x at 32 MB, and smaller chunks
        # pay the selection's per-row cost more often (B = 256, k = 100: 8 MB 1.07x slower in all, measured on AMX)
        chunk_size = max(m + 1, 2**23 // max(1, n_queries))
    best_vals = torch.full((n_queries, 0), float("-inf"), dtype=torch.bfloat16)  # the running m + 1 best, unsorted
    best_rows = torch.zeros((n_queries, 0), dtype=torch.int64)
    for start in range(0, n_docs, chunk_size):
        # (B, c) bf16-rounded scores, ranked as bf16: widening them first cost 1.5x the matmul's time (1M x 768)
        approx = queries @ docs[start : start + chunk_size].T
        full = best_vals.shape[1] == m + 1
        # only scores above a full list's smallest can enter it (ties at it change no score the bound uses)
        above = best_vals.amin(dim=1, keepdim=True) if prune and full else None
        vals, cols = _select.row_best(approx, m + 1, above)
        if vals.shape[1] == 0:
            continue
        merged = torch.cat([best_vals, vals], dim=1)
        best_vals, pos = merged.topk(min(m + 1, merged.shape[1]), dim=1, sorted=False)
        best_rows = torch.cat([best_rows, cols + start], dim=1).gather(1, pos)
    best_vals, pos = best_vals.topk(best_vals.shape[1], dim=1)  # sorted once, descending
    best_rows = best_rows.gather(1, pos)
    # Each score is within 2^-7 |a| of its bf16 approximation a (see above), and a -/+ 2^-7 |a| both grow with a.
    # So the k-th best fp32 score is >= floor, the k-th candidate's a - 2^-7 |a|, and a candidate whose a + 2^-7 |a|
    # is below floor cannot reach it: only the sorted candidates' prefix above it is re-scored (the widest row's).
    approx = best_vals[:, :m].float()  # (B, m), descending
    floor = approx[:, k - 1 : k] - approx[:, k - 1 : k].abs() * 2.0**-7
    width = int((approx + approx.abs() * 2.0**-7 >= floor).sum(dim=1).max())
    cand_rows = best_rows[:, :width]  # (B, width), k <= width <= m
    exact = _candidate_scores(queries.float(), docs, cand_rows)  # (B, width) fp32, as _reference_keys
    keys = _pack_keys(exact, cand_rows).topk(k, dim=1).values  # (B, k)
    if m == n_docs:  # every passage is a candidate: nothing was left out
        return keys
    left_out = best_vals[:, m].float()  # (B,) best approximate score not kept
    kth = exact.topk(k, dim=1).values[:, k - 1]
    unsure = (kth <= left_out + left_out.abs() * 2.0**-7).nonzero().squeeze(1)
    if unsure.numel() and widen_once and 4 * m <= n_docs // 4:  # near-ties past m are most likely within 4m
        keys[unsure] = _bf16_filtered_keys(queries[unsure], docs, k, None, prune, 4 * m)
    elif unsure.numel():
        keys[unsure] = _reference_keys(queries[unsure], docs, k, None)
    return keys


def _candidate_scores(queries: torch.Tensor, docs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, m) fp32 scores of each query against its own m candidate rows of `docs`, a few queries at a time.

    Each score is one reduction over d of the same products, so equal rows score bit-for-bit equal wherever they sit
    among the candidates, and the tie rule sees them tie (an einsum's batched product summed columns in different
    orders by position: duplicate passages differed in the last bit and the larger index won). The gathered
    candidates are widened and scored while still in cache (~2^20 fp32 elements per block): at B = 256, m = 208,
    d = 768 that measured 10x faster than gathering and widening all B * m rows at once.
    """
    n_queries, m = rows.shape
    block = max(1, 2**20 // max(1, m * docs.shape[1]))
    out = torch.empty((n_queries, m), dtype=torch.float32)
    for s in range(0, n_queries, block):
        cand = docs.index_select(0, rows[s : s + block].reshape(-1)).view(-1, m, docs.shape[1]).float()
        out[s : s + block] = cand.mul_(queries[s : s + block, None, :]).sum(dim=-1)  # in place: 1.25x faster
    return out


# ---- FAISS (CPU) ----


def _faiss_keys(queries: torch.Tensor, docs: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) int64 keys, descending, from FAISS's exhaustive search with the tie rule applied.

    FAISS returns the exact top k + 1 by score, but orders (and, at the cut, picks among) equal scores as it likes.
    Where a query's k-th and (k+1)-th scores differ, its top-k set is unambiguous and packing the keys orders it;
    where they tie, that query's block is ranked in full by the chunked path. float32 passages are searched in place;
    16-bit ones are widened `_cpu.FAISS_BLOCK_ROWS` rows at a time.
    """
    n_queries, dim = queries.shape
    n_docs = docs.shape[0]
    if n_queries == 0:
        return torch.empty((0, k), dtype=torch.int64)
    q = np.ascontiguousarray(queries.float().numpy())
    block_rows = n_docs if docs.dtype == torch.float32 else _cpu.FAISS_BLOCK_ROWS
    wide_buf = torch.empty(min(block_rows, n_docs) * dim if docs.dtype != torch.float32 else 0)
    best = torch.full((n_queries, 0), _EMPTY_KEY, dtype=torch.int64)
    for start in range(0, n_docs, block_rows):
        block = _cpu.widen_into(docs[start : start + block_rows], wide_buf)  # (c, d) float32
        block_np = np.ascontiguousarray(block.numpy())  # no copy unless the caller passed strided passages
        n_block = block.shape[0]
        kk = min(k, n_block)
        values, rows = _cpu.faiss_candidates(q, block_np, min(kk + 1, n_block))
        keys = _pack_keys(values[:, :kk], rows[:, :kk] + start)  # (B, kk)
        if kk < n_block:
            tied = (values[:, kk - 1] == values[:, kk]).nonzero().squeeze(1)
            if tied.numel():
                scores = queries[tied].float() @ block.T  # (T, c)
                keys[tied] = _pack_keys(scores, torch.arange(start, start + n_block)).topk(kk, dim=1).values
        merged = torch.cat([best, keys], dim=1)
        best = merged.topk(min(k, merged.shape[1]), dim=1).values  # keys are unique: the order is determined
    return best


# ---- Triton launcher ----


def _default_num_splits(n_queries: int, n_docs: int, k_pad: int, device: torch.device) -> int:
    """Enough (query block, split) programs to fill the GPU, while each split scores >= 4096 passages."""
    if device.type != "cuda":
        return 1
    n_sms = torch.cuda.get_device_properties(device).multi_processor_count
    row_blocks = -(-n_queries // 64)  # rough: BLOCK_B is only known after autotuning
    wanted = -(-2 * n_sms // row_blocks)
    return max(1, min(wanted, n_docs // max(4096, 32 * k_pad)))


def _alloc_partial_keys(n_queries: int, num_splits: int, k_pad: int, device: torch.device) -> torch.Tensor:
    # Uninitialised on purpose: the kernel writes every entry (tests poison this buffer through this function).
    return torch.empty((n_queries, num_splits, k_pad), dtype=torch.int64, device=device)


def _triton_keys(
    queries: torch.Tensor,
    docs: torch.Tensor,
    k: int,
    *,
    num_splits: int | None,
    allow_tf32: bool,
    overrides: tuple[int | None, int | None, int | None, int, int],
) -> torch.Tensor:
    """(B, k) int64 keys, descending: stage 1 fused kernel over N-splits, stage 2 topk over the partial lists."""
    n_queries, dim = queries.shape
    n_docs = docs.shape[0]
    k_pad = _next_pow2(k)
    if n_queries == 0:
        return torch.empty((0, k), dtype=torch.int64, device=queries.device)
    if num_splits is None:
        num_splits = _default_num_splits(n_queries, n_docs, k_pad, queries.device)
    if num_splits < 1:
        raise ValueError(f"num_splits={num_splits} must be >= 1")
    # Split lengths aligned to SPLIT_ALIGN; recount so that no split is empty.
    align = _topk_kernel.SPLIT_ALIGN
    n_per_split = -(-n_docs // num_splits)
    n_per_split = -(-n_per_split // align) * align
    num_splits = -(-n_docs // n_per_split)

    partial = _alloc_partial_keys(n_queries, num_splits, k_pad, queries.device)  # (B, S, K_PAD)
    args = (
        queries, docs, partial, n_queries, n_docs, dim, n_per_split, min(_next_pow2(n_queries), 1024),
        queries.stride(0), queries.stride(1), docs.stride(0), docs.stride(1), partial.stride(0), partial.stride(1),
    )  # fmt: skip
    consts = dict(
        K_PAD=k_pad,
        INPUT_PRECISION="tf32" if allow_tf32 else "ieee",
        DOT_IN_FP32=_topk_kernel.INTERPRET and queries.dtype == torch.bfloat16,
    )
    block_b, block_n, block_d, num_warps, num_stages = overrides
    if block_b is None and block_n is None and block_d is None:

        def grid(meta):
            return (-(-n_queries // meta["BLOCK_B"]), num_splits)

        _topk_kernel.topk_partial_autotuned[grid](*args, **consts)
    else:
        block_b, block_n, block_d = block_b or 16, block_n or max(64, k_pad), block_d or 64
        blocks = (block_b, block_n, block_d)
        if any(b < 16 or b & (b - 1) for b in blocks) or block_n < k_pad or block_n > align:
            raise ValueError(f"tile sizes (block_b, block_n, block_d)={blocks} must be powers of two >= 16, with "
                             f"next_pow2(k)={k_pad} <= block_n <= {align}")  # fmt: skip
        grid = (-(-n_queries // block_b), num_splits)
        _topk_kernel.topk_partial[grid](
            *args, **consts, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_D=block_d,
            num_warps=num_warps, num_stages=num_stages,
        )  # fmt: skip

    if num_splits == 1:
        return partial[:, 0, :k]  # already sorted
    # Stage 2: the partial lists are small (B, S * K_PAD); keys are unique, so topk needs no tie handling.
    return partial.view(n_queries, num_splits * k_pad).topk(k, dim=1).values


def _candidates(k: int) -> int:
    """Candidates the bf16 filter keeps for a top k: enough that on random 768-d scores no query of 256 needed the
    wider search (k = 10 or 100, N = 100k), and fewer than 2k + 8, which cost 1.1x more at B = 256, k = 100."""
    return k + k // 4 + 8
