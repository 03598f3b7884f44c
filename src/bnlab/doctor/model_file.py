"""Doctor for a Keras model file: ``bnlab doctor MODEL.keras --data DATA [--fix ... --save F]``.

:func:`examine_model_file` loads the model with :func:`bnlab.load_keras` (no
TensorFlow, no pickle), loads DATA checked against it (:mod:`bnlab.doctor.inputs`:
input shape against image size and channels, output units against classes, pixel
range for its Rescaling layer), examines its BN layers, optionally applies a fix and
writes the fixed model with :func:`bnlab.save_keras` (:func:`bnlab.lab.keras_export.write_model_file`:
a new ``.keras`` file, written atomically; the input file is never replaced
unless ``overwrite`` is given).

What the file tells about training is used as evidence: Keras 3 archives keep the
optimizer's ``iterations`` (= training steps = BN updates; Keras's BN layers keep no
count of their own) and the compiled loss. A file without them (saved without the
optimizer) leaves the step count unknown.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bnlab.doctor.examine import Diagnosis
from bnlab.doctor.fix import Treatment, list_fixes
from bnlab.doctor.inputs import ModelInterface, PixelScale, resolve_data
from bnlab.doctor.run import DoctorError, examine_and_treat
from bnlab.keras_io.archive import read_file
from bnlab.lab.keras_export import check_model_file
from bnlab.models import GraphModel, SequentialModel, rescales_input
from bnlab.train import list_losses

__all__ = ["examine_model_file", "model_interface", "training_record"]
#: Batch size assumed for training when not given: Keras's ``fit`` default.
KERAS_BATCH_SIZE = 32


def examine_model_file(
    path: str | Path,
    data: str,
    *,
    image_size: tuple[int, int] | None = None,
    validation_split: float | None = None,
    split_seed: int | None = None,
    pixel_scale: PixelScale = "auto",
    train_batch_size: int | None = None,
    fix: str | None = None,
    save: str | Path | None = None,
    overwrite: bool = False,
    max_batches: int | None = None,
) -> Diagnosis | Treatment:
    """Examine (and optionally fix and save) the BN layers of a Keras model file.

    Args:
        path: a Keras 3 ``.keras`` archive or a legacy tf.keras ``.h5`` model file.
        data: DATA as in :mod:`bnlab.doctor.inputs` (a registered dataset, a TOML table,
            an ``.npz`` or an image folder); its test split (an image folder's validation
            subset) is evaluated on, its training split gives the statistics and the fix.
        image_size, validation_split, split_seed, pixel_scale: see
            :func:`bnlab.doctor.inputs.resolve_data`.
        train_batch_size: the batch size the model was trained with (default 32, Keras's).
        fix: None or a fix from :func:`bnlab.doctor.list_fixes`.
        save: write the fixed model here (a new ``.keras`` file); needs ``fix``.
        overwrite: allow ``save`` to replace an existing file (the input included).
        max_batches: at most this many batches per measuring pass.

    Returns:
        A :class:`Diagnosis`, or a :class:`Treatment` when ``fix`` is given; its
        ``context`` names the file, the data, the pixel rule, the training steps and loss
        read from the file; a treatment's ``details["saved"]`` names the file written.

    Raises:
        DoctorError: bad arguments, a model/data mismatch; nothing is written.
        KerasFileError: a corrupt, unsafe or unsupported model file (one line).
        DatasetError: unknown or unreadable data, a folder without images.
    """
    source = Path(path)
    if fix is not None and fix not in list_fixes():
        raise DoctorError(f"unknown fix {fix!r}; choose from: {', '.join(list_fixes())}")
    if save is not None:
        if fix is None:
            raise DoctorError(f"--save {save} writes the fixed model; give --fix "
                              f"({', '.join(list_fixes())}) too")
        target = Path(save)
        if target.exists() and target.resolve() == source.resolve() and not overwrite:
            raise DoctorError(f"--save {save} is the input model; give another file name (or "
                              "--overwrite to replace the input)")
        check_model_file(target, overwrite=overwrite)
    if train_batch_size is not None and train_batch_size < 2:
        raise DoctorError(f"--batch-size must be >= 2 (batch statistics need two samples); got "
                          f"{train_batch_size}")
    model = _load(source)
    interface = model_interface(model, source.name)
    dataset, described = resolve_data(data, interface, image_size=image_size,
                                      validation_split=validation_split, split_seed=split_seed,
                                      pixel_scale=pixel_scale)
    record = training_record(source)
    context: dict[str, Any] = {
        "model_file": str(source),
        "input_shape": list(interface.input_shape),
        "output_units": interface.output_units,
        **described,
        "train_steps": record["steps"],
        "loss": record["loss"],
        "batch_size": train_batch_size or KERAS_BATCH_SIZE,
    }
    args: dict[str, Any] = {
        "train_batch_size": train_batch_size or KERAS_BATCH_SIZE,
        "loss": record["loss"] if record["loss"] in list_losses() else None,
        "max_batches": max_batches,
        "update_steps": record["steps"],
        "context": context,
    }
    return examine_and_treat(model, dataset, args, fix=fix, save=save, overwrite=overwrite)


def _load(path: Path) -> nn.Module:
    from bnlab.keras_io import load_keras

    return load_keras(path).eval()


def model_interface(model: nn.Module, name: str) -> ModelInterface:
    """Input shape, output units and self-rescaling of a Sequential or Functional model.

    Raises:
        DoctorError: a model with several inputs or outputs (the doctor feeds one ``x``
            and scores one output), or one that is no bnlab Keras-style model.
    """
    if isinstance(model, SequentialModel):
        inputs, output = (tuple(model.input_shape),), model.output_shape
    elif isinstance(model, GraphModel):
        inputs, output = model.input_shapes, model.output_shape
        if len(inputs) != 1 or len(model.output_names) != 1:
            raise DoctorError(f"{name}: the doctor feeds one input and scores one output; the "
                              f"model has {len(inputs)} input(s) ({', '.join(model.input_names)}) "
                              f"and {len(model.output_names)} output(s)")
    else:
        raise DoctorError(f"{name}: expected a model loaded from a Keras file; got "
                          f"{type(model).__name__}")
    units = output[-1]  # type: ignore[index]
    return ModelInterface(name, tuple(inputs[0]), int(units) if units is not None else 0,
                          rescales_input(spec for _, spec, _ in model.named_layers()))


def training_record(path: str | Path) -> dict[str, Any]:
    """What a Keras file records about training: ``{"steps": int | None, "loss": str | None}``.

    ``steps``: the optimizer's ``iterations`` (a Keras 3 archive's first optimizer
    variable; a legacy ``.h5`` file's ``optimizer_weights`` entry named ``iter...``);
    ``loss``: the compiled loss when it is given by name. None when the file lacks them
    (saved without the optimizer, or not compiled).
    """
    import h5py

    path = Path(path)
    steps: int | None = None
    try:
        loss = read_file(path, weights=False).compile.get("loss")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" in archive.namelist():
                    with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as f:
                        steps = _scalar_int(f.get("optimizer/vars/0"))
        else:
            with h5py.File(path, "r") as f:
                group = f.get("optimizer_weights")
                if group is not None:
                    names: list[str] = []
                    group.visit(names.append)
                    found = [n for n in names if n.rsplit("/", 1)[-1].startswith("iter")]
                    steps = _scalar_int(group.get(found[0])) if found else None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):  # KerasFileError too
        return {"steps": None, "loss": None}
    return {"steps": steps, "loss": loss if isinstance(loss, str) else None}


def _scalar_int(dataset: Any) -> int | None:
    """The value of a scalar integer h5py dataset, else None."""
    import h5py

    if not isinstance(dataset, h5py.Dataset) or dataset.shape != ():
        return None
    value = np.asarray(dataset[()])
    if not np.issubdtype(value.dtype, np.integer) or value < 0:
        return None
    return int(value)
