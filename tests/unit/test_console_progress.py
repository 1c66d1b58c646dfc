"""One progress-bar style: rag_e2e.console's Rich bar, on Lightning's console, stacking under a live training bar."""

import io

import pytest
import rich
from rich.console import Console
from rich.progress import Progress

from rag_e2e.console import progress_bar, track


@pytest.fixture
def out(monkeypatch):
    """What the global Rich console (Lightning's) prints, in this test only."""
    file = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=file, force_terminal=False, width=100))
    return file


def test_track_yields_every_item_and_shows_the_count(out):
    items = [3, 1, 4, 1, 5]
    assert list(track(items, "encode passages", "batches")) == items
    assert "encode passages" in out.getvalue() and "5/5" in out.getvalue()


def test_advance_counts_from_what_was_done_before(out):
    with progress_bar("encode passages", 10, "passages", done=4) as advance:
        advance(3)
        advance(3)
    assert "10/10" in out.getvalue()


def test_disabled_prints_nothing(out):
    assert list(track(range(3), "x", "y", total=3, enabled=False)) == [0, 1, 2]
    with progress_bar("x", 3, "y", enabled=False) as advance:
        advance(3)
    assert out.getvalue() == ""


def test_a_bar_opened_under_a_live_one_does_not_fail(out):  # a refresh during training, under Lightning's bar
    with Progress(console=rich.get_console()) as outer:
        outer.add_task("Epoch 0", total=2)
        assert list(track(range(4), "encode passages", "batches", transient=True)) == [0, 1, 2, 3]
