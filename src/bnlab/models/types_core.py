"""Layer types that are not convolutions, pooling, recurrent or batch normalization.

Input, Dense, activation layers (Activation, ReLU, LeakyReLU, ELU, PReLU, Softmax), Dropout,
SpatialDropout1D/2D/3D, GaussianNoise and GaussianDropout, Flatten, Reshape, Permute,
RepeatVector, Identity, Rescaling,
Normalization, Masking, Embedding, the merge layers (Add, Subtract, Multiply, Average,
Maximum, Minimum, Concatenate, and keras.applications' CustomScaleLayer),
LayerNormalization and GroupNormalization. Arguments and defaults are Keras 3's
(see :mod:`bnlab.models.registry` for what differs).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bnlab.models import arguments as A
from bnlab.models import layers as L
from bnlab.models import norms
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
from bnlab.models.layout import internal_axis

__all__ = ["CORE_TYPES", "KERNEL_ARGS", "input_shape", "weight_args"]

_NO_ACTIVITY = A.none_only("activity regularizers are not supported")


def weight_args(prefix: str, initializer: str) -> dict[str, Arg]:
    """``<prefix>_initializer``, ``_regularizer`` and ``_constraint`` with Keras's defaults."""
    return {
        f"{prefix}_initializer": Arg(A.initializer, initializer),
        f"{prefix}_regularizer": Arg(A.regularizer, None),
        f"{prefix}_constraint": Arg(A.constraint, None),
    }


#: The arguments of Dense and the convolutions besides their sizes.
KERNEL_ARGS: dict[str, Arg] = {
    "activation": Arg(A.activation, None),
    "use_bias": Arg(A.boolean, True),
    **weight_args("kernel", "glorot_uniform"),
    **weight_args("bias", "zeros"),
    "activity_regularizer": Arg(_NO_ACTIVITY, None),
}


_SHAPE_KEYS = ("shape", "batch_shape", "batch_input_shape")  # the last: tf.keras's name


def _input_validate(args: dict[str, Any]) -> None:
    given = [k for k in _SHAPE_KEYS if args.get(k) is not None]
    if len(given) != 1:
        raise A.InvalidArgError(
            "an Input needs exactly one of 'shape' (e.g. [28, 28, 1]) and 'batch_shape' "
            "(e.g. [null, 28, 28, 1], tf.keras: 'batch_input_shape'); got "
            + ", ".join(f"{k}={args.get(k)!r}" for k in _SHAPE_KEYS)
        )


def input_shape(args: dict[str, Any]) -> Shape:
    """The shape (without the batch axis) an Input entry declares."""
    if args.get("shape") is not None:
        return tuple(args["shape"])
    batch_shape = args.get("batch_shape") or args["batch_input_shape"]
    return tuple(batch_shape[1:])


def _known(layer: str, what: str, size: int | None) -> int:
    if size is None:
        raise ValueError(f"{layer} needs a known {what}; got an unknown (None) size")
    return size


def _build_dense(args: dict[str, Any], shape: Shape, channels_first: bool):
    if len(shape) < 1:
        raise ValueError(
            f"Dense expects input of shape (batch, ..., features); got {keras_shape(shape)}"
        )
    module = L.Dense(
        _known("Dense", "number of input features", shape[-1]),
        args["units"],
        use_bias=args["use_bias"],
        activation=get_activation(args["activation"], channel_axis=-1),
    )
    init_(args["kernel_initializer"], module.weight)
    init_(args["bias_initializer"], module.bias)
    return module, (*shape[:-1], args["units"])


def _channel_axis(channels_first: bool) -> int:
    return 1 if channels_first else -1


def _build_activation(args: dict[str, Any], shape: Shape, channels_first: bool):
    return get_activation(args["activation"], channel_axis=_channel_axis(channels_first)), shape


def _build_relu(args: dict[str, Any], shape: Shape, channels_first: bool):
    return L.KerasReLU(args["max_value"], args["negative_slope"], args["threshold"]), shape


def _leaky_validate(args: dict[str, Any]) -> None:
    if "alpha" in args and "negative_slope" in args:
        raise A.InvalidArgError(
            "give negative_slope or its old name alpha, not both; "
            f"got negative_slope={args['negative_slope']}, alpha={args['alpha']}"
        )


def _build_leaky_relu(args: dict[str, Any], shape: Shape, channels_first: bool):
    slope = args["alpha"] if args["alpha"] is not None else args["negative_slope"]
    return L.KerasReLU(None, slope, 0.0), shape


def _axes(axis: int | tuple[int, ...], rank: int, channels_first: bool) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(internal_axis(a, rank, channels_first) for a in axes)


def _build_softmax(args: dict[str, Any], shape: Shape, channels_first: bool):
    return L.Softmax(_axes(args["axis"], len(shape) + 1, channels_first)), shape


def _noise_shape(value: Any) -> tuple[int | None, ...] | None:
    """Keras Dropout's ``noise_shape``: null, or one entry per input axis, each null (the
    input's size) or a positive integer."""
    if value is None:
        return None
    if isinstance(value, list | tuple) and value and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
            for v in value):
        return tuple(value)
    raise A.InvalidArgError(
        "expected null or a list with one entry per input axis, each null or a positive "
        f"integer (e.g. [null, 1, 1, null]); got {A.received(value)}"
    )


def _build_dropout(args: dict[str, Any], shape: Shape, channels_first: bool):
    keras_noise = args["noise_shape"]
    if keras_noise is None:
        return L.Dropout(args["rate"]), shape
    full = (None, *shape)
    if len(keras_noise) != len(full) or any(
            n is not None and n != 1 and n != size for n, size in zip(keras_noise, full, strict=True)):
        raise ValueError(
            f"Dropout noise_shape {list(keras_noise)} does not fit input {keras_shape(shape)}: "
            "it needs one entry per axis, each null, 1 or the axis's size"
        )
    if channels_first and len(full) >= 3:  # the mask's axes in the order of the tensor inside
        keras_noise = (keras_noise[0], keras_noise[-1], *keras_noise[1:-1])
    return L.Dropout(args["rate"], noise_shape=keras_noise), shape


def _spatial_dropout(rank: int):
    form = SPATIAL_FORMS[rank - 2]

    def build(args: dict[str, Any], shape: Shape, channels_first: bool):
        check_rank(f"SpatialDropout{rank - 2}D", shape, (rank,), form)
        return L.Dropout(args["rate"], noise_shape=(None, None, *[1] * (rank - 2))), shape

    return build


def _build_elu(args: dict[str, Any], shape: Shape, channels_first: bool):
    return torch.nn.ELU(args["alpha"]), shape


def _shared_axes(value: Any) -> tuple[int, ...] | None:
    """Keras PReLU's ``shared_axes``: null, an axis >= 1 or a list of them."""
    if value is None:
        return None
    axes = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(axes, list | tuple) and axes and all(
            isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in axes):
        return tuple(axes)
    raise A.InvalidArgError(
        f"expected null, an axis >= 1 or a list of them (e.g. [1, 2]); got {A.received(value)}"
    )


def _build_prelu(args: dict[str, Any], shape: Shape, channels_first: bool):
    shared = set(args["shared_axes"] or ())
    if any(a > len(shape) for a in shared):
        raise ValueError(
            f"PReLU shared_axes {sorted(shared)} name an axis beyond input {keras_shape(shape)}"
        )
    alpha = tuple(1 if i in shared else _known("PReLU", f"size on axis {i}", n)
                  for i, n in enumerate(shape, start=1))
    module = L.PReLU(alpha)
    init_(args["alpha_initializer"], module.alpha)
    return module, shape


def _build_gaussian_noise(args: dict[str, Any], shape: Shape, channels_first: bool):
    return L.GaussianNoise(args["stddev"], "add"), shape


def _build_gaussian_dropout(args: dict[str, Any], shape: Shape, channels_first: bool):
    rate = args["rate"]
    return L.GaussianNoise(math.sqrt(rate / (1.0 - rate)), "multiply"), shape


def _build_flatten(args: dict[str, Any], shape: Shape, channels_first: bool):
    size = None if None in shape else math.prod(shape)  # type: ignore[arg-type]
    return torch.nn.Flatten(), (size,)


def _build_reshape(args: dict[str, Any], shape: Shape, channels_first: bool):
    target = tuple(args["target_shape"])
    if None in shape:
        return L.Reshape(target), tuple(None if d == -1 else d for d in target)
    total = math.prod(shape)  # type: ignore[arg-type]
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if total % known:
            raise ValueError(
                f"Reshape cannot fit {total} values of input {keras_shape(shape)} into "
                f"target_shape {list(target)}"
            )
        target = tuple(total // known if d == -1 else d for d in target)
    if math.prod(target) != total:
        raise ValueError(
            f"Reshape target_shape {list(args['target_shape'])} holds {math.prod(target)} "
            f"values; the input {keras_shape(shape)} has {total}"
        )
    return L.Reshape(target), target


def _build_permute(args: dict[str, Any], shape: Shape, channels_first: bool):
    dims = tuple(args["dims"])
    if sorted(dims) != list(range(1, len(shape) + 1)):
        raise ValueError(
            f"Permute dims {list(dims)} must order the input's axes 1..{len(shape)} (each "
            f"once); got input {keras_shape(shape)}"
        )
    return L.Permute(dims), tuple(shape[d - 1] for d in dims)


def _permutation(value: Any) -> tuple[int, ...]:
    if (isinstance(value, list | tuple) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
            and len(set(value)) == len(value)):
        return tuple(value)
    raise A.InvalidArgError(
        f"expected a list of distinct axes >= 1 (1 is the first after the batch axis), e.g. "
        f"[2, 1]; got {A.received(value)}"
    )


def _build_repeat_vector(args: dict[str, Any], shape: Shape, channels_first: bool):
    check_rank("RepeatVector", shape, (2,), "(batch, features)")
    return L.RepeatVector(args["n"]), (args["n"], shape[0])


def _build_identity(args: dict[str, Any], shape: Shape, channels_first: bool):
    return torch.nn.Identity(), shape


def _target_shape(value: Any) -> tuple[int, ...]:
    if (isinstance(value, list | tuple) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1)
                    for v in value)
            and list(value).count(-1) <= 1):
        return tuple(value)
    raise A.InvalidArgError(
        "expected a list of positive integers with at most one -1, e.g. [7, 7, 64]; "
        f"got {A.received(value)}"
    )


def _number_or_list(value: Any) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple) and value:
        return tuple(A.real()(v) for v in value)
    try:
        return A.real()(value)
    except A.InvalidArgError:
        raise A.InvalidArgError(
            f"expected a number or a list of numbers (one per channel); got {A.received(value)}"
        ) from None


def _per_channel(value: float | tuple[float, ...], shape: Shape, channels_first: bool,
                 what: str) -> torch.Tensor:
    """A scalar, or a per-channel vector shaped to broadcast against the tensor inside."""
    tensor = torch.tensor(value, dtype=torch.float32)
    if tensor.dim() == 0:
        return tensor
    if shape[-1] is not None and tensor.numel() not in (1, shape[-1]):
        raise ValueError(
            f"Rescaling {what} has {tensor.numel()} values; the input {keras_shape(shape)} has "
            f"{shape[-1]} channels"
        )
    if channels_first:
        return tensor.reshape(-1, *[1] * (len(shape) - 1))
    return tensor


def _build_rescaling(args: dict[str, Any], shape: Shape, channels_first: bool):
    scale = _per_channel(args["scale"], shape, channels_first, "scale")
    offset = _per_channel(args["offset"], shape, channels_first, "offset")
    return L.Rescaling(scale, offset), shape


def _build_normalization(args: dict[str, Any], shape: Shape, channels_first: bool):
    rank = len(shape) + 1
    axis = args["axis"]
    axes = () if axis is None else ((axis,) if isinstance(axis, int) else axis)
    try:
        kept = tuple(sorted(internal_axis(a, rank, False) for a in axes))
    except ValueError as error:
        raise ValueError(f"Normalization {error}") from None
    if 0 in kept:
        raise ValueError(f"Normalization axis {axis} includes the batch axis; use -1 or 1..{rank - 1}")
    sizes = tuple(_known("Normalization", f"size on axis {a}", shape[a - 1]) for a in kept)
    broadcast = tuple(shape[a - 1] if a in kept else 1 for a in range(1, rank))
    adapted = args["mean"] is None
    if adapted:
        mean, variance = torch.zeros(sizes), torch.ones(sizes)
    else:
        mean = torch.broadcast_to(torch.tensor(args["mean"], dtype=torch.float32), sizes).clone()
        variance = torch.broadcast_to(
            torch.tensor(args["variance"], dtype=torch.float32), sizes).clone()
    module = norms.Normalization(mean, variance, (1, *broadcast), invert=args["invert"],
                                 adapted=adapted)
    return module, shape


def _normalization_validate(args: dict[str, Any]) -> None:
    if (args.get("mean") is None) != (args.get("variance") is None):
        raise A.InvalidArgError(
            "give both mean and variance (fixed statistics) or neither (adapted weights); "
            f"got mean={args.get('mean')!r}, variance={args.get('variance')!r}"
        )


def _build_masking(args: dict[str, Any], shape: Shape, channels_first: bool):
    check_rank("Masking", shape, (3,), "(batch, timesteps, features)")
    return L.Masking(args["mask_value"]), shape


def _build_embedding(args: dict[str, Any], shape: Shape, channels_first: bool):
    module = L.Embedding(args["input_dim"], args["output_dim"], mask_zero=args["mask_zero"])
    init_(args["embeddings_initializer"], module.weight)
    return module, (*shape, args["output_dim"])


def _broadcast(layer: str, shapes: tuple[Shape, ...]) -> Shape:
    """Keras's merge shape: equal ranks, sizes equal or 1 (or unknown)."""
    if len(shapes) < 2:
        raise ValueError(f"{layer} needs at least 2 inputs; got {len(shapes)}")
    if len({len(s) for s in shapes}) != 1:
        raise ValueError(
            f"{layer} inputs must have the same rank; got {', '.join(map(keras_shape, shapes))}"
        )
    out = []
    for sizes in zip(*shapes, strict=True):
        known = {s for s in sizes if s not in (None, 1)}
        if len(known) > 1:
            raise ValueError(
                f"{layer} inputs have incompatible shapes {', '.join(map(keras_shape, shapes))}"
            )
        out.append(known.pop() if known else (None if None in sizes else 1))
    return tuple(out)


def _merge(op: str, layer: str):
    def build(args: dict[str, Any], shapes: tuple[Shape, ...], channels_first: bool):
        return L.Merge(op), _broadcast(layer, shapes)  # type: ignore[arg-type]

    return build


def _build_custom_scale(args: dict[str, Any], shapes: tuple[Shape, ...], channels_first: bool):
    if len(shapes) != 2:
        raise ValueError(f"CustomScaleLayer takes 2 inputs (x0 + x1 * scale); got {len(shapes)}")
    return L.ScaledSum(args["scale"]), _broadcast("CustomScaleLayer", shapes)


def _build_concatenate(args: dict[str, Any], shapes: tuple[Shape, ...], channels_first: bool):
    if len(shapes) < 2:
        raise ValueError(f"Concatenate needs at least 2 inputs; got {len(shapes)}")
    rank = len(shapes[0]) + 1
    if any(len(s) + 1 != rank for s in shapes):
        raise ValueError(
            f"Concatenate inputs must have the same rank; got {', '.join(map(keras_shape, shapes))}"
        )
    axis = internal_axis(args["axis"], rank, False)
    if axis == 0:
        raise ValueError("Concatenate along the batch axis (axis 0) is not supported")
    for d in range(1, rank):
        sizes = {s[d - 1] for s in shapes} - {None}
        if d != axis and len(sizes) > 1:
            raise ValueError(
                f"Concatenate on axis {args['axis']} needs equal sizes on the other axes; got "
                f"{', '.join(map(keras_shape, shapes))}"
            )
    parts = [s[axis - 1] for s in shapes]
    joined = None if None in parts else sum(parts)  # type: ignore[arg-type]
    out = list(shapes[0])
    for d in range(1, rank):
        if d != axis:
            out[d - 1] = next((s[d - 1] for s in shapes if s[d - 1] is not None), None)
    out[axis - 1] = joined
    return L.Concatenate(internal_axis(args["axis"], rank, channels_first)), tuple(out)


def _build_layer_normalization(args: dict[str, Any], shape: Shape, channels_first: bool):
    rank = len(shape) + 1
    try:
        axes = tuple(sorted(_axes(args["axis"], rank, False)))
    except ValueError as error:
        raise ValueError(f"LayerNormalization {error}") from None
    if 0 in axes:
        raise ValueError("LayerNormalization cannot normalize over the batch axis (axis 0)")
    sizes = tuple(_known("LayerNormalization", f"size on axis {a}", shape[a - 1]) for a in axes)
    module = norms.LayerNormalization(
        sizes, axes, epsilon=args["epsilon"], center=args["center"], scale=args["scale"],
        rms_scaling=args["rms_scaling"],
    )
    init_(args["gamma_initializer"], module.gamma)
    init_(args["beta_initializer"], module.beta)
    return module, shape


def _build_group_normalization(args: dict[str, Any], shape: Shape, channels_first: bool):
    rank = len(shape) + 1
    if internal_axis(args["axis"], rank, False) != rank - 1:
        raise ValueError(
            f"GroupNormalization supports the channel axis (-1) only; got axis {args['axis']}"
        )
    channels = _known("GroupNormalization", "number of channels", shape[-1])
    if channels % args["groups"]:
        raise ValueError(
            f"GroupNormalization groups={args['groups']} must divide the {channels} channels"
        )
    module = norms.GroupNormalization(channels, args["groups"], epsilon=args["epsilon"],
                                      center=args["center"], scale=args["scale"])
    init_(args["gamma_initializer"], module.gamma)
    init_(args["beta_initializer"], module.beta)
    return module, shape


def _embedding_mask(args: dict[str, Any]) -> str:
    return "produce" if args["mask_zero"] else "drop"


_AFFINE = {
    "epsilon": Arg(A.real(0.0, min_open=True), 1e-3),
    "center": Arg(A.boolean, True),
    "scale": Arg(A.boolean, True),
    **weight_args("beta", "zeros"),
    **weight_args("gamma", "ones"),
}
_RATE = {"rate": Arg(A.real(0.0, 1.0, max_open=True)), "seed": Arg(A.anything, None)}
_MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")

CORE_TYPES: list[LayerType] = [
    layer_type(
        "Input", "input",
        {
            "shape": Arg(A.shape, None),
            "batch_shape": Arg(A.batch_shape, None),
            "batch_input_shape": Arg(A.batch_shape, None),
            "batch_size": Arg(A.optional(A.integer(min=1)), None),
            "dtype": Arg(A.anything, None),
            "sparse": Arg(A.false_only("sparse tensors are not supported"), False),
            "ragged": Arg(A.false_only("ragged tensors are not supported"), False),
            "optional": Arg(A.boolean, False),
            "name": Arg(A.layer_name, None),
        },
        None,
        validate=_input_validate,
    ),
    layer_type("Dense", "dense",
               {"units": Arg(A.integer(min=1)), **KERNEL_ARGS,
                "quantization_config": Arg(A.none_only("quantized layers are not supported"),
                                           None),
                "lora_rank": Arg(A.none_only("LoRA layers are not supported"), None)},
               _build_dense, "channels_last", mask="keep"),
    layer_type("Activation", "activation", {"activation": Arg(A.activation)},
               _build_activation, mask="keep"),
    layer_type("ReLU", "re_lu",
               {"max_value": Arg(A.optional(A.real(0.0)), None),
                "negative_slope": Arg(A.real(0.0), 0.0), "threshold": Arg(A.real(), 0.0)},
               _build_relu, mask="keep"),
    layer_type("ELU", "elu", {"alpha": Arg(A.real(), 1.0)}, _build_elu, mask="keep"),
    layer_type("PReLU", "p_re_lu",
               {**weight_args("alpha", "zeros"), "shared_axes": Arg(_shared_axes, None)},
               _build_prelu, "channels_last", mask="keep"),
    layer_type("LeakyReLU", "leaky_re_lu",
               {"negative_slope": Arg(A.real(0.0), 0.3),
                "alpha": Arg(A.optional(A.real(0.0)), None)},
               _build_leaky_relu, validate=_leaky_validate, mask="keep"),
    layer_type("Softmax", "softmax", {"axis": Arg(A.keras_axes, -1)}, _build_softmax,
               mask="keep"),
    layer_type("Dropout", "dropout",
               {**_RATE, "noise_shape": Arg(_noise_shape, None)},
               _build_dropout, mask="keep"),
    layer_type("GaussianNoise", "gaussian_noise",
               {"stddev": Arg(A.real(0.0)), "seed": Arg(A.anything, None)},
               _build_gaussian_noise, mask="keep"),
    layer_type("GaussianDropout", "gaussian_dropout", {**_RATE}, _build_gaussian_dropout,
               mask="keep"),
    layer_type("SpatialDropout1D", "spatial_dropout1d", {**_RATE}, _spatial_dropout(3),
               "channels_first"),
    layer_type("SpatialDropout2D", "spatial_dropout2d",
               {**_RATE, "data_format": Arg(A.data_format, "channels_last")},
               _spatial_dropout(4), "channels_first"),
    layer_type("SpatialDropout3D", "spatial_dropout3d",
               {**_RATE, "data_format": Arg(A.data_format, "channels_last")},
               _spatial_dropout(5), "channels_first"),
    layer_type("Flatten", "flatten", {"data_format": Arg(A.data_format, "channels_last")},
               _build_flatten, "channels_last"),
    layer_type("Reshape", "reshape", {"target_shape": Arg(_target_shape)}, _build_reshape,
               "channels_last"),
    layer_type("Permute", "permute", {"dims": Arg(_permutation)}, _build_permute,
               "channels_last"),
    layer_type("RepeatVector", "repeat_vector", {"n": Arg(A.integer(min=1))},
               _build_repeat_vector, "channels_last"),
    layer_type("Identity", "identity", {}, _build_identity, mask="keep"),
    layer_type("Rescaling", "rescaling",
               {"scale": Arg(_number_or_list), "offset": Arg(_number_or_list, 0.0)},
               _build_rescaling, mask="keep"),
    layer_type("Normalization", "normalization",
               {"axis": Arg(A.optional(A.keras_axes), -1),
                "mean": Arg(A.optional(_number_or_list), None),
                "variance": Arg(A.optional(_number_or_list), None),
                "invert": Arg(A.boolean, False)},
               _build_normalization, "channels_last", validate=_normalization_validate,
               mask="keep"),
    layer_type("Masking", "masking", {"mask_value": Arg(A.real(), 0.0)}, _build_masking,
               "channels_last", mask="produce"),
    layer_type("Embedding", "embedding",
               {"input_dim": Arg(A.integer(min=1)), "output_dim": Arg(A.integer(min=1)),
                **weight_args("embeddings", "random_uniform"),
                "activity_regularizer": Arg(_NO_ACTIVITY, None),
                "mask_zero": Arg(A.boolean, False),
                "input_length": Arg(A.optional(A.integer(min=1)), None),
                "sparse": Arg(A.false_only("sparse gradients are not supported"), False),
                "quantization_config": Arg(A.none_only("quantized layers are not supported"),
                                           None),
                "lora_rank": Arg(A.none_only("LoRA layers are not supported"), None)},
               _build_embedding, "channels_last", mask=_embedding_mask),
    *[layer_type(name, name.lower(), {}, _merge(name.lower(), name), inputs=None, mask="keep")
      for name in _MERGES],
    # keras.applications' InceptionResNetV2 residual: x0 + x1 * scale
    layer_type("CustomScaleLayer", "custom_scale_layer", {"scale": Arg(A.real())},
               _build_custom_scale, inputs=None, mask="keep"),
    layer_type("Concatenate", "concatenate", {"axis": Arg(A.integer(), -1)},
               _build_concatenate, inputs=None, mask="keep"),
    layer_type("LayerNormalization", "layer_normalization",
               {"axis": Arg(A.keras_axes, -1), **_AFFINE, "rms_scaling": Arg(A.boolean, False)},
               _build_layer_normalization, "channels_last", mask="keep"),
    layer_type("GroupNormalization", "group_normalization",
               {"groups": Arg(A.integer(min=1), 32), "axis": Arg(A.integer(), -1), **_AFFINE},
               _build_group_normalization, "channels_first", mask="keep"),
]
