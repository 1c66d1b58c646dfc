"""Export's shortcut: the passage vectors a run already saved, when the checkpoint's passage tower encoded them.

A run saves its live index under `<run>/index/v<version>-rank<r>-of-<world>` (one shard per rank), each with the
fingerprints of the corpus and of the passage tower that encoded it. Where the newest complete version matches the
exported corpus and tower (a frozen passage tower always does; an end-to-end run does when its last refresh came
after its last update), export indexes those vectors instead of encoding the corpus again: at DPR's 21M passages
that is hours of a GPU's time.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from rag_e2e.retrieval.index_io import IndexMismatchError, read_index_dir

SHARD = re.compile(r"v(\d+)-rank(\d+)-of-(\d+)")


def saved_vectors(index_dir: str | Path, *, corpus_fingerprint: str, encoder_fingerprint: str,
                  size: int) -> tuple[np.ndarray, str] | None:
    """The (size, d) vectors of the newest complete saved version whose every shard was encoded over this corpus by
    the tower with `encoder_fingerprint` (shards concatenated in rank order, memory-mapped when there is one), and
    which version it was; None when no version matches."""
    shards: dict[tuple[int, int], dict[int, Path]] = defaultdict(dict)  # (version, world) -> rank -> folder
    for path in Path(index_dir).glob("v*-rank*-of-*"):
        if match := SHARD.fullmatch(path.name):
            version, rank, world = map(int, match.groups())
            shards[(version, world)][rank] = path
    for (version, world), ranks in sorted(shards.items(), reverse=True):
        if sorted(ranks) != list(range(world)):
            continue  # a rank's shard is missing
        try:
            parts = [read_index_dir(ranks[r], corpus_fingerprint=corpus_fingerprint,
                                    encoder_fingerprint=encoder_fingerprint, dim=None, mmap=True)[1]
                     for r in range(world)]
        except IndexMismatchError:
            continue  # another corpus or tower (an end-to-end run's earlier refresh)
        if sum(len(p) for p in parts) == size:
            return (parts[0] if world == 1 else np.concatenate(parts)), f"v{version}, {world} shard(s)"
    return None
