"""Out-of-core passage embeddings: encode a corpus shard by shard into a memory-mapped .npy, resumably.

An embeddings directory holds:

    embeddings.npy   (N, dim) array in `dtype`, filled one shard (`shard_size` consecutive passages) at a time
    progress.json    {"size", "dim", "dtype", "shard_size", "fingerprint", "done": [shard ids]}; replaced atomically
                     after each shard is flushed, so every shard it lists is on disk
    .lock            held (flock) while a process encodes: a second process wanting the same directory waits, then
                     finds the shards done
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from rag_e2e import atomic
from rag_e2e.console import progress_bar
from rag_e2e.errors import RagE2EError

EMBEDDINGS_FILE = "embeddings.npy"
PROGRESS_FILE = "progress.json"
DTYPES = ("float16", "float32")
_SETTINGS = ("size", "dim", "dtype", "shard_size", "fingerprint")  # must match for a run to resume another


def encode_to_memmap(
    encode_rows: Callable[[int, int], torch.Tensor],
    size: int,
    out_dir: str | Path,
    *,
    dim: int,
    dtype: str = "float16",
    shard_size: int = 100_000,
    batch_size: int = 64,
    fingerprint: str = "",
    progress: bool = True,
) -> np.memmap:
    """Encode corpus rows [0, size) into `out_dir/embeddings.npy`, resuming the shards an interrupted run left undone.

    Args:
        encode_rows: (lo, hi) -> (hi - lo, dim) float tensor (any device) of rows [lo, hi); called under
            `torch.no_grad`, at most `batch_size` rows at a time. Rows, not passages, so that a caller can encode
            from tokens it keeps (a refresh tokenizes its corpus once, not on every re-encode).
        size: number of rows.
        out_dir: embeddings directory (created if missing).
        dim: embedding dim.
        dtype: "float16" (half the disk and page cache) or "float32".
        shard_size: passages per resumable unit of work.
        batch_size: rows per `encode_rows` call.
        fingerprint: identifies what is encoded (e.g. corpus + encoder fingerprints); a resumed run must match it.
        progress: show a progress bar over passages.

    Returns:
        the finished (N, dim) array, memory-mapped read-only.

    Raises:
        RagE2EError: `out_dir` holds a run with other settings, or files this function did not write.
        ValueError: bad arguments, or `encode_batch` returned the wrong shape.
    """
    out_dir = Path(out_dir)
    _check_args(size, dim, dtype, shard_size, batch_size)
    settings = {"size": size, "dim": dim, "dtype": dtype, "shard_size": shard_size, "fingerprint": fingerprint}
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        _encode_unlocked(encode_rows, out_dir, settings, batch_size, progress)
    return load_embeddings(out_dir, fingerprint)


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock on `out_dir` for as long as the block runs (none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent-writer protection
        yield
        return
    with open(out_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _encode_unlocked(encode_rows, out_dir: Path, settings: dict, batch_size: int, progress: bool) -> None:
    size, shard_size = settings["size"], settings["shard_size"]
    done = _start_or_resume(out_dir, settings)
    array = _open_array(out_dir, settings, resuming=bool(done))
    todo = [s for s in range(_num_shards(settings)) if s not in done]
    todo_rows = sum(min(size, (s + 1) * shard_size) - s * shard_size for s in todo)
    bar = progress_bar("encode passages", size, "passages", enabled=progress, done=size - todo_rows)
    with bar as advance, torch.no_grad():  # the vectors are constants on disk
        for shard in todo:
            start, end = shard * shard_size, min(size, (shard + 1) * shard_size)
            _encode_shard(encode_rows, array, start, end, batch_size, advance)
            array.flush()  # on disk before progress.json says so
            done.add(shard)
            _write_progress(out_dir, {**settings, "done": sorted(done)})
    del array


def load_embeddings(out_dir: str | Path, fingerprint: str | None = None) -> np.memmap:
    """The finished (N, dim) embeddings of `out_dir`, memory-mapped read-only.

    Args:
        out_dir: directory written by `encode_to_memmap`.
        fingerprint: the expected fingerprint; None skips the check.

    Raises:
        RagE2EError: missing or unfinished directory, or another fingerprint.
    """
    out_dir = Path(out_dir)
    progress_file = out_dir / PROGRESS_FILE
    if not progress_file.is_file():
        raise RagE2EError(f"{progress_file} not found: {out_dir} holds no embeddings written by encode_to_memmap")
    record = _read_progress(progress_file)
    if fingerprint is not None and record["fingerprint"] != fingerprint:
        raise RagE2EError(f"{progress_file}: fingerprint is {record['fingerprint']!r} but {fingerprint!r} was "
                          "expected; these embeddings come from another corpus or encoder")  # fmt: skip
    missing = _num_shards(record) - len(set(record["done"]))
    if missing:
        raise RagE2EError(f"{progress_file}: {missing} of {_num_shards(record)} shards are not encoded yet; rerun "
                          "encode_to_memmap with the same arguments to finish")  # fmt: skip
    array = np.load(out_dir / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
    _check_array(out_dir / EMBEDDINGS_FILE, array, record)
    return array


def _check_args(size: int, dim: int, dtype: str, shard_size: int, batch_size: int) -> None:
    if size < 1:
        raise ValueError("no passages to encode")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; set `index.embeddings_dtype` to one of {DTYPES}")
    if min(dim, shard_size, batch_size) < 1:
        raise ValueError(f"dim={dim}, shard_size={shard_size} and batch_size={batch_size} must all be >= 1")


def _start_or_resume(out_dir: Path, settings: dict) -> set[int]:
    """The shards already done: those of a previous run with the same settings, or none for a fresh directory."""
    progress_file = out_dir / PROGRESS_FILE
    if progress_file.is_file():
        record = _read_progress(progress_file)
        for key in _SETTINGS:
            if record[key] != settings[key]:
                raise RagE2EError(f"{progress_file}: {key} is {record[key]!r} there but {settings[key]!r} in this run; "
                                  "rerun with the same settings or choose another embeddings directory")  # fmt: skip
        return set(record["done"])
    if (out_dir / EMBEDDINGS_FILE).exists():
        raise RagE2EError(f"{out_dir / EMBEDDINGS_FILE} exists without {PROGRESS_FILE}, so it cannot be resumed; "
                          "move it away or choose another embeddings directory")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_progress(out_dir, {**settings, "done": []})  # before the array: marks the directory as ours
    return set()


def _open_array(out_dir: Path, settings: dict, *, resuming: bool) -> np.memmap:
    file = out_dir / EMBEDDINGS_FILE
    if not file.exists():
        if resuming:
            raise RagE2EError(f"{file} is missing but {out_dir / PROGRESS_FILE} lists finished shards; "
                              "delete the directory to start over")  # fmt: skip
        shape = (settings["size"], settings["dim"])
        return atomic.new_memmap(file, settings["dtype"], shape)
    array = np.load(file, mmap_mode="r+", allow_pickle=False)
    _check_array(file, array, settings)
    return array


def _encode_shard(
    encode_rows: Callable[[int, int], torch.Tensor],
    array: np.memmap,
    start: int,
    end: int,
    batch_size: int,
    advance: Callable[[int], None],
) -> None:
    """Write the vectors of rows [start, end) into array[start:end], batch_size rows at a time."""
    for lo in range(start, end, batch_size):
        hi = min(end, lo + batch_size)
        vecs = encode_rows(lo, hi)
        if tuple(vecs.shape) != (hi - lo, array.shape[1]):
            raise ValueError(f"encode_rows returned shape {tuple(vecs.shape)} for rows [{lo}, {hi}); "
                             f"expected ({hi - lo}, dim={array.shape[1]})")  # fmt: skip
        array[lo:hi] = vecs.detach().float().cpu().numpy()  # cast to the array's dtype
        advance(hi - lo)


def _num_shards(record: dict) -> int:
    return math.ceil(record["size"] / record["shard_size"])


def _read_progress(file: Path) -> dict:
    try:
        record = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise RagE2EError(f"{file}: not valid JSON ({err}); delete the directory to start over") from err
    missing = [key for key in (*_SETTINGS, "done") if key not in record]
    if missing:
        raise RagE2EError(f"{file}: missing fields {missing}; it was not written by encode_to_memmap")
    return record


def _write_progress(out_dir: Path, record: dict) -> None:
    atomic.write_text(out_dir / PROGRESS_FILE, json.dumps(record) + "\n")  # a reader sees the old record or the new


def _check_array(file: Path, array: np.ndarray, record: dict) -> None:
    expected = ((record["size"], record["dim"]), np.dtype(record["dtype"]))
    if (array.shape, array.dtype) != expected:
        raise RagE2EError(f"{file}: shape {array.shape} and dtype {array.dtype} do not match {PROGRESS_FILE}'s "
                          f"{expected[0]} and {expected[1]}; delete the directory to start over")  # fmt: skip
