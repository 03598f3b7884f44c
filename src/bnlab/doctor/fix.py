"""Fixes that need no retraining: :func:`treat` applies one and measures again.

Registered fixes (:data:`FIXES`):

- ``"recalibrate"``: :func:`bnlab.recalibrate` on the calibration data (the training
  data of a :class:`bnlab.data.Dataset`) in batches of the training batch size, with
  training-mode features (fvcore's precise BN): every non-frozen BN layer's moving mean
  and variance become the exact population statistics of its input. It repairs stale
  statistics, statistics that never updated, non-finite statistics (when the weights
  are finite) and the dropout variance shift (dropout is off while recalibrating).

The fraction of the accuracy gap a fix closes is

.. math::
    \\text{gap closed} = \\frac{a_\\text{inf,after} - a_\\text{inf,before}}
                            {a_\\text{train,before} - a_\\text{inf,before}}

(:math:`a_\\text{inf}`: inference-mode accuracy; :math:`a_\\text{train}`: with batch
statistics), reported when the gap before is at least :data:`MIN_GAP`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bnlab.doctor.data import Batch, Batches, DataLike
from bnlab.doctor.examine import Diagnosis, examine, prepare_batches
from bnlab.doctor.measure import json_number
from bnlab.nn import recalibrate

__all__ = ["FIXES", "MIN_GAP", "Treatment", "list_fixes", "treat"]

#: Smallest accuracy gap (training-mode minus inference-mode) whose closing is reported.
MIN_GAP = 0.01


@dataclass(frozen=True, eq=False)
class Treatment:
    """A fix applied to a model, with the diagnoses before and after.

    Attributes:
        fix: the fix's name in :data:`FIXES`.
        before, after: the diagnoses.
        details: what the fix did (JSON-ready), e.g. values per channel per layer.
    """

    fix: str
    before: Diagnosis
    after: Diagnosis
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gap_closed(self) -> float | None:
        """Fraction of the inference/training-mode accuracy gap closed (None: no gap)."""
        before, after = self.before.measurements, self.after.measurements
        gap = before.accuracy_gap
        a0, a1 = before.inference.accuracy, after.inference.accuracy
        if gap is None or a0 is None or a1 is None:
            return None
        if not (math.isfinite(gap) and math.isfinite(a1)) or gap < MIN_GAP:
            return None
        return (a1 - a0) / gap

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``fix``, ``details``, ``gap_closed``, ``before``/``after`` diagnoses."""
        return {
            "fix": self.fix,
            "details": dict(self.details),
            "gap_closed": json_number(self.gap_closed),
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


class _AtLeastTwo:
    """Re-iterable batches without those of a single sample (no batch variance)."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return (b for b in self.batches if b[0].shape[0] >= 2)


def _recalibrate(model: nn.Module, calibration: Batches) -> dict[str, Any]:
    counts = recalibrate(model, _AtLeastTwo(calibration), mode="train", progress=False)
    return {"mode": "train", "data": calibration.describe(), "values_per_channel": counts}


FIXES: dict[str, Callable[[nn.Module, Batches], dict[str, Any]]] = {
    "recalibrate": _recalibrate,
}


def list_fixes() -> list[str]:
    """Names of the registered fixes."""
    return sorted(FIXES)


def treat(
    model: nn.Module,
    data: DataLike,
    fix: str = "recalibrate",
    *,
    before: Diagnosis | None = None,
    **examine_args: Any,
) -> Treatment:
    """Apply ``fix`` to ``model`` in place and diagnose it again.

    Args:
        model: the model; changed in place (e.g. its moving statistics).
        data: as for :func:`bnlab.doctor.examine`; the fix uses the calibration data.
        fix: a name from :func:`list_fixes`.
        before: the diagnosis before the fix, if already made (saves a pass).
        **examine_args: keyword arguments of :func:`bnlab.doctor.examine` (the same for
            both diagnoses and for the batches the fix uses).

    Returns:
        A :class:`Treatment` with both diagnoses and :attr:`Treatment.gap_closed`.

    Raises:
        ValueError: unknown ``fix`` (lists the valid ones).

    Example::

        treatment = treat(model, dataset, "recalibrate", train_batch_size=32)
        treatment.gap_closed                      # e.g. 0.97
    """
    if fix not in FIXES:
        raise ValueError(f"unknown fix {fix!r}; choose from: {', '.join(list_fixes())}")
    if before is None:
        before = examine(model, data, **examine_args)
    batch_args = {k: examine_args[k] for k in
                  ("calibration", "batch_size", "train_batch_size", "max_batches", "seed")
                  if k in examine_args}
    _, calibration = prepare_batches(model, data, **batch_args)
    details = FIXES[fix](model, calibration)
    after = examine(model, data, **examine_args)
    return Treatment(fix, before, after, details)
