"""``save_keras``: a bnlab model -> a Keras 3 ``.keras`` archive that Keras loads.

The archive holds what ``keras.saving.load_model`` reads: ``metadata.json``,
``config.json`` and ``model.weights.h5`` (layout in :mod:`bnlab.keras_io.layout`).

- A model from :func:`bnlab.load_keras` keeps the configuration of its file (every
  argument, name and connection as Keras wrote it); only the weights are replaced by
  the model's current ones (e.g. recalibrated moving statistics). A compiled model keeps
  its ``compile_config``, and, when it came from a ``.keras`` archive that is still
  there, the archive's optimizer state (``optimizer/vars`` of its weights file), so that
  Keras restores the compiled optimizer (step count, Adam's moments) as it was. A legacy
  ``.h5`` origin stores the optimizer in another layout: its state is not carried, and
  Keras warns that it starts a fresh optimizer.
- A model built from specs (a lab model: :class:`bnlab.models.SequentialModel`, or a
  :class:`bnlab.models.GraphModel` from a :class:`bnlab.models.GraphSpec`, e.g.
  ``load_keras_spec(path).build()``) is written as a Keras ``Sequential`` or
  ``Functional`` model: ``InputLayer`` entries with the model's input shapes, then
  :func:`bnlab.models.keras_config` of each layer under its bnlab name, connected as
  the model is. A layer with no Keras equivalent (``BatchNormAct``, a bnlab-only BN
  option) is refused with the message of :mod:`bnlab.models`.

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
from bnlab.keras_io.layout import weight_groups
from bnlab.keras_io.load import KerasOrigin
from bnlab.models import GraphModel, SequentialModel, SpecError, get_keras_weights, keras_config

__all__ = ["save_keras"]

#: The Keras version recorded for models built by bnlab and for files that named none:
#: the configuration format written is Keras 3's.
KERAS_FORMAT_VERSION = "3.0.0"
#: Keras's merge layers take their inputs as one list.
_MERGE = frozenset(
    {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot"}
)


def save_keras(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a Keras 3 ``.keras`` archive; returns the path written.

    Args:
        model: a model from :func:`bnlab.load_keras` (its original configuration is kept,
            the weights are the model's current ones), or a ``SequentialModel`` /
            ``GraphModel`` built from specs.
        path: the file to write; must end in ``.keras`` (Keras refuses other names).
            An existing file is replaced.

    Raises:
        TypeError: ``model`` is neither.
        KerasFileError: a wrong file name, a missing folder, a layer or option with no
            Keras equivalent, weights that no longer fit the configuration. Nothing is
            written.
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
    shapes, optimizer_from = None, None
    if isinstance(origin, KerasOrigin):
        optimizer_from = origin.path if origin.format == "keras" else None
        entry, version = _keras3_entry(origin.config), origin.keras_version or KERAS_FORMAT_VERSION
        shapes = origin.weight_shapes
    elif isinstance(model, SequentialModel | GraphModel):
        entry, version = _model_entry(model, path), KERAS_FORMAT_VERSION
    else:
        raise TypeError(
            "save_keras expects a model from bnlab.load_keras or built by bnlab.models "
            f"(SequentialModel, GraphModel); got {type(model).__name__}"
        )
    config = parse_model_config(entry, str(path))
    weights = _weights_h5(model, config, path, shapes, optimizer_from)
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


def _model_entry(model: SequentialModel | GraphModel, path: Path) -> dict[str, Any]:
    """Keras 3's serialized ``Sequential`` or ``Functional`` model for a model built by bnlab."""
    layers = [(name, spec) for name, spec, _ in model.named_layers()]
    entries = {name: _layer_entry(name, spec, path) for name, spec in layers}
    if isinstance(model, SequentialModel):
        batch_shape = [None, *model.input_shape]
        first = _input_entry("input_layer", model.input_shape, layers[0][1].type)
        return {
            "module": "keras",
            "class_name": "Sequential",
            "config": {
                "name": model.name,
                "trainable": True,
                "layers": [first, *entries.values()],
            },
            "registered_name": None,
            "build_config": {"input_shape": batch_shape},
        }
    shapes = {
        **dict(zip(model.input_names, model.input_shapes, strict=True)),
        **model.output_shapes,
    }
    consumers = {
        source: model.specs[name].type for name, _ in layers for source in model.inbound[name]
    }
    nodes = [
        {**_input_entry(name, shape, consumers.get(name, "")), "name": name, "inbound_nodes": []}
        for name, shape in zip(model.input_names, model.input_shapes, strict=True)
    ]
    for name, spec in layers:
        tensors = [_keras_tensor(source, shapes[source]) for source in model.inbound[name]]
        args = [tensors] if spec.type in _MERGE else tensors
        nodes.append(
            {**entries[name], "name": name, "inbound_nodes": [{"args": args, "kwargs": {}}]}
        )
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": model.name,
            "trainable": True,
            "layers": nodes,
            "input_layers": _endpoints(model.input_names),
            "output_layers": _endpoints(model.output_names),
        },
        "registered_name": "Functional",
    }


def _layer_entry(name: str, spec: Any, path: Path) -> dict[str, Any]:
    try:
        return keras_config(spec, name=name)
    except SpecError as error:
        raise KerasFileError(f"{path}: cannot write layer {name!r} for Keras: {error}") from None


def _input_entry(name: str, shape: tuple[int | None, ...], consumer: str) -> dict[str, Any]:
    """An ``InputLayer``; token ids (read by an Embedding) are integers."""
    return {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "config": {
            "batch_shape": [None, *shape],
            "dtype": "int32" if consumer == "Embedding" else "float32",
            "sparse": False,
            "name": name,
        },
        "registered_name": None,
    }


def _keras_tensor(source: str, shape: tuple[int | None, ...]) -> dict[str, Any]:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, *shape], "dtype": "float32", "keras_history": [source, 0, 0]},
    }


def _endpoints(names: tuple[str, ...]) -> list[Any]:
    """Keras's ``input_layers``/``output_layers``: one ``[name, 0, 0]`` or a list of them."""
    triples = [[name, 0, 0] for name in names]
    return triples[0] if len(triples) == 1 else triples


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
    optimizer_from: Path | None = None,
) -> bytes:
    """``model.weights.h5`` in Keras 3's layout, from the model's current weights (and the
    optimizer state of the archive ``optimizer_from``, where it can be read)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = config.name
        for entry in config.saved:
            group = h5.require_group(entry.path)
            group.require_group("vars").attrs["name"] = entry.name
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
        if optimizer_from is not None:
            _copy_optimizer(optimizer_from, h5)
    return buffer.getvalue()


def _copy_optimizer(source: Path, h5: h5py.File) -> None:
    """Copy the ``optimizer`` group of the archive ``source``'s weights file into ``h5``.

    The source was read when the model was loaded; if it has gone or changed into
    something unreadable since, the state is left out (Keras then starts a fresh
    optimizer, with its warning) rather than failing the save.
    """
    try:
        with zipfile.ZipFile(source) as archive:
            data = archive.read(WEIGHTS)
        with h5py.File(io.BytesIO(data), "r") as old:
            if "optimizer" in old:
                old.copy(old["optimizer"], h5, "optimizer")
    except (OSError, KeyError, zipfile.BadZipFile):
        return


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
