"""A thin wrapper over FAISS indexes (flat, IVF-Flat, IVF-PQ, HNSW) with the inner-product metric.

Parameters are capped to what the corpus can train, training runs on a seeded sample, and the index goes to this
process's GPU when FAISS sees one. FAISS is an optional extra: it is imported only inside the functions that use it,
so importing this module does not need it (`index.build_index` checks for it first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rag_e2e.retrieval.exact_index import exact_topk
from rag_e2e.retrieval.index_base import BLOCK_ROWS, Index, Vectors, _check_matrix, _float32_numpy

FAISS_KINDS = ("faiss_flat", "ivf_flat", "ivf_pq", "hnsw")

MIN_POINTS_PER_CENTROID = 39  # FAISS k-means warns with fewer training points per centroid
MAX_POINTS_PER_CENTROID = 256  # and subsamples to this many, so a larger training sample is wasted reading


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
