"""Files of a saved index, and fingerprints of the corpus and encoder it was built from.

`index.save_index` / `index.load_index` are the entry points; this module knows files, not index classes.

A saved index is a directory:

    meta.json     `IndexMeta`: kind, dim, size, metric, fingerprints, encoder step, build params (written last)
    vectors.npy   (N, d) passage vectors in their stored dtype (loaded memory-mapped by default)
    faiss.index   FAISS kinds only: the index in FAISS's own format (a CPU copy)

No pickle anywhere (JSON, .npy read with allow_pickle=False, FAISS's format), so loading an index received from
someone else runs no code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rag_e2e import atomic
from rag_e2e.data.types import Passage
from rag_e2e.errors import RagE2EError
from rag_e2e.retrieval.index_base import Index

COPY_ROWS = 65_536  # rows of an on-disk matrix copied at a time
META_FILE = "meta.json"
VECTORS_FILE = "vectors.npy"
FAISS_FILE = "faiss.index"


class IndexMismatchError(RagE2EError):
    """A saved index that is incomplete or was built from another corpus or encoder than the caller's.

    Args:
        path: the index directory.
        field: what differs ("corpus fingerprint", "encoder fingerprint", "dim", "size", "missing file", ...).
        expected: the caller's value (for "missing file": the file name).
        found: the saved value (None for a missing file).
    """

    def __init__(self, path: str | Path, field: str, expected: Any, found: Any):
        self.path, self.field, self.expected, self.found = str(path), field, expected, found
        if field == "missing file":
            message = f"index at {path}: missing file {expected} (an unfinished save, or not an index directory)"
        else:
            message = f"index at {path}: {field} mismatch: expected {expected!r}, found {found!r}"
        super().__init__(message + "; rebuild the index or point to the one built from this corpus and encoder")


@dataclasses.dataclass(kw_only=True)
class IndexMeta:
    """What a saved index was built from; `load_index` compares it with what the caller is about to use."""

    kind: str  # an IndexKind
    dim: int  # d
    size: int  # N
    metric: str = "ip"  # inner product, the only metric here
    corpus_fingerprint: str  # `corpus_fingerprint(passages)` of the encoded corpus
    encoder_fingerprint: str  # `state_fingerprint(...)` of the passage tower that encoded it
    encoder_step: int  # training step of that tower
    params: dict[str, int] = dataclasses.field(default_factory=dict)  # `Index.params`, set by `save_index`

    @classmethod
    def for_index(
        cls, index: Index, *, corpus_fingerprint: str, encoder_fingerprint: str, encoder_step: int = 0
    ) -> IndexMeta:
        """The metadata of `index`, with the caller's fingerprints."""
        return cls(kind=index.kind, dim=index.dim, size=index.size, corpus_fingerprint=corpus_fingerprint,
                   encoder_fingerprint=encoder_fingerprint, encoder_step=encoder_step,
                   params=dict(index.params))  # fmt: skip


def corpus_fingerprint(passages: Iterable[Passage]) -> str:
    """16 hex digits of sha256 over every passage's (pid, title, text), in order."""
    digest = hashlib.sha256()
    for passage in passages:
        # JSON quoting makes the boundaries between fields and passages unambiguous.
        digest.update(json.dumps([passage.pid, passage.title, passage.text], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()[:16]


def state_fingerprint(module_or_state_dict: torch.nn.Module | Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over a state dict's sorted names, shapes, dtypes and bytes."""
    state = module_or_state_dict
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):  # e.g. extra state
            digest.update(f"{name}|{value!r}\n".encode())
            continue
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # bytes of any dtype (bf16 too), not copied
    return digest.hexdigest()[:16]


def write_index_dir(
    path: str | Path, meta: IndexMeta, p_reps: torch.Tensor | np.ndarray, faiss_index: Any = None
) -> Path:
    """Write a saved-index directory at `path` (use `index.save_index`, which fills these from an `Index`).

    Written through `atomic.directory`: an interrupted save leaves no directory at `path` (or the previous index
    intact). Vectors that already sit in a finished .npy file (an embeddings memmap) are hard-linked, not copied, so
    saving costs no disk and no time; other vectors are copied a block at a time.

    Args:
        path: the index directory.
        meta: written to meta.json.
        p_reps: (N, d) passage vectors (tensor, array or memmap), written to vectors.npy.
        faiss_index: a CPU FAISS index for faiss.index, or None.

    Raises:
        ValueError: `path` holds something other than a saved index.
    """
    path = Path(path)
    if path.exists() and not (path / META_FILE).is_file() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} exists and is not a saved index; refusing to replace it (choose another path)")
    with atomic.directory(path) as tmp:
        _write_vectors(p_reps, tmp / VECTORS_FILE)
        if faiss_index is not None:
            import faiss

            faiss.write_index(faiss_index, str(tmp / FAISS_FILE))
        _write_meta(meta, tmp / META_FILE)  # last, so a directory with meta.json is complete
    return path


def read_index_dir(
    path: str | Path, *, corpus_fingerprint: str, encoder_fingerprint: str | None, dim: int | None, mmap: bool
) -> tuple[IndexMeta, np.ndarray]:
    """Metadata and (N, d) vectors of a saved index, after checking them; args as in `index.load_index`.

    Raises:
        IndexMismatchError: a missing or unreadable file, or a mismatched fingerprint, dim or size.
    """
    path = Path(path)
    meta = _read_meta(path)
    _expect(path, "corpus fingerprint", corpus_fingerprint, meta.corpus_fingerprint)
    if encoder_fingerprint is not None:
        _expect(path, "encoder fingerprint", encoder_fingerprint, meta.encoder_fingerprint)
    if dim is not None:
        _expect(path, "dim", dim, meta.dim)
    file = _require(path, VECTORS_FILE)
    try:
        vectors = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:  # not an .npy file, or one holding objects
        raise IndexMismatchError(path, f"{VECTORS_FILE} contents", "an (N, d) float array", str(err)) from err
    _expect(path, f"ndim of {VECTORS_FILE}", 2, vectors.ndim)
    _expect(path, f"size (meta.json vs {VECTORS_FILE})", meta.size, vectors.shape[0])
    _expect(path, f"dim (meta.json vs {VECTORS_FILE})", meta.dim, vectors.shape[1])
    return meta, vectors


def read_faiss_file(path: str | Path, meta: IndexMeta) -> Any:
    """The CPU FAISS index saved at `path`, checked against `meta`."""
    from rag_e2e.extras import require

    require("faiss", f"reading the FAISS index in {path}")
    import faiss

    path = Path(path)
    file = _require(path, FAISS_FILE)
    try:
        index = faiss.read_index(str(file))
    except RuntimeError as err:  # FAISS reports unreadable files this way
        raise IndexMismatchError(path, f"{FAISS_FILE} contents", "a FAISS index", str(err).splitlines()[0]) from err
    _expect(path, f"dim (meta.json vs {FAISS_FILE})", meta.dim, index.d)
    _expect(path, f"size (meta.json vs {FAISS_FILE})", meta.size, index.ntotal)
    return index


def _write_vectors(p_reps: torch.Tensor | np.ndarray, file: Path) -> None:
    if isinstance(p_reps, torch.Tensor):
        np.save(file, p_reps.detach().float().cpu().numpy())
        return
    if _link_npy(p_reps, file):
        return
    out = atomic.new_memmap(file, p_reps.dtype, p_reps.shape)
    for start in range(0, p_reps.shape[0], COPY_ROWS):  # a block at a time: p_reps may not fit in RAM
        out[start : start + COPY_ROWS] = p_reps[start : start + COPY_ROWS]
    out.flush()
    del out


def _link_npy(p_reps: np.ndarray, file: Path) -> bool:
    """Hard-link the .npy file `p_reps` is a whole read-only memmap of to `file`; False when it is not one (or the
    filesystem cannot link), and the caller copies. The linked file must never be written again: embeddings
    directories are not once finished."""
    source = getattr(p_reps, "filename", None)
    if not isinstance(p_reps, np.memmap) or source is None or p_reps.mode != "r" or not str(source).endswith(".npy"):
        return False
    try:
        whole = np.load(source, mmap_mode="r", allow_pickle=False)
        if (whole.shape, whole.dtype, whole.offset) != (p_reps.shape, p_reps.dtype, p_reps.offset):
            return False  # a slice or view of the file, not all of it
        os.link(source, file)
    except (OSError, ValueError):
        return False
    return True


def _write_meta(meta: IndexMeta, file: Path) -> None:
    file.write_text(json.dumps(dataclasses.asdict(meta), indent=2, sort_keys=True) + "\n")


def _read_meta(path: Path) -> IndexMeta:
    file = _require(path, META_FILE)
    try:
        return IndexMeta(**json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise IndexMismatchError(path, f"{META_FILE} contents", "IndexMeta fields", str(err)) from err


def _require(path: Path, name: str) -> Path:
    if not (path / name).is_file():
        raise IndexMismatchError(path, "missing file", name, None)
    return path / name


def _expect(path: Path, field: str, expected: Any, found: Any) -> None:
    if expected != found:
        raise IndexMismatchError(path, field, expected, found)
