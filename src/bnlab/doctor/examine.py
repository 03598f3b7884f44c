"""``examine(model, data) -> Diagnosis``: measure a trained model and rank what is wrong."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from bnlab.data import Dataset
from bnlab.doctor.data import Batches, DataLike, as_batches, model_device_dtype, split
from bnlab.doctor.findings import Finding, diagnose
from bnlab.doctor.measure import Measurements, measure
from bnlab.doctor.scoring import AccuracyFn, LossArg, Scorer

__all__ = ["SCHEMA", "Diagnosis", "examine", "prepare_batches"]

#: Identifies the JSON shape of :meth:`Diagnosis.to_dict`.
SCHEMA = "bnlab.doctor/1"

#: Batch size of the training-mode passes when the training batch size is unknown.
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True, eq=False)
class Diagnosis:
    """What :func:`examine` found.

    Attributes:
        measurements: every number measured (:class:`~bnlab.doctor.measure.Measurements`).
        findings: ranked findings, most severe first.
        context: where the model came from (e.g. the lab run), JSON-ready.
    """

    measurements: Measurements
    findings: tuple[Finding, ...]
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serious(self) -> tuple[Finding, ...]:
        """The critical and serious findings."""
        return tuple(f for f in self.findings if f.serious)

    def codes(self) -> list[str]:
        """Finding codes in rank order."""
        return [f.code for f in self.findings]

    def finding(self, code: str) -> Finding | None:
        """The finding with this code, or None."""
        return next((f for f in self.findings if f.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``schema``, ``context``, ``metrics``, ``layers``, ``findings``."""
        m = self.measurements.to_dict()
        layers = m.pop("layers")
        return {
            "schema": SCHEMA,
            "context": dict(self.context),
            "metrics": m,
            "layers": layers,
            "findings": [f.to_dict() for f in self.findings],
        }


def examine(
    model: nn.Module,
    data: DataLike,
    *,
    calibration: DataLike | None = None,
    batch_size: int | None = None,
    train_batch_size: int | None = None,
    loss: LossArg = None,
    accuracy: AccuracyFn | None = None,
    max_batches: int | None = None,
    seed: int = 0,
    update_steps: int | Literal["counted"] | None = "counted",
    context: Mapping[str, Any] | None = None,
) -> Diagnosis:
    """Measure the BN layers of a trained ``model`` on ``data`` and diagnose them.

    Measures (see :mod:`bnlab.doctor.measure`) inference-mode vs training-mode
    (batch statistics) accuracy and loss on the evaluation data, and per BN layer the
    exact population statistics of its input on the calibration data against its moving
    statistics, its update steps against what its momentum needs, batch noise, dead and
    constant channels and non-finite values; then applies the rules of
    :mod:`bnlab.doctor.findings`. The model is left exactly as it was (modes, buffers).

    Args:
        model: any ``nn.Module`` with bnlab and/or PyTorch BN layers.
        data: a :class:`bnlab.data.Dataset` (evaluated on its test split, statistics
            from its training split), ``(x, y)`` arrays/tensors, ``x`` alone (no
            accuracy), a torch ``Dataset`` or an iterable of batches (see
            :mod:`bnlab.doctor.data`).
        calibration: data for the population statistics (a Dataset gives its training
            split); default: the training split of a Dataset ``data``, else ``data``.
        batch_size: batch size of the training-mode passes when the data is cut here;
            default ``train_batch_size``, else 32.
        train_batch_size: the batch size the model was trained with, if known (judges
            small-batch noise).
        loss: None (inferred from the output), a bnlab loss name (Keras semantics), or a
            callable ``loss(outputs, targets)`` returning the batch mean.
        accuracy: None (argmax / threshold, inferred) or ``accuracy(outputs, targets)``
            returning the fraction correct in the batch.
        max_batches: use at most this many batches per pass.
        seed: shuffles array data into batches and seeds the dropout pass.
        update_steps: how many updates the moving statistics took: ``"counted"`` (each
            layer's own ``num_batches_tracked``), the number of training steps when the
            layers did not count them (a model from a Keras file: Keras keeps no count,
            its optimizer's ``iterations`` does), or None (unknown).
        context: JSON-ready facts to keep with the diagnosis (e.g. the lab run).

    Returns:
        A :class:`Diagnosis`; ``diagnosis.findings`` is ranked, most severe first.

    Raises:
        TypeError / ValueError: data of an unknown form, mismatched lengths, or no batch
            of at least two samples; arguments out of range.

    Example::

        from bnlab.doctor import examine, render
        diagnosis = examine(model, (x_val, y_val), calibration=(x_train, y_train),
                            train_batch_size=32)
        render(diagnosis)                       # rich tables on the terminal
        [f.code for f in diagnosis.findings]    # e.g. ['stale_statistics', 'bias_before_bn']
    """
    if update_steps != "counted" and update_steps is not None and (
            isinstance(update_steps, bool) or not isinstance(update_steps, int)
            or update_steps < 0):
        raise ValueError(f"examine: update_steps must be 'counted', an int >= 0 or None; got "
                         f"{update_steps!r}")
    evaluation_batches, calibration_batches = prepare_batches(
        model, data, calibration=calibration, batch_size=batch_size,
        train_batch_size=train_batch_size, max_batches=max_batches, seed=seed,
    )
    measurements = measure(model, evaluation_batches, calibration_batches,
                           Scorer(loss, accuracy), train_batch_size=train_batch_size, seed=seed)
    if update_steps != "counted":
        layers = tuple(replace(layer, steps_seen=update_steps)
                       for layer in measurements.layers)
        measurements = replace(measurements, layers=layers)
    return Diagnosis(measurements, diagnose(measurements), dict(context or {}))


def prepare_batches(
    model: nn.Module,
    data: DataLike,
    *,
    calibration: DataLike | None = None,
    batch_size: int | None = None,
    train_batch_size: int | None = None,
    max_batches: int | None = None,
    seed: int = 0,
) -> tuple[Batches, Batches]:
    """The evaluation and calibration batches :func:`examine` uses (same arguments)."""
    for name, value in (("batch_size", batch_size), ("train_batch_size", train_batch_size),
                        ("max_batches", max_batches)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"examine: {name} must be an int >= 1 or None; got {value!r}")
    size = batch_size or train_batch_size or DEFAULT_BATCH_SIZE
    if size < 2:
        raise ValueError(
            f"examine: batches of {size} sample cannot give batch statistics; pass batch_size >= 2"
        )
    if isinstance(data, Iterator):  # one-shot: read once, it serves several passes
        data = list(data)
    if isinstance(calibration, Iterator):
        calibration = list(calibration)
    evaluation_data, calibration_data, evaluation_name, calibration_name = split(data)
    if isinstance(calibration, Dataset):  # its training split, like ``data``'s
        _, calibration_data, _, calibration_name = split(calibration)
    elif calibration is not None:
        calibration_data, calibration_name = calibration, "calibration data"
    device, dtype = model_device_dtype(model)
    common = {"batch_size": size, "seed": seed, "device": device, "dtype": dtype,
              "max_batches": max_batches}
    return (as_batches(evaluation_data, name=evaluation_name, **common),
            as_batches(calibration_data, name=calibration_name, **common))
