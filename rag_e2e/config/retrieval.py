"""Retrieval: `retriever.*`, `index.*` and the index refresh `refresh.*`."""

from __future__ import annotations

from dataclasses import dataclass

from rag_e2e.config.checks import MAX_K, _check, _one_of
from rag_e2e.schedule import RefreshSchedule


@dataclass
class RetrieverConfig:
    """Retrieval during training and evaluation."""

    k: int = 5  # documents marginalized over
    temperature: float = 0.1  # doc prior = softmax(q·d / temperature); raw dot products are too peaked
    freeze_query_encoder: bool = False
    # Passage-side training, one key per mode. Default (both off) is query-side only: doc scores use the index's
    # stored passage vectors. train_passage_encoder: the retrieved passages are re-encoded in-graph by the current
    # passage tower, so q·d trains both towers (end to end; pair it with `refresh`). rerank_candidates = k' > k:
    # search k' in the (stale) index, re-score them with the current towers, keep the best k.
    train_passage_encoder: bool = False
    rerank_candidates: int = 0
    closed_book: bool = False  # generator only: it reads the question alone (retrieval is still scored, not read)
    read_gold: bool = False  # the reader's upper bound: it reads each question's gold passage (retrieval is scored)
    # passages per forward pass when (re-)encoding the corpus; 0: the fastest measured on this machine for the tower,
    # passage length and device, at the first build (rag_e2e/retrieval/encode_batch.py)
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        _check(1 <= self.k <= MAX_K, f"set `retriever.k` in [1, {MAX_K}] (the top-k search's limit)")
        _check(self.encode_batch_size >= 0, "set `retriever.encode_batch_size` >= 1, or 0 to measure it")
        _check(self.rerank_candidates <= MAX_K,
               f"set `retriever.rerank_candidates` <= {MAX_K} (the top-k search's limit)")
        _check(self.temperature > 0, "set `retriever.temperature` > 0")
        _check(self.rerank_candidates == 0 or self.rerank_candidates > self.k,
               "set `retriever.rerank_candidates` to 0 (off) or more than `retriever.k`")
        _check(not (self.closed_book and self.read_gold), "`retriever.closed_book` and `retriever.read_gold` exclude "
               "each other")
        _check(not ((self.closed_book or self.read_gold) and (self.train_passage_encoder or self.rerank_candidates)),
               "`retriever.closed_book`/`read_gold` read no retrieved passages: unset "
               "`retriever.train_passage_encoder`/`rerank_candidates`")
        _check(not (self.freeze_query_encoder and self.train_passage_encoder),
               "`retriever.freeze_query_encoder` and `retriever.train_passage_encoder` exclude each other")

    @property
    def query_frozen(self) -> bool:
        """The query tower never trains: frozen by key, or nothing it retrieves is read (closed book, gold)."""
        return self.freeze_query_encoder or self.closed_book or self.read_gold


@dataclass
class IndexConfig:
    """The passage index (see rag_e2e/retrieval/index.py). FAISS runs on GPU when FAISS sees one."""

    kind: str = "exact"
    nlist: int = 256  # IVF: coarse clusters (capped at N/39 so k-means has enough points per centroid)
    nprobe: int = 16  # IVF: clusters visited per query
    pq_m: int = 16  # IVF-PQ: sub-quantizers; must divide the embedding dim
    pq_bits: int = 8  # IVF-PQ: bits per sub-quantizer code
    hnsw_m: int = 32  # HNSW: graph degree
    ef_search: int = 128  # HNSW: search beam
    embeddings_dir: str | None = None  # write corpus vectors to a memory-mapped array here (out of core, resumable)
    embeddings_dtype: str = "float16"
    shard_size: int = 100_000  # passages per resumable encoding shard
    seed: int = 0
    # Exact search on CPU: "auto" runs the backend measured fastest on this machine for the shape (kernels/_autotune);
    # "torch", "torch_pruned", "torch_fp32" or "faiss" fixes it (no probe). GPUs run Triton either way.
    search_backend: str = "auto"

    def __post_init__(self) -> None:
        _one_of(self.kind, ("exact", "faiss_flat", "ivf_flat", "ivf_pq", "hnsw"), "index.kind")
        _one_of(self.search_backend, ("auto", "torch", "torch_pruned", "torch_fp32", "faiss"),
                "index.search_backend")
        _one_of(self.embeddings_dtype, ("float16", "float32"), "index.embeddings_dtype")
        _check(min(self.nlist, self.nprobe, self.pq_m, self.hnsw_m, self.ef_search) >= 1,
               "set `index.nlist`, `index.nprobe`, `index.pq_m`, `index.hnsw_m` and `index.ef_search` >= 1")
        _check(1 <= self.pq_bits <= 16, "set `index.pq_bits` in [1, 16]")
        _check(self.shard_size >= 1, "set `index.shard_size` >= 1")


@dataclass
class RefreshConfig:
    """Re-encoding the corpus with the current passage tower and swapping in a rebuilt index, on a schedule."""

    # off: built once (the passage tower must not train); sync: training waits; async: a background worker builds it;
    # stale: built once although the passage tower trains (the no-refresh ablation of end-to-end training)
    mode: str = "off"
    schedule: str = "500"  # every N steps, or ranges "0-1000:250,1000-:1000" (start-end:every; end exclusive)
    probe_size: int = 64  # training questions whose stale vs fresh top-k measure staleness at each refresh
    save_index: bool = True  # keep the live index under <run_dir>/index (resume reloads it instead of re-encoding)
    cpu_worker_threads: int = 1  # async on CPU: the background encoder's own torch threads (0: torch's default)
    # async on CPU, how training and the worker share the cores. cpu_worker_nice: the worker thread's nice value
    # (0: training's; 19: it takes only the cycles training leaves). cpu_yield_threads: while the worker encodes,
    # training runs on its threads minus the worker's (at least 1). 2 cores, 1M passages, training steps/s in flight
    # against none: nice 19 0.98 (refresh 207 s), yield 0.79 (239 s), neither (2 + 1 threads) 0.38 (228 s)
    cpu_worker_nice: int = 19
    cpu_yield_threads: bool = False
    # full: every refresh re-encodes the corpus; partial: between full rebuilds (every `full_every`-th refresh), re-
    # encode `partial_fraction` of it (rows retrieved in training, a random drift probe, rows predicted to drift)
    scope: str = "full"
    partial_fraction: float = 0.1
    full_every: int = 4  # partial: every full_every-th refresh is full (0: only the final one, before evaluation)
    probe_share: float = 0.25  # partial: share of the budget spent on the random drift probe
    audit: bool = False  # partial: after each refresh also encode everything (untimed) and log refresh/overlap_vs_full

    def __post_init__(self) -> None:
        _one_of(self.mode, ("off", "sync", "async", "stale"), "refresh.mode")
        _one_of(self.scope, ("full", "partial"), "refresh.scope")
        _check(0 < self.partial_fraction <= 1, "set `refresh.partial_fraction` in (0, 1]")
        _check(self.full_every >= 0, "set `refresh.full_every` >= 0")
        _check(0 < self.probe_share <= 1, "set `refresh.probe_share` in (0, 1]")
        RefreshSchedule.parse(self.schedule, key="refresh.schedule")  # one error naming the key if malformed
        _check(self.probe_size >= 1, "set `refresh.probe_size` >= 1")
        _check(self.cpu_worker_threads >= 0, "set `refresh.cpu_worker_threads` >= 0")
        _check(0 <= self.cpu_worker_nice <= 19, "set `refresh.cpu_worker_nice` in [0, 19] (a nice value)")
