"""Progress display for :func:`bnlab.train.fit`: a rich bar on a terminal, nothing otherwise."""

from __future__ import annotations

import math
import sys
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["TrainProgress"]

# What the bar shows of an epoch's logs, abbreviated to fit an 80-column terminal.
_SHORT = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}


class TrainProgress:
    """Two bars (epochs, steps in the current epoch) with the last epoch's loss and accuracy.

    Shown only when ``enabled`` and standard output is a terminal, so logs and captured
    output stay clean; otherwise every method does nothing. Use as a context manager.
    """

    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int) -> None:
        self._progress: Progress | None = None
        if enabled and sys.stdout.isatty():
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[metrics]}"),
                transient=True,
            )
            self._epochs = self._progress.add_task("epoch", total=epochs, metrics="")
            self._steps: TaskID = self._progress.add_task("step ", total=steps_per_epoch, metrics="")

    def __enter__(self) -> TrainProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def step(self) -> None:
        """One optimizer step done."""
        if self._progress is not None:
            self._progress.advance(self._steps)

    def epoch(self, logs: dict[str, float | None]) -> None:
        """One epoch done; show its metrics and reset the step bar."""
        if self._progress is None:
            return
        shown = "  ".join(
            f"{_SHORT[k]} {v:.4f}"
            for k, v in logs.items()
            if k in _SHORT and v is not None and not math.isnan(v)
        )
        self._progress.update(self._epochs, advance=1, metrics=shown)
        self._progress.reset(self._steps)
