"""The progress bar's epoch label: no "Epoch 27/-2" when max_steps bounds the run."""

from types import SimpleNamespace

import pytest

from rag_e2e.lightning.progress import StepProgressBar


@pytest.mark.parametrize(("max_epochs", "want"), [(-1, "Epoch 27"), (None, "Epoch 27"), (30, "Epoch 27/29")])
def test_the_label_shows_the_last_epoch_only_when_epochs_bound_the_run(max_epochs, want, monkeypatch):
    bar = StepProgressBar()
    monkeypatch.setattr(StepProgressBar, "trainer", SimpleNamespace(max_epochs=max_epochs), raising=False)
    label = bar._get_train_description(27)
    assert label.strip() == want and len(label) >= len(bar.validation_description)
