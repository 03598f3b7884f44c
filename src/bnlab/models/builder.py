"""Build one layer of a model: its layout, its module, its output shape.

Shared by :func:`bnlab.models.build_model` (Sequential), :func:`build_graph_model`
(Functional) and the wrapper layers (Bidirectional, TimeDistributed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from bnlab.models.layer_type import Shape
from bnlab.models.layout import layout_after, plan_permute
from bnlab.models.spec import LayerSpec
from bnlab.nn import BatchNormalization

__all__ = ["BuiltModule", "build_layer"]


@dataclass(frozen=True)
class BuiltModule:
    """What :func:`build_layer` returns.

    Attributes:
        module: the torch module.
        output_shape: Keras's output shape without the batch axis.
        permute: applied to the input before the module (None: none).
        channels_first_in: the layout the module receives.
        channels_first: the layout of its output.
        args: the resolved arguments (defaults filled, ``name`` set).
    """

    module: nn.Module
    output_shape: Shape
    permute: tuple[int, ...] | None
    channels_first_in: bool
    channels_first: bool
    args: dict[str, Any]


def build_layer(spec: LayerSpec, name: str, shape: Any, channels_first: bool) -> BuiltModule:
    """Build ``spec`` for an input of Keras shape ``shape`` in the given layout.

    A single-input layer is permuted to the layout it needs (see
    :mod:`bnlab.models.layout`); a merge layer (``shape`` a tuple of shapes) receives
    its inputs already in the layout ``channels_first``. ``trainable=False`` stops
    the module's parameters from requiring gradients (BatchNormalization handles
    its own ``trainable``: Keras's frozen BN).

    Raises:
        ValueError, TypeError: the layer does not fit the shape (the caller adds where).
    """
    layer_type = spec.layer_type
    if layer_type.build is None:
        raise ValueError(f"{spec.type} is no layer to build")
    args = {**spec.resolved_args(), "name": name}
    if layer_type.inputs == 1:
        rank = len(shape) + 1
        permute, first = plan_permute(layer_type.layout, rank, channels_first)
    else:
        rank, permute, first = len(shape[0]) + 1, None, channels_first
    module, out = layer_type.build(args, shape, first)
    if not args["trainable"] and not isinstance(module, BatchNormalization):
        module.requires_grad_(False)
    return BuiltModule(module, tuple(out), permute, first,
                       layout_after(first, rank, len(out) + 1), args)
