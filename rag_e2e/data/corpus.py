"""Passage-corpus loaders (DPR TSV, JSONL, Parquet) and the line readers the QA loaders share.

Every malformed input raises `DataFormatError` naming file, line and field; nothing lower-level escapes.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from rag_e2e.data.parquet_records import open_parquet
from rag_e2e.data.types import Passage
from rag_e2e.errors import DataFormatError

_REQUIRED = object()  # sentinel: json_field without a default


def iter_lines(path: str | Path) -> Iterator[str]:
    """Yield the decoded physical lines of a text file (`.gz` is decompressed), endings kept.

    Lines are decoded one at a time so a bad byte is reported on its own line; decoding a whole buffer at once
    would report wherever the buffer happened to end.

    Raises:
        DataFormatError: the file is missing or unreadable, or a line is not UTF-8.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        f = opener(path, "rb")
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "file not found") from None
    except OSError as e:
        raise DataFormatError(path, None, None, f"cannot open: {e.strerror or e}") from None
    line_no = 0
    with f:
        try:
            for line_no, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataFormatError(path, line_no, None, f"not valid UTF-8 ({e.reason})") from None
        except (OSError, EOFError) as e:  # truncated or corrupt .gz
            raise DataFormatError(path, line_no + 1, None, f"cannot read: {e}") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based physical line, object) for each non-blank line of a JSON-lines file.

    Raises:
        DataFormatError: a line is not JSON or not a JSON object.
    """
    for line_no, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, line_no, None, f"expected a JSON object, got {type(record).__name__}")
        yield line_no, record


def data_suffix(path: str | Path) -> str:
    """The extension that names a file's format, looking through a trailing `.gz` ("a.tsv.gz" -> ".tsv")."""
    path = Path(path)
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def load_dpr_tsv(path: str | Path) -> list[Passage]:
    """All passages of a DPR-style TSV corpus (`iter_dpr_tsv`)."""
    return list(iter_dpr_tsv(path))


def iter_dpr_tsv(path: str | Path) -> Iterator[Passage]:
    """The passages of a DPR-style TSV corpus (e.g. `psgs_w100.tsv`), one at a time.

    The first line is a header naming the columns `id`, `text` and optionally `title`, in any order. Fields may be
    quoted with `""` escapes, as in DPR's dump, so a quoted text may span physical lines.

    Args:
        path: the `.tsv` (or `.tsv.gz`) file.

    Yields:
        Passages in file order.

    Raises:
        DataFormatError: missing header columns, wrong column count, bad quoting, empty id/text or duplicate id.
    """
    lines = iter_lines(path)
    reader = csv.reader(lines, delimiter="\t", strict=True)
    first_line: dict[str, int] = {}
    columns: dict[str, int] | None = None
    n_columns = 0
    start = 1  # physical line where the current record begins (quoted fields may span lines)
    try:
        for row in reader:
            line_no, start = start, reader.line_num + 1
            if not row:  # blank line
                continue
            if columns is None:
                columns = {name.strip(): i for i, name in enumerate(row)}
                n_columns = len(row)
                for required in ("id", "text"):
                    if required not in columns:
                        raise DataFormatError(path, line_no, required, f"header {row} lacks column '{required}'")
                continue
            if len(row) != n_columns:
                raise DataFormatError(
                    path, line_no, None, f"expected {n_columns} tab-separated columns, found {len(row)}"
                )
            title = row[columns["title"]] if "title" in columns else ""
            yield _passage(path, line_no, row[columns["id"]], row[columns["text"]], title, first_line)
    except csv.Error as e:
        raise DataFormatError(path, start, None, f"malformed TSV: {e}") from None
    if columns is None:
        raise DataFormatError(path, None, None, "empty file; expected a header line 'id<TAB>text<TAB>title'")


def load_corpus_jsonl(path: str | Path) -> list[Passage]:
    """All passages of a JSON-lines corpus (`iter_corpus_jsonl`)."""
    return list(iter_corpus_jsonl(path))


def iter_corpus_jsonl(path: str | Path) -> Iterator[Passage]:
    """The passages of a JSON-lines corpus: one `{"id": str|int, "text": str, "title": str (optional)}` per line.

    Args:
        path: the `.jsonl` file; blank lines are skipped.

    Yields:
        Passages in file order.

    Raises:
        DataFormatError: a missing or mistyped field, empty id/text, or a duplicate id.
    """
    first_line: dict[str, int] = {}
    for line_no, record in iter_jsonl(path):
        pid = json_field(path, line_no, record, "id", (str, int), "a string or integer")
        text = json_field(path, line_no, record, "text", str, "a string")
        title = json_field(path, line_no, record, "title", str, "a string", default="")
        yield _passage(path, line_no, str(pid), text, title, first_line)


def load_corpus_parquet(path: str | Path) -> list[Passage]:
    """All passages of a Parquet corpus (`iter_corpus_parquet`)."""
    return list(iter_corpus_parquet(path))


def iter_corpus_parquet(path: str | Path) -> Iterator[Passage]:
    """The passages of a Parquet corpus (what `rag-e2e prepare` writes): string columns `id`, `text` and optionally
    `title`, a row group at a time.

    Other columns (`doc_id`, `source`) are not read. The reported line is the 1-based row.

    Raises:
        DataFormatError: unreadable Parquet, a missing or non-string column, a null or empty id/text, or a duplicate id.
    """
    import pyarrow as pa

    parquet = open_parquet(path)
    schema = parquet.schema_arrow
    for required in ("id", "text"):
        if required not in schema.names:
            raise DataFormatError(path, None, required, f"missing column (columns: {', '.join(schema.names)})")
    columns = [name for name in ("id", "text", "title") if name in schema.names]
    for name in columns:
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataFormatError(path, None, name, f"expected a string column, got {kind}")
    first_line: dict[str, int] = {}
    row = 0
    try:
        for batch in parquet.iter_batches(columns=columns):  # the Arrow copy of a large corpus is never whole
            rows = batch.to_pydict()
            titles = rows.get("title") or [""] * batch.num_rows
            for pid, text, title in zip(rows["id"], rows["text"], titles, strict=True):
                row += 1
                for name, value in (("id", pid), ("text", text)):
                    if value is None:
                        raise DataFormatError(path, row, name, "null value")
                yield _passage(path, row, pid, text, title or "", first_line)
    except (OSError, pa.ArrowException) as e:
        raise DataFormatError(path, row + 1, None, f"cannot read row group ({e})") from None


def load_corpus(path: str | Path, fmt: Literal["dpr_tsv", "jsonl", "parquet", "auto"] = "auto") -> list[Passage]:
    """Load a corpus, picking the format from the extension when `fmt="auto"` (`.tsv`, `.jsonl`, optionally `.gz`;
    `.parquet`).

    Raises:
        DataFormatError: the format cannot be inferred, the file is malformed, or it holds no passage.
        ValueError: `fmt` is not one of the accepted values.
    """
    loaders = {"dpr_tsv": load_dpr_tsv, "jsonl": load_corpus_jsonl, "parquet": load_corpus_parquet}
    return load_nonempty(loaders, corpus_format(path, fmt), path, "no passages: the corpus is empty")


def corpus_format(path: str | Path, fmt: str = "auto") -> str:
    """`fmt`, or under "auto" the format the extension names (`.tsv`, `.jsonl`, optionally `.gz`; `.parquet`)."""
    if fmt != "auto":
        return fmt
    ext = data_suffix(path)
    found = {".tsv": "dpr_tsv", ".jsonl": "jsonl", ".parquet": "parquet"}.get(ext)
    if found is None:
        raise DataFormatError(path, None, None, f"cannot infer corpus format from '{ext}'; pass fmt=")
    return found


def iter_corpus(path: str | Path, fmt: str = "auto") -> Iterator[Passage]:
    """The passages of a corpus file one at a time, validated as `load_corpus` validates them (no emptiness check)."""
    readers = {"dpr_tsv": iter_dpr_tsv, "jsonl": iter_corpus_jsonl, "parquet": iter_corpus_parquet}
    fmt = corpus_format(path, fmt)
    if fmt not in readers:
        raise ValueError(f"fmt must be {', '.join(repr(n) for n in readers)} or 'auto', got {fmt!r}")
    return readers[fmt](path)


def load_nonempty(loaders: dict[str, Callable[[str | Path], list]], fmt: str, path: str | Path, empty: str) -> list:
    """`loaders[fmt](path)`, refusing an unknown `fmt` (ValueError) and an empty result (DataFormatError `empty`)."""
    if fmt not in loaders:
        names = ", ".join(f"'{name}'" for name in loaders)
        raise ValueError(f"fmt must be {names} or 'auto', got {fmt!r}")
    records = loaders[fmt](path)
    if not records:
        raise DataFormatError(path, None, None, empty)
    return records


def _passage(path: str | Path, line_no: int, pid: str, text: str, title: str, first_line: dict[str, int]) -> Passage:
    """Validate one record and remember its id; `first_line` maps ids seen so far to their lines."""
    if not pid.strip():
        raise DataFormatError(path, line_no, "id", "empty id")
    if not text.strip():
        raise DataFormatError(path, line_no, "text", f"empty text for passage '{pid}'")
    if pid in first_line:
        raise DataFormatError(path, line_no, "id", f"duplicate id '{pid}' (first seen on line {first_line[pid]})")
    first_line[pid] = line_no
    return Passage(pid=pid, text=text, title=title)


def json_field(
    path: str | Path,
    line: int | None,
    record: dict[str, Any],
    key: str,
    types: type | tuple[type, ...],
    expected: str,
    *,
    where: str = "",
    default: Any = _REQUIRED,
) -> Any:
    """Return `record[key]` after checking its JSON type, or `default` when the key is absent and a default is given.

    Args:
        path, line: reported in the error.
        record: a decoded JSON object.
        key: the field to read.
        types: accepted Python types (bool never passes for int: `true` as an id is a data bug).
        expected: how the error describes what was wanted, e.g. "a list of strings".
        where: prefix of the reported field name for nested records, e.g. "data[3].paragraphs[0]".
        default: value for an absent key; without it the key is required.

    Raises:
        DataFormatError: the key is missing (and required) or holds another type.
    """
    if key not in record and default is not _REQUIRED:
        return default
    value = record.get(key)
    if isinstance(value, types) and not isinstance(value, bool):
        return value
    field = f"{where}.{key}" if where else key
    if key not in record:
        raise DataFormatError(path, line, field, f"missing; expected {expected}")
    names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    raise DataFormatError(path, line, field, f"expected {expected}, got {names.get(type(value), 'object')}")
