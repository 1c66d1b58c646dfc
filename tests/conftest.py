"""Test-wide environment: set before anything imports triton or wandb."""

import os
from pathlib import Path

import torch

# Triton kernels run in the interpreter on CPU-only machines (must be set before any @triton.jit is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The public datasets' root (data.root): this project's machines keep them in ../shared/data (tests skip without).
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if _SHARED_DATA.is_dir():
    os.environ.setdefault("RAG_E2E_DATA", str(_SHARED_DATA))
