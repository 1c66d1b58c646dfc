"""The `Index` interface: (N, d) passage vectors searched by inner product, and how they are stored.

Passage vectors may be a torch tensor or a numpy array; an `np.memmap` (e.g. from `embeddings.encode_to_memmap`)
stays on disk and is read a block of rows at a time. Implementations: `exact_index.ExactIndex` and
`faiss_index.FaissIndex`; `index.build_index` picks one by kind.
"""

from __future__ import annotations

import abc

import numpy as np
import torch

Vectors = torch.Tensor | np.ndarray  # (N, d) passage vectors; an np.memmap is never copied whole into RAM

BLOCK_ROWS = 65_536  # rows of an on-disk matrix converted to float32 at a time


class Index(abc.ABC):
    """Passage vectors p_reps (N, d) searched by inner product with query vectors.

    Subclasses set `kind` (an `IndexKind`) and `params` (the build parameters actually used), which `save_index`
    records so that `load_index` rebuilds the same index.
    """

    kind: str

    def __init__(self, p_reps: Vectors):
        _check_matrix(p_reps)
        self.p_reps = _as_stored(p_reps)  # (N, d), kept for gathering the retrieved vectors
        self.params: dict[str, int] = {}

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
            scores (B, k) float32, descending, and row indices (B, k) int64 into the corpus, both on q_reps' device.
        """

    def search_with_vectors(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`search` plus the retrieved passages' vectors (a sharded index overrides this to fetch them remotely).

        Returns:
            scores (B, k) float32, rows (B, k) int64 and p_reps (B, k, d) float32, all on q_reps' device.
        """
        scores, rows = self.search(q_reps, k)
        return scores, rows, self.gather(rows)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, k) row indices -> (B, k, d) float32 stored passage vectors (constants: no gradient)."""
        if isinstance(self.p_reps, torch.Tensor):
            return self.p_reps[rows.to(self.p_reps.device)].to(rows.device)
        flat = rows.reshape(-1).cpu().numpy()
        vecs = np.asarray(self.p_reps[flat], dtype=np.float32)  # fancy indexing reads only these rows from disk
        return torch.from_numpy(vecs).reshape(*rows.shape, self.dim).to(rows.device)

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.size:
            raise ValueError(f"k={k} must be between 1 and the number of passages N={self.size}")


def _check_matrix(p_reps: Vectors) -> None:
    if p_reps.ndim != 2 or p_reps.shape[0] == 0:
        raise ValueError(f"index needs a non-empty (N, d) matrix, got shape {tuple(p_reps.shape)}")
    if isinstance(p_reps, np.ndarray) and not np.issubdtype(p_reps.dtype, np.floating):
        raise ValueError(f"index needs floating-point passage vectors, got dtype {p_reps.dtype}")


def _as_stored(p_reps: Vectors) -> Vectors:
    """A memmap stays on disk; anything else becomes a contiguous float32 tensor."""
    if isinstance(p_reps, np.memmap):
        return p_reps
    if isinstance(p_reps, np.ndarray):
        p_reps = torch.from_numpy(np.array(p_reps, dtype=np.float32))
    return p_reps.float().contiguous()


def _float32_numpy(block: Vectors) -> np.ndarray:
    """A (c, d) slice of p_reps as a C-contiguous float32 numpy array (what FAISS and `torch.from_numpy` accept)."""
    if isinstance(block, torch.Tensor):
        return np.ascontiguousarray(block.detach().float().cpu().numpy())
    return np.array(block, dtype=np.float32, order="C")
