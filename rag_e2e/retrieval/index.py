"""Maximum-inner-product indexes over passage vectors, behind one small interface."""

from __future__ import annotations

import abc
from typing import Literal

import numpy as np
import torch

from rag_e2e.kernels import topk_scores

IndexKind = Literal["exact", "faiss_flat"]


class Index(abc.ABC):
    """Passage vectors p_reps (N, d) searched by inner product with query vectors."""

    def __init__(self, p_reps: torch.Tensor):
        if p_reps.ndim != 2 or p_reps.shape[0] == 0:
            raise ValueError(f"index needs a non-empty (N, d) matrix, got shape {tuple(p_reps.shape)}")
        self.p_reps = p_reps.float().contiguous()  # (N, d), kept for gathering the retrieved vectors

    @property
    def size(self) -> int:
        return self.p_reps.shape[0]

    @property
    def dim(self) -> int:
        return self.p_reps.shape[1]

    @abc.abstractmethod
    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k passages per query.

        Args:
            q_reps: (B, d) query vectors.
            k: passages per query, 1 <= k <= size.

        Returns:
            scores (B, k) float32, descending, and row indices (B, k) int64 into the corpus.
        """

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, k) row indices -> (B, k, d) stored passage vectors (constants: no gradient)."""
        return self.p_reps[rows.cpu()].to(rows.device)


class ExactIndex(Index):
    """Exact search with `rag_e2e.kernels.topk_scores` (fused Triton kernel on GPU, chunked torch elsewhere)."""

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.p_reps.device != q_reps.device:
            self.p_reps = self.p_reps.to(q_reps.device)
        return topk_scores(q_reps.detach().float().contiguous(), self.p_reps, k)


class FaissFlatIndex(Index):
    """FAISS IndexFlatIP (exact), on GPU when FAISS sees one."""

    def __init__(self, p_reps: torch.Tensor):
        import faiss

        super().__init__(p_reps)
        index = faiss.IndexFlatIP(self.dim)
        if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(np.ascontiguousarray(self.p_reps.cpu().numpy()))
        self._faiss = index

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 1 <= k <= self.size:
            raise ValueError(f"k={k} must be between 1 and the number of passages N={self.size}")
        queries = np.ascontiguousarray(q_reps.detach().float().cpu().numpy())
        scores, rows = self._faiss.search(queries, k)
        return torch.from_numpy(scores).to(q_reps.device), torch.from_numpy(rows).long().to(q_reps.device)


def build_index(kind: IndexKind, p_reps: torch.Tensor) -> Index:
    """An index of `kind` over (N, d) passage vectors."""
    return {"exact": ExactIndex, "faiss_flat": FaissFlatIndex}[kind](p_reps)
