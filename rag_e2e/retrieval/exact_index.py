"""Exact maximum-inner-product search with the `topk_scores` kernel, and the tie rule its top-k lists follow.

Equal scores rank the smaller row first, everywhere: in the kernel, in merged blocks and in rescored candidates, so
results do not depend on how the corpus was split into blocks or shards.
"""

from __future__ import annotations

import torch

from rag_e2e.kernels import topk_scores
from rag_e2e.retrieval.index_base import BLOCK_ROWS, Index, Vectors, _float32_numpy

MAX_CANDIDATES = 128  # topk_scores' largest k


class ExactIndex(Index):
    """Exact search with `rag_e2e.kernels.topk_scores` (fused Triton kernel on GPU, chunked torch elsewhere).

    A tensor p_reps moves to the query device on the first search. An on-disk p_reps is searched `block_rows` rows at
    a time (each block converted to float32 on the query device) and the blocks' top-k lists are merged with the
    kernel's tie rule: equal scores rank the smaller row first.

    Args:
        p_reps: (N, d) passage vectors (tensor, array or memmap of any float dtype).
        block_rows: rows per block when p_reps is a numpy array on disk.
    """

    kind = "exact"

    def __init__(self, p_reps: Vectors, *, block_rows: int = BLOCK_ROWS):
        super().__init__(p_reps)
        if block_rows < 1:
            raise ValueError(f"block_rows={block_rows} must be >= 1")
        self.block_rows = block_rows
        self.params = {"block_rows": block_rows}

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_k(k)
        q_reps = q_reps.detach().float().contiguous()
        if isinstance(self.p_reps, torch.Tensor) and self.p_reps.device != q_reps.device:
            self.p_reps = self.p_reps.to(q_reps.device)
        # The kernel's fp32 scores depend (by an ulp or so) on batch and block shapes, so the same (query, passage)
        # pair could score differently here and on a DDP shard. Rescore a widened candidate list in float64 and
        # round once: scores, and hence the order and ties, no longer depend on how the corpus was split.
        wide = min(self.size, max(k, min(2 * k + 8, MAX_CANDIDATES)))
        _, rows = exact_topk(self.p_reps, q_reps, wide, block_rows=self.block_rows)
        scores = torch.einsum("bd,bkd->bk", q_reps.double(), self.gather(rows).double()).float()  # (B, wide)
        return rank_candidates(scores, rows, k)


def exact_topk(
    p_reps: Vectors, q_reps: torch.Tensor, k: int, *, block_rows: int = BLOCK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of (B, d) float32 queries over p_reps: scores (B, k) float32 and rows (B, k) int64 on q_reps' device.

    A numpy p_reps is scored `block_rows` rows at a time; equal scores rank the smaller row first, as in `topk_scores`.
    """
    if isinstance(p_reps, torch.Tensor):
        scores, rows = topk_scores(q_reps.to(p_reps.device), p_reps, k)
        return scores.to(q_reps.device), rows.to(q_reps.device)
    best_scores = q_reps.new_empty(q_reps.shape[0], 0)
    best_rows = torch.empty(q_reps.shape[0], 0, dtype=torch.int64, device=q_reps.device)
    for start in range(0, p_reps.shape[0], block_rows):
        block = torch.from_numpy(_float32_numpy(p_reps[start : start + block_rows])).to(q_reps.device)  # (c, d)
        scores, rows = topk_scores(q_reps, block, min(k, block.shape[0]))
        best_scores, best_rows = _merge_topk(best_scores, best_rows, scores, rows + start, k)
    return best_scores, best_rows


def rank_candidates(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of (B, C) candidates: higher score first, equal scores by smaller row (the kernel's tie rule)."""
    by_row = rows.argsort(dim=1, stable=True)
    scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), rows.gather(1, order)


def _merge_topk(
    scores_a: torch.Tensor, rows_a: torch.Tensor, scores_b: torch.Tensor, rows_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of two (B, *) candidate lists, each in tie-rule order, where every row in b is larger than those in a.

    Concatenated, equal scores then appear in increasing row order, which a stable sort keeps.
    """
    scores, rows = torch.cat([scores_a, scores_b], dim=1), torch.cat([rows_a, rows_b], dim=1)
    order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), rows.gather(1, order)
