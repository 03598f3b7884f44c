"""Where Keras 3 keeps each layer's weights inside ``model.weights.h5``.

Keras walks the model and stores a layer's own variables at ``<path>/vars/<i>``
(``i`` = 0, 1, ... in the layer's variable order), where ``<path>`` is

- ``layers/<key>`` for the layers of a Sequential (``Input`` excluded) or Functional
  (``Input`` included) model, ``<key>`` being the snake-case class name made unique in
  layer order: ``conv2d``, ``conv2d_1``, ``batch_normalization``, ... (not the layer's
  name, which Keras only records in the ``name`` attribute of the ``vars`` group);
- below that, the layer's own children by attribute name: a recurrent layer's
  variables live in its ``cell`` (``layers/lstm/cell/vars/0``), a ``TimeDistributed``
  layer's in ``layer``, a ``Bidirectional`` layer's in ``forward_layer`` and
  ``backward_layer``.

:func:`weight_groups` lists, for one layer entry of a configuration, the groups that
hold its weights in the order of Keras's ``layer.weights`` (Bidirectional: forward
first, although the file sorts ``backward_layer`` first).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["RECURRENT", "layer_keys", "snake_case", "weight_groups"]

#: Recurrent layers whose weights Keras keeps in the layer's ``cell``.
RECURRENT = frozenset({"LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})


def snake_case(name: str) -> str:
    """Keras's snake case of a class name: ``BatchNormalization`` -> ``batch_normalization``,
    ``Conv2D`` -> ``conv2d``, ``LSTM`` -> ``lstm``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_keys(class_names: Iterable[str]) -> list[str]:
    """The ``layers/<key>`` of each layer, in model order (``conv2d``, ``conv2d_1``, ...)."""
    used: dict[str, int] = {}
    keys = []
    for class_name in class_names:
        base = snake_case(class_name)
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def weight_groups(entry: Mapping[str, Any]) -> list[str]:
    """Groups (relative to the layer's path) holding the weights of a serialized layer.

    ``entry`` is ``{"class_name": ..., "config": {...}}``. Returns e.g. ``["vars"]``,
    ``["cell/vars"]`` for an LSTM, ``["forward_layer/cell/vars",
    "backward_layer/cell/vars"]`` for a Bidirectional LSTM, in ``layer.weights`` order.
    """
    class_name = entry.get("class_name")
    config = entry.get("config") or {}
    if class_name in RECURRENT:
        return ["cell/vars"]
    if class_name == "TimeDistributed":
        return [f"layer/{g}" for g in weight_groups(config.get("layer") or {})]
    if class_name == "Bidirectional":
        forward = config.get("layer") or {}
        backward = config.get("backward_layer") or forward
        return [f"forward_layer/{g}" for g in weight_groups(forward)] + [
            f"backward_layer/{g}" for g in weight_groups(backward)
        ]
    return ["vars"]
