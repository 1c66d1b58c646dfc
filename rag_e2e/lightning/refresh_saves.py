"""The live index on disk: one saved shard per rank and refresh, kept while a checkpoint may name it.

A run killed while (or after) writing a checkpoint resumes from the index that checkpoint names without
re-encoding the corpus, so an index is removed only once no checkpoint that may be on disk names it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rag_e2e.errors import RagE2EError
from rag_e2e.retrieval.distributed import ShardedIndex
from rag_e2e.retrieval.index import IndexMeta, load_index, save_index
from rag_e2e.retrieval.index_base import Index
from rag_e2e.retrieval.refresh import BuildStats


class SavedIndexes:
    """Saved indexes under `index_dir` (None: nothing is saved, resume re-encodes), named v{version}-rank{r}-of-{n}.

    Args:
        index_dir: where the live index is saved.
        corpus_fingerprint: recorded with each saved index, and checked when one is reloaded.
    """

    def __init__(self, index_dir: Path | None, corpus_fingerprint: str):
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.corpus_fingerprint = corpus_fingerprint
        self.path: str | None = None  # the live index's
        # Saved indexes named by the last two checkpoints written: kept until newer ones are, so a run killed while
        # (or after) writing a checkpoint resumes from the one on disk without re-encoding the corpus.
        self.checkpointed: list[str] = []

    def save(self, rank: int, world_size: int, index: Index, stats: BuildStats, version: int,
             step: int) -> str | None:
        """Save this rank's shard of `index` as version `version` (None: not saving). Vectors in an embeddings memmap
        are hard-linked, not copied; the async worker calls this too, so the training thread never writes them."""
        if self.index_dir is None:
            return None
        path = self.index_dir / f"v{version}-rank{rank}-of-{world_size}"
        local = index.local if isinstance(index, ShardedIndex) else index  # each rank saves its own shard
        meta = IndexMeta.for_index(local, corpus_fingerprint=self.corpus_fingerprint,
                                   encoder_fingerprint=stats.encoder_fingerprint, encoder_step=step)
        save_index(local, path, meta)
        return str(path)

    def keep(self, path: str | None) -> None:
        """`path` is the saved live index now; remove the one it replaces (we wrote it) unless a checkpoint names it."""
        previous, self.path = self.path, path
        if previous and previous != path and previous not in self.checkpointed:
            shutil.rmtree(previous, ignore_errors=True)

    def drop(self, path: str | None) -> None:
        """Remove a saved index that never became live (an async refresh superseded at the end of training)."""
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    def prune(self, keep: list[str]) -> None:
        """Remove saved indexes no checkpoint that may be on disk names any more (and that are not live)."""
        for path in self.checkpointed:
            if path not in keep and path != self.path:
                shutil.rmtree(path, ignore_errors=True)
        self.checkpointed = keep

    def on_checkpoint(self) -> None:
        """A checkpoint naming the live index is being written: keep it and the previous checkpoint's, prune older."""
        if self.path is not None and self.path not in self.checkpointed:
            self.prune(self.checkpointed[-1:] + [self.path])

    def restore(self, path: str | None, checkpointed: list[str]) -> None:
        """From a checkpoint: the saved indexes of older checkpoints still on disk, pruned later as the uninterrupted
        run prunes them (`path`, the checkpoint's live index, joins them once it is reloaded)."""
        self.checkpointed = [p for p in checkpointed if p != path]

    def load(self, path: str, encoder_fingerprint: str | None) -> tuple[Index, IndexMeta] | None:
        """Reload the saved index at `path` as the live one; None when it is missing or does not match."""
        try:
            local, meta = load_index(path, corpus_fingerprint=self.corpus_fingerprint,
                                     encoder_fingerprint=encoder_fingerprint)
        except (RagE2EError, OSError) as err:
            print(f"index refresh: cannot reload the live index ({err}); re-encoding the corpus")
            return None
        self.path = path
        self.checkpointed.append(path)
        return local, meta
