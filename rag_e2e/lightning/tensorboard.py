"""TensorBoard logging across a run's stages (evaluation before training, fit, test) in one event file."""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger


class RunTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, kept open from stage to stage of one Trainer.

    Lightning finalizes a logger after each stage, and the stock one closes its writer there; the next stage then
    opens a new event file named by the current second, which truncates the previous stage's file when both fall in
    the same second (a short run lost its training curves that way). Here each stage's end only flushes; `close`
    ends the file once the run is done.
    """

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()

    def close(self) -> None:
        if self._experiment is not None:
            self.experiment.close()
