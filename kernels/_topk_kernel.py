"""Triton kernel: fused inner-product scoring + running top-k, never materialising the (B, N) score matrix.

Each (score, passage index) pair is packed into one int64 key so that a single integer sort carries the index:

    key = (ordered(score) << 32) | (0xFFFFFFFF - index)

`ordered` maps the fp32 bit pattern to an int32 whose signed order matches the float order, so a larger key means a
larger score and, for equal scores, a smaller passage index. Keys are unique (indices are), which makes every top-k
deterministic. Padding (masked rows/columns, unfilled list slots) is `EMPTY_KEY`, below every real key.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

# Read once, like triton itself: kernels decorated below are interpreted iff this was set before import.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

EMPTY_KEY = -(2**63)
_EMPTY_KEY = tl.constexpr(EMPTY_KEY)
# Split lengths are multiples of this, so no BLOCK_N tile straddles two splits.
SPLIT_ALIGN = 256


def topk_configs() -> list[triton.Config]:
    """Candidate tile sizes; `_prune_configs` keeps those that fit the call's shapes."""
    if INTERPRET:
        # One small config: the interpreter is slow and does not benefit from tuning. BLOCK_N=128 covers K_PAD<=128.
        return [triton.Config({"BLOCK_B": 16, "BLOCK_N": 128, "BLOCK_D": 32})]
    shapes = [  # (BLOCK_B, BLOCK_N, BLOCK_D, num_warps, num_stages)
        (16, 64, 128, 4, 4), (16, 128, 64, 4, 4), (16, 128, 128, 8, 3), (16, 256, 64, 8, 3),
        (32, 64, 64, 4, 4), (32, 128, 64, 4, 3), (32, 128, 64, 8, 3),
        (64, 64, 64, 4, 4), (64, 128, 64, 8, 3), (128, 64, 64, 8, 3),
    ]  # fmt: skip
    return [
        triton.Config({"BLOCK_B": bb, "BLOCK_N": bn, "BLOCK_D": bd}, num_warps=w, num_stages=s)
        for bb, bn, bd, w, s in shapes
    ]


def _regs_per_thread(cfg: triton.Config, k_pad: int) -> float:
    # int64 keys tile + int64 running list (2 regs each) + fp32 accumulator (1 reg), spread over the CTA's threads.
    bb, bn = cfg.kwargs["BLOCK_B"], cfg.kwargs["BLOCK_N"]
    return bb * (3 * bn + 2 * k_pad) / (32 * cfg.num_warps)


def _prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop configs whose tile cannot hold K_PAD, that waste rows for small B, or that would spill registers."""
    k_pad, b_bucket = kwargs["K_PAD"], named_args["b_bucket"]
    fits = [c for c in configs if c.kwargs["BLOCK_N"] >= k_pad]
    kept = [c for c in fits if c.kwargs["BLOCK_B"] <= max(16, b_bucket) and _regs_per_thread(c, k_pad) <= 160]
    return kept or [min(fits, key=lambda c: _regs_per_thread(c, k_pad))]


@triton.constexpr_function
def _log2(n):
    return n.bit_length() - 1


@triton.jit
def _pack_keys(scores, offs_n):
    """(BLOCK_B, BLOCK_N) fp32 scores, (BLOCK_N,) int64 indices -> (BLOCK_B, BLOCK_N) int64 keys."""
    scores = tl.where(scores == 0.0, 0.0, scores)  # -0.0 -> +0.0 so that equal scores have equal bits
    bits = scores.to(tl.int32, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats order reversed as ints
    return (ordered.to(tl.int64) << 32) | (0xFFFFFFFF - offs_n)[None, :]


# ---- bitonic network on rows viewed as hypercubes: (R, 2**L) -> (R, 2, ..., 2), bit j of a position is axis L - j.
# Same network as tl.sort / tl.topk, but each compare-and-swap is a min and a max over a size-2 axis instead of an
# xor_sum: equally cheap on the GPU, and the interpreter has fast paths for min/max (xor_sum runs per element there).


@triton.jit
def _bit_indicator(N_AXES: tl.constexpr, AXIS: tl.constexpr):
    """0/1 along AXIS of an N_AXES-dim hypercube: whether an element is the right member of its pair."""
    return tl.reshape(tl.arange(0, 2), [1] * AXIS + [2] + [1] * (N_AXES - AXIS - 1))


@triton.jit
def _compare_swap(h, flip, AXIS: tl.constexpr):
    """Orders each pair along the size-2 AXIS: ascending where flip == 0, descending where flip == 1."""
    lo = tl.min(h, axis=AXIS, keep_dims=True)
    hi = tl.max(h, axis=AXIS, keep_dims=True)
    return tl.where(_bit_indicator(len(h.shape), AXIS) != flip, hi, lo)


@triton.jit
def _merge(h, STAGE: tl.constexpr, ORDER: tl.constexpr):
    """Bitonic merge of runs of 2**STAGE along each row hypercube. ORDER: 0 asc, 1 desc, 2 alternating per run."""
    N_AXES: tl.constexpr = len(h.shape)
    if ORDER == 2:
        flip = _bit_indicator(N_AXES, N_AXES - 1 - STAGE)
    else:
        flip = ORDER
    for i in tl.static_range(STAGE):
        h = _compare_swap(h, flip, N_AXES - STAGE + i)
    return h


@triton.jit
def _rows_topk(x, LOG_K: tl.constexpr, DESCENDING: tl.constexpr):
    """(R, 2**L) -> (R, 2**LOG_K): the largest entries of each row, sorted (bitonic top-k, as in tl.topk)."""
    R: tl.constexpr = x.shape[0]
    LOG_N: tl.constexpr = _log2(x.shape[1])
    if LOG_K == 0:
        x = tl.max(x, axis=1, keep_dims=True)
    else:
        h = tl.reshape(x, [R] + [2] * LOG_N)
        for s in tl.static_range(1, LOG_K + 1):  # sort runs of 2**LOG_K, neighbours in opposite orders
            h = _merge(h, s, 2 if s < LOG_N else DESCENDING)
        for s in tl.static_range(LOG_K + 1, LOG_N + 1):
            # max of an ascending and a descending run = their top half, bitonic; one merge sorts it again
            h = tl.max(h, axis=len(h.shape) - 1 - LOG_K)
            h = _merge(h, LOG_K, 2 if s < LOG_N else DESCENDING)
        x = tl.reshape(h, [R, h.numel // R])
    return x


@triton.jit
def _rows_merge_desc(x, LOG_K: tl.constexpr):
    """(R, 2**LOG_K) rows that are bitonic -> sorted descending."""
    if LOG_K > 0:
        R: tl.constexpr = x.shape[0]
        h = _merge(tl.reshape(x, [R] + [2] * LOG_K), LOG_K, 1)
        x = tl.reshape(h, [R, h.numel // R])
    return x


@triton.jit
def _topk_partial_kernel(
    q_ptr, d_ptr, key_ptr,  # (B, dim) queries, (N, dim) docs, (B, num_splits, K_PAD) int64 partial keys
    n_queries, n_docs, dim, n_per_split,
    b_bucket,  # next pow2 of n_queries: only an autotune key, so a new B does not retune
    stride_qb, stride_qd, stride_dn, stride_dd, stride_kb, stride_ks,
    K_PAD: tl.constexpr,  # list length: next pow2 of k
    INPUT_PRECISION: tl.constexpr,  # "ieee" or "tf32" for fp32 inputs; ignored for 16-bit inputs
    DOT_IN_FP32: tl.constexpr,  # upcast before tl.dot (the interpreter's dot misreads bf16)
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_B queries against the docs of one split, writing a sorted K_PAD list of keys per query."""
    pid_b = tl.program_id(0)
    pid_s = tl.program_id(1)
    # int64 before any multiply: N * stride can exceed 2^31.
    offs_b = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    row_ok = offs_b < n_queries
    n_start = pid_s.to(tl.int64) * n_per_split
    n_end = tl.minimum(n_start + n_per_split, n_docs)

    running = tl.full((BLOCK_B, K_PAD), _EMPTY_KEY, tl.int64)  # sorted descending
    for t in range(0, tl.cdiv(n_end - n_start, BLOCK_N)):
        offs_n = n_start + t * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) int64
        col_ok = offs_n < n_end
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            d_ok = offs_d < dim
            q = tl.load(  # (BLOCK_B, BLOCK_D); reloaded per tile, it stays in L1/L2
                q_ptr + offs_b[:, None] * stride_qb + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0,
            )  # fmt: skip
            dt = tl.load(  # (BLOCK_D, BLOCK_N): docs transposed
                d_ptr + offs_n[None, :] * stride_dn + offs_d[:, None] * stride_dd,
                mask=d_ok[:, None] & col_ok[None, :], other=0.0,
            )  # fmt: skip
            if DOT_IN_FP32:
                q = q.to(tl.float32)
                dt = dt.to(tl.float32)
            acc = tl.dot(q, dt, acc, input_precision=INPUT_PRECISION)
        keys = _pack_keys(acc, offs_n)
        keys = tl.where(row_ok[:, None] & col_ok[None, :], keys, _EMPTY_KEY)  # (BLOCK_B, BLOCK_N)

        # After the first tiles almost no tile beats the current k-th key of any row: skip the sort then.
        beats = tl.max(keys, axis=1) > tl.min(running, axis=1)  # (BLOCK_B,)
        if tl.max(beats.to(tl.int32), axis=0) > 0:
            tile_top = _rows_topk(keys, _log2(K_PAD), 0)  # (BLOCK_B, K_PAD) ascending
            # running desc vs tile_top asc: the elementwise max holds the top K_PAD of both and is bitonic,
            # so one bitonic merge (log K_PAD passes) sorts it.
            running = _rows_merge_desc(tl.maximum(running, tile_top), _log2(K_PAD))

    offs_k = tl.arange(0, K_PAD)
    tl.store(
        key_ptr + offs_b[:, None] * stride_kb + pid_s.to(tl.int64) * stride_ks + offs_k[None, :],
        running, mask=row_ok[:, None],
    )  # fmt: skip


topk_partial_autotuned = triton.autotune(
    configs=topk_configs(),
    key=["b_bucket", "dim", "K_PAD"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_topk_partial_kernel)
topk_partial = _topk_partial_kernel  # direct launch when the caller passes explicit tile sizes
