"""A passage corpus in an Arrow file, memory-mapped: every rank and worker reads the same page cache.

`data.mmap_corpus=true` converts the corpus file once (streamed, into $RAG_E2E_CACHE/corpora/) and opens the result
memory-mapped. Nothing is built per passage: `corpus[i]` makes one Passage from the mapped columns when asked, and
`row_of(pid)` is a binary search over sorted 64-bit pid hashes (a memory-mapped array too). A list of Passages holds
every passage as Python objects in every process, which at DPR's 21M passages is tens of GB per rank.

    <cache>/corpora/<key>/passages.arrow   pid, text, title (Arrow IPC file, record batches of BATCH_ROWS)
                          pid_hash.npy     uint64 hashes of the pids, sorted
                          pid_row.npy      the row of each sorted hash
                          meta.json        the source file (path, size, mtime) and the row count
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from rag_e2e import atomic
from rag_e2e.data.corpus import iter_corpus
from rag_e2e.data.types import Passage
from rag_e2e.errors import DataFormatError
from rag_e2e.files import cache_root

BATCH_ROWS = 65_536
SCHEMA = pa.schema([("pid", pa.string()), ("text", pa.string()), ("title", pa.string())])
FORMAT_VERSION = 1


def pid_hash(pid: str) -> int:
    return int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "little")


class MappedCorpus:
    """A read-only sequence of Passages over a folder written by `write_mapped`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        with open(self.folder / "passages.arrow", "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_RANDOM"):  # no read-around: a lookup maps the few pages it reads, not megabytes
            self._map.madvise(mmap.MADV_RANDOM)
        self._table = pa.ipc.open_file(pa.py_buffer(self._map)).read_all()  # zero-copy views into the mapping
        self._hashes = np.load(self.folder / "pid_hash.npy", mmap_mode="r")
        self._rows = np.load(self.folder / "pid_row.npy", mmap_mode="r")
        self._pid, self._text, self._title = (self._table.column(n) for n in ("pid", "text", "title"))

    def __reduce__(self):  # DataLoader workers and spawned ranks reopen the mapping instead of copying it
        return (MappedCorpus, (self.folder,))

    def __len__(self) -> int:
        return self._table.num_rows

    def __getitem__(self, i: int | slice) -> Passage | list[Passage]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            part = self._table.slice(start, max(0, stop - start)) if step == 1 else \
                self._table.take(pa.array(range(start, stop, step), pa.int64()))
            return _passages(part)
        if not -len(self) <= i < len(self):
            raise IndexError(f"passage row {i} out of range for a corpus of {len(self)}")
        i %= len(self)
        return Passage(self._pid[i].as_py(), self._text[i].as_py(), self._title[i].as_py())

    def __iter__(self) -> Iterator[Passage]:
        for batch in self._table.to_batches(BATCH_ROWS):
            yield from _passages(batch)

    def row_of(self, pid: str) -> int | None:
        """The row of passage `pid`, or None if the corpus has none."""
        h = np.uint64(pid_hash(pid))
        at = int(np.searchsorted(self._hashes, h))
        while at < len(self._hashes) and self._hashes[at] == h:  # equal hashes: compare the ids themselves
            row = int(self._rows[at])
            if self._pid[row].as_py() == pid:
                return row
            at += 1
        return None


def _passages(part: pa.Table | pa.RecordBatch) -> list[Passage]:
    columns = part.to_pydict()
    return [Passage(p, t, ti) for p, t, ti in zip(columns["pid"], columns["text"], columns["title"])]


def row_lookup(corpus) -> Callable[[str], int | None]:
    """pid -> row (None if absent) for any corpus: a MappedCorpus's own lookup, else a dict over the list."""
    if isinstance(corpus, MappedCorpus):
        return corpus.row_of
    rows = {p.pid: row for row, p in enumerate(corpus)}
    return rows.get


def write_mapped(passages: Iterable[Passage], folder: str | Path, meta: dict) -> Path:
    """Write `passages` (streamed: one record batch in memory at a time) as a MappedCorpus folder, atomically.

    Ranks converting the same file at once each write a copy; the first one renamed into place is kept.
    """
    with atomic.directory(folder, replace=False) as tmp:
        hashes: list[np.ndarray] = []  # 8 bytes a passage
        with pa.OSFile(str(tmp / "passages.arrow"), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            batch: list[Passage] = []
            for passage in passages:
                batch.append(passage)
                if len(batch) == BATCH_ROWS:
                    hashes.append(_write(writer, batch))
                    batch = []
            if batch or not hashes:
                hashes.append(_write(writer, batch))
        keys = np.concatenate(hashes)
        order = np.argsort(keys, kind="stable")
        np.save(tmp / "pid_hash.npy", keys[order])
        np.save(tmp / "pid_row.npy", order.astype(np.int64))
        (tmp / "meta.json").write_text(json.dumps({**meta, "rows": len(keys), "format": FORMAT_VERSION}))
    _drop_from_page_cache(Path(folder) / "passages.arrow")
    return Path(folder)


def _drop_from_page_cache(file: Path) -> None:
    """Evict the just-written (fsynced) file's pages: the cache would otherwise hold it in large folios, which a
    later lookup maps whole (2 MB of RSS for one passage, measured on Linux 6.18)."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _write(writer: pa.ipc.RecordBatchFileWriter, passages: list[Passage]) -> np.ndarray:
    """Write one record batch; the pid hashes of its rows."""
    writer.write_batch(_batch(passages))
    return np.fromiter((pid_hash(p.pid) for p in passages), dtype=np.uint64, count=len(passages))


def _batch(passages: list[Passage]) -> pa.RecordBatch:
    return pa.record_batch([pa.array([p.pid for p in passages], pa.string()),
                            pa.array([p.text for p in passages], pa.string()),
                            pa.array([p.title for p in passages], pa.string())], schema=SCHEMA)


def open_mapped(path: str | Path, fmt: str = "auto", cache: str | Path | None = None) -> MappedCorpus:
    """The corpus file `path` as a MappedCorpus, converted on first use (again when the file changes).

    The conversion is keyed by the file's resolved path, size and modification time; it validates every record as
    `load_corpus` does (one error naming the file, line and field) and leaves nothing behind when it fails.
    """
    path = Path(path).resolve()
    stat = path.stat()
    source = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fmt": fmt}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache or cache_root()) / "corpora" / key
    if not (folder / "meta.json").is_file():
        write_mapped(iter_corpus(path, fmt), folder, {"source": source})
    corpus = MappedCorpus(folder)
    if len(corpus) == 0:
        raise DataFormatError(path, None, None, "no passages: the corpus is empty")
    return corpus
