"""Building, saving and loading a passage index: the entry points to the index API.

`build_index` picks the kind: "exact" (`exact_index.ExactIndex`, the `topk_scores` kernel) or a FAISS index made
from a factory string (`faiss_index.FaissIndex`: "faiss_flat" is exact; "ivf_flat", "ivf_pq" and "hnsw" are
approximate). The interface they share is `index_base.Index`. `save_index` / `load_index` keep an index with the
fingerprints of its corpus and encoder (files: `index_io.py`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from rag_e2e.retrieval.exact_index import ExactIndex
from rag_e2e.retrieval.faiss_index import FAISS_KINDS, FaissIndex
from rag_e2e.retrieval.index_base import BLOCK_ROWS, Index, Vectors
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
    "IndexKind", "IndexMeta", "IndexMismatchError", "build_index", "corpus_fingerprint", "load_index", "save_index",
    "state_fingerprint",
]  # fmt: skip

IndexKind = Literal["exact", "faiss_flat", "ivf_flat", "ivf_pq", "hnsw"]


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
