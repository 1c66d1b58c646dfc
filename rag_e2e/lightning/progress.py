"""The training progress bar: Lightning's Rich bar, its epoch label fixed for step-bounded runs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Rich's bar labelled "Epoch E" (or "Epoch E/last" when epochs bound the run), showing the logged metrics only.

    Runs here stop at `max_steps` with `max_epochs=-1`, which Lightning's own label prints as "Epoch 27/-2".
    """

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        label = f"Epoch {current_epoch}" + (f"/{max_epochs - 1}" if max_epochs is not None and max_epochs > 0 else "")
        return f"{label:{len(self.validation_description)}}"  # as wide as "Validation": no flicker between the two

    def get_metrics(self, trainer, pl_module) -> dict:
        """The bar's metrics without `v_num` (a logger's version id, not a measurement)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
