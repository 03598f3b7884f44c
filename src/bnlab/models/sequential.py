"""``build_model``: layer specs -> :class:`SequentialModel`, a ``torch.nn.Module`` that
takes and returns Keras's channel-last tensors.

Layout inside (see :mod:`bnlab.models.layout`): images and sequences travel
channel-first ``(N, C, *spatial)`` from the first layer that needs it (Conv1D/2D/3D,
pooling, padding; PyTorch's native layout, and what
:class:`bnlab.nn.BatchNormalization` expects with ``axis=1``), and are permuted back
before a layer that needs channel-last (Flatten, so the flattened order and the next
Dense's weights match Keras; Dense on a 4D tensor; LSTM) and at the end, so outputs
equal Keras's. Vectors ``(N, F)`` stay as they are.

Masks (Masking, ``Embedding(mask_zero=True)``) travel with the tensor to the layers
that read them (recurrent layers, BatchNormalization, GlobalAveragePooling1D), as in
Keras; see :mod:`bnlab.models.masks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from bnlab.models.arguments import received
from bnlab.models.base import KerasModel
from bnlab.models.builder import build_layer
from bnlab.models.errors import SpecError
from bnlab.models.layer_type import MaskRule, Shape
from bnlab.models.layout import to_last
from bnlab.models.masks import call_with_mask, warn_dropped_mask
from bnlab.models.spec import LayerSpec, check_sequence, layer_names, parse_layer
from bnlab.models.types_core import input_shape as declared_shape

__all__ = ["BuiltLayer", "SequentialModel", "build_model"]

_RESERVED = frozenset(dir(nn.ModuleDict()))  # names a ModuleDict key may not take


class BuiltLayer(NamedTuple):
    """One layer of a :class:`SequentialModel`, as :func:`build_model` makes it."""

    name: str
    spec: LayerSpec
    module: nn.Module
    output_shape: Shape  # Keras form, without the batch axis
    permute: tuple[int, ...] | None  # applied to the tensor before ``module``
    mask_rule: MaskRule = "drop"


def check_input(name: str, expected: Shape, x: torch.Tensor) -> None:
    """Raise a one-line ValueError unless ``x`` is ``(N, *expected)`` (None: any size)."""
    got = tuple(x.shape[1:])
    if len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got,
                                                                            strict=True)):
        return
    channel_first = x.dim() == 4 and len(expected) == 3 and (*got[1:], got[0]) == expected
    fix = (
        "permute (N, C, H, W) images with x.permute(0, 2, 3, 1)"
        if channel_first
        else "reshape the data or build the model for this shape"
    )
    shown = ", ".join("None" if d is None else str(d) for d in expected)
    raise ValueError(
        f"{name} expects input of shape (N, {shown}) channel-last like Keras; "
        f"got {tuple(x.shape)}; {fix}"
    )


class SequentialModel(KerasModel):
    """A stack of layers built by :func:`build_model`; Keras's channel-last in and out.

    Attributes:
        layers: ``nn.ModuleDict`` name -> module in order (``"dense"``, ``"dense_1"``, ...).
        specs: the :class:`LayerSpec` of each layer, same order.
        input_shape: Keras input shape without the batch axis, e.g. ``(28, 28, 1)``
            (None for a size that may vary, e.g. the steps of a sequence).
        output_shapes: name -> Keras output shape without the batch axis.
        permutes: per layer, the permutation applied to the tensor before it (or None):
            ``(0, 3, 1, 2)`` to channel-first, ``(0, 2, 3, 1)`` back to channel-last.
        final_permute: the permutation applied to the output (or None).
        mask_rules: per layer, what it does with a mask (see :mod:`bnlab.models.masks`).
        name: model name shown by :func:`bnlab.models.summary` (``"sequential"``).

    Shape: ``(N, *input_shape) -> (N, *output_shapes[last])``.
    """

    def __init__(
        self,
        layers: Sequence[BuiltLayer],
        *,
        input_shape: Shape,
        final_permute: tuple[int, ...] | None,
        name: str = "sequential",
    ) -> None:
        super().__init__()
        self.name = name
        self.input_shape = input_shape
        self.layers = nn.ModuleDict({layer.name: layer.module for layer in layers})
        self.specs: tuple[LayerSpec, ...] = tuple(layer.spec for layer in layers)
        self.output_shapes: dict[str, Shape] = {
            layer.name: layer.output_shape for layer in layers
        }
        self.permutes: tuple[tuple[int, ...] | None, ...] = tuple(layer.permute for layer in layers)
        self.mask_rules: tuple[MaskRule, ...] = tuple(layer.mask_rule for layer in layers)
        self.final_permute = final_permute

    @property
    def output_shape(self) -> Shape:
        """Keras output shape of the model without the batch axis."""
        return list(self.output_shapes.values())[-1]

    def named_layers(self) -> list[tuple[str, LayerSpec, nn.Module]]:
        """``(name, spec, module)`` of every layer, in order."""
        return [(n, s, m) for (n, m), s in zip(self.layers.items(), self.specs, strict=True)]

    def get_layer(self, name: str) -> nn.Module:
        """The module of the layer called ``name`` (Keras's ``model.get_layer``)."""
        return self.layer(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on channel-last ``x`` of shape ``(N, *input_shape)``.

        ``permutes[i]`` (if any) is applied before layer ``i``, ``final_permute`` after
        the last one, so the output has Keras's layout.
        """
        check_input(self.name, self.input_shape, x)
        mask = None
        for module, permute, rule in zip(self.layers.values(), self.permutes, self.mask_rules,
                                         strict=True):
            if permute is not None:
                x = x.permute(permute)
            x, mask = call_with_mask(module, rule, x, mask)
        if self.final_permute is not None:
            x = x.permute(self.final_permute)
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}"


def build_model(
    layers: Sequence[LayerSpec | Mapping[str, Any]],
    input_shape: Sequence[int | None] | None = None,
    *,
    seed: int | None = None,
    name: str = "sequential",
    where: str = "layers",
) -> SequentialModel:
    """Build a :class:`SequentialModel` from layer specs, inferring every shape.

    Args:
        layers: parsed specs (dicts are parsed). An ``Input`` first entry gives the
            input shape.
        input_shape: Keras input shape without the batch axis, e.g. ``(28, 28, 1)`` or
            ``dataset.input_shape``; may be omitted when the list starts with ``Input``,
            and must agree with it otherwise.
        seed: if given, the weights are initialized from ``torch.manual_seed(seed)``
            inside a forked RNG (the global RNG is left untouched); ``None`` uses the
            global RNG.
        name: the model name for :func:`summary`.
        where: location for messages, e.g. ``"mnist.toml: variants.bn.layers"``.

    Weights follow Keras's defaults (glorot_uniform kernels, zero biases, orthogonal
    LSTM recurrent kernels) through :func:`bnlab.nn.initializers.get`; every
    BatchNormalization gets its ``num_features`` from the inferred shape.

    Example::

        >>> model = build_model([{"type": "Dense", "units": 3, "activation": "softmax"}], (4,))
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 3])

    Raises:
        SpecError: invalid specs, a missing or conflicting input shape, or a layer that
            does not fit the shape it receives (e.g. Conv2D on a vector).
    """
    specs = [parse_layer(item, where=f"{where}[{i}]") for i, item in enumerate(layers)]
    check_sequence(specs, where=where)
    shape = _input_shape(specs, input_shape, where)
    if seed is None:
        return _build(specs, shape, name, where)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(specs, shape, name, where)


def _input_shape(
    specs: Sequence[LayerSpec], input_shape: Sequence[int | None] | None, where: str
) -> Shape:
    declared = declared_shape(specs[0].resolved_args()) if specs[0].type == "Input" else None
    if input_shape is not None:
        if isinstance(input_shape, str | bytes) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
            for d in input_shape
        ):
            raise SpecError(
                f"{where}: expected input_shape as positive integers without the batch axis, "
                f"e.g. (28, 28, 1); got {received(input_shape)}"
            )
        given = tuple(None if d is None else int(d) for d in input_shape)
        if declared is not None and declared != given:
            raise SpecError(
                f"{where}[0].shape: the Input layer declares {list(declared)} but the data has "
                f"shape {list(given)}; fix or remove the Input entry"
            )
        return given
    if declared is None:
        raise SpecError(
            f"{where}: no input shape: pass input_shape (e.g. dataset.input_shape) or start "
            'the list with {type = "Input", shape = [...]}'
        )
    return declared


def _build(specs: Sequence[LayerSpec], input_shape: Shape, name: str, where: str,
           ) -> SequentialModel:
    names = layer_names(specs)
    shape = input_shape
    channels_first = masked = False
    built: list[BuiltLayer] = []
    for i, (spec, layer_name) in enumerate(zip(specs, names, strict=True)):
        if spec.layer_type.build is None:  # Input
            continue
        here = f"{where}[{i}] ({layer_name})"
        if layer_name in _RESERVED:
            raise SpecError(
                f"{where}[{i}].name: {layer_name!r} is reserved by torch.nn.ModuleDict; "
                "choose another name"
            )
        if spec.layer_type.inputs != 1:
            raise SpecError(
                f"{here}: {spec.type} merges several tensors and needs a graph model "
                "(build_graph_model); a Sequential model is a chain"
            )
        try:
            layer = build_layer(spec, layer_name, shape, channels_first)
        except (ValueError, TypeError) as error:
            raise SpecError(f"{here}: {error}") from None
        rule = spec.layer_type.mask_rule(layer.args)
        if masked and rule == "drop":
            warn_dropped_mask(here, spec.type)
        masked = rule == "produce" or (masked and rule in ("keep", "use"))
        built.append(BuiltLayer(layer_name, spec, layer.module, layer.output_shape,
                                layer.permute, rule))
        shape, channels_first = layer.output_shape, layer.channels_first
    final = to_last(len(shape) + 1) if channels_first else None
    return SequentialModel(built, input_shape=input_shape, final_permute=final, name=name)
