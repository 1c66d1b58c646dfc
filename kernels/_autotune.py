"""Which exact CPU search `topk_scores(backend="auto")` runs: measured on this machine, once per shape class.

CPUs of one kind differ. On an AMD EPYC (this torch wheel's MKL, no bf16 units in use) FAISS's OpenBLAS product won
from 20 queries; on an Intel Xeon with AMX, `torch.topk(Q @ D.T)` ran 3x faster than FAISS at B = 256. A constant
tuned on one is wrong on the other, so the first search of a shape class (dtype, B, N and k buckets, d, threads,
faiss version) times every exact candidate on a probe cut from the real inputs, keeps the fastest, and remembers it
per host (`rag_e2e.tuning`: `$RAG_E2E_CACHE/tuning/topk_backend.json`, written atomically; another CPU, thread
count or torch version measures again). `index.search_backend=NAME` (or `force(NAME)`) skips the measurement.
The probe's times are extrapolated to the real N (`_measure`); it costs about 0.2-0.8 s per shape class on 2 cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rag_e2e.tuning import best_of, measured_choice

from . import _cpu

CANDIDATES = ("torch", "torch_pruned", "torch_fp32", "faiss")
PROBE_QUERIES = 256  # at most this many of the real queries are timed
PROBE_MACS = 2**31  # multiply-adds per probe call: B * rows * d (about 20-40 ms per call on 2 cores)
PROBE_MAX_ROWS = 2**15  # and at most this many passages (a 100 MB fp32 scan at d = 768, past the caches)
# Part of every shape class: raise it when a candidate's implementation changes, so choices measured on the old code
# are measured again (2: the bf16 filter selects through group maxima)
REVISION = 2

_forced: str | None = None
_chosen: dict[str, str] = {}  # shape class -> choice, so a training loop reads the file once per class


def force(backend: str | None) -> None:
    """Make "auto" on CPU run `backend` (one of `CANDIDATES`); None (or "auto") measures again."""
    if backend not in (None, "auto", *CANDIDATES):
        raise ValueError(f"search backend {backend!r} must be 'auto' or one of {CANDIDATES}")
    global _forced
    _forced = None if backend == "auto" else backend


def forget() -> None:
    """Drop the choices remembered in this process (the per-host file stays)."""
    _chosen.clear()


def available(queries: torch.Tensor, docs: torch.Tensor) -> list[str]:
    """The exact CPU candidates for these inputs: the chunked torch path; where it filters with oneDNN's bf16 matmul
    (bfloat16 inputs), the same filter ranking only the scores above its running (m+1)-th best, and the chunked path
    widened to fp32 before the product; FAISS."""
    names = ["torch"]
    if _cpu.bf16_filter_applies(queries, docs):
        names += ["torch_pruned", "torch_fp32"]
    if _cpu.faiss_available():
        names.append("faiss")
    return names


def _bucket(x: int, base: int) -> int:
    """The smallest power of `base` >= x: shapes in one bucket share one measurement."""
    return base ** math.ceil(math.log(max(1, x), base) - 1e-9)


def shape_class(queries: torch.Tensor, docs: torch.Tensor, k: int) -> str:
    faiss_version = getattr(_cpu.faiss, "__version__", "none") if _cpu.faiss_available() else "none"
    return (f"{str(docs.dtype).removeprefix('torch.')} B<={_bucket(queries.shape[0], 2)} "
            f"N<={_bucket(docs.shape[0], 4)} k<={_bucket(k, 2)} d={docs.shape[1]} "
            f"threads={torch.get_num_threads()} faiss={faiss_version} rev={REVISION}")


def choose(queries: torch.Tensor, docs: torch.Tensor, k: int,
           search: Callable[[str, torch.Tensor, torch.Tensor, int], object]) -> str:
    """The backend "auto" runs on CPU for these inputs: forced, remembered, or measured now with `search(backend,
    queries, docs, k)` on a probe (at most `PROBE_QUERIES` queries and `PROBE_MAX_ROWS` passages)."""
    if _forced is not None:
        if _forced == "faiss" and not _cpu.faiss_available():
            raise ValueError("search backend 'faiss' forced, but faiss is not importable; pip install 'rag_e2e[faiss]'")
        return _forced
    names = available(queries, docs)
    if len(names) == 1:
        return names[0]
    key = shape_class(queries, docs, k)
    if key not in _chosen:
        _chosen[key] = measured_choice("topk_backend", key, lambda: _measure(queries, docs, k, names, search))
    return _chosen[key] if _chosen[key] in names else "torch"  # a file written by another faiss install


def _measure(queries: torch.Tensor, docs: torch.Tensor, k: int, names: list[str],
             search: Callable[[str, torch.Tensor, torch.Tensor, int], object]) -> dict[str, float]:
    """Seconds each candidate would take on all of `docs`: timed on the probe's rows and on a quarter of them, and
    extrapolated along the line through the two (a quarter, not a half: the slope's noise, which the extrapolation
    multiplies, is a third of it). A cost that does not grow with N (re-scoring the candidates,
    FAISS's per-query setup) weighs more in a small probe than in the real search, so comparing probe times alone
    picked FAISS over a path that ran 1.6x faster on the real 100k x 768 (bfloat16, B = 256, k = 100)."""
    q = queries[:PROBE_QUERIES]
    rows = min(docs.shape[0], PROBE_MAX_ROWS, max(4 * k, PROBE_MACS // (q.shape[0] * docs.shape[1])))
    part_rows = max(min(k, rows), rows // 4)

    def timed(n: int) -> dict[str, float]:
        d, kk = docs[:n], min(k, n)
        return best_of({name: (lambda name=name: search(name, q, d, kk)) for name in names}, repeats=2)

    full = timed(rows)
    if rows >= docs.shape[0] or part_rows == rows:  # the probe is the whole search
        return full
    part = timed(part_rows)
    return {name: full[name] + max(0.0, full[name] - part[name]) / (rows - part_rows) * (docs.shape[0] - rows)
            for name in names}
