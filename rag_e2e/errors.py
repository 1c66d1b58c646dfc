"""User-facing errors: one line that names the file, line and field to fix."""

from __future__ import annotations

from pathlib import Path


class RagE2EError(Exception):
    """Base class for errors the CLI prints as one line instead of a traceback."""


class DataFormatError(RagE2EError):
    """Malformed input data.

    Args:
        path: the file being read.
        line: 1-based line (JSONL/TSV) or record number; None for whole-file problems.
        field: the offending field name; None when the record itself is unreadable.
        message: what is wrong.
    """

    def __init__(self, path: str | Path, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")


class ConfigError(RagE2EError):
    """A config value or override that cannot be used; the message names the key to change."""


class TrainingDivergedError(RagE2EError):
    """The training loss became NaN or infinite; the message names the step and the batch's question ids."""


class DiskFullError(RagE2EError, OSError):
    """A write ran out of disk space (ENOSPC or a quota); the message names the file, and what it replaces is intact.

    Also an OSError (with its errno), so that code handling I/O failures in general handles this one too.
    """

    def __init__(self, path: str | Path, errno: int, reason: str):
        super().__init__(f"{path}: no space left on the disk while writing it ({reason}); nothing was replaced, the "
                         "previous version is intact: free some space and run again")
        self.errno, self.filename = errno, str(path)

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..." built from the attributes above
        return str(self.args[0])
