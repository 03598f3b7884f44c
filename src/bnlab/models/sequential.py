"""``build_model``: layer specs -> :class:`SequentialModel`, a ``torch.nn.Module`` that
takes and returns Keras's channel-last tensors.

Layout inside: images travel channel-first ``(N, C, H, W)`` (PyTorch's native
layout, and what :class:`bnlab.nn.BatchNormalization` expects with ``axis=1``). The
input is permuted once, right before the first layer that needs channel-first
(Conv2D, MaxPooling2D, ZeroPadding2D), and back before a layer that needs
channel-last (Flatten, so the flattened order and the next Dense's weights match
Keras; Dense on a 4D tensor; LSTM) and at the end, so outputs equal Keras's.
Vectors ``(N, F)`` and sequences ``(N, T, F)`` stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from bnlab.models.arguments import received
from bnlab.models.errors import SpecError
from bnlab.models.spec import LayerSpec, check_sequence, layer_names, parse_layer
from bnlab.nn import BatchNormalization

__all__ = ["BuiltLayer", "SequentialModel", "build_model"]

_TO_FIRST = (0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
_TO_LAST = (0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
_RESERVED = frozenset(dir(nn.ModuleDict()))  # names a ModuleDict key may not take


class BuiltLayer(NamedTuple):
    """One layer of a :class:`SequentialModel`, as :func:`build_model` makes it."""

    name: str
    spec: LayerSpec
    module: nn.Module
    output_shape: tuple[int, ...]  # Keras form, without the batch axis
    permute: tuple[int, ...] | None  # applied to the tensor before ``module``


class SequentialModel(nn.Module):
    """A stack of layers built by :func:`build_model`; Keras's channel-last in and out.

    Attributes:
        layers: ``nn.ModuleDict`` name -> module in order (``"dense"``, ``"dense_1"``, ...).
        specs: the :class:`LayerSpec` of each layer, same order.
        input_shape: Keras input shape without the batch axis, e.g. ``(28, 28, 1)``.
        output_shapes: name -> Keras output shape without the batch axis.
        permutes: per layer, the permutation applied to the tensor before it (or None):
            ``(0, 3, 1, 2)`` to channel-first, ``(0, 2, 3, 1)`` back to channel-last.
        final_permute: the permutation applied to the output (or None).
        name: model name shown by :func:`bnlab.models.summary` (``"sequential"``).

    Shape: ``(N, *input_shape) -> (N, *output_shapes[last])``.
    """

    def __init__(
        self,
        layers: Sequence[BuiltLayer],
        *,
        input_shape: tuple[int, ...],
        final_permute: tuple[int, ...] | None,
        name: str = "sequential",
    ) -> None:
        super().__init__()
        self.name = name
        self.input_shape = input_shape
        self.layers = nn.ModuleDict({layer.name: layer.module for layer in layers})
        self.specs: tuple[LayerSpec, ...] = tuple(layer.spec for layer in layers)
        self.output_shapes: dict[str, tuple[int, ...]] = {
            layer.name: layer.output_shape for layer in layers
        }
        self.permutes: tuple[tuple[int, ...] | None, ...] = tuple(layer.permute for layer in layers)
        self.final_permute = final_permute

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Keras output shape of the model without the batch axis."""
        return list(self.output_shapes.values())[-1]

    def get_layer(self, name: str) -> nn.Module:
        """The module of the layer called ``name`` (Keras's ``model.get_layer``)."""
        if name not in self.layers:
            raise KeyError(f"no layer named {name!r}; layers: {', '.join(self.layers)}")
        return self.layers[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on channel-last ``x`` of shape ``(N, *input_shape)``.

        ``permutes[i]`` (if any) is applied before layer ``i``, ``final_permute`` after
        the last one, so the output has Keras's layout.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            channel_first = x.dim() == 4 and (*x.shape[2:], x.shape[1]) == self.input_shape
            fix = (
                "permute (N, C, H, W) images with x.permute(0, 2, 3, 1)"
                if channel_first
                else "reshape the data or build the model for this shape"
            )
            raise ValueError(
                f"{self.name} expects input of shape (N, {', '.join(map(str, self.input_shape))}) "
                f"channel-last like Keras; got {tuple(x.shape)}; {fix}"
            )
        for module, permute in zip(self.layers.values(), self.permutes, strict=True):
            if permute is not None:
                x = x.permute(permute)
            x = module(x)
        if self.final_permute is not None:
            x = x.permute(self.final_permute)
        return x

    def batch_norm_layers(self) -> dict[str, BatchNormalization]:
        """Name -> every BatchNormalization layer of the model, in order."""
        return {n: m for n, m in self.layers.items() if isinstance(m, BatchNormalization)}

    def regularization_loss(self) -> torch.Tensor:
        """Sum of every BatchNormalization layer's regularization loss (scalar; 0 if none).

        Add it to the data loss before ``backward()``, like Keras adds ``model.losses``.
        """
        losses = [m.regularization_loss() for m in self.batch_norm_layers().values()]
        if not losses:
            reference = next(self.parameters(), None)
            return torch.zeros((), device=reference.device if reference is not None else None)
        return torch.stack([loss.reshape(()) for loss in losses]).sum()

    def apply_constraints(self) -> None:
        """Apply every BatchNormalization layer's constraints; call after each optimizer step."""
        for module in self.batch_norm_layers().values():
            module.apply_constraints()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}"


def build_model(
    layers: Sequence[LayerSpec | Mapping[str, Any]],
    input_shape: Sequence[int] | None = None,
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
    specs: Sequence[LayerSpec], input_shape: Sequence[int] | None, where: str
) -> tuple[int, ...]:
    declared = tuple(specs[0].args["shape"]) if specs[0].type == "Input" else None
    if input_shape is not None:
        if isinstance(input_shape, str | bytes) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape
        ):
            raise SpecError(
                f"{where}: expected input_shape as positive integers without the batch axis, "
                f"e.g. (28, 28, 1); got {received(input_shape)}"
            )
        given = tuple(int(d) for d in input_shape)
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


def _build(
    specs: Sequence[LayerSpec], input_shape: tuple[int, ...], name: str, where: str
) -> SequentialModel:
    names = layer_names(specs)
    shape = input_shape
    channels_first = False
    built: list[BuiltLayer] = []
    for i, (spec, layer_name) in enumerate(zip(specs, names, strict=True)):
        layer_type = spec.layer_type
        if layer_type.build is None:  # Input
            continue
        if layer_name in _RESERVED:
            raise SpecError(
                f"{where}[{i}].name: {layer_name!r} is reserved by torch.nn.ModuleDict; "
                "choose another name"
            )
        permute = None
        if len(shape) == 3:  # images: (H, W, C) in Keras form
            if layer_type.layout == "channels_first" and not channels_first:
                permute, channels_first = _TO_FIRST, True
            elif layer_type.layout == "channels_last" and channels_first:
                permute, channels_first = _TO_LAST, False
        try:
            args = {**spec.resolved_args(), "name": layer_name}
            module, out_shape = layer_type.build(args, shape, channels_first)
        except (ValueError, TypeError) as error:
            raise SpecError(f"{where}[{i}] ({layer_name}): {error}") from None
        if len(out_shape) != 3:
            channels_first = False  # only 4D tensors are ever channel-first
        built.append(BuiltLayer(layer_name, spec, module, out_shape, permute))
        shape = out_shape
    final = _TO_LAST if channels_first else None
    return SequentialModel(built, input_shape=input_shape, final_permute=final, name=name)
