"""What the registry knows about one Keras layer type, and what every layer type shares.

A :class:`LayerType` has

- ``args``: every allowed argument with its check and default. Every built layer
  takes Keras's bookkeeping arguments ``name``, ``trainable`` (False: its weights are
  not trained), ``dtype`` (float32 only) and tf.keras's ``batch_input_shape``;
- ``layout``: the layout its input must have inside the model (see
  :mod:`bnlab.models.layout`);
- ``build(args, shape, channels_first) -> (module, output_shape)``: ``args`` has every
  default filled in and ``name`` set; ``shape`` is the input shape in Keras's
  channel-last form without the batch axis (a tuple of them for a layer with several
  inputs; ``None`` for unknown sizes), the returned output shape likewise. Shape
  problems raise ``ValueError``; the model builder adds the location;
- ``inputs``: 1, or None for a merge layer that takes several tensors;
- ``mask``: what the layer does with a Keras mask (see :data:`MaskRule`), a rule or a
  function of the arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bnlab.models import arguments as A
from bnlab.models.arguments import Arg
from bnlab.models.layout import Layout
from bnlab.nn import initializers

__all__ = [
    "COMMON",
    "SPATIAL_FORMS",
    "Builder",
    "LayerType",
    "MaskRule",
    "Shape",
    "check_rank",
    "init_",
    "keras_shape",
    "layer_type",
]

Shape = tuple[int | None, ...]
Builder = Callable[[dict[str, Any], Any, bool], tuple[nn.Module, Shape]]

#: What a layer does with the mask its input carries (Keras's ``supports_masking``):
#: "keep" passes it on untouched; "use" reads it (``module(x, mask)``) and passes it
#: on; "consume" reads it and ends it; "produce" makes one (``module`` returns
#: ``(y, mask)``); "drop" does not support masks: the mask ends there (Keras warns).
MaskRule = Literal["keep", "use", "consume", "produce", "drop"]


@dataclass(frozen=True)
class LayerType:
    """One Keras layer type. See the module docstring for the fields."""

    name: str
    auto_name: str
    args: Mapping[str, Arg]
    build: Builder | None
    layout: Layout = "any"
    validate: Callable[[dict[str, Any]], None] | None = None
    inputs: int | None = 1
    mask: MaskRule | Callable[[dict[str, Any]], MaskRule] = "drop"

    def mask_rule(self, args: Mapping[str, Any]) -> MaskRule:
        """The :data:`MaskRule` of a layer with these (resolved) arguments."""
        return self.mask if isinstance(self.mask, str) else self.mask(dict(args))


def keras_shape(shape: Shape) -> str:
    """``(None, 26, 26, 32)``: a shape as Keras prints it, batch axis first."""
    return str((None, *shape))


def init_(spec: Any, tensor: torch.Tensor | None) -> None:
    """Fill ``tensor`` (if any) with the initializer ``spec`` names."""
    if tensor is not None:
        with torch.no_grad():
            initializers.get(spec)(tensor)


#: The input forms of layers over 1, 2 or 3 spatial axes, for messages.
SPATIAL_FORMS = {1: "(batch, steps, channels)", 2: "(batch, height, width, channels)",
                 3: "(batch, depth, height, width, channels)"}


def check_rank(layer: str, shape: Shape, ranks: tuple[int, ...], form: str) -> None:
    """Raise ValueError unless ``len(shape) + 1`` (the batch axis) is one of ``ranks``."""
    if len(shape) + 1 not in ranks:
        raise ValueError(f"{layer} expects input of shape {form}; got {keras_shape(shape)}")


#: Keras's bookkeeping arguments of every built layer (``batch_input_shape``: what
#: tf.keras wrote on a Sequential model's first layer; the model builder takes the input
#: shape from the model, so it is kept only).
COMMON: dict[str, Arg] = {
    "name": Arg(A.layer_name, None),
    "trainable": Arg(A.boolean, True),
    "dtype": Arg(A.dtype_policy, None),
    "batch_input_shape": Arg(A.optional(A.batch_shape), None),
}


def layer_type(
    name: str,
    auto_name: str,
    args: dict[str, Arg],
    build: Builder | None,
    layout: Layout = "any",
    *,
    validate: Callable[[dict[str, Any]], None] | None = None,
    inputs: int | None = 1,
    mask: MaskRule | Callable[[dict[str, Any]], MaskRule] = "drop",
) -> LayerType:
    """A :class:`LayerType` with the :data:`COMMON` arguments added (built layers only)."""
    all_args = args if build is None else {**COMMON, **args}
    return LayerType(name, auto_name, all_args, build, layout, validate, inputs, mask)
