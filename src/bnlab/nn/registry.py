"""The batch-normalization layer classes of bnlab, by lowercase name, in one place.

Used by the lab's model specs to create a layer by name and by the conformance
tests, which run every registered class through the same checks (forward and
backward, state_dict round trip, dtypes, empty batch, batch of one). A new BN
layer class is added here and gets those tests for free.

Variants that are *options* of a class (``renorm=True``, ``virtual_batch_size``,
``synchronized=True``) are not separate entries: create them with keyword
arguments, e.g. ``create_layer("batch_normalization", 16, renorm=True)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bnlab.nn.act import BatchNormAct
from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["LAYERS", "create_layer", "get_layer_class", "list_layers"]

LAYERS: dict[str, type[BatchNormalization]] = {
    "batch_normalization": BatchNormalization,
    "batch_norm_act": BatchNormAct,
}


def list_layers() -> list[str]:
    """Registered names, sorted."""
    return sorted(LAYERS)


def get_layer_class(name: str) -> type[BatchNormalization]:
    """The class registered as ``name`` (case-insensitive).

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    if not isinstance(name, str) or name.lower() not in LAYERS:
        raise ValueError(f"unknown BN layer {name!r}; choose from: {', '.join(list_layers())}")
    return LAYERS[name.lower()]


def create_layer(name: str, *args: Any, **kwargs: Any) -> nn.Module:
    """``get_layer_class(name)(*args, **kwargs)``."""
    return get_layer_class(name)(*args, **kwargs)
