"""Checkpoint files: written atomically with fsync, read with `weights_only=True`, damage reported in one line.

Lightning's own writer buffers the checkpoint and moves it into place, but does not fsync it, and its reader
unpickles arbitrary objects unless told otherwise. A checkpoint is a file users pass around: reading one must run
no code, and a truncated or corrupted one must say so, naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO

from rag_e2e import atomic
from rag_e2e.errors import RagE2EError


class CheckpointError(RagE2EError):
    """A checkpoint file that cannot be read (missing, truncated, corrupted or holding more than tensors)."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint dict read with `weights_only=True` (plain tensors and containers only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupted, or holding objects other "
                              f"than tensors: {first[:200]})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a rag_e2e checkpoint (no state_dict)")
    return checkpoint


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO over `rag_e2e.atomic` and `load_checkpoint`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        atomic.write_file(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location or "cpu")

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
