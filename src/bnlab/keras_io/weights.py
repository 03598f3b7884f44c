"""The weights of each layer, read from a Keras file, in the order of Keras's ``layer.weights``.

``.keras`` archives: the layer's groups from :func:`bnlab.keras_io.layout.weight_groups`,
each group's datasets ``0, 1, ...`` in index order. Legacy ``.h5`` files: the datasets in
the layer's ``weight_names`` order (Keras's legacy order, trainable then non-trainable,
which equals ``layer.weights`` for every supported layer).

Every weight in the file must belong to a layer of the configuration and every group's
``name`` attribute must name the layer the configuration puts there: a weights file
that belongs to another model is an error, not a silent partial load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from bnlab.keras_io.archive import WEIGHTS, KerasFile
from bnlab.keras_io.config import ModelConfig
from bnlab.keras_io.errors import KerasFileError
from bnlab.keras_io.layout import weight_groups

__all__ = ["LayerWeights", "read_layer_weights"]

_INDEX = re.compile(r"\d+")


@dataclass(frozen=True)
class LayerWeights:
    """One layer's arrays (``layer.weights`` order) and where each came from in the file."""

    arrays: tuple[np.ndarray, ...]
    sources: tuple[str, ...]


def read_layer_weights(file: KerasFile, model: ModelConfig) -> dict[str, LayerWeights]:
    """Layer name -> its weights, for every layer of ``model`` that is not an input.

    Raises:
        KerasFileError: weights for a layer the configuration does not have, a group that
            names another layer, weights outside the expected groups, gaps in the indices.
    """
    if file.format == "keras":
        return _from_archive(file, model)
    return _from_legacy(file, model)


def _from_archive(file: KerasFile, model: ModelConfig) -> dict[str, LayerWeights]:
    where = f"{file.path}: {WEIGHTS}"
    claimed: set[str] = set()
    out: dict[str, LayerWeights] = {}
    for entry in model.saved:
        prefix = entry.path
        owner = file.group_names.get(f"{prefix}/vars")
        if owner is not None and owner != entry.name:
            raise KerasFileError(
                f"{where}: the weights at {prefix!r} belong to layer {owner!r} but the "
                f"configuration has layer {entry.name!r} ({entry.class_name}) there; expected "
                "the weights saved with this configuration"
            )
        arrays, sources = [], []
        for group in weight_groups(entry.entry):
            found = sorted(
                (int(path.rsplit("/", 1)[1]), path)
                for path in file.arrays
                if path.startswith(f"{prefix}/{group}/")
                and _INDEX.fullmatch(path.rsplit("/", 1)[1])
            )
            if [i for i, _ in found] != list(range(len(found))):
                raise KerasFileError(
                    f"{where}: layer {entry.name!r} has weights {[p for _, p in found]}; "
                    f"expected {prefix}/{group}/0, 1, ... without gaps"
                )
            arrays += [file.arrays[p] for _, p in found]
            sources += [p for _, p in found]
        claimed.update(sources)
        stray = sorted(p for p in file.arrays if p.startswith(f"{prefix}/") and p not in claimed)
        if stray:
            raise KerasFileError(
                f"{where}: layer {entry.name!r} ({entry.class_name}) has the unexpected weight "
                f"{stray[0]!r}; expected its weights under {', '.join(weight_groups(entry.entry))}"
            )
        if entry.class_name != "InputLayer":
            out[entry.name] = LayerWeights(tuple(arrays), tuple(sources))
    unclaimed = sorted(p for p in file.arrays if p.startswith("layers/") and p not in claimed)
    if unclaimed:
        raise KerasFileError(
            f"{where}: the weight {unclaimed[0]!r} belongs to no layer of the configuration "
            f"({len(model.saved)} layers); expected the weights saved with this configuration"
        )
    return out


def _from_legacy(file: KerasFile, model: ModelConfig) -> dict[str, LayerWeights]:
    if model.nested:
        raise KerasFileError(
            f"{file.path}: layer {model.nested[0]!r} is a nested model, whose weights a legacy "
            ".h5 file lists in another order; nested models are read from .keras archives "
            "(save the model with model.save('model.keras'))"
        )
    names = {e.name for e in model.layers}
    unknown = [n for n, items in file.legacy.items() if items and n not in names]
    if unknown:
        raise KerasFileError(
            f"{file.path}: model_weights has weights for layer {unknown[0]!r}, which the "
            f"model_config does not have (layers: {', '.join(sorted(names))}); expected the "
            "weights saved with this configuration"
        )
    out = {}
    for entry in model.layers:
        items = file.legacy.get(entry.name, [])
        out[entry.name] = LayerWeights(
            tuple(a for _, a in items), tuple(f"model_weights/{entry.name}/{n}" for n, _ in items)
        )
    return out
