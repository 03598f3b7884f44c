"""The registry of Keras layer types: allowed arguments, defaults, checks, and builders.

Each :class:`LayerType` knows

- ``args``: every allowed argument with its check and default (``name`` on all);
- ``layout``: the internal layout its input must have. Images travel channel-first
  ``(N, C, H, W)`` through Conv2D/MaxPooling2D/ZeroPadding2D; Dense, Flatten and LSTM
  take channel-last input like Keras; the others work on either;
- ``build(args, shape, channels_first) -> (module, output_shape)``: ``args`` has every
  default filled in and ``name`` set to the layer's name; ``shape`` is the input shape
  in Keras's channel-last form without the batch axis, the returned output shape
  likewise. Shape problems raise ``ValueError``; the model builder adds the location.

Differences from Keras: Dropout has no ``noise_shape``/``seed`` (it draws from torch's
RNG); LSTM lacks dropout, masking and state options (see :class:`bnlab.models.layers.LSTM`);
BatchNormalization takes one int ``axis``, not a list; Conv2D has no ``dilation_rate``
or ``groups``; no kernel regularizers or constraints on Dense/Conv2D/LSTM.

Lookup is case-insensitive (``"dense"`` finds ``Dense``); ``Convolution2D`` and
``MaxPool2D`` are accepted as Keras's aliases.

Batch normalization: every class of :mod:`bnlab.nn`'s layer registry is a layer type
named like the class (``BatchNormalization``, ``BatchNormAct``), auto-named by its
registry key (``batch_normalization``, ``batch_norm_act``). It takes every keyword
argument of the class (read from the signatures, so new options appear here by
themselves) except ``device`` and ``dtype`` (use ``model.to(...)``); ``name`` is the
layer name. The class checks the values itself. Only ``axis`` changes meaning: it is
Keras's axis of the channel-last input (one int), default -1, the channel axis, which
becomes axis 1 of the channel-first tensor inside the model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bnlab.models import arguments as A
from bnlab.models.activations import get_activation
from bnlab.models.arguments import Arg
from bnlab.models.layers import LSTM, Conv2D, Dense, MaxPooling2D, ZeroPadding2D, same_padding
from bnlab.nn import BatchNormalization, initializers
from bnlab.nn import get_layer_class as get_bn_class
from bnlab.nn import list_layers as list_bn_layers

__all__ = [
    "LAYER_TYPES",
    "LayerType",
    "get_layer_type",
    "keras_shape",
    "list_layer_types",
]

Shape = tuple[int, ...]
Builder = Callable[[dict[str, Any], Shape, bool], tuple[nn.Module, Shape]]
Layout = Literal["any", "channels_first", "channels_last"]


@dataclass(frozen=True)
class LayerType:
    """One Keras layer type. See the module docstring for the fields."""

    name: str
    auto_name: str
    args: Mapping[str, Arg]
    build: Builder | None
    layout: Layout = "any"
    validate: Callable[[dict[str, Any]], None] | None = None


def keras_shape(shape: Shape) -> str:
    """``(None, 26, 26, 32)``: a shape as Keras prints it, batch axis first."""
    return str((None, *shape))


def _init(spec: Any, tensor: torch.Tensor) -> None:
    with torch.no_grad():
        initializers.get(spec)(tensor)


def _rank(layer: str, shape: Shape, ranks: tuple[int, ...], form: str) -> None:
    if len(shape) + 1 not in ranks:
        raise ValueError(f"{layer} expects input of shape {form}; got {keras_shape(shape)}")


_NAME = {"name": Arg(A.layer_name, None)}
_KERNEL = {
    "activation": Arg(A.activation, None),
    "use_bias": Arg(A.boolean, True),
    "kernel_initializer": Arg(A.initializer, "glorot_uniform"),
    "bias_initializer": Arg(A.initializer, "zeros"),
}


def _build_dense(args: dict[str, Any], shape: Shape, channels_first: bool):
    if len(shape) < 1:
        raise ValueError(
            f"Dense expects input of shape (batch, ..., features); got {keras_shape(shape)}"
        )
    module = Dense(
        shape[-1],
        args["units"],
        use_bias=args["use_bias"],
        activation=get_activation(args["activation"], channel_axis=-1),
    )
    _init(args["kernel_initializer"], module.weight)
    if module.bias is not None:
        _init(args["bias_initializer"], module.bias)
    return module, (*shape[:-1], args["units"])


def _build_activation(args: dict[str, Any], shape: Shape, channels_first: bool):
    return get_activation(args["activation"], channel_axis=1 if channels_first else -1), shape


def _build_dropout(args: dict[str, Any], shape: Shape, channels_first: bool):
    return nn.Dropout(args["rate"]), shape


def _build_flatten(args: dict[str, Any], shape: Shape, channels_first: bool):
    return nn.Flatten(), (math.prod(shape),)


def _window(
    layer: str, shape: Shape, window: tuple[int, int], strides: tuple[int, int], padding: str
) -> tuple[Shape, tuple[int, int, int, int]]:
    """Output (H, W) and the F.pad tuple (left, right, top, bottom) of a 2D window op."""
    _rank(layer, shape, (4,), "(batch, height, width, channels)")
    height, width, channels = shape
    if padding == "same":
        top, bottom = same_padding(height, window[0], strides[0])
        left, right = same_padding(width, window[1], strides[1])
    else:
        top = bottom = left = right = 0
    out = tuple(
        (size + before + after - k) // s + 1
        for size, before, after, k, s in (
            (height, top, bottom, window[0], strides[0]),
            (width, left, right, window[1], strides[1]),
        )
    )
    if min(out) < 1:
        raise ValueError(
            f"{layer} window {window[0]}x{window[1]} with padding 'valid' does not fit input "
            f"{keras_shape(shape)}; use padding 'same' or a smaller window"
        )
    return (out[0], out[1], channels), (left, right, top, bottom)


def _build_conv2d(args: dict[str, Any], shape: Shape, channels_first: bool):
    kernel, strides = A.pair(args["kernel_size"]), A.pair(args["strides"])
    (height, width, _), pad = _window("Conv2D", shape, kernel, strides, args["padding"])
    module = Conv2D(
        shape[-1],
        args["filters"],
        kernel,
        strides=strides,
        padding=pad,
        use_bias=args["use_bias"],
        activation=get_activation(args["activation"], channel_axis=1),
    )
    _init(args["kernel_initializer"], module.weight)
    if module.bias is not None:
        _init(args["bias_initializer"], module.bias)
    return module, (height, width, args["filters"])


def _build_max_pooling2d(args: dict[str, Any], shape: Shape, channels_first: bool):
    pool = A.pair(args["pool_size"])
    strides = pool if args["strides"] is None else A.pair(args["strides"])
    out, pad = _window("MaxPooling2D", shape, pool, strides, args["padding"])
    return MaxPooling2D(pool, strides=strides, padding=pad), out


def _build_zero_padding2d(args: dict[str, Any], shape: Shape, channels_first: bool):
    _rank("ZeroPadding2D", shape, (4,), "(batch, height, width, channels)")
    p = args["padding"]
    if isinstance(p, int):
        (top, bottom), (left, right) = (p, p), (p, p)
    elif isinstance(p[0], int):
        (top, bottom), (left, right) = (p[0], p[0]), (p[1], p[1])
    else:
        (top, bottom), (left, right) = p
    height, width, channels = shape
    return ZeroPadding2D((left, right, top, bottom)), (
        height + top + bottom,
        width + left + right,
        channels,
    )


def _build_lstm(args: dict[str, Any], shape: Shape, channels_first: bool):
    _rank("LSTM", shape, (3,), "(batch, timesteps, features)")
    units = args["units"]
    module = LSTM(
        shape[-1],
        units,
        return_sequences=args["return_sequences"],
        use_bias=args["use_bias"],
        activation=get_activation(args["activation"]),
        recurrent_activation=get_activation(args["recurrent_activation"]),
    )
    _init(args["kernel_initializer"], module.weight_ih)
    _init(args["recurrent_initializer"], module.weight_hh)
    if module.bias is not None:
        _init(args["bias_initializer"], module.bias)
        if args["unit_forget_bias"]:
            with torch.no_grad():
                module.bias[units : 2 * units] = 1.0
    out = (shape[0], units) if args["return_sequences"] else (units,)
    return module, out


# --- BatchNormalization: arguments read from bnlab.nn.BatchNormalization -------------


#: Constructor arguments of the BN classes that are no part of a spec: placement belongs
#: to the whole model (``model.to(device, dtype)``); ``name`` is the layer name.
_BN_EXCLUDED = ("self", "num_features", "device", "dtype", "name")


def _bn_args(cls: type[BatchNormalization]) -> dict[str, Arg]:
    """Every keyword argument of ``cls`` and its BatchNormalization bases (subclass first)."""
    args: dict[str, Arg] = {}
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, BatchNormalization)):
            continue
        for param in inspect.signature(klass.__init__).parameters.values():
            if param.name in _BN_EXCLUDED or param.kind in (
                param.VAR_POSITIONAL,
                param.VAR_KEYWORD,
            ):
                continue
            args.setdefault(param.name, Arg(A.anything, param.default))
    args["axis"] = Arg(A.integer(), -1)  # Keras's axis of the channel-last input
    return args


def _bn_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the BN class (everything but axis, name)."""
    return {k: v for k, v in args.items() if k not in ("axis", "name")}


def _bn_validator(cls: type[BatchNormalization]) -> Callable[[dict[str, Any]], None]:
    def validate(args: dict[str, Any]) -> None:
        if args.get("axis", -1) == 0:
            raise A.InvalidArgError(
                "expected -1 (the channel axis, Keras's default) or another non-batch axis; "
                "got 0 (int), the batch axis",
                key="axis",
            )
        # The layer checks its own arguments; an unbuilt layer allocates nothing.
        label = args.get("name") or cls.__name__
        kwargs = _bn_kwargs(args)
        try:
            cls(None, name=label, **kwargs)
        except (ValueError, TypeError) as error:
            # Name the culprit when one argument fails on its own; otherwise the
            # combination is the problem and the layer's message says which.
            for key, value in kwargs.items():
                try:
                    cls(None, name=label, **{key: value})
                except (ValueError, TypeError) as single:
                    message = str(single)
                    if repr(value) not in message:
                        message += f"; got {A.received(value)}"
                    raise A.InvalidArgError(message, key=key) from None
            raise A.InvalidArgError(str(error)) from None

    return validate


def _bn_builder(cls: type[BatchNormalization]) -> Builder:
    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        rank = len(shape) + 1
        axis = args["axis"] + rank if args["axis"] < 0 else args["axis"]
        if not 1 <= axis < rank:
            raise ValueError(
                f"{cls.__name__} axis {args['axis']} is out of range for input "
                f"{keras_shape(shape)}; use -1 (the channel axis) or 1..{rank - 1}"
            )
        if axis == rank - 1:  # Keras's channel axis
            internal = 1 if channels_first or rank == 2 else -1
        else:
            # Another axis (height, width, time), counted from the end so that it never
            # reads as a channel axis 1 (e.g. to bnlab.nn.fold after a Dense).
            internal = (axis + 1 if channels_first else axis) - rank
        module = cls(shape[axis - 1], axis=internal, name=args["name"], **_bn_kwargs(args))
        return module, shape

    return build


def _bn_types() -> list[LayerType]:
    """One layer type per class of bnlab.nn's BN registry, named like the class."""
    types = []
    for key in list_bn_layers():
        cls = get_bn_class(key)
        args = {**_bn_args(cls), **_NAME}
        types.append(
            LayerType(cls.__name__, key, args, _bn_builder(cls), "any", _bn_validator(cls))
        )
    return types


def _layer(
    name: str,
    auto_name: str,
    args: dict[str, Arg],
    build: Builder | None,
    layout: Layout = "any",
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> LayerType:
    all_args = args if build is None else {**args, **_NAME}
    return LayerType(name, auto_name, all_args, build, layout, validate)


_TYPES = [
    _layer("Input", "input", {"shape": Arg(A.shape)}, None),
    _layer(
        "Dense",
        "dense",
        {"units": Arg(A.integer(min=1)), **_KERNEL},
        _build_dense,
        "channels_last",
    ),
    _layer("Activation", "activation", {"activation": Arg(A.activation)}, _build_activation),
    *_bn_types(),
    _layer("Dropout", "dropout", {"rate": Arg(A.real(0.0, 1.0))}, _build_dropout),
    _layer("Flatten", "flatten", {}, _build_flatten, "channels_last"),
    _layer(
        "Conv2D",
        "conv2d",
        {
            "filters": Arg(A.integer(min=1)),
            "kernel_size": Arg(A.int_or_pair(1)),
            "strides": Arg(A.int_or_pair(1), 1),
            "padding": Arg(A.choice("valid", "same"), "valid"),
            **_KERNEL,
        },
        _build_conv2d,
        "channels_first",
    ),
    _layer(
        "MaxPooling2D",
        "max_pooling2d",
        {
            "pool_size": Arg(A.int_or_pair(1), 2),
            "strides": Arg(lambda v: v if v is None else A.int_or_pair(1)(v), None),
            "padding": Arg(A.choice("valid", "same"), "valid"),
        },
        _build_max_pooling2d,
        "channels_first",
    ),
    _layer(
        "ZeroPadding2D",
        "zero_padding2d",
        {"padding": Arg(A.padding2d, 1)},
        _build_zero_padding2d,
        "channels_first",
    ),
    _layer(
        "LSTM",
        "lstm",
        {
            "units": Arg(A.integer(min=1)),
            "activation": Arg(A.activation, "tanh"),
            "recurrent_activation": Arg(A.activation, "sigmoid"),
            "use_bias": Arg(A.boolean, True),
            "kernel_initializer": Arg(A.initializer, "glorot_uniform"),
            "recurrent_initializer": Arg(A.initializer, "orthogonal"),
            "bias_initializer": Arg(A.initializer, "zeros"),
            "unit_forget_bias": Arg(A.boolean, True),
            "return_sequences": Arg(A.boolean, False),
        },
        _build_lstm,
        "channels_last",
    ),
]

#: lowercase name -> LayerType (aliases included)
LAYER_TYPES: dict[str, LayerType] = {t.name.lower(): t for t in _TYPES}
_BY_NAME = {t.name: t for t in _TYPES}
LAYER_TYPES["convolution2d"] = _BY_NAME["Conv2D"]
LAYER_TYPES["maxpool2d"] = _BY_NAME["MaxPooling2D"]


def list_layer_types() -> list[str]:
    """The canonical Keras names of every registered layer type, sorted."""
    return sorted(_BY_NAME)


def get_layer_type(name: str) -> LayerType:
    """Look up a layer type by Keras name (case-insensitive).

    Raises:
        ValueError: ``unknown layer 'Dense2'; choose from: Activation, BatchNormalization, ...``
    """
    if isinstance(name, str) and name.lower() in LAYER_TYPES:
        return LAYER_TYPES[name.lower()]
    raise ValueError(f"unknown layer {name!r}; choose from: {', '.join(list_layer_types())}")
