"""Every file and directory the project writes goes through here: written beside its target, fsynced, renamed.

A reader (or a run resumed after kill -9 or a full disk) sees the old version or the new one, never half of one.
`fsync` of the file before the rename and of the parent directory after it is what makes the rename survive a power
loss or kernel crash, not only a killed process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rag_e2e.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)
# .<name>.<pid>-<hex>.tmp (write_file, write_files), .<name>.saving-<random> and .<name>.old-<hex> (directory)
_LEFTOVER = re.compile(r"\..+\.(\d+-[0-9a-f]{8}\.tmp|saving-[A-Za-z0-9_]+|old-[0-9a-f]{8})")


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename into it) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Atomically create or replace the file `path` with what `write(tmp)` writes to a temporary sibling.

    On any failure (an exception in `write`, a full disk, KeyboardInterrupt) the temporary file is removed and `path`
    keeps its previous contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # unique: writers never collide
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        full = _disk_full(err, path)  # before the cleanup frees the space again
        tmp.unlink(missing_ok=True)
        if full:
            raise full from err
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, payload: object) -> Path:
    """Atomically write `payload` as indented JSON to `path`, creating its folder (benchmark results)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, json.dumps(payload, indent=2) + "\n")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    return write_file(path, lambda tmp: tmp.write_bytes(data))


def write_files(out_dir: str | Path, writers: dict[str, Callable[[Path], None]]) -> dict[str, Path]:
    """Write several files of `out_dir` all or none: every `writers[name](tmp)` runs first, then all are renamed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            temps[name] = out_dir / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            write(temps[name])
            fsync_file(temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, out_dir / name)
    except OSError as err:
        if full := _disk_full(err, out_dir / name):
            raise full from err
        raise
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)  # only left over if a writer failed
    fsync_dir(out_dir)
    return {name: out_dir / name for name in writers}


@contextlib.contextmanager
def directory(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling (yielded), then rename it to `path` in one step.

    Every file in it is fsynced before the rename. An existing `path` is renamed aside first and removed only once
    the new one is in place (a crash in between leaves it as `.<name>.old-*` beside `path`); with `replace=False` an
    existing `path` (written meanwhile by another process) wins and the new one is dropped. On failure the temporary
    directory is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))  # same filesystem: rename works
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file() and not file.is_symlink():
                fsync_file(file)
        fsync_dir(tmp)
        _swap_in(tmp, path, replace)
    except BaseException as err:
        full = _disk_full(err, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise full from err
        raise
    fsync_dir(path.parent)


def new_memmap(file: str | Path, dtype: str | np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy file of `shape` opened for writing, its disk space allocated up front.

    A memory map writes through page faults: on a full disk the kernel kills the process with SIGBUS (no exception,
    no message). Allocating every block first turns that into a DiskFullError here, before any work is done.
    """
    array = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    try:
        allocate(file)
    except BaseException:
        del array
        Path(file).unlink(missing_ok=True)
        raise
    return array


def allocate(file: str | Path) -> None:
    """Reserve the disk blocks of `file`'s whole length (a sparse file gets real ones); DiskFullError if they are not
    there. A no-op where the OS or filesystem cannot (no posix_fallocate, or EOPNOTSUPP)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(file, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if full := _disk_full(err, Path(file)):
            raise full from err
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


def _disk_full(err: BaseException, path: Path) -> DiskFullError | None:
    """The one-line error for an out-of-space write to `path`, or None for any other failure.

    ENOSPC/EDQUOT say so. Some writers do not: numpy's `tofile` raises an OSError with no errno on a short write,
    torch.save a RuntimeError from its zip writer ("unexpected pos"). Those count as out of space when the
    filesystem has under `_NEARLY_FULL` bytes left.
    """
    if not isinstance(err, (OSError, RuntimeError)) or isinstance(err, DiskFullError):
        return None
    code = getattr(err, "errno", None)
    if code in _FULL:
        return DiskFullError(path, code, os.strerror(code))
    if code is None and (free := _free_bytes(path)) < _NEARLY_FULL:
        return DiskFullError(path, errno.ENOSPC, f"{err}; {free} bytes free")
    return None


_NEARLY_FULL = 1 << 20


def _free_bytes(path: Path) -> int:
    """Bytes this user may still write on the filesystem holding `path` (or its nearest existing parent)."""
    for folder in (path, *path.parents):
        try:
            stat = os.statvfs(folder)
        except OSError:
            continue
        return stat.f_bavail * stat.f_frsize
    return _NEARLY_FULL


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Remove what writes killed midway left in `folder` (not below it): this module's temporary files and
    directories, recognised by their names. Returns what was removed."""
    removed = []
    for path in Path(folder).glob(".*"):
        if _LEFTOVER.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _swap_in(new: Path, path: Path, replace: bool) -> None:
    if not path.exists():
        try:
            os.rename(new, path)
            return
        except OSError:  # another process renamed its copy in first
            if replace or not path.exists():
                raise
    if not replace:
        shutil.rmtree(new, ignore_errors=True)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old, path)  # put the previous version back
        raise
    shutil.rmtree(old)
