"""What a run prints: rag_e2e's own lines, the progress bar and errors; the libraries' notices only when verbose.

Quiet by default: Lightning's INFO lines ("GPU available: False", tips for other products) and the deprecation
warnings that libraries raise about each other say nothing about the run. `rag-e2e train -v` (or
`RAG_E2E_VERBOSE=1`, which DDP ranks inherit) shows them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

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


@contextlib.contextmanager
def progress_bar(description: str, total: int, unit: str, *, enabled: bool = True, done: int = 0,
                 transient: bool = False) -> Iterator[Callable[[int], None]]:
    """A bar in the training bar's style (Rich, Lightning's console) for work outside the training loop: encoding
    the corpus, export, prepare. Yields `advance(n)`; a no-op when disabled.

    On the same console as Lightning's bar, so a bar opened during training (a refresh) stacks under it instead of
    interleaving with it; where Rich cannot nest live displays, the inner bar is left out.
    """
    if not enabled:
        yield lambda n: None
        return
    from rich import get_console
    from rich import progress as rp
    from rich.errors import LiveError

    bar = rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                      rp.TextColumn(unit), rp.TimeElapsedColumn(), rp.TextColumn("•"), rp.TimeRemainingColumn(),
                      console=get_console(), transient=transient)
    try:
        bar.start()
    except LiveError:
        yield lambda n: None
        return
    task = bar.add_task(description, total=total, completed=done)
    try:
        yield lambda n: bar.advance(task, n)
    finally:
        bar.stop()


def track(items: Iterable[T], description: str, unit: str, *, total: int | None = None, enabled: bool = True,
          transient: bool = False) -> Iterator[T]:
    """`items` with a `progress_bar` over them (`total` defaults to their length)."""
    total = len(items) if total is None else total  # type: ignore[arg-type]
    with progress_bar(description, total, unit, enabled=enabled, transient=transient) as advance:
        for item in items:
            yield item
            advance(1)
