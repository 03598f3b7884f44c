"""Make some runs fail inside training, for tests of failed runs (exit status 1).

Bad data or a bad model is refused before a study starts (exit 2), so a run that
fails while it trains is simulated: inside `failing_runs()`, every run whose training
batch size is `FAILING_BATCH_SIZE` raises in the trainer the lab calls (in this
process: use the sequential executor). A variant opts in with
``train = { batch_size = 17 }``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

import bnlab.lab.runs

FAILING_BATCH_SIZE = 17
MESSAGE = "simulated training failure"


@contextlib.contextmanager
def failing_runs() -> Iterator[None]:
    """Inside the block, runs with batch size `FAILING_BATCH_SIZE` raise RuntimeError(MESSAGE)."""
    real = bnlab.lab.runs.fit

    def fit(model: Any, data: Any, config: Any, **kwargs: Any) -> Any:
        if config.batch_size == FAILING_BATCH_SIZE:
            raise RuntimeError(MESSAGE)
        return real(model, data, config, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bnlab.lab.runs, "fit", fit)
        yield
