"""Two facts about files that several layers need: where the project's cache lives, and a file's sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """$RAG_E2E_CACHE, else ~/.cache/rag_e2e: converted readers, reader outputs, tuning choices, mapped corpora."""
    return Path(os.environ.get("RAG_E2E_CACHE", Path.home() / ".cache" / "rag_e2e"))


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file at `path`, read 1 MiB at a time (files here reach gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
