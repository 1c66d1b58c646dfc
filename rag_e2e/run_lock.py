"""One training process per run directory: a second `rag-e2e train` on a run_dir in use is refused with one line.

Two runs writing one run_dir would interleave checkpoints, the live index and metrics, and each would resume from
the other's state. The lock is an advisory `flock` on `<run_dir>/.lock`, which the kernel drops when its holder
exits however it exits (kill -9 included), so a crashed run never leaves the directory stuck; the file keeps the
holder's pid for the message. Where `fcntl` does not exist (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rag_e2e.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None

LOCK_NAME = ".lock"


@contextlib.contextmanager
def exclusive_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the block.

    Raises:
        ConfigError: another live process holds it (the message names the directory and that process's pid).
    """
    if fcntl is None:
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ConfigError(f"{run_dir}: another run (pid {holder}) is training in this run_dir; wait for it to "
                              "finish, or choose another `run_dir`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
