"""CPU helpers for `topk_scores`: where FAISS's exhaustive search beats the chunked torch path, and widening.

Measured with `python -m rag_e2e.kernels.bench` (AMD EPYC Zen 4, 2 threads, 100k x 768, B in {1, 16, 256}): this
torch wheel's BLAS is MKL, which runs the float32 (B, d) x (d, c) products of exact search at ~0.65x the speed of the
OpenBLAS inside faiss-cpu, and `faiss.knn` blocks that product and keeps per-query heaps: from 20 queries (where
FAISS itself switches to BLAS) FAISS is faster, and `topk_scores` calls it and applies its own tie rule. Below 20,
FAISS scans D once per query: for one float32 query that scan is still faster than MKL's, for 16 queries the
chunked torch product (one pass over D) is ~0.6x FAISS's time. 16-bit passages must be widened to float32 first; with
few queries the torch path, which widens cache-sized chunks and scores them while still in cache, is faster. bfloat16
passages skip the widening where oneDNN multiplies bf16 (`topk._bf16_filtered_keys`), and beat FAISS at every B.
numpy's matmul (OpenBLAS too) is as fast as FAISS's, but its worker threads busy-wait after each call and, measured,
slowed the next FAISS or torch call 2-3x on 2 cores, which a training loop would pay; so it is not used.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import faiss
except ImportError:  # the "faiss" backend is then unavailable; "auto" uses the chunked path
    faiss = None

FAISS_MIN_QUERIES = 20  # FAISS from this many queries (where FAISS itself switches to BLAS), and for 1 float32 query
FAISS_BLOCK_ROWS = 16_384  # 16-bit passages are widened to float32 this many rows at a time (memory O(block * d))


def faiss_available() -> bool:
    return faiss is not None


def faiss_prefers(dtype: torch.dtype, n_queries: int) -> bool:
    """Whether "auto" on CPU should search (B = n_queries) passages of `dtype` with FAISS (never bfloat16 where
    the bf16 matmul filter runs: measured 0.2-0.9x FAISS's time on float32 copies, at every B)."""
    if faiss is None or (dtype == torch.bfloat16 and bf16_matmul_supported()):
        return False
    return n_queries >= FAISS_MIN_QUERIES or (dtype == torch.float32 and n_queries == 1)


def bf16_matmul_supported() -> bool:
    """Whether oneDNN runs bf16 matmuls on this CPU (AVX512-BF16 / AMX, or AVX512 emulation)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bf16_filter_applies(queries: torch.Tensor, docs: torch.Tensor) -> bool:
    """Whether `topk_scores`' torch path may select candidates with a bf16 matmul: bfloat16 inputs on a CPU where
    oneDNN runs bf16 matmuls (AVX512-BF16 / AMX, or AVX512 emulation)."""
    return docs.dtype == torch.bfloat16 and docs.device.type == "cpu" and bf16_matmul_supported()


def widen_into(chunk: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """A (c, d) CPU chunk as float32: itself when it already is, else copied into `buf` (>= c * d elements, reused
    across chunks; copy_ into it runs ~7x faster than `.float()`)."""
    if chunk.dtype == torch.float32:
        return chunk
    return buf[: chunk.numel()].view(chunk.shape).copy_(chunk)


def faiss_candidates(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FAISS's exact top-k by inner product of (B, d) float32 queries over a (c, d) float32 block: (B, k) scores and
    rows, sorted by score; the order among equal scores is FAISS's (the caller applies the tie rule)."""
    scores, rows = faiss.knn(queries, block, k, metric=faiss.METRIC_INNER_PRODUCT)
    return torch.from_numpy(scores), torch.from_numpy(rows)
