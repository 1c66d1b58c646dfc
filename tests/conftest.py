"""Test-wide environment: set before anything imports triton or wandb."""

import os

import torch

# Triton kernels run in the interpreter on CPU-only machines (must be set before any @triton.jit is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
