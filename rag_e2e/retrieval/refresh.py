"""Re-encoding the corpus with a passage tower and building an index from it, plus staleness between two indexes.

This is the library half of index refresh: plain functions and a builder with no Lightning in it. The schedule,
the swap and the resume live in `rag_e2e.lightning.refresh_callback`, the background worker in `refresh_worker`.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from rag_e2e.console import track
from rag_e2e.data.types import Passage
from rag_e2e.retrieval import partial_refresh
from rag_e2e.retrieval.distributed import ShardedIndex, shard_bounds
from rag_e2e.retrieval.embeddings import encode_to_memmap
from rag_e2e.retrieval.encode_batch import measured_encode_batch_size
from rag_e2e.retrieval.encoders import BiEncoder, eval_mode, tokenize_passages
from rag_e2e.retrieval.index import build_index, corpus_fingerprint, state_fingerprint
from rag_e2e.retrieval.index_base import Index
from rag_e2e.retrieval.row_tokens import RowTokens


@dataclass
class BuildStats:
    """What one corpus encoding + index build cost."""

    passages: int  # encoded by this process (its shard under DDP)
    encode_s: float
    build_s: float
    encoder_fingerprint: str
    embeddings_path: Path | None = None  # the memmap directory the index searches (None: vectors in RAM)

    @property
    def wall_s(self) -> float:
        return self.encode_s + self.build_s

    @property
    def passages_per_s(self) -> float:
        return self.passages / max(self.encode_s, 1e-9)


@dataclass
class IndexBuilder:
    """Encodes (this rank's shard of) the corpus with a given passage tower and builds an index over it.

    Under DDP (`world_size` > 1) each rank encodes rows [start, end) of the corpus and the result is a
    `ShardedIndex`, whose searches are collective. With `embeddings_dir` the vectors go to a memory-mapped array on
    disk, encoded in resumable shards, so the corpus need not fit in RAM. Each encoding gets the directory
    `<corpus fingerprint>-<encoder fingerprint>-rows<start>-<end>`: a name only the same passage tower over the same
    rows can produce, so runs (and refreshes) sharing `embeddings_dir` never collide, and an encoding another run
    already finished (the initial one, typically) is reused instead of redone.
    """

    corpus: list[Passage]
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    batch_size: int  # passages per forward pass; 0: measured on this machine at the first build (encode_batch.py)
    kind: str = "exact"
    index_params: dict = field(default_factory=dict)
    embeddings_dir: Path | None = None
    embeddings_dtype: str = "float16"
    shard_size: int = 100_000
    # Passages never change, only the encoder: the corpus is tokenized once and every refresh reuses the tokens
    # (tokenizing costs as much as a small encoder's forward). In RAM: padded batches of consecutive rows; for
    # scattered rows (partial) and out-of-core encodings: unpadded per-row tokens (`RowTokens`).
    _token_cache: dict = field(default_factory=dict, init=False, repr=False)
    _row_tokens: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.corpus_fingerprint = corpus_fingerprint(self.corpus)

    def build(self, encoder: BiEncoder, *, rank: int = 0, world_size: int = 1,
              progress: bool = False) -> tuple[Index, BuildStats]:
        """Encode with `encoder.passage_model` (eval mode, no grad) and build the index over this rank's rows."""
        start, end = self.shard_range(rank, world_size)
        self.resolve_batch_size(encoder)
        fingerprint = state_fingerprint(encoder.passage_model)
        began = time.perf_counter()
        out_dir = None
        if self.embeddings_dir is None:
            p_reps = self.encode(encoder, start, end, progress)
        else:
            out_dir = self.embeddings_path(fingerprint, start, end)
            p_reps = self._encode_memmap(encoder, (start, end), out_dir, fingerprint, progress)
        encoded = time.perf_counter()
        local = build_index(self.kind, p_reps, **self.index_params)
        index = self.shard_index(local, rank, world_size)
        stats = BuildStats(end - start, encoded - began, time.perf_counter() - encoded, fingerprint, out_dir)
        return index, stats

    def build_partial(self, encoder: BiEncoder, live: Index, hits: torch.Tensor, *, fraction: float,
                      probe_share: float, seed: int,
                      previous_fingerprint: str) -> tuple[Index, BuildStats, partial_refresh.PartialPlan, dict]:
        """Re-encode a `fraction` of the corpus chosen by `partial_refresh.plan` and index a patched copy of the live
        index's vectors (single process, vectors in RAM). BuildStats.passages counts the rows encoded, and its
        encoder fingerprint names the tower and the rows (`partial_refresh.patched_fingerprint`)."""
        if not isinstance(live.p_reps, torch.Tensor):
            raise ValueError("a partial refresh patches vectors in RAM; this index reads them from disk")
        tower = state_fingerprint(encoder.passage_model)
        began = time.perf_counter()
        old = live.p_reps.cpu()
        generator = torch.Generator().manual_seed(seed)
        chosen, vecs, info = partial_refresh.plan(hits.cpu(), old, fraction, probe_share, generator,
                                                  lambda rows: self.encode_rows(encoder, rows))
        p_reps = partial_refresh.patch(old, chosen.rows, vecs)
        encoded = time.perf_counter()
        index = build_index(self.kind, p_reps, **self.index_params)
        fingerprint = partial_refresh.patched_fingerprint(previous_fingerprint, tower, chosen.rows)
        stats = BuildStats(chosen.rows.numel(), encoded - began, time.perf_counter() - encoded, fingerprint)
        return index, stats, chosen, info

    @torch.no_grad()
    def encode_rows(self, encoder: BiEncoder, rows: torch.Tensor) -> torch.Tensor:
        """(m,) corpus rows -> (m, d) float32 CPU vectors from `encoder.passage_model` in eval mode, as a refresh
        encodes them (tokens from the per-row cache, built on first use)."""
        self.resolve_batch_size(encoder)
        device = next(encoder.passage_model.parameters()).device
        tokens = self.row_tokens(0, len(self.corpus))
        out = []
        with eval_mode(encoder.passage_model):
            for i in range(0, rows.numel(), self.batch_size):
                tok = tokens.batch(rows[i : i + self.batch_size], device)
                out.append(encoder.encode_passage(tok["input_ids"], tok["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 0)

    def resolve_batch_size(self, encoder: BiEncoder) -> int:
        """The batch size, measured now (on the tower's device) when it was given as 0."""
        if self.batch_size == 0:
            self.batch_size = measured_encode_batch_size(encoder, self.tokenizer, self.corpus, self.max_length)
        return self.batch_size

    def embeddings_path(self, encoder_fingerprint: str, start: int, end: int) -> Path:
        """The memmap directory of corpus rows [start, end) encoded by the tower with `encoder_fingerprint`."""
        return Path(self.embeddings_dir) / f"{self.corpus_fingerprint}-{encoder_fingerprint}-rows{start}-{end}"

    def shard_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """Corpus rows [start, end) this rank encodes and indexes (all of them in a single process)."""
        return shard_bounds(len(self.corpus), world_size, rank) if world_size > 1 else (0, len(self.corpus))

    def shard_index(self, local: Index, rank: int, world_size: int) -> Index:
        """This rank's index over its rows, as the index retrieval searches (collective `ShardedIndex` under DDP)."""
        if world_size == 1:
            return local
        return ShardedIndex(local, self.shard_range(rank, world_size)[0], len(self.corpus))

    def token_batches(self, start: int, end: int) -> list[dict[str, torch.Tensor]]:
        """Tokenized batches of corpus rows [start, end) (cached: built on first use, reused by every refresh)."""
        if (start, end) not in self._token_cache:
            self._token_cache[(start, end)] = [
                tokenize_passages(self.tokenizer, self.corpus[i : min(i + self.batch_size, end)], self.max_length)
                for i in range(start, end, self.batch_size)]
        return self._token_cache[(start, end)]

    def row_tokens(self, start: int, end: int) -> RowTokens:
        """Unpadded tokens of corpus rows [start, end) (cached): taken from the padded batches where an in-RAM build
        made them, else tokenized in chunks without keeping padded batches (an out-of-core build)."""
        if (start, end) not in self._row_tokens:
            batches = self._token_cache.get((start, end))
            self._row_tokens[(start, end)] = (RowTokens(batches, self.tokenizer) if batches is not None else
                                              RowTokens.tokenize(self.tokenizer, self.corpus[start:end],
                                                                 self.max_length))
        return self._row_tokens[(start, end)]

    @torch.no_grad()
    def encode(self, encoder: BiEncoder, start: int = 0, end: int | None = None,
               progress: bool = False) -> torch.Tensor:
        """(end - start, d) float32 vectors of corpus rows [start, end) (end None: all), from cached token batches,
        in eval mode: what a refresh indexes."""
        end = len(self.corpus) if end is None else end
        self.resolve_batch_size(encoder)
        batches = self.token_batches(start, end)
        device = next(encoder.passage_model.parameters()).device
        chunks = []
        with eval_mode(encoder.passage_model):
            for tok in track(batches, "encode passages", "batches", enabled=progress, transient=True):
                ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
                chunks.append(encoder.encode_passage(ids, mask).float().cpu())
        return torch.cat(chunks)

    def _encode_memmap(self, encoder: BiEncoder, rows: tuple[int, int], out_dir: Path, fingerprint: str,
                       progress: bool):
        """Corpus rows [start, end) into the memmap at `out_dir`, from the per-row token cache."""
        device = next(encoder.passage_model.parameters()).device
        tokens = self.row_tokens(*rows)

        @torch.no_grad()
        def encode_rows(lo: int, hi: int) -> torch.Tensor:  # lo, hi: rows of this encoding, 0-based
            tok = tokens.batch(torch.arange(lo, hi), device)
            return encoder.encode_passage(tok["input_ids"], tok["attention_mask"]).float().cpu()

        with eval_mode(encoder.passage_model):
            dim = encode_rows(0, 1).shape[1]
            return encode_to_memmap(encode_rows, len(tokens), out_dir, dim=dim, dtype=self.embeddings_dtype,
                                    shard_size=self.shard_size, batch_size=self.batch_size,
                                    fingerprint=f"{self.corpus_fingerprint}/{fingerprint}", progress=progress)

    def discard(self, embeddings_path: Path | None) -> None:
        """Remove a superseded encoding's memmap directory (an index saved from it keeps its own hard link)."""
        if embeddings_path is not None:
            shutil.rmtree(embeddings_path, ignore_errors=True)


def snapshot_passage_tower(encoder: BiEncoder) -> BiEncoder:
    """A frozen copy of the passage tower (same device) that a background worker can encode with while training
    keeps updating the live weights."""
    tower = copy.deepcopy(encoder.passage_model).eval().requires_grad_(False)
    return BiEncoder(tower, pooling=encoder.pooling, shared=True)


@torch.no_grad()
def staleness(old: Index, new: Index, q_reps: torch.Tensor, k: int) -> dict[str, float]:
    """How far the live (old) index has drifted from a fresh one, on probe queries.

    Args:
        old, new: indexes over the same corpus (collective searches under DDP: call on every rank).
        q_reps: (P, d) probe query vectors from the current query encoder.
        k: cut-off.

    Returns:
        overlap: mean |top-k(old) ∩ top-k(new)| / k (1.0 = the stale index retrieves exactly what a fresh one would);
        score_drift: mean |s_old_j - s_new_j| over probes and ranks j <= k (the j-th best score in each index).
    """
    k = min(k, old.size)
    old_scores, old_rows = old.search(q_reps, k)
    new_scores, new_rows = new.search(q_reps, k)
    hits = (old_rows.unsqueeze(2) == new_rows.unsqueeze(1)).any(2)  # (P, k)
    return {"overlap": hits.double().mean().item(),
            "score_drift": (old_scores.double() - new_scores.double()).abs().mean().item()}
