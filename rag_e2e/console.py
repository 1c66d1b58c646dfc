"""What a run prints: rag_e2e's own lines, the progress bar and errors; the libraries' notices only when verbose.

Quiet by default: Lightning's INFO lines ("GPU available: False", tips for other products) and the deprecation
warnings that libraries raise about each other say nothing about the run. `rag-e2e train -v` (or
`RAG_E2E_VERBOSE=1`, which DDP ranks inherit) shows them all.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "RAG_E2E_VERBOSE"
_LIBRARIES = r"(lightning|lightning_fabric|pytorch_lightning|transformers|torch|wandb|peft)(\.|$)"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def quiet_libraries() -> None:
    """Unless verbose: Lightning logs warnings and errors only, and library deprecation notices are not shown."""
    if verbose():
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARIES)
