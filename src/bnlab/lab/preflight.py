"""Check a whole experiment against its data once, before anything is created or run.

`check_experiment` loads each variant's dataset (once per distinct ``[data]``), checks
the samples are finite and of sane magnitude, builds each variant's model on the
data's shape and pushes two samples through it, and checks the model's outputs fit
the classes and the loss. A mismatch that would otherwise fail every run, one by one
and minutes later (``Target 250 is out of bounds``, BN on a missing axis, a 6-unit
head on 3 classes), is one line here and the command exits with status 2.

Bounds that keep a typo from exhausting the machine:

- `MAX_PARAMETERS` per model (counted on the ``meta`` device, before any memory is
  allocated);
- `MAX_SAMPLE_MAGNITUDE` for input values: larger ones overflow float32 moments.
"""

from __future__ import annotations

import numpy as np
import torch

from bnlab.data import Dataset, DatasetError
from bnlab.lab.errors import LabError
from bnlab.lab.experiment import Experiment, Variant
from bnlab.lab.runs import load_variant_data
from bnlab.models import SpecError

__all__ = ["MAX_PARAMETERS", "MAX_SAMPLE_MAGNITUDE", "check_experiment"]

MAX_PARAMETERS = 100_000_000
"""Most parameters one model may have (0.4 GB of float32 weights, several GB to train)."""

MAX_SAMPLE_MAGNITUDE = 1e15
"""Largest absolute input value accepted: its square stays far inside float32's range."""

_CLASS_LOSSES = ("categorical_crossentropy", "sparse_categorical_crossentropy")


def check_experiment(experiment: Experiment) -> list[Dataset]:
    """Load every variant's data and build every model once; raise on the first problem.

    Returns:
        each distinct dataset the variants use, in variant order (what the study trains
        on, for the command line to describe before training).

    Raises:
        DatasetError: data that cannot be loaded, or non-finite / huge sample values.
        SpecError, LabError: a model that cannot be built on the data's shape, has more
            than `MAX_PARAMETERS` parameters, fails on two samples, or whose outputs do
            not fit the number of classes and the loss.
    """
    checked: dict[int, Dataset] = {}
    for variant in experiment.variants:
        data = _load(variant)
        if id(data) not in checked:
            _check_samples(data)
            checked[id(data)] = data
        _check_model(variant, data)
    return list(checked.values())


def _load(variant: Variant) -> Dataset:
    name = variant.data["name"]
    try:
        return load_variant_data(variant)
    except (DatasetError, LabError, SpecError):
        raise
    except MemoryError:
        raise DatasetError(
            f"dataset {name!r} (variant {variant.name}): loading it needs more memory than "
            f"this machine has; options: {_options(variant)}"
        ) from None
    except (OSError, ValueError, RuntimeError) as e:
        raise DatasetError(
            f"dataset {name!r} (variant {variant.name}): cannot load it: "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from None


def _check_samples(data: Dataset) -> None:
    for part, x in (("training", data.x_train), ("test", data.x_test)):
        finite = np.isfinite(x)
        if not finite.all():
            bad = int(x.size - np.count_nonzero(finite))
            raise DatasetError(
                f"dataset {data.name!r}: {bad} {part} sample values are NaN or infinite; "
                "fix or drop those samples"
            )
        top = float(np.abs(x).max(initial=0.0))
        if top > MAX_SAMPLE_MAGNITUDE:
            raise DatasetError(
                f"dataset {data.name!r}: {part} samples hold values up to {top:.3g}; at most "
                f"{MAX_SAMPLE_MAGNITUDE:g} in magnitude is accepted (scale the inputs)"
            )


def _check_model(variant: Variant, data: Dataset) -> None:
    shape = variant.input_shape or data.input_shape
    where = f"variant {variant.name}"
    with torch.device("meta"):
        count = sum(p.numel() for p in _build(variant, shape, where).parameters())
    if count > MAX_PARAMETERS:
        raise LabError(
            f"{where}: the model has {count} parameters on input shape {list(shape)}; at most "
            f"{MAX_PARAMETERS} are allowed (check the layers' units and filters)"
        )
    model = _build(variant, shape, where).eval()
    x = torch.from_numpy(data.x_train[:2].copy())
    try:
        with torch.no_grad():
            y = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        raise LabError(
            f"{where}: the model fails on samples of shape {list(x.shape[1:])} from dataset "
            f"{data.name!r}: {_first_line(e)}"
        ) from None
    _check_outputs(variant, data, tuple(y.shape[1:]))


def _build(variant: Variant, shape: tuple[int, ...], where: str) -> torch.nn.Module:
    try:
        return variant.build(shape, seed=0)
    except SpecError:
        raise
    except (RuntimeError, ValueError, OverflowError, MemoryError) as e:
        raise LabError(
            f"{where}: cannot build the model on input shape {list(shape)}: {_first_line(e)}"
        ) from None


def _check_outputs(variant: Variant, data: Dataset, out: tuple[int, ...]) -> None:
    loss = variant.train["loss"]
    classes = data.num_classes
    where = f"variant {variant.name}"
    if len(out) != 1:
        raise LabError(
            f"{where}: the model outputs shape {list(out)} per sample; {loss} needs one vector "
            "per sample (end with a Dense layer, after Flatten)"
        )
    units = out[0]
    if units == 1:
        if loss in _CLASS_LOSSES or (loss == "binary_crossentropy" and classes > 2):
            raise LabError(
                f"{where}: the model has 1 output but dataset {data.name!r} has {classes} "
                f"classes; end with Dense({classes}, softmax) and a categorical loss, or use "
                "a 2-class dataset"
            )
        return
    if units != classes:
        raise LabError(
            f"{where}: the model has {units} outputs but dataset {data.name!r} has {classes} "
            f"classes; the last Dense needs units = {classes}"
        )


def _options(variant: Variant) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in variant.data.items() if k != "name") or "none"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
