"""A disk that fills mid-write, on a real (small) tmpfs: the previous output stays intact, debris is removed, and the
command prints one line naming the file. Mounting needs root; elsewhere these tests skip."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

from rag_e2e import atomic
from rag_e2e.errors import DiskFullError

pytestmark = pytest.mark.diskfull


@pytest.fixture
def small_disk(tmp_path):
    """A mount point on a fresh tmpfs; call it with the size in MB (once per test)."""
    mounted = []

    def mount(size_mb: float) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * 1024)}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave_kb: int = 0) -> None:
    """Take every free block of `disk` but `leave_kb`."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - leave_kb * 1024
    with open(disk / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(free, 1))


def debris(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if atomic._LEFTOVER.fullmatch(p.name))


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag_e2e.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_full_disk_during_save_index_leaves_the_previous_index(small_disk):
    from rag_e2e.retrieval.index import IndexMeta, build_index, load_index, save_index

    disk = small_disk(4)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    old = torch.randn(500, 64, generator=gen)
    index = build_index("exact", old)
    save_index(index, disk / "index", IndexMeta.for_index(index, corpus_fingerprint="c", encoder_fingerprint="e1"))
    fill(disk, leave_kb=64)  # room for the small files, not for 500 × 64 new float32 vectors (125 KB)
    new = build_index("exact", torch.randn(500, 64, generator=gen))
    with pytest.raises(DiskFullError, match=r"index: no space left on the disk"):
        save_index(new, disk / "index", IndexMeta.for_index(new, corpus_fingerprint="c", encoder_fingerprint="e2"))
    loaded, meta = load_index(disk / "index", corpus_fingerprint="c")
    assert meta.encoder_fingerprint == "e1" and np.array_equal(np.asarray(loaded.p_reps), old.numpy())
    assert debris(disk) == []


def test_a_memmap_on_a_full_disk_raises_one_error_instead_of_a_bus_error(small_disk):
    disk = small_disk(1)
    # In a child process: before allocation up front, this died of SIGBUS (rc -7) with no message at all.
    code = ("import sys, numpy as np, torch\n"
            "from rag_e2e.errors import RagE2EError\n"
            "from rag_e2e.retrieval.embeddings import encode_to_memmap\n"
            "try:\n"
            f"    encode_to_memmap(lambda lo, hi: torch.ones(hi - lo, 256), 4096, {str(disk / 'emb')!r}, dim=256,"
            " dtype='float32', shard_size=1024, progress=False)\n"
            "except RagE2EError as err:\n"
            "    print(err); sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "embeddings.npy: no space left on the disk" in done.stdout
    assert not (disk / "emb" / "embeddings.npy").exists()  # nothing half-allocated left to resume from


def test_prepare_on_a_full_disk_keeps_the_previous_corpus_and_says_so_in_one_line(small_disk, tmp_path):
    rng = np.random.default_rng()
    words = [f"w{i}" for i in range(5000)]

    def write_docs(folder: Path, n: int, words_each: int) -> Path:
        folder.mkdir()
        for i in range(n):
            (folder / f"doc{i}.txt").write_text(" ".join(rng.choice(words, words_each)) + ".\n")
        return folder

    disk = small_disk(2)
    first = _cli("prepare", str(write_docs(tmp_path / "small", 3, 200)), f"out={disk / 'kb'}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = (disk / "kb" / "passages.parquet").read_bytes()
    second = _cli("prepare", str(write_docs(tmp_path / "big", 40, 20_000)), f"out={disk / 'kb'}")
    lines = second.stderr.strip().splitlines()  # the progress bar's, then the error's
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert [line for line in lines if line.startswith("rag-e2e")] == lines[-1:]
    assert lines[-1].startswith("rag-e2e: error: ") and "no space left on the disk" in lines[-1]
    assert str(disk / "kb") in lines[-1]  # names the file it could not write
    assert (disk / "kb" / "passages.parquet").read_bytes() == before and debris(disk) == []


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(small_disk):
    disk = small_disk(400)
    run_dir = disk / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rag_e2e.cli", "train", "experiment=tiny", "logger=none",
                             f"run_dir={run_dir}", "trainer.max_steps=400", "trainer.val_check_interval=20"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.exists(), "no checkpoint appeared"
    fill(disk)  # the next checkpoint (step 40) finds no room
    _, err = proc.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err[-3000:]
    assert lines[-1].startswith("rag-e2e: error: ") and "no space left on the disk" in lines[-1], err[-3000:]
    assert "Traceback" not in err
    (disk / "filler").unlink()
    state = torch.load(last, map_location="cpu", weights_only=True)  # whole, and the earlier step's
    assert state["global_step"] >= 20 and debris(run_dir) == []
