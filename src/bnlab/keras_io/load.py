"""``load_keras`` and ``load_keras_spec``: a Keras file -> a bnlab model or its architecture.

::

    import bnlab
    model = bnlab.load_keras("model.keras")        # torch.nn.Module, Keras's weights, eval mode
    y = model(x)                                   # x channel-last like Keras: (N, H, W, C)

    from bnlab.keras_io import load_keras_spec
    spec = load_keras_spec("model.keras")          # architecture only
    fresh = spec.build(seed=0)                     # new weights, same layers

A Sequential file becomes a :class:`bnlab.models.SequentialModel` (so lab edits by
layer index keep working), a Functional file a :class:`bnlab.models.GraphModel`. Every
layer keeps the file's name; BatchNormalization layers are
:class:`bnlab.BatchNormalization` with every argument and weight of the file
(``momentum`` is Keras's, the weight of the old moving value; ``trainable=False`` is
Keras's frozen BN). The returned model is in ``eval()`` mode, what a Keras model
computes when called; ``model.train()`` uses batch statistics and updates the moving
ones, like ``model(x, training=True)`` in Keras.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from bnlab.keras_io.archive import KerasFile, read_file
from bnlab.keras_io.config import LayerEntry, ModelConfig, parse_model_config, scalar_operation
from bnlab.keras_io.errors import KerasFileError
from bnlab.keras_io.weights import read_layer_weights
from bnlab.models import (
    GraphNode,
    GraphSpec,
    LayerSpec,
    SpecError,
    build_graph_model,
    build_model,
    parse_layer,
    set_keras_weights,
)

__all__ = ["KerasModelSpec", "KerasOrigin", "load_keras", "load_keras_spec", "read_keras_weights"]

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class KerasOrigin:
    """Where an imported model came from; :func:`bnlab.save_keras` writes ``config`` back.

    Attributes:
        path: the file it was loaded from.
        format: ``"keras"`` (Keras 3 archive) or ``"h5"`` (legacy HDF5).
        config: the model's serialized configuration as the file holds it.
        keras_version: the Keras version that wrote the file, if recorded.
        weight_shapes: layer name -> the shapes of its weights in the file (``None`` for
            an architecture read without weights); :func:`bnlab.save_keras` refuses a
            model whose weights no longer fit the configuration.
    """

    path: Path
    format: Literal["keras", "h5"]
    config: dict[str, Any]
    keras_version: str | None
    weight_shapes: Mapping[str, tuple[tuple[int, ...], ...]] | None = None


@dataclass(frozen=True)
class KerasModelSpec:
    """The architecture of a Keras file, without weights.

    Attributes:
        name: the model's name (``"sequential"``, ``"resnet50"``, ...).
        kind: ``"sequential"`` or ``"functional"``.
        input_shape: the (first) input's shape without the batch axis; ``None`` for a
            size the file leaves open (e.g. a variable number of time steps).
        layers: every layer's spec, in file order, each with its ``name``
            (Sequential: usable with :func:`bnlab.models.build_model` and lab edits).
        graph: the :class:`bnlab.models.GraphSpec` of a Functional model, else ``None``.
        origin: the file, its format and the original configuration.
    """

    name: str
    kind: Literal["sequential", "functional"]
    input_shape: Shape
    layers: tuple[LayerSpec, ...]
    graph: GraphSpec | None
    origin: KerasOrigin

    def build(
        self, *, seed: int | None = None, input_shape: Sequence[int] | None = None
    ) -> nn.Module:
        """A new model with this architecture and freshly initialized weights.

        Args:
            seed: seeds the initialization (a forked RNG); ``None`` uses the global RNG.
            input_shape: Sequential only: replaces the file's input shape (e.g. the
                data's, when the file leaves a size open).

        Raises:
            KerasFileError: a layer that does not fit its input, an open input size.
        """
        where = str(self.origin.path)
        try:
            if self.graph is not None:
                if input_shape is not None:
                    raise KerasFileError(
                        f"{where}: input_shape={tuple(input_shape)!r} cannot replace the inputs "
                        "of a Functional model; expected None"
                    )
                return build_graph_model(self.graph, seed=seed)
            shape = self.input_shape if input_shape is None else tuple(input_shape)
            return build_model(self.layers, shape, seed=seed, name=self.name, where=where)
        except SpecError as error:
            raise KerasFileError(str(error)) from None


def load_keras_spec(path: str | os.PathLike[str]) -> KerasModelSpec:
    """The architecture of a ``.keras`` or legacy ``.h5`` file (weights are not read into it).

    Raises:
        KerasFileError: see :func:`load_keras`.
    """
    file = read_file(path, weights=False)
    return _spec(file, _model_config(file))


def load_keras(path: str | os.PathLike[str]) -> nn.Module:
    """Load a Keras model file as a ``torch.nn.Module`` that computes what Keras computes.

    Reads a Keras 3 ``.keras`` archive or a legacy full-model ``.h5`` file (tf.keras or
    Keras 3's ``model.save("m.h5")``) with ``zipfile``/``json``/``h5py`` only: neither
    TensorFlow nor Keras is imported, nothing is unpickled, no code from the file runs.

    The model takes and returns Keras's channel-last tensors, one per input in the
    file's input order, and is returned in ``eval()`` mode. ``model.keras_origin``
    (:class:`KerasOrigin`) keeps the file's configuration for :func:`bnlab.save_keras`.

    Args:
        path: the file.

    Raises:
        KerasFileError: one line naming the file, what is wrong and what is expected:
            not a Keras file (a pickle is named as such), a damaged zip, a missing
            ``config.json`` or weights file, weights that do not match the configuration
            (layer names, counts, shapes), custom objects or Python code (``Lambda``),
            unsupported layers or arguments (the message of :mod:`bnlab.models` lists
            the supported ones).
    """
    file = read_file(path)
    config = _model_config(file)
    spec = _spec(file, config)
    model = spec.build(seed=0)
    weights = read_layer_weights(file, config)
    for entry in config.layers:
        if entry.is_operation:  # x + 3.0 and the like: no weights
            continue
        layer = weights[entry.name]
        try:
            set_keras_weights(model.layer(entry.name), layer.arrays)
        except ValueError as error:
            shapes = [tuple(a.shape) for a in layer.arrays]
            raise KerasFileError(
                f"{file.path}: layer {entry.name!r} ({entry.class_name}) does not take the "
                f"file's weights {shapes}: {error}"
            ) from None
    shapes = {name: tuple(a.shape for a in layer.arrays) for name, layer in weights.items()}
    model.keras_origin = dataclasses.replace(spec.origin, weight_shapes=shapes)
    return model.eval()


def read_keras_weights(path: str | os.PathLike[str]) -> dict[str, tuple[str, tuple[np.ndarray, ...]]]:
    """Layer name -> (its Keras class name, its arrays in ``layer.weights`` order), for every
    layer of a Keras file that has weights.

    Raises:
        KerasFileError: see :func:`load_keras`.
    """
    file = read_file(path)
    config = _model_config(file)
    weights = read_layer_weights(file, config)
    return {
        entry.name: (entry.class_name, weights[entry.name].arrays)
        for entry in config.layers
        if not entry.is_operation and weights[entry.name].arrays
    }


def _model_config(file: KerasFile) -> ModelConfig:
    return parse_model_config(file.model, str(file.path))


def _layer_spec(file: KerasFile, entry: LayerEntry) -> LayerSpec:
    where = f"{file.path}: layer {entry.name!r} ({entry.class_name})"
    rescaling = scalar_operation(entry)
    raw = ({"type": entry.class_name, **entry.config} if rescaling is None else
           {"type": "Rescaling", "name": entry.name, "scale": rescaling[0],
            "offset": rescaling[1]})
    try:
        return parse_layer(raw, where=where)
    except SpecError as error:
        raise KerasFileError(str(error)) from None


def _spec(file: KerasFile, config: ModelConfig) -> KerasModelSpec:
    layers = tuple(_layer_spec(file, entry) for entry in config.layers)
    graph = None
    if config.kind == "functional":
        graph = GraphSpec(
            name=config.name,
            inputs=config.inputs,
            nodes=tuple(
                GraphNode(entry.name, spec, entry.inbound)
                for entry, spec in zip(config.layers, layers, strict=True)
            ),
            outputs=config.outputs,
        )
    origin = KerasOrigin(file.path, file.format, copy.deepcopy(file.model), file.keras_version)
    return KerasModelSpec(config.name, config.kind, config.inputs[0][1], layers, graph, origin)
