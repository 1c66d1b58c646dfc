"""rag_e2e.atomic: a failed or interrupted write (a full disk included) leaves the previous version and no debris."""

import errno
import os

import numpy as np
import pytest
import torch

from rag_e2e import atomic
from rag_e2e.errors import DiskFullError, RagE2EError
from rag_e2e.lightning.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from rag_e2e.retrieval.index import IndexMeta, build_index, load_index, save_index


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_text_replaces_and_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic.write_text(path, "old\n")
    atomic.write_text(path, "new\n")
    assert path.read_text() == "new\n"

    def half_then_full(tmp):
        tmp.write_text("half")
        _disk_full()

    with pytest.raises(DiskFullError, match="metrics.json: no space left on the disk") as caught:
        atomic.write_file(path, half_then_full)
    assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC  # still an OSError for callers
    assert path.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_every_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(len(synced)), real_replace(a, b))[1])
    atomic.write_text(tmp_path / "a.txt", "x")
    assert renamed == [1] and len(synced) == 2  # the file before the rename, its directory after


def test_write_files_is_all_or_nothing(tmp_path):
    atomic.write_files(tmp_path, {"a.md": lambda t: t.write_text("a1"), "b.md": lambda t: t.write_text("b1")})
    with pytest.raises(OSError):
        atomic.write_files(tmp_path, {"a.md": lambda t: t.write_text("a2"), "b.md": _disk_full})
    assert (tmp_path / "a.md").read_text() == "a1" and (tmp_path / "b.md").read_text() == "b1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.md"]


def test_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "index"
    with atomic.directory(target) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(OSError), atomic.directory(target) as tmp:
        (tmp / "x").write_text("2")
        _disk_full()
    assert (target / "x").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    with atomic.directory(target, replace=False) as tmp:  # someone else's finished copy wins
        (tmp / "x").write_text("3")
    assert (target / "x").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_index_save_on_a_full_disk_leaves_the_previous_index(tmp_path, monkeypatch):
    from rag_e2e.retrieval import index_io

    p_reps = torch.randn(20, 4)
    index = build_index("exact", p_reps)
    meta = IndexMeta.for_index(index, corpus_fingerprint="c", encoder_fingerprint="e1")
    save_index(index, tmp_path / "ix", meta)
    monkeypatch.setattr(index_io, "_write_meta", _disk_full)
    with pytest.raises(OSError):
        save_index(build_index("exact", torch.randn(20, 4)), tmp_path / "ix",
                   IndexMeta.for_index(index, corpus_fingerprint="c", encoder_fingerprint="e2"))
    loaded, meta = load_index(tmp_path / "ix", corpus_fingerprint="c")
    assert meta.encoder_fingerprint == "e1" and np.array_equal(np.asarray(loaded.p_reps), p_reps.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_memmap_vectors_are_hard_linked_not_copied(tmp_path):
    from rag_e2e.retrieval.embeddings import encode_to_memmap

    table = torch.randn(30, 4)
    vectors = encode_to_memmap(lambda lo, hi: table[lo:hi], len(table), tmp_path / "emb", dim=4,
                               dtype="float32", shard_size=7, progress=False)
    index = build_index("exact", vectors)
    save_index(index, tmp_path / "ix", IndexMeta.for_index(index, corpus_fingerprint="c", encoder_fingerprint="e"))
    linked, source = os.stat(tmp_path / "ix" / "vectors.npy"), os.stat(tmp_path / "emb" / "embeddings.npy")
    assert linked.st_ino == source.st_ino
    loaded, _ = load_index(tmp_path / "ix", corpus_fingerprint="c")
    assert np.array_equal(np.asarray(loaded.p_reps), table.numpy())
    sliced = build_index("exact", vectors[:10])  # a view of part of the file: copied, not linked
    save_index(sliced, tmp_path / "ix2", IndexMeta.for_index(sliced, corpus_fingerprint="c", encoder_fingerprint="e"))
    assert os.stat(tmp_path / "ix2" / "vectors.npy").st_ino != source.st_ino


def test_checkpoints_write_atomically_and_refuse_pickled_objects(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    state = {"state_dict": {"w": torch.randn(3)}, "step": 4}
    io.save_checkpoint(state, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], state["state_dict"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(RagE2EError, match=r"evil.ckpt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.ckpt")
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RagE2EError, match=r"cut.ckpt: not a readable checkpoint \(truncated"):
        load_checkpoint(tmp_path / "cut.ckpt")


def test_leftovers_of_killed_writes_are_recognised_and_only_they(tmp_path):
    keep = [tmp_path / "last.ckpt", tmp_path / ".hidden", tmp_path / ".x.tmp"]
    for path in keep:
        path.write_text("mine")
    debris = [tmp_path / ".last.ckpt.4242-0a1b2c3d.tmp", tmp_path / ".v3-rank0-of-1.saving-k2_x9q",
              tmp_path / ".v2-rank0-of-1.old-deadbeef"]
    debris[0].write_text("half")
    for folder in debris[1:]:
        folder.mkdir()
        (folder / "vectors.npy").write_text("half")
    assert sorted(atomic.remove_leftovers(tmp_path)) == sorted(debris)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


@pytest.mark.parametrize("error", [OSError("32000 requested and 16352 written"),  # numpy tofile's short write
                                   RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 128")])
def test_a_writer_that_hides_enospc_is_called_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch, error):
    def fails(tmp):
        tmp.write_text("half")
        raise error

    monkeypatch.setattr(atomic, "_free_bytes", lambda path: 4096)
    with pytest.raises(DiskFullError, match=r"x.bin: no space left on the disk .*4096 bytes free"):
        atomic.write_file(tmp_path / "x.bin", fails)
    monkeypatch.setattr(atomic, "_free_bytes", lambda path: 10 << 30)  # room left: the writer's own error
    with pytest.raises(type(error)) as caught:
        atomic.write_file(tmp_path / "x.bin", fails)
    assert not isinstance(caught.value, DiskFullError) and list(tmp_path.iterdir()) == []
