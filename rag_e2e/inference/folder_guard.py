"""An exported pipeline folder from someone else must not reach outside itself.

`from_pretrained` follows whatever the folder holds: a `generator -> /elsewhere` symlink (or one on a weights file)
would load files the sender chose from anywhere on this machine. Before anything is read, every entry of the folder
is checked: symlinks may only point inside it. (Weights load as safetensors or `torch.load(weights_only=True)`, and
remote code needs `trust_remote_code`, which nothing here passes; see `pipeline.PipelineSettings`.)
"""

from __future__ import annotations

import os
from pathlib import Path

from rag_e2e.errors import ConfigError


def check_self_contained(root: str | Path) -> None:
    """Raise ConfigError naming the first symlink under `root` that resolves outside it (or dangles)."""
    root = Path(root)
    top = root.resolve()
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if not entry.is_symlink():
                continue
            target = entry.resolve()
            if not target.exists():
                raise ConfigError(f"{entry}: a symlink to {os.readlink(entry)}, which does not exist")
            if not target.is_relative_to(top):
                raise ConfigError(f"{entry}: a symlink to {target}, outside the pipeline folder {root}; an exported "
                                  "folder must hold its own files")
