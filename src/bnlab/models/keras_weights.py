"""Keras's weights of a built layer: ``get_keras_weights`` / ``set_keras_weights``.

For the module built for any layer type, the arrays are in the order of Keras 3's
``layer.weights`` (trainable and non-trainable), in Keras's shapes and layouts:
Dense kernel (in, units); Conv1D/2D/3D kernel (*k, in/groups, filters); Conv2DTranspose
kernel (*k, filters, in); DepthwiseConv2D (kh, kw, in, multiplier); LSTM/GRU/SimpleRNN
kernel (in, k*units), recurrent kernel (units, k*units); PReLU alpha (its input's shape,
shared axes 1); BatchNormalization gamma, beta, moving_mean, moving_variance (+ renorm's
moving_stddev, renorm_mean, renorm_stddev). Wrappers
(Bidirectional, TimeDistributed, SeparableConv2D's halves) give the flattened list.

One registry maps a module class to its :class:`KerasWeight` views; a module with
no parameters and no persistent floating-point buffers has no weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from bnlab.models import layers as L
from bnlab.models import norms, recurrent
from bnlab.nn import BatchNormalization

__all__ = ["KerasWeight", "get_keras_weights", "keras_weight_views", "set_keras_weights"]


@dataclass(frozen=True)
class KerasWeight:
    """One Keras weight of a module: its Keras name and the tensor that holds it.

    ``to_keras`` maps the tensor to Keras's layout, ``from_keras`` back (inverse).
    """

    name: str
    tensor: Tensor
    to_keras: Callable[[Tensor], Tensor] = lambda t: t
    from_keras: Callable[[Tensor], Tensor] = lambda t: t


def _transposed(name: str, tensor: Tensor) -> KerasWeight:
    return KerasWeight(name, tensor, lambda t: t.T, lambda t: t.T)


def _conv_kernel(name: str, tensor: Tensor) -> KerasWeight:
    """(out, in, *k) <-> Keras's (*k, in, out)."""
    rank = tensor.dim()
    to_keras = (*range(2, rank), 1, 0)
    from_keras = (rank - 1, rank - 2, *range(rank - 2))
    return KerasWeight(name, tensor, lambda t: t.permute(to_keras),
                       lambda t: t.permute(from_keras))


def _depthwise_kernel(name: str, tensor: Tensor, channels: int) -> KerasWeight:
    """(C*m, 1, kh, kw) <-> Keras's (kh, kw, C, m): output channel c*m + j."""
    kh, kw = tensor.shape[2:]
    multiplier = tensor.shape[0] // channels
    return KerasWeight(
        name, tensor,
        lambda t: t.permute(2, 3, 1, 0).reshape(kh, kw, channels, multiplier),
        lambda t: t.reshape(kh, kw, 1, channels * multiplier).permute(3, 2, 0, 1),
    )


def _bias(module: nn.Module) -> list[KerasWeight]:
    return [] if module.bias is None else [KerasWeight("bias", module.bias)]


def _affine(module: nn.Module) -> list[KerasWeight]:
    """gamma then beta, those that exist (Keras's order for LN and GN)."""
    return [KerasWeight(n, getattr(module, n)) for n in ("gamma", "beta")
            if getattr(module, n) is not None]


def _dense(m: L.Dense) -> list[KerasWeight]:
    return [_transposed("kernel", m.weight), *_bias(m)]


def _conv(m: L._Conv | L.Conv2DTranspose) -> list[KerasWeight]:
    return [_conv_kernel("kernel", m.weight), *_bias(m)]


def _depthwise(m: L.DepthwiseConv2D) -> list[KerasWeight]:
    return [_depthwise_kernel("depthwise_kernel", m.weight, m.in_channels), *_bias(m)]


def _separable(m: L.SeparableConv2D) -> list[KerasWeight]:
    return [
        _depthwise_kernel("depthwise_kernel", m.depthwise.weight, m.depthwise.in_channels),
        _conv_kernel("pointwise_kernel", m.pointwise.weight),
        *_bias(m.pointwise),
    ]


def _recurrent(m: recurrent._Recurrent) -> list[KerasWeight]:
    return [_transposed("kernel", m.weight_ih), _transposed("recurrent_kernel", m.weight_hh),
            *_bias(m)]


def _bidirectional(m: recurrent.Bidirectional) -> list[KerasWeight]:
    return [*keras_weight_views(m.forward_layer), *keras_weight_views(m.backward_layer)]


def _time_distributed(m: recurrent.TimeDistributed) -> list[KerasWeight]:
    return keras_weight_views(m.layer)


def _embedding(m: L.Embedding) -> list[KerasWeight]:
    return [KerasWeight("embeddings", m.weight)]


def _normalization(m: norms.Normalization) -> list[KerasWeight]:
    if not m.adapted:
        return []
    return [KerasWeight("mean", m.mean), KerasWeight("variance", m.variance),
            KerasWeight("count", m.count)]


_VIEWS: dict[type[nn.Module], Callable[..., list[KerasWeight]]] = {
    L.Dense: _dense,
    L.Conv1D: _conv,
    L.Conv2D: _conv,
    L.Conv3D: _conv,
    L.Conv2DTranspose: _conv,  # (in, filters, *k) <-> Keras's (*k, filters, in)
    L.DepthwiseConv2D: _depthwise,
    L.SeparableConv2D: _separable,
    L.Embedding: _embedding,
    L.PReLU: lambda m: [KerasWeight("alpha", m.alpha)],
    recurrent.LSTM: _recurrent,
    recurrent.GRU: _recurrent,
    recurrent.SimpleRNN: _recurrent,
    recurrent.Bidirectional: _bidirectional,
    recurrent.TimeDistributed: _time_distributed,
    norms.LayerNormalization: _affine,
    norms.GroupNormalization: _affine,
    norms.Normalization: _normalization,
}


def keras_weight_views(module: nn.Module) -> list[KerasWeight]:
    """The :class:`KerasWeight` views of ``module`` in Keras's order (BN excluded: it
    converts its own weights, see :meth:`bnlab.nn.BatchNormalization.get_keras_weights`).

    Raises:
        TypeError: a module with weights that no Keras layer type describes.
    """
    views = _VIEWS.get(type(module))
    if views is not None:
        return views(module)
    has_state = any(v.is_floating_point() for v in module.state_dict().values())
    if has_state:
        raise TypeError(
            f"no Keras weight layout for {type(module).__name__}; modules with Keras "
            f"weights: BatchNormalization, {', '.join(sorted(c.__name__ for c in _VIEWS))}"
        )
    return []


def get_keras_weights(module: nn.Module) -> list[np.ndarray]:
    """Keras's ``layer.weights`` of the module built for a layer, as numpy arrays.

    Example::

        >>> dense = build_model([{"type": "Dense", "units": 3}], (4,)).layer("dense")
        >>> [w.shape for w in get_keras_weights(dense)]
        [(4, 3), (3,)]
    """
    if isinstance(module, BatchNormalization):
        return module.get_keras_weights()
    out = []
    for view in keras_weight_views(module):
        value = view.to_keras(view.tensor.detach()).cpu().numpy().copy()
        out.append(value.astype(np.int64) if view.name == "count" else value)
    return out


def set_keras_weights(module: nn.Module, arrays: Sequence[np.ndarray | Tensor]) -> None:
    """Load Keras's ``layer.weights`` (order and shapes of :func:`get_keras_weights`).

    Raises:
        ValueError: a different number of arrays, or an array of another shape; the
            message names both.
    """
    if isinstance(module, BatchNormalization):
        module.set_keras_weights(arrays)
        return
    views = keras_weight_views(module)
    if len(arrays) != len(views):
        raise ValueError(
            f"{type(module).__name__} has {len(views)} Keras weights "
            f"({', '.join(v.name for v in views) or 'none'}); got {len(arrays)} arrays"
        )
    converted = []
    for view, array in zip(views, arrays, strict=True):
        expected = tuple(view.to_keras(view.tensor).shape)
        value = torch.as_tensor(np.asarray(array))
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{type(module).__name__} weight {view.name!r} has Keras shape {expected}; "
                f"got an array of shape {tuple(value.shape)}"
            )
        converted.append(view.from_keras(value).to(view.tensor.dtype))
    with torch.no_grad():
        for view, value in zip(views, converted, strict=True):
            view.tensor.copy_(value)
