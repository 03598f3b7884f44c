"""Did a run diverge, and did it learn? The lab's two verdicts on one run's stored history.

Both read the History dict of a run record (``results.json`` ``runs[i].history``), never live
training state, so ``bnlab report`` applies them to stored runs as well.

**Diverged**: the training loss became non-finite, or it blew up::

    non_finite = history.diverged  or  a final metric is null
    blew_up    = epochs.loss[-1] > DIVERGENCE_FACTOR · initial_loss        (factor 2)

``initial_loss`` is the loss of the first batch before any update and ``epochs.loss[-1]`` the
last epoch's training loss (the mean over its batches); both are measured the same way
(training mode, regularization included). The loss functions clip probabilities to
``[1e-7, 1 − 1e-7]`` as Keras does, so a run that blows up need not produce NaN or inf: its
cross-entropy saturates near ``−ln(1e-7) ≈ 16.1`` while a fresh K-class model starts near
``ln K`` (2.30 for 10 classes). Training exists to lower the loss; ending an epoch at more
than twice the starting value means the updates made the model worse than its random
initialisation, which noise on a plateau does not do. A spike that came back below twice
the start by the last epoch is not a divergence.

**Did not learn**: the final test accuracy (inference mode) is no better than always
predicting the test set's most frequent class::

    did_not_learn = final.test_accuracy ≤ chance_accuracy     (or final.test_accuracy is null)

The verdicts are independent: a run can blow up and still end above chance, and a run can
stall at chance without its loss rising (every ReLU dead, a model that outputs one class).

Records written before bnlab stored ``initial_loss`` and ``chance_accuracy`` cannot show a
blow-up or a failure to learn: those verdicts are None (unknown), counted as not flagged and
reported as unknown. A non-finite loss and a null test accuracy are recognised in any record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DIVERGENCE_FACTOR", "RunOutcome", "outcome_table", "run_outcome"]

#: A run diverged when its last epoch's training loss exceeds this many times its initial loss.
DIVERGENCE_FACTOR = 2.0

_FINAL_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class RunOutcome:
    """The numbers behind the verdicts of one completed run (None: null or not recorded).

    Attributes:
        non_finite: the history says ``diverged`` or a final metric is null.
        initial_loss: the first batch's loss before any update.
        last_loss: the last epoch's training loss.
        test_accuracy: final test accuracy (inference mode).
        chance_accuracy: test accuracy of always predicting the most frequent class.
    """

    non_finite: bool
    initial_loss: float | None
    last_loss: float | None
    test_accuracy: float | None
    chance_accuracy: float | None

    @property
    def blew_up(self) -> bool | None:
        """``last_loss > DIVERGENCE_FACTOR · initial_loss``; None when either is unknown."""
        if self.initial_loss is None or self.last_loss is None:
            return None
        return self.last_loss > DIVERGENCE_FACTOR * self.initial_loss

    @property
    def diverged(self) -> bool | None:
        """Non-finite loss, or a loss that blew up; None when no blow-up check was possible."""
        return True if self.non_finite else self.blew_up

    @property
    def did_not_learn(self) -> bool | None:
        """Null test accuracy, or ``test_accuracy ≤ chance_accuracy``; None when unknown."""
        if self.test_accuracy is None:
            return True
        if self.chance_accuracy is None:
            return None
        return self.test_accuracy <= self.chance_accuracy

    def diverged_words(self) -> str:
        """Why the run counts as diverged: ``"NaN/inf loss"`` or ``"loss 14.2 > 2 × initial 2.31"``."""
        if self.non_finite:
            return "NaN/inf loss"
        factor = f"{DIVERGENCE_FACTOR:g}"
        return f"loss {self.last_loss:.3g} > {factor} × initial {self.initial_loss:.3g}"

    def did_not_learn_words(self) -> str:
        """Why the run counts as not learning: ``"test accuracy 0.102 ≤ chance 0.117"``."""
        if self.test_accuracy is None:
            return "no test accuracy (non-finite outputs)"
        return f"test accuracy {self.test_accuracy:.3f} ≤ chance {self.chance_accuracy:.3f}"


def run_outcome(history: Mapping[str, Any]) -> RunOutcome:
    """The :class:`RunOutcome` of a completed run's History dict (see the module docstring)."""
    final = history.get("final") or {}
    losses = (history.get("epochs") or {}).get("loss") or []
    return RunOutcome(
        non_finite=bool(history.get("diverged"))
        or any(_finite(final.get(k)) is None for k in _FINAL_KEYS),
        initial_loss=_finite(history.get("initial_loss")),
        last_loss=_finite(losses[-1]) if losses else None,
        test_accuracy=_finite(final.get("test_accuracy")),
        chance_accuracy=_finite(history.get("chance_accuracy")),
    )


def outcome_table(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Verdict counts per variant and grid point, for results.json's ``outcomes``.

    One entry per (variant, grid point) in the order the runs first name them::

        {"variant", "grid", "runs", "completed",
         "diverged", "non_finite", "did_not_learn", "unknown",
         "diverged_seeds", "did_not_learn_seeds"}

    ``runs`` counts run records (failed ones included), ``completed`` those with a history.
    ``diverged`` = ``non_finite`` + runs whose loss blew up; ``unknown`` counts completed runs
    with a verdict that could not be given (records without ``initial_loss`` or
    ``chance_accuracy``), which are not counted as diverged or as not learning.
    """
    groups: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, Any]] = {}
    for run in runs:
        grid = dict(run.get("grid") or {})
        entry = groups.setdefault(
            (str(run["variant"]), tuple(grid.items())),
            {
                "variant": str(run["variant"]),
                "grid": grid,
                "runs": 0,
                "completed": 0,
                "diverged": 0,
                "non_finite": 0,
                "did_not_learn": 0,
                "unknown": 0,
                "diverged_seeds": [],
                "did_not_learn_seeds": [],
            },
        )
        entry["runs"] += 1
        history = run.get("history")
        if run.get("status") != "completed" or not isinstance(history, Mapping):
            continue
        outcome = run_outcome(history)
        entry["completed"] += 1
        entry["non_finite"] += outcome.non_finite
        if outcome.diverged:
            entry["diverged"] += 1
            entry["diverged_seeds"].append(run["seed"])
        if outcome.did_not_learn:
            entry["did_not_learn"] += 1
            entry["did_not_learn_seeds"].append(run["seed"])
        entry["unknown"] += outcome.diverged is None or outcome.did_not_learn is None
    return list(groups.values())
