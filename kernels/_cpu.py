"""CPU helpers for `topk_scores`: FAISS's exhaustive search, widening 16-bit passages, the bf16-matmul test.

Which CPU path runs is measured per machine (`_autotune`); what makes them differ: FAISS blocks the float32 (B, d) x
(d, c) product with the OpenBLAS it ships and keeps per-query heaps, while the chunked torch path uses torch's BLAS
(MKL in this wheel: on an AMD EPYC ~0.65x OpenBLAS's speed, on an Intel Xeon with AMX faster than FAISS). 16-bit
passages must be widened to float32 for FAISS; the torch path widens cache-sized chunks and scores them while still
in cache, or, for bfloat16 where oneDNN multiplies it, filters candidates with a bf16 product
(`topk._bf16_filtered_keys`).
numpy's matmul (OpenBLAS too) is as fast as FAISS's, but its worker threads busy-wait after each call and, measured,
slowed the next FAISS or torch call 2-3x on 2 cores, which a training loop would pay; so it is not a candidate.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import faiss
except ImportError:  # the "faiss" backend is then unavailable; "auto" uses the chunked path
    faiss = None

FAISS_BLOCK_ROWS = 16_384  # 16-bit passages are widened to float32 this many rows at a time (memory O(block * d))


def faiss_available() -> bool:
    return faiss is not None


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
