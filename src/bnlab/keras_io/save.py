"""``save_keras``: a bnlab model -> a Keras 3 ``.keras`` archive that Keras loads.

The archive holds what ``keras.saving.load_model`` reads: ``metadata.json``,
``config.json`` and ``model.weights.h5`` (layout in :mod:`bnlab.keras_io.layout`).

- A model from :func:`bnlab.load_keras` keeps the configuration of its file (every
  argument, name and connection as Keras wrote it); only the weights are replaced by
  the model's current ones (e.g. recalibrated moving statistics).

The file appears only when complete: it is written to a temporary file next to
``path`` and renamed over it, so a failed save leaves nothing behind (and an existing
file is replaced only by a complete one).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch import nn

from bnlab.keras_io.archive import CONFIG, METADATA, WEIGHTS
from bnlab.keras_io.config import ModelConfig, parse_model_config
from bnlab.keras_io.errors import KerasFileError
from bnlab.keras_io.layout import layer_keys, weight_groups
from bnlab.keras_io.load import KerasOrigin
from bnlab.models import get_keras_weights

__all__ = ["save_keras"]

#: The Keras version recorded when the source file named none (legacy .h5 from tf.keras).
KERAS_FORMAT_VERSION = "3.0.0"


def save_keras(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a Keras 3 ``.keras`` archive; returns the path written.

    Args:
        model: a model from :func:`bnlab.load_keras` (its original configuration is kept,
            the weights are the model's current ones).
        path: the file to write; must end in ``.keras`` (Keras refuses other names).
            An existing file is replaced.

    Raises:
        TypeError: ``model`` was not loaded from a Keras file.
        KerasFileError: a wrong file name, a missing folder, weights that no longer fit
            the configuration. Nothing is written.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise KerasFileError(
            f"{path}: a Keras 3 archive's name must end in '.keras' (keras.saving.load_model "
            f"refuses others); got suffix {path.suffix!r}"
        )
    if not path.parent.is_dir():
        raise KerasFileError(f"{path}: the folder {str(path.parent)!r} does not exist")
    origin = getattr(model, "keras_origin", None)
    shapes = None
    if isinstance(origin, KerasOrigin):
        entry, version = _keras3_entry(origin.config), origin.keras_version or KERAS_FORMAT_VERSION
        shapes = origin.weight_shapes
    else:
        raise TypeError(
            f"save_keras expects a model from bnlab.load_keras; got {type(model).__name__}"
        )
    config = parse_model_config(entry, str(path))
    weights = _weights_h5(model, config, path, shapes)
    metadata = {
        "keras_version": version,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    _write_atomic(
        path,
        {
            METADATA: json.dumps(metadata).encode(),
            CONFIG: json.dumps(entry).encode(),
            WEIGHTS: weights,
        },
    )
    return path


def _keras3_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The model entry with the ``module`` Keras 3 needs to find the model class (legacy
    ``.h5`` configurations name the class only); the rest stays as the file had it."""
    if "module" in entry:
        return entry
    if entry.get("class_name") == "Sequential":
        return {"module": "keras", **entry, "registered_name": None}
    return {
        "module": "keras.src.models.functional",
        **entry,
        "class_name": "Functional",
        "registered_name": "Functional",
    }


def _weights_h5(
    model: nn.Module,
    config: ModelConfig,
    path: Path,
    shapes: Mapping[str, tuple[tuple[int, ...], ...]] | None,
) -> bytes:
    """``model.weights.h5`` in Keras 3's layout, from the model's current weights."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = config.name
        layers = h5.create_group("layers")
        keys = layer_keys(e.class_name for e in config.saved)
        for entry, key in zip(config.saved, keys, strict=True):
            group = layers.create_group(key)
            group.create_group("vars").attrs["name"] = entry.name
            if entry.class_name == "InputLayer":
                continue
            arrays = _layer_arrays(model, entry.name, entry.class_name, path)
            expected = None if shapes is None else shapes.get(entry.name)
            if expected is not None and tuple(a.shape for a in arrays) != expected:
                raise KerasFileError(
                    f"{path}: layer {entry.name!r} ({entry.class_name}) now has weights of "
                    f"shapes {[a.shape for a in arrays]}; its configuration needs "
                    f"{list(expected)}; save a model whose layers fit its configuration"
                )
            groups = weight_groups(entry.entry)
            if len(arrays) % len(groups):
                raise KerasFileError(
                    f"{path}: layer {entry.name!r} ({entry.class_name}) has {len(arrays)} weights, "
                    f"which do not split over its {len(groups)} weight groups"
                )
            per_group = len(arrays) // len(groups)
            for g, sub in enumerate(groups):
                target = group.require_group(sub)
                for i, array in enumerate(arrays[g * per_group : (g + 1) * per_group]):
                    target.create_dataset(str(i), data=array)
                _empty_vars(group, sub)
    return buffer.getvalue()


def _empty_vars(group: h5py.Group, sub: str) -> None:
    """Keras writes a ``vars`` group at every level of a nested layer (wrapper, cell)."""
    parts = sub.split("/")[:-1]
    for depth in range(1, len(parts)):
        group.require_group("/".join([*parts[:depth], "vars"]))


def _layer_arrays(model: nn.Module, name: str, class_name: str, path: Path) -> list[np.ndarray]:
    try:
        module = model.layer(name)
    except (KeyError, ValueError) as error:
        raise KerasFileError(
            f"{path}: the configuration has layer {name!r} ({class_name}) but the model has no "
            f"such layer ({error}); was the model changed after loading?"
        ) from None
    try:
        weights = get_keras_weights(module)
    except (TypeError, ValueError) as error:
        raise KerasFileError(f"{path}: layer {name!r} ({class_name}): {error}") from None
    arrays = []
    for array in weights:
        array = np.asarray(array)
        arrays.append(array.astype(np.float32) if array.dtype.kind == "f" else array)
    return arrays


def _write_atomic(path: Path, entries: dict[str, bytes]) -> None:
    """Write the zip to a temporary file in ``path``'s folder, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
