"""A passage corpus in an Arrow file, shared by every rank and worker through the page cache.

`data.mmap_corpus=true` converts the corpus file once (streamed, into $RAG_E2E_CACHE/corpora/) and opens the result.
Nothing is built per passage: `corpus[i]` makes one Passage when asked, and `row_of(pid)` is a binary search over
sorted 64-bit pid hashes. A list of Passages holds every passage as Python objects in every process, which at DPR's
21M passages is tens of GB per rank.

The file's footer and each column's offsets (4 bytes a row) are memory-mapped; a passage's bytes are copied out with
`os.pread`, and full scans read one record batch at a time. So the text stays in the kernel's page cache, shared by
the ranks and reclaimable, and never in a rank's resident set: mapped text pages count in every rank's RSS, which is
what cluster schedulers (Slurm's RSS accounting, an OOM killer) charge each rank for.

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
        self._path = self.folder / "passages.arrow"
        self._fd = os.open(self._path, os.O_RDONLY)
        self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
        if hasattr(mmap, "MADV_RANDOM"):  # no read-around: an offsets lookup maps the page it reads, not megabytes
            self._map.madvise(mmap.MADV_RANDOM)
        mapped = pa.py_buffer(self._map)
        self._table = pa.ipc.open_file(mapped).read_all()  # zero-copy views into the mapping: nothing is read yet
        self._batch_starts = np.cumsum([0] + [len(c) for c in self._table.column("pid").chunks])
        self._columns = {name: [_StringChunk(chunk, mapped.address) for chunk in self._table.column(name).chunks]
                         for name in ("pid", "text", "title")}  # fmt: skip
        self._hashes = np.load(self.folder / "pid_hash.npy", mmap_mode="r")
        self._rows = np.load(self.folder / "pid_row.npy", mmap_mode="r")

    def __reduce__(self):  # DataLoader workers and spawned ranks reopen the file instead of copying it
        return (MappedCorpus, (self.folder,))

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __len__(self) -> int:
        return self._table.num_rows

    def __getitem__(self, i: int | slice) -> Passage | list[Passage]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            return self._read_rows(start, stop)[::step] if step > 0 else [self[j] for j in range(start, stop, step)]
        if not -len(self) <= i < len(self):
            raise IndexError(f"passage row {i} out of range for a corpus of {len(self)}")
        batch, row = self._locate(i % len(self))
        return Passage(*(self._columns[name][batch].read(self._fd, row) for name in ("pid", "text", "title")))

    def __iter__(self) -> Iterator[Passage]:
        with pa.OSFile(str(self._path)) as f:  # read, not mapped: one record batch in this process at a time
            reader = pa.ipc.open_file(f)
            for b in range(reader.num_record_batches):
                yield from _passages(reader.get_batch(b))

    def _locate(self, i: int) -> tuple[int, int]:
        batch = int(np.searchsorted(self._batch_starts, i, side="right")) - 1
        return batch, i - int(self._batch_starts[batch])

    def _read_rows(self, start: int, stop: int) -> list[Passage]:
        """Rows start..stop-1, read batch by batch through the file (not the mapping)."""
        if start >= stop:
            return []
        first, last = self._locate(start)[0], self._locate(stop - 1)[0]
        out: list[Passage] = []
        with pa.OSFile(str(self._path)) as f:
            reader = pa.ipc.open_file(f)
            for b in range(first, last + 1):
                lo = max(start, int(self._batch_starts[b])) - int(self._batch_starts[b])
                hi = min(stop, int(self._batch_starts[b + 1])) - int(self._batch_starts[b])
                out += _passages(reader.get_batch(b).slice(lo, hi - lo))
        return out

    def row_of(self, pid: str) -> int | None:
        """The row of passage `pid`, or None if the corpus has none."""
        h = np.uint64(pid_hash(pid))
        at = int(np.searchsorted(self._hashes, h))
        while at < len(self._hashes) and self._hashes[at] == h:  # equal hashes: compare the ids themselves
            row = int(self._rows[at])
            batch, local = self._locate(row)
            if self._columns["pid"][batch].read(self._fd, local) == pid:
                return row
            at += 1
        return None


class _StringChunk:
    """One record batch's string column: its offsets viewed in the mapping, its bytes read from the file.

    `write_mapped` writes uncompressed IPC, so a buffer's place in the mapping is its place in the file.
    """

    def __init__(self, chunk: pa.StringArray, base_address: int):
        self._chunk = chunk
        _, offsets, data = chunk.buffers()
        self._offsets = np.frombuffer(offsets, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1] \
            if offsets is not None else np.zeros(len(chunk) + 1, dtype=np.int32)
        self._data_pos = data.address - base_address if data is not None and data.size else None
        self._nullable = chunk.null_count > 0

    def read(self, fd: int, row: int) -> str | None:
        if self._nullable and not self._chunk[row].is_valid:
            return None
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        if end == start or self._data_pos is None:
            return ""
        return os.pread(fd, end - start, self._data_pos + start).decode("utf-8")


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
