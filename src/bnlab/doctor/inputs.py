"""``--data DATA`` for a model file: the data the model was trained on, as the model eats it.

DATA is one of

==========================================  ================================================
DATA                                        read as
==========================================  ================================================
a folder                                    ``image_folder``: one sub-folder per class
                                            (Keras's ``image_dataset_from_directory``)
a path ending in ``.npz``                   ``npz``: arrays ``x_train, y_train, x_test,
                                            y_test`` (Keras's ``mnist.npz`` layout)
a registered name (``mnist``, ``fashion6``)  that dataset with its default options
a TOML table ``{ name = "fashion6",          that dataset with these options (the lab's
train_per_class = 100 }``                   ``[data]`` table; see ``bnlab.data``)
==========================================  ================================================

**Image folders** follow ``image_dataset_from_directory(labels="inferred")``: class
``i`` is the ``i``-th sub-folder in sorted order; images are resized to
``image_size`` (default: the model's own input height and width, else Keras's
256 x 256) in the model's colour mode (1 input channel: grayscale, 3: RGB). With a
validation split ``F`` and seed ``S`` the files are shuffled with
``numpy.random.RandomState(S)`` and the last ``int(F * N)`` are evaluated on (Keras's
``subset="validation"``), the others give the statistics (``subset="training"``),
so the doctor sees exactly the images Keras's two subsets hold for the same
``validation_split`` and ``seed`` (default 1337). Without a split every image serves
both purposes, like ``image_dataset_from_directory`` without ``validation_split``.

**Pixel values.** ``image_dataset_from_directory`` yields floats 0..255 and a model
that rescales itself (a ``Rescaling`` layer before its first layer that does more than
prepare the input, :func:`bnlab.models.rescales_input`; e.g. ``Rescaling(1/255)``) was
trained on those: the doctor feeds it 0..255 (exactly the
integer pixel values), so its Rescaling applies once, never twice. A model without
such a layer was trained on pixels rescaled outside the model (``x / 255``,
``ImageDataGenerator(rescale=1/255)``, Keras's MNIST examples): it gets 0..1, as
bnlab's loaders give them. ``pixel_scale="255"`` or ``"1"`` overrides the rule (e.g.
for a model trained on raw 0..255 pixels without a Rescaling layer). Data stored as
floats beyond 1 is fed as stored.

Mismatches between the model and the data are refused before anything runs: input
shape against image size and channels, output units against the number of classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bnlab.data import Dataset, check_dataset_options, load_dataset, parse_data_argument
from bnlab.doctor.run import DoctorError

__all__ = ["DEFAULT_SPLIT_SEED", "PIXEL_SCALES", "ModelInterface", "PixelScale", "resolve_data"]

PixelScale = Literal["auto", "255", "1"]
PIXEL_SCALES: tuple[str, ...] = ("auto", "255", "1")
#: Seed of the image folder's split when none is given (bnlab's and Keras's examples' 1337).
DEFAULT_SPLIT_SEED = 1337
#: ``image_dataset_from_directory``'s default ``image_size``.
KERAS_IMAGE_SIZE = (256, 256)
_COLOR_MODES = {1: "grayscale", 3: "rgb"}


@dataclass(frozen=True)
class ModelInterface:
    """What a model expects and gives, for checking data against it.

    Attributes:
        name: how to call the model in messages (its file name).
        input_shape: Keras input shape without the batch axis; None for a size Keras
            leaves open, e.g. ``(None, None, 3)``.
        output_units: size of the output's last axis.
        rescales: the model rescales its input itself
            (:func:`bnlab.models.rescales_input`).
    """

    name: str
    input_shape: tuple[int | None, ...]
    output_units: int
    rescales: bool

    def keras_shape(self) -> str:
        """``(None, 28, 28, 3)``: the input shape with the batch axis, as Keras prints it."""
        return "(" + ", ".join(str(d) for d in (None, *self.input_shape)) + ")"


def resolve_data(
    text: str,
    model: ModelInterface,
    *,
    image_size: tuple[int, int] | None = None,
    validation_split: float | None = None,
    split_seed: int | None = None,
    pixel_scale: PixelScale = "auto",
) -> tuple[Dataset, dict[str, Any]]:
    """Load DATA (see the module docstring) checked against ``model`` and scaled for it.

    Args:
        text: the DATA argument.
        model: what the model expects (:class:`ModelInterface`).
        image_size: ``(height, width)`` for an image folder; default the model's own.
        validation_split: fraction of an image folder evaluated on, in (0, 1).
        split_seed: seed of the image folder's shuffle before the split (default 1337).
        pixel_scale: ``"auto"`` (the rule of the module docstring), ``"255"`` or ``"1"``.

    Returns:
        ``(dataset, description)``: the dataset whose test split is evaluated on and whose
        training split gives the statistics, and a JSON-ready description (dataset name,
        options, pixel range fed and why).

    Raises:
        DoctorError: a mismatch between model and data (with both numbers), image-folder
            options for other data, an unknown pixel scale.
        DatasetError: unknown dataset or option, missing or unreadable files, a folder
            without images.
    """
    if pixel_scale not in PIXEL_SCALES:
        raise DoctorError(f"--pixel-scale: got {pixel_scale!r}; choose from: "
                          f"{', '.join(PIXEL_SCALES)}")
    name, options = parse_data_argument(text)
    folder_options = {"--image-size": image_size, "--validation-split": validation_split,
                      "--split-seed": split_seed}
    given = [flag for flag, value in folder_options.items() if value is not None]
    if name == "image_folder":
        options = _image_folder_options(options, model, image_size, validation_split, split_seed)
    elif given:
        raise DoctorError(f"{', '.join(given)} apply to an image folder; DATA {text!r} is "
                          f"dataset {name!r}")
    check_dataset_options(name, options, where=f"DATA {text!r}")
    dataset = load_dataset(name, **options)
    if name == "image_folder":  # name it as the user does: "clothes test split"
        dataset = replace(dataset, name=Path(options["path"]).name or str(options["path"]))
    _check_fit(dataset, model, text)
    dataset, pixels, rule = _scaled(dataset, model, pixel_scale)
    description = {"data": text, "dataset": name, "options": _plain(options), "pixels": pixels,
                   "pixel_rule": rule}
    return dataset, description


def _image_folder_options(
    options: Mapping[str, Any], model: ModelInterface, image_size: tuple[int, int] | None,
    validation_split: float | None, split_seed: int | None,
) -> dict[str, Any]:
    out = dict(options)
    shape = model.input_shape
    if len(shape) != 3:
        raise DoctorError(f"{model.name} takes input {model.keras_shape()}, not images "
                          "(batch, height, width, channels); an image folder cannot feed it")
    height, width, channels = shape
    if image_size is not None:
        for given, wanted, what in ((image_size[0], height, "height"),
                                    (image_size[1], width, "width")):
            if wanted is not None and given != wanted:
                raise DoctorError(
                    f"--image-size {image_size[0]} {image_size[1]} does not fit {model.name}: "
                    f"it takes images of {what} {wanted} (input {model.keras_shape()}); give "
                    f"--image-size {height or image_size[0]} {width or image_size[1]} or leave "
                    "it out")
        out["image_size"] = tuple(image_size)
    elif "image_size" not in out:
        out["image_size"] = ((height, width) if height is not None and width is not None
                             else KERAS_IMAGE_SIZE)
    if channels is not None:
        if channels not in _COLOR_MODES:
            raise DoctorError(f"{model.name} takes images with {channels} channels (input "
                              f"{model.keras_shape()}); an image folder gives 1 (grayscale) or "
                              "3 (RGB)")
        out.setdefault("color_mode", _COLOR_MODES[channels])
    if validation_split is not None:
        out["validation_split"] = validation_split
    if split_seed is not None:
        out["seed"] = split_seed
    if out.get("validation_split") is None and out.get("test_path") is None:
        out["test_path"] = out["path"]  # no split: every image both evaluated and calibrated on
    return out


def _check_fit(dataset: Dataset, model: ModelInterface, text: str) -> None:
    got, wanted = dataset.input_shape, model.input_shape
    fits = len(got) == len(wanted) and all(w is None or g == w for g, w in zip(got, wanted,
                                                                              strict=True))
    if not fits:
        sample = "x".join(map(str, got))
        hint = ""
        if len(got) == len(wanted) == 3 and got[:2] == wanted[:2]:
            hint = (f"; it has {got[2]} channel(s), the model {wanted[2]}: give data with "
                    f"{wanted[2]} channel(s)")
        elif len(got) == len(wanted) == 3:
            hint = "; give data of the model's image size (an image folder is resized to it)"
        raise DoctorError(f"DATA {text!r} gives samples of shape {sample} but {model.name} takes "
                          f"input {model.keras_shape()}{hint}")
    units, classes = model.output_units, dataset.num_classes
    if units != classes and not (units == 1 and classes == 2):
        names = ", ".join(dataset.class_names[:8]) + (", ..." if classes > 8 else "")
        raise DoctorError(f"DATA {text!r} has {classes} classes ({names}) but {model.name}'s "
                          f"output has {units} units; give the data the model was trained on")


def _scaled(dataset: Dataset, model: ModelInterface,
            pixel_scale: PixelScale) -> tuple[Dataset, str, str]:
    """The dataset with pixels in the range the model was trained on, and the rule used."""
    images = dataset.x_train.ndim == 4
    unit = images and all(x.size == 0 or (x.min() >= 0 and x.max() <= 1)
                          for x in (dataset.x_train, dataset.x_test))
    if not unit:
        return dataset, "as stored", "not 0..1 images: fed as stored"
    if pixel_scale == "auto":
        raw = model.rescales
        rule = ("the model has a Rescaling layer: 0..255, as image_dataset_from_directory "
                "yields them" if raw else
                "the model has no Rescaling layer: 0..1, as rescaled outside the model")
    else:
        raw = pixel_scale == "255"
        rule = f"--pixel-scale {pixel_scale}"
    if not raw:
        return dataset, "0..1", rule
    scaled = Dataset(
        name=dataset.name, x_train=_to_255(dataset.x_train), y_train=dataset.y_train,
        x_test=_to_255(dataset.x_test), y_test=dataset.y_test,
        num_classes=dataset.num_classes, class_names=dataset.class_names,
    )
    return scaled, "0..255", rule


def _to_255(x: np.ndarray) -> np.ndarray:
    """``k / 255`` back to ``k`` (exact for 8-bit pixels; other values scaled by 255)."""
    out = x * np.float32(255)
    rounded = np.rint(out)
    if np.allclose(out, rounded, rtol=0, atol=1e-3):
        return rounded.astype(np.float32)
    return out


def _plain(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
