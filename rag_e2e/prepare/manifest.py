"""The resume journal `manifest.jsonl`: which input files are finished, with the fingerprint that proves it.

Line 1 is a header with the settings the shards depend on; each further line records one finished file (done or
skipped). A line is appended and fsynced as soon as that file's shards are on disk, so a run killed at any point
redoes at most the file it was on. Opening the journal rewrites it atomically, keeping the latest complete line per
file: a line torn by a crash is dropped rather than glued to the next one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag_e2e.atomic import write_text
from rag_e2e.errors import ConfigError
from rag_e2e.files import sha256_of

MANIFEST = "manifest.jsonl"


@dataclass
class FileEntry:
    """One finished input file."""

    key: str  # stable name relative to its input ("docs/a.md"); document ids derive from it
    path: str  # absolute path when it was read
    size: int
    mtime_ns: int
    sha256: str
    status: str  # "done" (its shards are written) or "skipped" (unreadable; `reason` says why)
    reason: str = ""
    encoding: str | None = None  # text encoding used, None for binary formats
    documents: int = 0
    passages: int = 0
    skipped_records: list[str] = field(default_factory=list)  # bad lines inside the file (JSONL), as messages
    extra: dict[str, Any] = field(default_factory=dict)  # what else the result depends on (QA: articles made docs)


class Manifest:
    """The journal of one output folder.

    Args:
        out_dir: the output folder.
        settings: everything the shards depend on (tokenizer, sizes, MinHash); a journal written with other settings
            is refused, since its shards would silently mix two chunkings.

    Raises:
        ConfigError: the folder was prepared with different settings.
    """

    def __init__(self, out_dir: Path, settings: dict[str, Any]) -> None:
        self.path = out_dir / MANIFEST
        self.entries: dict[str, FileEntry] = {}
        header, lines = self._read()
        if header is not None and header != {"settings": settings}:
            old = header.get("settings", {})
            changed = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in settings.items() if old.get(k) != v]
            raise ConfigError(f"{out_dir} was prepared with other settings: {', '.join(changed) or header}; "
                              "pass a new `out=` folder (shards are valid only for the settings they were made with)")
        for line in lines:
            try:
                entry = FileEntry(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # torn by a crash mid-write: that file is simply redone
            self.entries[entry.key] = entry
        body = [json.dumps({"settings": settings})] + [json.dumps(asdict(e)) for e in self.entries.values()]
        write_text(self.path, "\n".join(body) + "\n")

    def finished(self, key: str, path: Path, extra: dict[str, Any] | None = None) -> FileEntry | None:
        """The entry of `key` if `path` is unchanged since (same size and mtime, or same SHA-256) and `extra` agrees.

        A file touched but not changed keeps its entry (its new mtime is recorded).
        """
        entry = self.entries.get(key)
        if entry is None or entry.extra != (extra or {}):
            return None
        stat = path.stat()
        if entry.size != stat.st_size:
            return None
        if entry.mtime_ns != stat.st_mtime_ns:
            if sha256_of(path) != entry.sha256:
                return None
            entry.mtime_ns, entry.path = stat.st_mtime_ns, str(path.resolve())
            self.record(entry)
        return entry

    def record(self, entry: FileEntry) -> None:
        """Append `entry` and flush it to disk before returning."""
        self.entries[entry.key] = entry
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(entry)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _read(self) -> tuple[dict[str, Any] | None, list[str]]:
        if not self.path.exists():
            return None, []
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        if not text.endswith("\n"):
            lines = lines[:-1]  # the last line is incomplete
        lines = [line for line in lines if line.strip()]
        if not lines:
            return None, []
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise ConfigError(f"{self.path}: unreadable header; pass a new `out=` folder") from None
        return header, lines[1:]
