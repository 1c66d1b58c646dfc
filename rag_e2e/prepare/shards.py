"""Per-file shards: what one input file gave, written once and reused by every later run over the same folder.

Each finished file has two Parquet shards under `.shards/`: `<name>.docs.parquet` (one row per document: id, title,
cleaned text, text hash, MinHash signature) and `<name>.passages.parquet` (one row per chunk: id, document, offsets,
token count). Shards hold every document, duplicates included: duplicates are decided when the corpus is assembled,
in input order, so a file added or removed later changes which copy is kept without redoing any other file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rag_e2e.atomic import write_file
from rag_e2e.prepare.chunk import Span

# Hidden: loading the output folder as a Parquet dataset (`pyarrow.dataset`, `datasets.load_dataset("parquet",
# data_dir=out)`) skips dot-folders, so it reads passages.parquet alone instead of every passage two or three times.
SHARDS = ".shards"
LEGACY_SHARDS = "shards"  # where runs before this name kept them: moved on the next run


def adopt_legacy_shards(out_dir: Path) -> None:
    """Move an older run's visible `shards/` folder to the hidden one, so its work is reused and no longer read."""
    legacy, hidden = out_dir / LEGACY_SHARDS, out_dir / SHARDS
    if legacy.is_dir() and not hidden.exists():
        legacy.rename(hidden)
DOC_SCHEMA = pa.schema([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string()),
                        ("source", pa.string()), ("text_hash", pa.string()), ("signature", pa.list_(pa.uint32()))])
PASSAGE_SCHEMA = pa.schema([("id", pa.string()), ("doc_id", pa.string()), ("chunk", pa.int32()),
                            ("start", pa.int64()), ("end", pa.int64()), ("n_tokens", pa.int32())])


@dataclass(frozen=True)
class ShardDoc:
    """One document as a shard stores it, with its chunks."""

    doc_id: str
    title: str
    text: str
    source: str
    text_hash: str
    signature: np.ndarray  # (num_perm,) uint32
    spans: list[Span]

    def passage_id(self, chunk: int) -> str:
        """Stable passage id: the document id and the chunk's position in it."""
        return f"{self.doc_id}#{chunk}"


def shard_name(key: str) -> str:
    """A file-system-safe, collision-free shard name for an input key ("docs/a.md" -> "a.md-3f2c9a1b")."""
    return f"{Path(key).name}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"


def write_shard(out_dir: Path, key: str, docs: list[ShardDoc]) -> None:
    """Write both shards of one file (each atomically; the manifest line that follows makes the pair count)."""
    folder = out_dir / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    doc_table = pa.table({
        "doc_id": [d.doc_id for d in docs], "title": [d.title for d in docs], "text": [d.text for d in docs],
        "source": [d.source for d in docs], "text_hash": [d.text_hash for d in docs],
        "signature": [d.signature.tolist() for d in docs],
    }, schema=DOC_SCHEMA)
    rows = [(d, c, s) for d in docs for c, s in enumerate(d.spans)]
    passage_table = pa.table({
        "id": [d.passage_id(c) for d, c, _ in rows], "doc_id": [d.doc_id for d, _, _ in rows],
        "chunk": [c for _, c, _ in rows], "start": [s.start for _, _, s in rows], "end": [s.end for _, _, s in rows],
        "n_tokens": [s.n_tokens for _, _, s in rows],
    }, schema=PASSAGE_SCHEMA)
    name = shard_name(key)
    write_file(folder / f"{name}.docs.parquet", lambda tmp: pq.write_table(doc_table, tmp))
    write_file(folder / f"{name}.passages.parquet", lambda tmp: pq.write_table(passage_table, tmp))


def has_shard(out_dir: Path, key: str) -> bool:
    name = shard_name(key)
    return all((out_dir / SHARDS / f"{name}.{part}.parquet").exists() for part in ("docs", "passages"))


def read_shard(out_dir: Path, key: str) -> Iterator[ShardDoc]:
    """The documents of one file's shards, in file order, each with its chunks."""
    name = shard_name(key)
    docs = pq.read_table(out_dir / SHARDS / f"{name}.docs.parquet").to_pylist()
    spans: dict[str, list[Span]] = {d["doc_id"]: [] for d in docs}
    for row in pq.read_table(out_dir / SHARDS / f"{name}.passages.parquet").to_pylist():  # written in chunk order
        spans[row["doc_id"]].append(Span(row["start"], row["end"], row["n_tokens"]))
    for d in docs:
        yield ShardDoc(d["doc_id"], d["title"], d["text"], d["source"], d["text_hash"],
                       np.asarray(d["signature"], dtype=np.uint32), spans[d["doc_id"]])
