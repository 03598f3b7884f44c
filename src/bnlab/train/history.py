"""The record of one training run: :class:`History` and its JSON-ready dict.

``History.to_dict()`` has exactly this shape (accuracies are fractions in [0, 1];
non-finite numbers become ``None``, i.e. ``null`` in JSON)::

    {"epochs": {"loss": [float], "accuracy": [float], "val_loss": [float],
                "val_accuracy": [float], "val_accuracy_train_mode": [float] | None},
     "evals": [{"step": int, "epoch": float, "val_loss": float, "val_accuracy": float,
                "val_accuracy_train_mode": float | None}],
     "probes": {"<layer>.<input|output>": {"percentiles": [15, 50, 85], "steps": [int],
                                          "values": [[float, ...], ...]}},
     "final": {"train_loss": float, "train_accuracy": float,
               "test_loss": float, "test_accuracy": float},
     "diverged": bool, "steps_per_epoch": int,
     "initial_loss": float, "chance_accuracy": float}

``History.from_dict`` reads it back (``None`` -> NaN) and rejects unknown keys and missing
ones, except ``initial_loss`` and ``chance_accuracy``: records written before they existed
read as NaN (unknown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EPOCH_METRICS", "EVAL_KEYS", "EvalRecord", "FinalMetrics", "History", "ProbeTrace"]

NAN = float("nan")

#: The per-epoch lists of ``History.to_dict()["epochs"]`` (the results format's metric names).
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_accuracy_train_mode")
#: The keys of one ``evals`` record.
EVAL_KEYS = ("step", "epoch", "val_loss", "val_accuracy", "val_accuracy_train_mode")

#: Keys added after the first records were written; a record without them reads them as null.
_OPTIONAL: dict[str, None] = {"initial_loss": None, "chance_accuracy": None}


def _out(x: float) -> float | None:
    """A float for JSON: non-finite -> None."""
    return float(x) if math.isfinite(x) else None


def _in(x: object, where: str) -> float:
    """A float from JSON: None -> NaN."""
    if x is None:
        return NAN
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TypeError(f"History.from_dict: {where} must be a number or null; got {x!r}")
    return float(x)


def _floats_in(xs: object, where: str) -> tuple[float, ...]:
    if not isinstance(xs, Sequence) or isinstance(xs, str):
        raise TypeError(f"History.from_dict: {where} must be a list of numbers; got {xs!r}")
    return tuple(_in(x, where) for x in xs)


def _require_keys(raw: object, expected: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"History.from_dict: {where} must be a dict; got {raw!r}")
    missing = [k for k in expected if k not in raw]
    unknown = sorted(set(raw) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"History.from_dict: {where} must have keys {', '.join(expected)}; "
            f"missing {missing}, unknown {unknown}"
        )
    return raw


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation on the test set after ``step`` optimizer steps (``epoch = step / steps_per_epoch``)."""

    step: int
    epoch: float
    val_loss: float
    val_accuracy: float
    val_accuracy_train_mode: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": float(self.epoch),
            "val_loss": _out(self.val_loss),
            "val_accuracy": _out(self.val_accuracy),
            "val_accuracy_train_mode": (
                None if self.val_accuracy_train_mode is None else _out(self.val_accuracy_train_mode)
            ),
        }


@dataclass(frozen=True)
class ProbeTrace:
    """Percentiles of one probed tensor: ``values[i][j]`` = percentile ``j`` at ``steps[i]``."""

    percentiles: tuple[float, ...]
    steps: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "percentiles": list(self.percentiles),
            "steps": list(self.steps),
            "values": [[_out(v) for v in row] for row in self.values],
        }


@dataclass(frozen=True)
class FinalMetrics:
    """Loss and accuracy on the whole train and test sets in inference mode after training."""

    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float

    def to_dict(self) -> dict[str, float | None]:
        return {
            "train_loss": _out(self.train_loss),
            "train_accuracy": _out(self.train_accuracy),
            "test_loss": _out(self.test_loss),
            "test_accuracy": _out(self.test_accuracy),
        }


@dataclass(frozen=True)
class History:
    """Everything :func:`bnlab.train.fit` measured, one entry per epoch in the per-epoch fields.

    Attributes:
        loss, accuracy: training loss (including regularization losses, as Keras reports it)
            and accuracy averaged over the epoch's batches, weighted by batch size, in
            training mode while the weights change.
        val_loss, val_accuracy: on the test set in inference mode at each epoch end.
        val_accuracy_train_mode: test accuracy with batch statistics (BN in training mode,
            nothing updated) at each epoch end; None for a model without BN layers.
        evals: evaluations every ``eval_every_steps`` steps and at each epoch end.
        probes: ``"<layer>.<where>"`` -> :class:`ProbeTrace`.
        final: :class:`FinalMetrics` in inference mode after the last epoch.
        diverged: the training loss became non-finite; every later number is NaN. (The lab
            also counts a run whose loss blew up without becoming non-finite as diverged:
            :mod:`bnlab.lab.outcomes`.)
        steps_per_epoch: optimizer steps per epoch.
        initial_loss: the training loss of the first batch before any update (training mode,
            regularization included, like ``loss``): the starting point a blow-up is measured
            from. NaN when unknown (older records) or non-finite.
        chance_accuracy: accuracy on the test set of always predicting its most frequent
            class (:func:`bnlab.train.metrics.chance_accuracy`); a final test accuracy at or
            below it means the model learned nothing. NaN when unknown (older records).
    """

    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    val_loss: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    val_accuracy_train_mode: tuple[float, ...] | None
    evals: tuple[EvalRecord, ...]
    probes: dict[str, ProbeTrace]
    final: FinalMetrics
    diverged: bool
    steps_per_epoch: int
    initial_loss: float = NAN
    chance_accuracy: float = NAN

    @property
    def epochs(self) -> int:
        """Number of epochs recorded (NaN-padded epochs after a divergence included)."""
        return len(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict of the module docstring (non-finite numbers -> None)."""
        return {
            "epochs": {
                "loss": [_out(v) for v in self.loss],
                "accuracy": [_out(v) for v in self.accuracy],
                "val_loss": [_out(v) for v in self.val_loss],
                "val_accuracy": [_out(v) for v in self.val_accuracy],
                "val_accuracy_train_mode": (
                    None
                    if self.val_accuracy_train_mode is None
                    else [_out(v) for v in self.val_accuracy_train_mode]
                ),
            },
            "evals": [e.to_dict() for e in self.evals],
            "probes": {k: p.to_dict() for k, p in self.probes.items()},
            "final": self.final.to_dict(),
            "diverged": self.diverged,
            "steps_per_epoch": self.steps_per_epoch,
            "initial_loss": _out(self.initial_loss),
            "chance_accuracy": _out(self.chance_accuracy),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> History:
        """Read a dict made by :meth:`to_dict` (``None`` -> NaN).

        Raises:
            ValueError / TypeError: a missing or unknown key, or a value of the wrong type.
        """
        top = _require_keys(
            {**_OPTIONAL, **raw} if isinstance(raw, Mapping) else raw,
            ["epochs", "evals", "probes", "final", "diverged", "steps_per_epoch", *_OPTIONAL],
            "the history",
        )
        ep = _require_keys(
            top["epochs"],
            EPOCH_METRICS,
            "'epochs'",
        )
        train_mode = ep["val_accuracy_train_mode"]
        evals = []
        for i, e in enumerate(top["evals"]):
            e = _require_keys(
                e,
                EVAL_KEYS,
                f"evals[{i}]",
            )
            tm = e["val_accuracy_train_mode"]
            evals.append(
                EvalRecord(
                    step=int(e["step"]),
                    epoch=_in(e["epoch"], f"evals[{i}].epoch"),
                    val_loss=_in(e["val_loss"], f"evals[{i}].val_loss"),
                    val_accuracy=_in(e["val_accuracy"], f"evals[{i}].val_accuracy"),
                    val_accuracy_train_mode=(
                        None if tm is None and train_mode is None else _in(tm, f"evals[{i}].val_accuracy_train_mode")
                    ),
                )
            )
        probes = {}
        if not isinstance(top["probes"], Mapping):
            raise TypeError(f"History.from_dict: 'probes' must be a dict; got {top['probes']!r}")
        for key, p in top["probes"].items():
            p = _require_keys(p, ["percentiles", "steps", "values"], f"probes[{key!r}]")
            probes[key] = ProbeTrace(
                percentiles=tuple(p["percentiles"]),
                steps=tuple(int(s) for s in p["steps"]),
                values=tuple(_floats_in(row, f"probes[{key!r}].values") for row in p["values"]),
            )
        fin = _require_keys(
            top["final"], ["train_loss", "train_accuracy", "test_loss", "test_accuracy"], "'final'"
        )
        if not isinstance(top["diverged"], bool):
            raise TypeError(f"History.from_dict: 'diverged' must be true or false; got {top['diverged']!r}")
        return cls(
            loss=_floats_in(ep["loss"], "epochs.loss"),
            accuracy=_floats_in(ep["accuracy"], "epochs.accuracy"),
            val_loss=_floats_in(ep["val_loss"], "epochs.val_loss"),
            val_accuracy=_floats_in(ep["val_accuracy"], "epochs.val_accuracy"),
            val_accuracy_train_mode=(
                None if train_mode is None else _floats_in(train_mode, "epochs.val_accuracy_train_mode")
            ),
            evals=tuple(evals),
            probes=probes,
            final=FinalMetrics(
                train_loss=_in(fin["train_loss"], "final.train_loss"),
                train_accuracy=_in(fin["train_accuracy"], "final.train_accuracy"),
                test_loss=_in(fin["test_loss"], "final.test_loss"),
                test_accuracy=_in(fin["test_accuracy"], "final.test_accuracy"),
            ),
            diverged=top["diverged"],
            steps_per_epoch=int(top["steps_per_epoch"]),
            initial_loss=_in(top["initial_loss"], "initial_loss"),
            chance_accuracy=_in(top["chance_accuracy"], "chance_accuracy"),
        )
