"""A Parquet file's rows as the records the JSON-lines loaders validate, so either form of a file loads the same.

What `datasets.Dataset.to_parquet`, pandas or pyarrow write is read a row group at a time. A null cell counts as an
absent field (a JSON line without it), so optional columns may be null and required ones are reported missing with
the row. Reported lines are 1-based rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag_e2e.errors import DataFormatError


def iter_parquet_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based row, record without its null fields) for each row of a Parquet file.

    Raises:
        DataFormatError: the file is missing or not readable Parquet.
    """
    import pyarrow as pa

    parquet = open_parquet(path)
    row = 0
    try:
        for batch in parquet.iter_batches():
            for record in batch.to_pylist():
                row += 1
                yield row, {name: value for name, value in record.items() if value is not None}
    except (OSError, pa.ArrowException) as e:
        raise DataFormatError(path, row + 1, None, f"cannot read row group ({e})") from None


def open_parquet(path: str | Path):
    """`pyarrow.parquet.ParquetFile(path)`, a missing or unreadable file as one DataFormatError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise DataFormatError(path, None, None, "file not found") from None
    except (OSError, pa.ArrowException) as e:
        raise DataFormatError(path, None, None, f"not a readable Parquet file ({e})") from None
