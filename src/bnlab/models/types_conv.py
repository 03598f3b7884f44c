"""Convolution and pooling layer types: Conv1D, Conv2D, Conv3D, Conv2DTranspose,
DepthwiseConv2D, SeparableConv2D, ZeroPadding1D/2D/3D, Cropping1D/2D/3D,
UpSampling1D/2D/3D, Resizing, Max/AveragePooling1D/2D/3D, GlobalAverage/MaxPooling1D/2D/3D.

They run channel-first inside the model (the global poolings take either layout).
Kernels are initialized in Keras's layout, so fan-based initializers draw from the
same distributions as Keras (a depthwise kernel's fans are Keras's, not PyTorch's).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bnlab.models import arguments as A
from bnlab.models import layers as L
from bnlab.models.activations import get_activation
from bnlab.models.arguments import Arg
from bnlab.models.layer_type import (
    SPATIAL_FORMS,
    LayerType,
    Shape,
    check_rank,
    init_,
    keras_shape,
    layer_type,
)
from bnlab.models.types_core import KERNEL_ARGS, weight_args

__all__ = ["CONV_TYPES", "transpose_window"]

_CHANNELS_LAST = {"data_format": Arg(A.data_format, "channels_last")}


def _out_size(size: int | None, kernel: int, stride: int, dilation: int, padding: str,
              ) -> int | None:
    if size is None:
        return None
    if padding in ("same", "causal"):
        return math.ceil(size / stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


def _spatial_out(layer: str, shape: Shape, kernel: tuple[int, ...], strides: tuple[int, ...],
                 dilation: tuple[int, ...], padding: str) -> tuple[int | None, ...]:
    n = len(kernel)
    check_rank(layer, shape, (n + 2,), SPATIAL_FORMS[n])
    out = tuple(_out_size(*a, padding) for a in zip(shape[:-1], kernel, strides, dilation,
                                                     strict=True))
    if any(o is not None and o < 1 for o in out):
        raise ValueError(
            f"{layer} window {'x'.join(map(str, kernel))} with padding '{padding}' does not fit "
            f"input {keras_shape(shape)}; use padding 'same' or a smaller window"
        )
    return out


def _channels(layer: str, shape: Shape) -> int:
    if shape[-1] is None:
        raise ValueError(f"{layer} needs a known number of input channels; got {keras_shape(shape)}")
    return shape[-1]


def _init_depthwise(spec: Any, weight: torch.Tensor, channels: int) -> None:
    """Initialize (C*m, 1, kh, kw) with the fans of Keras's (kh, kw, C, m) kernel."""
    multiplier = weight.shape[0] // channels
    keras_like = torch.empty(multiplier, channels, *weight.shape[2:])  # fans: in=C, out=m
    init_(spec, keras_like)
    with torch.no_grad():
        weight.copy_(keras_like.transpose(0, 1).reshape(weight.shape))


def _conv(rank: int, layer: str):
    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        kernel, strides = A.ntuple(args["kernel_size"], rank), A.ntuple(args["strides"], rank)
        dilation = A.ntuple(args["dilation_rate"], rank)
        if args["padding"] == "causal" and rank != 1:
            raise ValueError(f"{layer} padding 'causal' is for Conv1D only; use 'valid' or 'same'")
        out = _spatial_out(layer, shape, kernel, strides, dilation, args["padding"])
        channels, groups = _channels(layer, shape), args["groups"]
        if channels % groups or args["filters"] % groups:
            raise ValueError(
                f"{layer} groups={groups} must divide the {channels} input channels and the "
                f"{args['filters']} filters"
            )
        module = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[rank](
            channels, args["filters"], kernel, strides=strides, padding=args["padding"],
            dilation=dilation, groups=groups, use_bias=args["use_bias"],
            activation=get_activation(args["activation"], channel_axis=1),
        )
        init_(args["kernel_initializer"], module.weight)
        init_(args["bias_initializer"], module.bias)
        return module, (*out, args["filters"])

    return build


def transpose_window(size: int | None, kernel: int, stride: int, dilation: int, padding: str,
                    output_padding: int | None) -> tuple[tuple[int, int], int | None]:
    """Keras's transposed-convolution window on one axis: the ``(before, after)`` crop of
    the full output and the output size (None for an unknown input size).

    'valid': ``(in - 1) * stride + k_eff + output_padding`` with ``output_padding``
    defaulting to ``max(k_eff, stride) - k_eff``; 'same': ``in * stride``, or
    ``(in - 1) * stride + k_eff % 2 + output_padding`` when given; ``k_eff =
    (kernel - 1) * dilation + 1``.
    """
    k_eff = (kernel - 1) * dilation + 1
    if padding == "valid":
        extra = max(k_eff, stride) - k_eff if output_padding is None else output_padding
        before, after = 0, -extra
        out = None if size is None else (size - 1) * stride + k_eff + extra
    else:
        total = (stride + k_eff - 2 if output_padding is None
                 else k_eff + k_eff % 2 - 2 + output_padding)
        left = min(total // 2 + total % 2, k_eff - 1)
        before, after = (k_eff - 1) - left, (k_eff - 1) - (total - left)
        if size is None:
            out = None
        elif output_padding is None:
            out = size * stride
        else:
            out = (size - 1) * stride + k_eff % 2 + output_padding
    return (before, after), out


def _build_conv_transpose(args: dict[str, Any], shape: Shape, channels_first: bool):
    layer = "Conv2DTranspose"
    check_rank(layer, shape, (4,), SPATIAL_FORMS[2])
    kernel, strides = A.ntuple(args["kernel_size"], 2), A.ntuple(args["strides"], 2)
    dilation = A.ntuple(args["dilation_rate"], 2)
    extra = (None, None) if args["output_padding"] is None else A.ntuple(
        args["output_padding"], 2)
    windows = [transpose_window(*a, args["padding"], p) for a, p in zip(
        zip(shape[:2], kernel, strides, dilation, strict=True), extra, strict=True)]
    crops = tuple(crop for crop, _ in windows)
    out = tuple(size for _, size in windows)
    if any(o is not None and o < 1 for o in out):
        raise ValueError(f"{layer} gives an empty output for input {keras_shape(shape)}")
    module = L.Conv2DTranspose(
        _channels(layer, shape), args["filters"], kernel, strides=strides, crops=crops,
        dilation=dilation, use_bias=args["use_bias"],
        activation=get_activation(args["activation"], channel_axis=1),
    )
    init_(args["kernel_initializer"], module.weight)  # fans as Keras's (kh, kw, filters, in)
    init_(args["bias_initializer"], module.bias)
    return module, (*out, args["filters"])


def _depthwise_module(args: dict[str, Any], shape: Shape, layer: str, *, use_bias: bool,
                      activation: str | None) -> tuple[L.DepthwiseConv2D, Shape]:
    kernel, strides = A.ntuple(args["kernel_size"], 2), A.ntuple(args["strides"], 2)
    dilation = A.ntuple(args["dilation_rate"], 2)
    out = _spatial_out(layer, shape, kernel, strides, dilation, args["padding"])
    channels = _channels(layer, shape)
    multiplier = args["depth_multiplier"]
    module = L.DepthwiseConv2D(
        channels, channels * multiplier, kernel, strides=strides, padding=args["padding"],
        dilation=dilation, groups=channels, use_bias=use_bias,
        activation=get_activation(activation, channel_axis=1),
    )
    _init_depthwise(args["depthwise_initializer"], module.weight, channels)
    return module, (*out, channels * multiplier)


def _build_depthwise(args: dict[str, Any], shape: Shape, channels_first: bool):
    module, out = _depthwise_module(args, shape, "DepthwiseConv2D", use_bias=args["use_bias"],
                                    activation=args["activation"])
    init_(args["bias_initializer"], module.bias)
    return module, out


def _build_separable(args: dict[str, Any], shape: Shape, channels_first: bool):
    depthwise, out = _depthwise_module(args, shape, "SeparableConv2D", use_bias=False,
                                       activation=None)
    pointwise = L.Conv2D(
        out[-1], args["filters"], (1, 1), strides=(1, 1), padding="valid", dilation=(1, 1),
        groups=1, use_bias=args["use_bias"],
        activation=get_activation(args["activation"], channel_axis=1),
    )
    init_(args["pointwise_initializer"], pointwise.weight)
    init_(args["bias_initializer"], pointwise.bias)
    return L.SeparableConv2D(depthwise, pointwise), (*out[:-1], args["filters"])


def _edges(value: int | tuple[Any, ...], rank: int) -> list[tuple[int, int]]:
    """A checked padding or cropping value as ``(before, after)`` per spatial axis.

    Rank 1: ``p`` or ``(left, right)``. Ranks 2 and 3 (:func:`~bnlab.models.arguments.
    padding_pairs`): ``p``, one ``p`` per axis, or one ``(before, after)`` per axis.
    """
    if isinstance(value, int):
        return [(value, value)] * rank
    if rank == 1:
        return [(value[0], value[1])]
    return [(v, v) if isinstance(v, int) else (v[0], v[1]) for v in value]


def _padded(layer: str, rank: int, key: str, sign: int):
    """ZeroPadding1D/2D/3D (``sign`` 1) and Cropping1D/2D/3D (-1): :class:`L.Pad` with the
    edges of ``args[key]``, each spatial size grown (or cut) by its two edges."""

    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        check_rank(layer, shape, (rank + 2,), SPATIAL_FORMS[rank])
        pairs = _edges(args[key], rank)
        out = []
        for size, (before, after) in zip(shape[:-1], pairs, strict=True):
            if sign < 0 and size is not None and before + after >= size:
                raise ValueError(
                    f"{layer} {key} {args[key]} removes {before + after} of the {size} "
                    f"positions of an axis of input {keras_shape(shape)}; one must remain"
                )
            out.append(None if size is None else size + sign * (before + after))
        amounts = tuple(sign * a for pair in reversed(pairs) for a in pair)  # F.pad's order
        return L.Pad(amounts), (*out, shape[-1])

    return build


def _upsampling(rank: int):
    layer = f"UpSampling{rank}D"

    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        check_rank(layer, shape, (rank + 2,), SPATIAL_FORMS[rank])
        size = A.ntuple(args["size"], rank)
        out = tuple(None if n is None else n * k for n, k in zip(shape[:-1], size, strict=True))
        return L.UpSampling(size, args.get("interpolation", "nearest")), (*out, shape[-1])

    return build


def _resizing_validate(args: dict[str, Any]) -> None:
    if args.get("crop_to_aspect_ratio") and args.get("pad_to_aspect_ratio"):
        raise A.InvalidArgError(
            "give crop_to_aspect_ratio or pad_to_aspect_ratio, not both; got both true"
        )


def _build_resizing(args: dict[str, Any], shape: Shape, channels_first: bool):
    check_rank("Resizing", shape, (4,), SPATIAL_FORMS[2])
    fit = ("crop" if args["crop_to_aspect_ratio"] else
           "pad" if args["pad_to_aspect_ratio"] else "stretch")
    size = (args["height"], args["width"])
    return L.Resizing(size, args["interpolation"], antialias=args["antialias"], fit=fit,
                      fill_value=args["fill_value"]), (*size, shape[-1])


def _pooling(kind: str, rank: int, layer: str):
    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        pool = A.ntuple(args["pool_size"], rank)
        strides = pool if args["strides"] is None else A.ntuple(args["strides"], rank)
        out = _spatial_out(layer, shape, pool, strides, (1,) * rank, args["padding"])
        if layer == "MaxPooling2D":
            module: L.Pooling = L.MaxPooling2D(pool, strides=strides, padding=args["padding"])
        else:
            module = L.Pooling(kind, pool, strides=strides, padding=args["padding"])  # type: ignore[arg-type]
        return module, (*out, shape[-1])

    return build


def _global(kind: str, rank: int, layer: str):
    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        check_rank(layer, shape, (rank + 2,), SPATIAL_FORMS[rank])
        module = L.GlobalPooling(kind, rank, keepdims=args["keepdims"],  # type: ignore[arg-type]
                                 channels_first=channels_first)
        return module, ((1,) * rank + (shape[-1],) if args["keepdims"] else (shape[-1],))

    return build


def _window_args(rank: int) -> dict[str, Arg]:
    return {
        "kernel_size": Arg(A.int_tuple(rank)),
        "strides": Arg(A.int_tuple(rank), 1),
        "padding": Arg(A.choice("valid", "same", "causal") if rank == 1
                       else A.choice("valid", "same"), "valid"),
        "data_format": Arg(A.data_format, "channels_last"),
        "dilation_rate": Arg(A.int_tuple(rank), 1),
    }


def _conv_type(rank: int) -> LayerType:
    name = f"Conv{rank}D"
    return layer_type(
        name, f"conv{rank}d",
        {"filters": Arg(A.integer(min=1)), **_window_args(rank),
         "groups": Arg(A.integer(min=1), 1), **KERNEL_ARGS},
        _conv(rank, name), "channels_first",
    )


_DEPTHWISE = {
    **_window_args(2),
    "depth_multiplier": Arg(A.integer(min=1), 1),
    "activation": Arg(A.activation, None),
    "use_bias": Arg(A.boolean, True),
    **weight_args("depthwise", "glorot_uniform"),
    **weight_args("bias", "zeros"),
    "activity_regularizer": KERNEL_ARGS["activity_regularizer"],
}


def _pool_type(kind: str, rank: int) -> LayerType:
    name = f"{'Max' if kind == 'max' else 'Average'}Pooling{rank}D"
    return layer_type(
        name, f"{'max' if kind == 'max' else 'average'}_pooling{rank}d",
        {"pool_size": Arg(A.int_tuple(rank), 2),
         "strides": Arg(A.optional(A.int_tuple(rank)), None),
         "padding": Arg(A.choice("valid", "same"), "valid"),
         "data_format": Arg(A.data_format, "channels_last")},
        _pooling(kind, rank, name), "channels_first",
    )


def _global_type(kind: str, rank: int) -> LayerType:
    name = f"Global{'Max' if kind == 'max' else 'Average'}Pooling{rank}D"
    mask = "consume" if (kind, rank) == ("avg", 1) else "drop"
    return layer_type(
        name, f"global_{'max' if kind == 'max' else 'average'}_pooling{rank}d",
        {"data_format": Arg(A.data_format, "channels_last"), "keepdims": Arg(A.boolean, False)},
        _global(kind, rank, name), mask=mask,  # type: ignore[arg-type]
    )


CONV_TYPES: list[LayerType] = [
    _conv_type(1),
    _conv_type(2),
    _conv_type(3),
    layer_type("Conv2DTranspose", "conv2d_transpose",
               {"filters": Arg(A.integer(min=1)), **_window_args(2),
                "output_padding": Arg(A.optional(A.int_tuple(2, min=0)), None), **KERNEL_ARGS},
               _build_conv_transpose, "channels_first"),
    layer_type("DepthwiseConv2D", "depthwise_conv2d", {**_DEPTHWISE, "kernel_size": Arg(
        A.int_tuple(2))}, _build_depthwise, "channels_first"),
    layer_type("SeparableConv2D", "separable_conv2d",
               {"filters": Arg(A.integer(min=1)), **_DEPTHWISE,
                **weight_args("pointwise", "glorot_uniform")},
               _build_separable, "channels_first"),
    layer_type("ZeroPadding1D", "zero_padding1d",
               {"padding": Arg(A.int_tuple(2, min=0), 1), **_CHANNELS_LAST},
               _padded("ZeroPadding1D", 1, "padding", 1), "channels_first"),
    layer_type("ZeroPadding2D", "zero_padding2d",
               {"padding": Arg(A.padding_pairs(2), 1), **_CHANNELS_LAST},
               _padded("ZeroPadding2D", 2, "padding", 1), "channels_first"),
    layer_type("ZeroPadding3D", "zero_padding3d",
               {"padding": Arg(A.padding_pairs(3), 1), **_CHANNELS_LAST},
               _padded("ZeroPadding3D", 3, "padding", 1), "channels_first"),
    layer_type("Cropping1D", "cropping1d", {"cropping": Arg(A.int_tuple(2, min=0), (1, 1))},
               _padded("Cropping1D", 1, "cropping", -1), "channels_first"),
    layer_type("Cropping2D", "cropping2d", {"cropping": Arg(A.padding_pairs(2), 0), **_CHANNELS_LAST},
               _padded("Cropping2D", 2, "cropping", -1), "channels_first"),
    layer_type("Cropping3D", "cropping3d",
               {"cropping": Arg(A.padding_pairs(3), ((1, 1), (1, 1), (1, 1))), **_CHANNELS_LAST},
               _padded("Cropping3D", 3, "cropping", -1), "channels_first"),
    layer_type("UpSampling1D", "up_sampling1d", {"size": Arg(A.integer(min=1), 2)},
               _upsampling(1), "channels_first"),
    layer_type("UpSampling2D", "up_sampling2d",
               {"size": Arg(A.int_tuple(2), 2), **_CHANNELS_LAST,
                "interpolation": Arg(A.choice("nearest", "bilinear"), "nearest")},
               _upsampling(2), "channels_first"),
    layer_type("UpSampling3D", "up_sampling3d", {"size": Arg(A.int_tuple(3), 2), **_CHANNELS_LAST},
               _upsampling(3), "channels_first"),
    layer_type("Resizing", "resizing",
               {"height": Arg(A.integer(min=1)), "width": Arg(A.integer(min=1)),
                "interpolation": Arg(A.choice("bilinear", "nearest", "bicubic"), "bilinear"),
                "crop_to_aspect_ratio": Arg(A.boolean, False),
                "pad_to_aspect_ratio": Arg(A.boolean, False),
                "fill_mode": Arg(A.choice("constant"), "constant"),
                "fill_value": Arg(A.real(), 0.0), "antialias": Arg(A.boolean, False),
                "data_format": Arg(A.data_format, "channels_last")},
               _build_resizing, "channels_first", validate=_resizing_validate),
    *[_pool_type(kind, rank) for kind in ("max", "avg") for rank in (1, 2, 3)],
    *[_global_type(kind, rank) for kind in ("avg", "max") for rank in (1, 2, 3)],
]
