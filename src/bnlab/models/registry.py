"""The registry of Keras layer types: allowed arguments, defaults, checks, and builders.

Every layer type is a :class:`~bnlab.models.layer_type.LayerType` (arguments, layout,
builder, mask rule); they are defined by family in ``types_core``, ``types_conv``,
``types_recurrent``, ``types_augment`` (random image augmentation) and, for batch
normalization, here. Lookup is case-insensitive (``"dense"`` finds ``Dense``); Keras's
aliases are accepted (``Convolution2D``, ``MaxPool2D``, ``InputLayer``, ...).

Every built layer accepts Keras's bookkeeping arguments ``name``, ``trainable`` and
``dtype`` (float32), and every key Keras 3 writes in a ``.keras`` archive's config for
the type: a Keras config is a spec. Options bnlab cannot honour accept only their
default and otherwise raise a one-line error naming the key and the value.

Differences from Keras (also in the README's table): Dropout and the random
augmentation layers draw from torch's RNG (``seed`` is accepted and ignored, also by
initializers); augmentation takes batched images only;
recurrent layers have no ``return_state``/``stateful``; no ``activity_regularizer``;
``data_format`` is ``channels_last`` only (the model moves channels first inside by
itself); GroupNormalization normalizes the channel axis only; BatchNormalization
takes one int ``axis``, not a list.

Batch normalization: every class of :mod:`bnlab.nn`'s layer registry is a layer type
named like the class (``BatchNormalization``, ``BatchNormAct``), auto-named by its
registry key (``batch_normalization``, ``batch_norm_act``). It takes every keyword
argument of the class (read from the signatures, so new options appear here by
themselves) except ``device`` and ``dtype`` (use ``model.to(...)``); ``name`` is the
layer name. The class checks the values itself. Only ``axis`` changes meaning: it is
Keras's axis of the channel-last input (one int), default -1, the channel axis, which
becomes axis 1 of the channel-first tensor inside the model. Keras's BN layer reads
a mask in training (masked steps leave the batch statistics out).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from bnlab.models import arguments as A
from bnlab.models.arguments import Arg
from bnlab.models.layer_type import COMMON, Builder, LayerType, Shape, keras_shape
from bnlab.models.layout import internal_axis
from bnlab.models.types_augment import AUGMENT_TYPES
from bnlab.models.types_conv import CONV_TYPES
from bnlab.models.types_core import CORE_TYPES
from bnlab.models.types_recurrent import RECURRENT_TYPES
from bnlab.nn import BatchNormalization
from bnlab.nn import get_layer_class as get_bn_class
from bnlab.nn import list_layers as list_bn_layers

__all__ = [
    "LAYER_TYPES",
    "LayerType",
    "get_layer_type",
    "keras_shape",
    "list_layer_types",
]


# --- BatchNormalization: arguments read from bnlab.nn.BatchNormalization -------------


#: Constructor arguments of the BN classes that are no part of a spec: placement belongs
#: to the whole model (``model.to(device, dtype)``); ``name`` is the layer name.
_BN_EXCLUDED = ("self", "num_features", "device", "dtype", "name")
#: Spec arguments that are not the class's: Keras's axis of the channel-last input, the
#: layer name, Keras's dtype policy.
_BN_OWN = ("axis", "name", "dtype", "batch_input_shape")


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
    args["axis"] = Arg(_bn_axis, -1)  # Keras's axis of the channel-last input
    return args


def _bn_axis(value: Any) -> int:
    """One int; tf.keras wrote it as a one-element list (``[3]``), read as that int."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    try:
        return A.integer()(value)
    except A.InvalidArgError:
        raise A.InvalidArgError(
            f"expected an integer (one axis; lists of several axes are not supported); got "
            f"{A.received(value)}"
        ) from None


def _bn_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of the BN class (everything but axis, name)."""
    return {k: v for k, v in args.items() if k not in _BN_OWN}


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
        if shape[axis - 1] is None:
            raise ValueError(
                f"{cls.__name__} needs a known size on axis {args['axis']}; got "
                f"{keras_shape(shape)}"
            )
        if axis == rank - 1:  # Keras's channel axis
            internal = 1 if channels_first or rank == 2 else -1
        else:
            # Another axis (height, width, time), counted from the end so that it never
            # reads as a channel axis 1 (e.g. to bnlab.nn.fold after a Dense).
            internal = internal_axis(axis, rank, channels_first) - rank
        module = cls(shape[axis - 1], axis=internal, name=args["name"], **_bn_kwargs(args))
        return module, shape

    return build


def _bn_types() -> list[LayerType]:
    """One layer type per class of bnlab.nn's BN registry, named like the class."""
    types = []
    for key in list_bn_layers():
        cls = get_bn_class(key)
        args = {**COMMON, **_bn_args(cls)}  # the class's own trainable wins
        types.append(LayerType(cls.__name__, key, args, _bn_builder(cls), "any",
                               _bn_validator(cls), mask="use"))
    return types


_TYPES = [*CORE_TYPES, *CONV_TYPES, *RECURRENT_TYPES, *AUGMENT_TYPES, *_bn_types()]

#: lowercase name -> LayerType (aliases included)
LAYER_TYPES: dict[str, LayerType] = {t.name.lower(): t for t in _TYPES}
_BY_NAME = {t.name: t for t in _TYPES}
_ALIASES = {
    "inputlayer": "Input",
    "convolution1d": "Conv1D",
    "convolution2d": "Conv2D",
    "separableconvolution2d": "SeparableConv2D",
    "maxpool1d": "MaxPooling1D",
    "maxpool2d": "MaxPooling2D",
    "avgpool1d": "AveragePooling1D",
    "avgpool2d": "AveragePooling2D",
    "globalavgpool1d": "GlobalAveragePooling1D",
    "globalavgpool2d": "GlobalAveragePooling2D",
    "globalmaxpool1d": "GlobalMaxPooling1D",
    "globalmaxpool2d": "GlobalMaxPooling2D",
}
LAYER_TYPES.update({alias: _BY_NAME[name] for alias, name in _ALIASES.items()})


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
