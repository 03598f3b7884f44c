"""Open a Keras file and read its raw contents: the configuration and every weight array.

Two formats, told apart by their first bytes (not by the file name):

- **Keras 3 archive** (``.keras``): a zip with ``config.json`` (the model's serialized
  configuration), ``metadata.json`` (``keras_version``, ``date_saved``) and
  ``model.weights.h5``, an HDF5 file with one group per layer,
  ``layers/<key>/vars/<i>`` (nested groups for wrappers and recurrent cells), where
  ``<key>`` is the snake-case class name made unique (see :mod:`bnlab.keras_io.layout`).
- **Legacy full-model HDF5** (``.h5``, written by tf.keras or by Keras 3's
  ``model.save("m.h5")``): the configuration is the JSON attribute ``model_config``;
  the weights are in ``model_weights/<layer name>``, whose attribute ``weight_names``
  lists the datasets in the layer's weight order (trainable, then non-trainable).

Only ``zipfile``, ``json`` and ``h5py`` read the file: nothing is unpickled, no
Python code from the file is run, and neither TensorFlow nor Keras is imported.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from bnlab.keras_io.errors import KerasFileError

__all__ = ["CONFIG", "METADATA", "WEIGHTS", "KerasFile", "read_file"]

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
_EXPECTED = (
    "expected a Keras 3 .keras archive (zip with config.json and model.weights.h5) or a "
    "full-model .h5 file saved by Keras or tf.keras"
)
_ZIP_MAGIC = b"PK"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_PROTOCOLS = range(2, 6)  # b"\x80" + protocol byte starts every modern pickle


@dataclass(frozen=True)
class KerasFile:
    """What a Keras file holds, read into memory.

    Attributes:
        path: the file.
        format: ``"keras"`` (Keras 3 archive) or ``"h5"`` (legacy full-model HDF5).
        model: the model's serialized entry ``{"class_name", "config", ...}``.
        keras_version: the Keras version that wrote the file (``None`` if not recorded).
        arrays: ``"keras"``: h5 path -> array (``layers/conv2d/vars/0``); ``"h5"``: empty.
        group_names: ``"keras"``: group path -> the ``name`` attribute Keras stores on a
            layer's ``vars`` group (the layer's name), where present.
        legacy: ``"h5"``: layer name -> ``[(weight name, array), ...]`` in the file's
            ``weight_names`` order; ``"keras"``: empty.
        compile: what ``model.compile`` recorded: ``{"optimizer": {"class_name",
            "config"}, "loss": a name or a serialized loss}`` (a key is absent when the
            file does not record it; empty for a model saved uncompiled).
    """

    path: Path
    format: Literal["keras", "h5"]
    model: dict[str, Any]
    keras_version: str | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    group_names: dict[str, str] = field(default_factory=dict)
    legacy: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)
    compile: dict[str, Any] = field(default_factory=dict)


def read_file(path: str | os.PathLike[str], *, weights: bool = True) -> KerasFile:
    """Read a ``.keras`` archive or a legacy full-model ``.h5`` file.

    ``weights=False`` reads the configuration only (``arrays``/``legacy`` stay empty);
    the weights file must still be there.

    Raises:
        KerasFileError: missing file, neither zip nor HDF5 (a pickle is named as such),
            damaged zip, missing ``config.json`` or ``model.weights.h5``, invalid JSON,
            an HDF5 file without a model configuration (a weights-only file).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise KerasFileError(f"{path}: {what}; {_EXPECTED}")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        return _read_archive(path, weights)
    if head.startswith(_HDF5_MAGIC) or h5py.is_hdf5(path):
        return _read_legacy(path, weights)
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        raise KerasFileError(
            f"{path}: is a Python pickle (starts with {head[:2]!r}); bnlab never unpickles "
            f"files because unpickling runs code; {_EXPECTED}"
        )
    raise KerasFileError(
        f"{path}: is neither a zip archive nor HDF5 (starts with {head!r}); {_EXPECTED}"
    )


def _read_archive(path: Path, read_weights: bool) -> KerasFile:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith((".pkl", ".pickle"))]
            if pickles:
                raise KerasFileError(
                    f"{path}: is a zip of pickled Python objects (contains {pickles[0]!r}, e.g. "
                    f"a torch.save file), not a Keras model; bnlab never unpickles files; "
                    f"{_EXPECTED}"
                )
            if CONFIG not in names:
                raise KerasFileError(
                    f"{path}: the archive has no {CONFIG} (entries: {_listing(names)}); {_EXPECTED}"
                )
            if WEIGHTS not in names:
                hint = (
                    " (sharded weights are not supported)" if "model.weights.json" in names else ""
                )
                raise KerasFileError(
                    f"{path}: the archive has no {WEIGHTS}{hint} (entries: {_listing(names)}); "
                    f"{_EXPECTED}"
                )
            config = _json(path, CONFIG, archive.read(CONFIG))
            metadata = _json(path, METADATA, archive.read(METADATA)) if METADATA in names else {}
            weights = archive.read(WEIGHTS) if read_weights else None
    except zipfile.BadZipFile as error:
        raise KerasFileError(f"{path}: is a damaged zip archive ({error}); {_EXPECTED}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasFileError(
            f"{path}: {CONFIG} holds {type(config).__name__} without 'class_name'; expected a "
            'serialized model {"class_name": "Sequential" or "Functional", "config": {...}}'
        )
    arrays, group_names = _read_h5_tree(path, weights) if weights is not None else ({}, {})
    version = metadata.get("keras_version") if isinstance(metadata, dict) else None
    return KerasFile(path, "keras", config, version, arrays=arrays, group_names=group_names,
                     compile=_compile_settings(config.get("compile_config"), "optimizer"))


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:6])
    return (shown + ", ...") if len(names) > 6 else (shown or "none")


def _json(path: Path, entry: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KerasFileError(f"{path}: {entry} is not valid JSON ({error})") from None


def _read_h5_tree(path: Path, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every dataset of the archive's weights file, and the ``name`` attribute of each group."""
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            arrays[name] = _array(path, name, obj)
        elif "name" in obj.attrs:
            names[name] = _text(obj.attrs["name"])

    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            h5.visititems(visit)
    except OSError as error:
        raise KerasFileError(f"{path}: {WEIGHTS} is not a readable HDF5 file ({error})") from None
    return arrays, names


def _array(path: Path, name: str, dataset: h5py.Dataset) -> np.ndarray:
    if dataset.dtype.kind not in "fiub" or dataset.dtype.hasobject:
        raise KerasFileError(
            f"{path}: weight {name!r} has dtype {dataset.dtype}; expected a numeric array"
        )
    return np.asarray(dataset[()])


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_legacy(path: Path, read_weights: bool) -> KerasFile:
    try:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            if raw is None:
                kind = "a weights-only file" if "layer_names" in h5.attrs else "no model"
                raise KerasFileError(
                    f"{path}: HDF5 file without a 'model_config' attribute ({kind}, top-level "
                    f"entries: {_listing(list(h5.keys()))}); {_EXPECTED}"
                )
            config = _json(path, "the 'model_config' attribute", _bytes(raw))
            version = h5.attrs.get("keras_version")
            group = h5.get("model_weights")
            if group is None:
                raise KerasFileError(
                    f"{path}: HDF5 file has a model_config but no 'model_weights' group "
                    f"(top-level entries: {_listing(list(h5.keys()))}); expected a full model "
                    "saved with model.save('model.h5')"
                )
            legacy = _read_legacy_weights(path, group) if read_weights else {}
            training = h5.attrs.get("training_config")
            compiled = None if training is None else _json(path, "the 'training_config' attribute",
                                                           _bytes(training))
    except OSError as error:
        raise KerasFileError(f"{path}: is a damaged HDF5 file ({error}); {_EXPECTED}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise KerasFileError(
            f"{path}: model_config holds {type(config).__name__} without 'class_name'; expected "
            'a serialized model {"class_name": "Sequential" or "Functional", "config": {...}}'
        )
    return KerasFile(path, "h5", config, None if version is None else _text(version), legacy=legacy,
                     compile=_compile_settings(compiled, "optimizer_config"))


def _compile_settings(recorded: Any, optimizer_key: str) -> dict[str, Any]:
    """``{"optimizer", "loss"}`` of a recorded compile configuration (Keras 3's
    ``compile_config`` keeps the optimizer under ``optimizer``, tf.keras's
    ``training_config`` under ``optimizer_config``); what it lacks is left out."""
    if not isinstance(recorded, dict):
        return {}
    out = {}
    if isinstance(recorded.get(optimizer_key), dict):
        out["optimizer"] = recorded[optimizer_key]
    if isinstance(recorded.get("loss"), str | dict):
        out["loss"] = recorded["loss"]
    return out


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """A string-list attribute; Keras splits long ones into ``name0``, ``name1``, ..."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [_text(v) for chunk in chunks for v in np.atleast_1d(chunk)]


def _read_legacy_weights(path: Path, group: h5py.Group) -> dict[str, list[tuple[str, np.ndarray]]]:
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in _attribute_list(group, "layer_names"):
        if layer not in group:
            raise KerasFileError(
                f"{path}: model_weights lists layer {layer!r} but has no group for it; the "
                "file is incomplete"
            )
        entries = []
        for weight in _attribute_list(group[layer], "weight_names"):
            if weight not in group[layer]:
                raise KerasFileError(
                    f"{path}: layer {layer!r} lists weight {weight!r} but the file has no such "
                    "dataset; the file is incomplete"
                )
            dataset = group[layer][weight]
            entries.append((weight, _array(path, f"model_weights/{layer}/{weight}", dataset)))
        out[layer] = entries
    return out
