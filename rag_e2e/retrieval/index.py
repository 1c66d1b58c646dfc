"""Maximum-inner-product indexes over passage vectors, behind one small interface.

`build_index` picks the kind: "exact" (the `topk_scores` kernel) or a FAISS index made from a factory string
("faiss_flat" is exact; "ivf_flat", "ivf_pq" and "hnsw" are approximate). Passage vectors may be a torch tensor or a
numpy array; an `np.memmap` (e.g. from `embeddings.encode_to_memmap`) stays on disk and is read a block of rows at a
time. `save_index` / `load_index` keep an index with the fingerprints of its corpus and encoder (files: `index_io.py`).
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rag_e2e.kernels import topk_scores
from rag_e2e.retrieval.index_io import (  # re-exported: callers import the whole index API from here
    IndexMeta,
    IndexMismatchError,
    corpus_fingerprint,
    read_faiss_file,
    read_index_dir,
    state_fingerprint,
    write_index_dir,
)

__all__ = [
    "FAISS_KINDS", "ExactIndex", "FaissIndex", "Index", "IndexKind", "IndexMeta", "IndexMismatchError", "build_index",
    "corpus_fingerprint", "exact_topk", "load_index", "save_index", "state_fingerprint",
]  # fmt: skip

IndexKind = Literal["exact", "faiss_flat", "ivf_flat", "ivf_pq", "hnsw"]
FAISS_KINDS = ("faiss_flat", "ivf_flat", "ivf_pq", "hnsw")
Vectors = torch.Tensor | np.ndarray  # (N, d) passage vectors; an np.memmap is never copied whole into RAM

MAX_CANDIDATES = 128  # topk_scores' largest k
BLOCK_ROWS = 65_536  # rows of an on-disk matrix converted to float32 at a time
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns with fewer training points per centroid
MAX_POINTS_PER_CENTROID = 256  # and subsamples to this many, so a larger training sample is wasted reading


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


class FaissIndex(Index):
    """A FAISS index with the inner-product metric, on this process's GPU when FAISS sees one (HNSW stays on CPU:
    FAISS has no GPU HNSW).

    Scores are FAISS's: exact for faiss_flat, ivf_flat and hnsw, PQ approximations for ivf_pq. A query for which FAISS
    finds fewer than k passages (it returns row -1, e.g. when the nprobe visited IVF lists hold fewer than k vectors)
    is answered by exact search instead, so every returned row is valid.

    Make one with `build_index` / `FaissIndex.build`, or `FaissIndex.from_cpu_index` for a FAISS index read from disk.

    Args:
        p_reps: (N, d) passage vectors, kept for `gather` and the exact fallback.
        faiss_index: trained FAISS index holding the N vectors, already placed on its device.
        kind: one of `FAISS_KINDS`.
        params: build parameters actually used (recorded by `save_index`).
        on_gpu: whether `faiss_index` is a GPU index.
    """

    def __init__(self, p_reps: Vectors, faiss_index: Any, *, kind: str, params: dict[str, int], on_gpu: bool):
        super().__init__(p_reps)
        if (faiss_index.ntotal, faiss_index.d) != (self.size, self.dim):
            raise ValueError(f"the FAISS index holds {faiss_index.ntotal} vectors of dim {faiss_index.d}, but p_reps "
                             f"is {tuple(self.p_reps.shape)}")  # fmt: skip
        self.kind, self.params, self._faiss, self._on_gpu = kind, dict(params), faiss_index, on_gpu

    @classmethod
    def build(cls, kind: str, p_reps: Vectors, **options: int) -> FaissIndex:
        """Train (on CPU, on a seeded sample) and fill an index of `kind`; `options` as in `build_index`."""
        import faiss

        _check_matrix(p_reps)
        params = faiss_params(kind, *p_reps.shape, **options)
        index = faiss.index_factory(p_reps.shape[1], _factory_string(kind, params), faiss.METRIC_INNER_PRODUCT)
        _train(index, p_reps, params)
        _set_search_params(index, params)
        index, on_gpu = _to_gpus(index, kind)
        for start in range(0, p_reps.shape[0], BLOCK_ROWS):  # a memmap is added a block at a time
            index.add(_float32_numpy(p_reps[start : start + BLOCK_ROWS]))
        return cls(p_reps, index, kind=kind, params=params, on_gpu=on_gpu)

    @classmethod
    def from_cpu_index(cls, p_reps: Vectors, cpu_index: Any, *, kind: str, params: dict[str, int]) -> FaissIndex:
        """Wrap a filled CPU FAISS index (e.g. from `faiss.read_index`), moving it to GPU when FAISS sees one."""
        _set_search_params(cpu_index, params)
        index, on_gpu = _to_gpus(cpu_index, kind)
        return cls(p_reps, index, kind=kind, params=params, on_gpu=on_gpu)

    def cpu_index(self) -> Any:
        """The FAISS index on CPU (a copy when it lives on GPU), e.g. for `faiss.write_index`."""
        import faiss

        return faiss.index_gpu_to_cpu(self._faiss) if self._on_gpu else self._faiss

    def search(self, q_reps: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_k(k)
        queries = q_reps.detach().float().cpu()
        scores, rows = self._faiss.search(np.ascontiguousarray(queries.numpy()), k)
        scores, rows = torch.from_numpy(scores), torch.from_numpy(rows).long()
        short = (rows < 0).any(dim=1)  # FAISS found fewer than k passages for these queries
        if short.any():
            scores[short], rows[short] = exact_topk(self.p_reps, queries[short], k)
        return scores.to(q_reps.device), rows.to(q_reps.device)


def build_index(
    kind: IndexKind,
    p_reps: Vectors,
    *,
    nlist: int = 256,
    nprobe: int = 16,
    pq_m: int = 16,
    pq_bits: int = 8,
    hnsw_m: int = 32,
    ef_search: int = 128,
    seed: int = 0,
) -> Index:
    """An index of `kind` over (N, d) passage vectors (tensor, array or memmap).

    Args:
        kind: "exact", "faiss_flat", "ivf_flat", "ivf_pq" or "hnsw".
        p_reps: (N, d) passage vectors.
        nlist: IVF coarse clusters; capped at N // 39 (at least 1) so k-means has enough points per centroid.
        nprobe: IVF lists visited per query; capped at nlist.
        pq_m: IVF-PQ sub-quantizers; must divide d.
        pq_bits: IVF-PQ bits per code; lowered (with a warning) to floor(log2(N)) when N < 2**pq_bits, since PQ
            k-means needs at least 2**pq_bits training points.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search beam.
        seed: seeds the IVF training sample and k-means.
    """
    if kind == "exact":
        return ExactIndex(p_reps)
    from rag_e2e.extras import require

    require("faiss", f"index={kind}")
    options = dict(nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits, hnsw_m=hnsw_m, ef_search=ef_search)
    return FaissIndex.build(kind, p_reps, **options, seed=seed)


def save_index(index: Index, path: str | Path, meta: IndexMeta) -> Path:
    """Save `index` to the directory `path` (atomically; see `index_io.write_index_dir`), replacing one there.

    `meta.params` is replaced by `index.params`, the build parameters actually used, from which `load_index` rebuilds.

    Raises:
        ValueError: `meta` does not describe `index`, or `path` holds something other than a saved index.
    """
    if (meta.kind, meta.dim, meta.size) != (index.kind, index.dim, index.size):
        raise ValueError(f"meta (kind, dim, size)={(meta.kind, meta.dim, meta.size)} does not describe the index "
                         f"{(index.kind, index.dim, index.size)}; build it with IndexMeta.for_index")  # fmt: skip
    meta = dataclasses.replace(meta, params=dict(index.params))
    faiss_index = index.cpu_index() if isinstance(index, FaissIndex) else None
    return write_index_dir(path, meta, index.p_reps, faiss_index)


def load_index(
    path: str | Path,
    *,
    corpus_fingerprint: str,
    encoder_fingerprint: str | None = None,
    dim: int | None = None,
    mmap: bool = True,
) -> tuple[Index, IndexMeta]:
    """Load an index saved by `save_index`, refusing one built from another corpus or encoder.

    Args:
        path: the index directory.
        corpus_fingerprint: `corpus_fingerprint(passages)` of the corpus the caller maps rows to.
        encoder_fingerprint: `state_fingerprint` of the passage tower; None skips the check.
        dim: the query encoder's output dim; None skips the check.
        mmap: keep the vectors on disk (np.memmap) instead of reading them into a float32 tensor.

    Raises:
        IndexMismatchError: a missing or unreadable file, or a mismatched fingerprint, dim or size.
    """
    meta, vectors = read_index_dir(path, corpus_fingerprint=corpus_fingerprint,
                                   encoder_fingerprint=encoder_fingerprint, dim=dim, mmap=mmap)  # fmt: skip
    if meta.kind == "exact":
        return ExactIndex(vectors, block_rows=meta.params.get("block_rows", BLOCK_ROWS)), meta
    if meta.kind not in FAISS_KINDS:
        raise IndexMismatchError(path, "kind", f"one of exact, {', '.join(FAISS_KINDS)}", meta.kind)
    return FaissIndex.from_cpu_index(vectors, read_faiss_file(path, meta), kind=meta.kind, params=meta.params), meta


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


def faiss_params(kind: str, n: int, d: int, **options: int) -> dict[str, int]:
    """The build parameters a FAISS `kind` uses for n vectors of dim d, after capping them to what n can train."""
    if kind == "faiss_flat":
        return {}
    if kind == "hnsw":
        return {"hnsw_m": options["hnsw_m"], "ef_search": options["ef_search"]}
    if kind not in ("ivf_flat", "ivf_pq"):
        raise ValueError(f"unknown index kind {kind!r}; set `index.kind` to 'exact' or one of {FAISS_KINDS}")
    nlist = max(1, min(options["nlist"], n // MIN_POINTS_PER_CENTROID))
    params = {"nlist": nlist, "nprobe": min(options["nprobe"], nlist), "seed": options["seed"]}
    if kind == "ivf_flat":
        return params
    pq_m, pq_bits = options["pq_m"], options["pq_bits"]
    if d % pq_m:
        raise ValueError(f"ivf_pq needs `index.pq_m` to divide the embedding dim: pq_m={pq_m}, dim={d}")
    bits = min(pq_bits, n.bit_length() - 1)  # floor(log2(n)): PQ k-means needs >= 2**bits training points
    if bits < 1:
        raise ValueError(f"ivf_pq needs at least 2 passages to train, got N={n}; use `index.kind=exact`")
    if bits < pq_bits:
        import warnings

        warnings.warn(f"ivf_pq: N={n} passages cannot train 2**{pq_bits} PQ centroids; using `index.pq_bits`={bits}",
                      stacklevel=3)  # fmt: skip
    return params | {"pq_m": pq_m, "pq_bits": bits}


def _factory_string(kind: str, params: dict[str, int]) -> str:
    if kind == "faiss_flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{params['hnsw_m']}"
    coarse = f"IVF{params['nlist']}"
    # "np": no polysemous training, which only serves Hamming-filtered search and is slow (seconds on 2k vectors).
    return f"{coarse},Flat" if kind == "ivf_flat" else f"{coarse},PQ{params['pq_m']}x{params['pq_bits']}np"


def _train(index: Any, p_reps: Vectors, params: dict[str, int]) -> None:
    """Train IVF (and PQ) on a seeded sample of at most as many rows as FAISS k-means would use."""
    import faiss

    if index.is_trained:  # Flat and HNSW need no training
        return
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))  # the concrete IndexIVFFlat / IndexIVFPQ
    ivf.cp.seed = params["seed"]
    if hasattr(ivf, "pq"):
        ivf.pq.cp.seed = params["seed"]
    n = p_reps.shape[0]
    n_train = min(n, MAX_POINTS_PER_CENTROID * max(params["nlist"], 2 ** params.get("pq_bits", 0)))
    sample = np.sort(np.random.default_rng(params["seed"]).choice(n, n_train, replace=False))  # sorted: disk order
    rows = torch.from_numpy(sample) if isinstance(p_reps, torch.Tensor) else sample
    index.train(_float32_numpy(p_reps[rows]))


def _set_search_params(index: Any, params: dict[str, int]) -> None:
    import faiss

    space = faiss.ParameterSpace()
    if "nprobe" in params:
        space.set_index_parameter(index, "nprobe", params["nprobe"])
    if "ef_search" in params:
        space.set_index_parameter(index, "efSearch", params["ef_search"])


_GPU_RESOURCES: dict[int, Any] = {}  # one FAISS StandardGpuResources per device and process, reused by every index


def _to_gpus(index: Any, kind: str) -> tuple[Any, bool]:
    """(index on this process's GPU, True), or (index, False) without GPUs or for HNSW.

    This process's GPU is torch's current device: under DDP Lightning sets it to the rank's own, so each rank puts
    its shard on its GPU only (copying to every visible GPU would put world_size copies on each).
    """
    import faiss

    if kind == "hnsw" or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return index, False
    device = torch.cuda.current_device() if torch.cuda.is_available() else 0
    if device not in _GPU_RESOURCES:
        _GPU_RESOURCES[device] = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES[device], device, index), True  # nprobe is copied along
    except RuntimeError as err:
        if kind == "ivf_pq":  # GPU IVF-PQ supports fewer (pq_m, pq_bits) pairs than the CPU one
            raise ValueError(f"FAISS cannot put this ivf_pq index on GPU ({err}); change `index.pq_m` or "
                             "`index.pq_bits` (GPU PQ wants pq_bits=8)") from err  # fmt: skip
        raise


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
