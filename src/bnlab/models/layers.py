"""The torch modules behind the Keras layer types that PyTorch lacks in Keras form.

Spatial modules (convolutions, pooling, padding) work on channel-first tensors
``(N, C, *spatial)``; the model permutes Keras's channel-last tensors where needed
(see :mod:`bnlab.models.layout`). Weights use the PyTorch layout; Keras's layout is a
permutation of it (:mod:`bnlab.models.keras_weights` converts):

================  ==================================  ===============================
layer             here                                Keras
================  ==================================  ===============================
Dense             ``weight`` (units, in)              ``kernel`` (in, units)
Conv1D/2D/3D      ``weight`` (filters, in/g, *k)      ``kernel`` (*k, in/g, filters)
DepthwiseConv2D   ``weight`` (in*m, 1, kh, kw)        ``kernel`` (kh, kw, in, m)
SeparableConv2D   ``depthwise`` (in*m, 1, kh, kw),    ``depthwise_kernel`` (kh, kw, in,
                  ``pointwise`` (f, in*m, 1, 1)       m), ``pointwise_kernel`` (1, 1,
                                                      in*m, f)
================  ==================================  ===============================

Keras's 'same' padding (TensorFlow's rule, also that of Keras's torch backend) puts
the odd pixel after (bottom/right): :func:`same_padding`. It is computed from the
input size at each call, so unknown (``None``) sizes work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Embedding",
    "GaussianNoise",
    "GlobalPooling",
    "KerasReLU",
    "Masking",
    "MaxPooling2D",
    "Merge",
    "PReLU",
    "Pad",
    "Permute",
    "Pooling",
    "RepeatVector",
    "Rescaling",
    "Reshape",
    "Resizing",
    "ScaledSum",
    "SeparableConv2D",
    "Softmax",
    "UpSampling",
    "same_padding",
]

Padding = Literal["valid", "same", "causal"]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: ``(before, after)``.

    With the dilated kernel ``k = (kernel - 1) * dilation + 1``:
    ``out = ceil(size / stride)`` and the total padding is
    ``max((out - 1) * stride + k - size, 0)``, split with the extra pixel *after*
    (bottom/right), as TensorFlow and Keras do (PyTorch's ``padding='same'`` only
    exists for stride 1).
    """
    k = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _same_pads(
    spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    return [same_padding(*a) for a in zip(spatial, kernel, strides, dilation, strict=True)]


def _flat(pads: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """Per-axis ``(before, after)`` pairs -> F.pad's order (last axis first)."""
    return tuple(p for pair in reversed(pads) for p in pair)


class Dense(nn.Module):
    """Keras Dense: ``y = activation(x @ weight.T + bias)`` over the last axis.

    Shape: ``(N, *, in_features) -> (N, *, units)``.
    """

    def __init__(self, in_features: int, units: int, *, use_bias: bool, activation: nn.Module):
        super().__init__()
        self.in_features, self.units = in_features, units
        self.weight = nn.Parameter(torch.empty(units, in_features))
        self.register_parameter("bias", nn.Parameter(torch.empty(units)) if use_bias else None)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, units={self.units}, use_bias={self.bias is not None}"
        )


class _Conv(nn.Module):
    r"""A Keras convolution on channel-first input (1 to 3 spatial axes).

    .. math:: y = \mathrm{activation}(\mathrm{conv}(\mathrm{pad}(x), W) + b)

    with ``groups`` (Keras's ``groups``; ``in_channels`` for depthwise), ``strides``,
    ``dilation`` and ``padding`` 'valid', 'same' (see :func:`same_padding`) or 'causal'
    (Conv1D: ``(kernel - 1) * dilation`` zeros before the sequence).

    Shape: ``(N, C_in, *spatial) -> (N, out_channels, *spatial_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        *,
        strides: tuple[int, ...],
        padding: Padding,
        dilation: tuple[int, ...],
        groups: int,
        use_bias: bool,
        activation: nn.Module,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.strides, self.dilation = kernel_size, strides, dilation
        self.padding = padding
        shape = (out_channels, in_channels // groups, *kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.register_parameter(
            "bias", nn.Parameter(torch.empty(out_channels)) if use_bias else None
        )
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[len(self.kernel_size) - 1]
        pads = [(0, 0)] * len(self.kernel_size)
        if self.padding == "same":
            pads = _same_pads(x.shape[2:], self.kernel_size, self.strides, self.dilation)
        elif self.padding == "causal":  # Conv1D: the output at t sees inputs up to t
            pads = [((self.kernel_size[0] - 1) * self.dilation[0], 0)]
        if all(a == b for a, b in pads):
            y = conv(x, self.weight, self.bias, self.strides, [a for a, _ in pads],
                     self.dilation, self.groups)
        else:
            y = conv(F.pad(x, _flat(pads)), self.weight, self.bias, self.strides, 0,
                     self.dilation, self.groups)
        return self.activation(y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"strides={self.strides}, padding={self.padding!r}, dilation={self.dilation}, "
            f"groups={self.groups}, use_bias={self.bias is not None}"
        )


class Conv1D(_Conv):
    """Keras Conv1D on ``(N, C, L)``; see :class:`_Conv`."""


class Conv2D(_Conv):
    """Keras Conv2D on ``(N, C, H, W)``; see :class:`_Conv`."""


class Conv3D(_Conv):
    """Keras Conv3D on ``(N, C, D, H, W)``; see :class:`_Conv`."""


class DepthwiseConv2D(_Conv):
    """Keras DepthwiseConv2D: ``groups = in_channels``, ``depth_multiplier`` outputs each.

    Output channel ``c * multiplier + j`` is input channel ``c`` convolved with filter
    ``j`` (Keras's order).
    """


class Conv2DTranspose(nn.Module):
    r"""Keras Conv2DTranspose on ``(N, C_in, H, W)``: the gradient of a convolution.

    .. math:: y = \mathrm{activation}(\mathrm{crop}(\mathrm{conv\_transpose}(x, W)) + b)

    The full transposed convolution, of size ``(in - 1) * stride + (k - 1) * dilation + 1``
    per spatial axis, is cropped by ``crops[i] = (before, after)`` (zero-padded where
    negative), Keras's window for its ``padding`` and ``output_padding`` (see
    :func:`bnlab.models.types_conv.transpose_window`). ``weight``: ``(C_in, filters, kh, kw)``.

    Shape: ``(N, C_in, H, W) -> (N, filters, H_out, W_out)``.
    """

    def __init__(self, in_channels: int, filters: int, kernel_size: tuple[int, int], *,
                 strides: tuple[int, int], crops: tuple[tuple[int, int], ...],
                 dilation: tuple[int, int], use_bias: bool, activation: nn.Module) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, filters
        self.kernel_size, self.strides, self.dilation, self.crops = (
            kernel_size, strides, dilation, crops)
        self.weight = nn.Parameter(torch.empty(in_channels, filters, *kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.empty(filters)) if use_bias else None)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(x, self.weight, None, self.strides, 0, 0, 1, self.dilation)
        pads = [-c for before_after in reversed(self.crops) for c in before_after]
        y = F.pad(y, pads)  # negative: cropped
        if self.bias is not None:
            y = y + self.bias.view(-1, 1, 1)
        return self.activation(y)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"strides={self.strides}, crops={self.crops}, dilation={self.dilation}, "
                f"use_bias={self.bias is not None}")


class SeparableConv2D(nn.Module):
    """Keras SeparableConv2D: a depthwise convolution (no bias), then a 1x1 convolution.

    .. math:: y = \\mathrm{activation}(W_p * (W_d \\circledast \\mathrm{pad}(x)) + b)

    Shape: ``(N, C_in, H, W) -> (N, filters, H_out, W_out)``.
    """

    def __init__(self, depthwise: DepthwiseConv2D, pointwise: Conv2D) -> None:
        super().__init__()
        self.depthwise, self.pointwise = depthwise, pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class Pooling(nn.Module):
    """Keras MaxPooling/AveragePooling (1 to 3 spatial axes) on channel-first input.

    'same' padding as Keras's torch backend: when the padding is the same on both
    sides of every axis it is implicit (a max ignores it; an average divides by the
    number of real inputs); otherwise the edge values are replicated into it.

    Shape: ``(N, C, *spatial) -> (N, C, *spatial_out)``.
    """

    def __init__(
        self, kind: Literal["max", "avg"], pool_size: tuple[int, ...], *,
        strides: tuple[int, ...], padding: Padding,
    ) -> None:
        super().__init__()
        self.kind, self.pool_size, self.strides, self.padding = kind, pool_size, strides, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [(0, 0)] * len(self.pool_size)
        if self.padding == "same":
            pads = _same_pads(x.shape[2:], self.pool_size, self.strides, [1] * len(pads))
        implicit = [a for a, _ in pads]
        if any(a != b for a, b in pads):
            x, implicit = F.pad(x, _flat(pads), mode="replicate"), [0] * len(pads)
        axes = len(self.pool_size)
        if self.kind == "max":
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[axes - 1]
            return pool(x, self.pool_size, self.strides, implicit)
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[axes - 1]
        return pool(x, self.pool_size, self.strides, implicit, count_include_pad=False)

    def extra_repr(self) -> str:
        return (f"{self.kind}, pool_size={self.pool_size}, strides={self.strides}, "
                f"padding={self.padding!r}")


class MaxPooling2D(Pooling):
    """Keras MaxPooling2D on ``(N, C, H, W)``; see :class:`Pooling`."""

    def __init__(self, pool_size: tuple[int, int], *, strides: tuple[int, int],
                 padding: Padding) -> None:
        super().__init__("max", pool_size, strides=strides, padding=padding)


class GlobalPooling(nn.Module):
    r"""Keras GlobalAverage/MaxPooling1D/2D/3D: mean or max over the spatial axes.

    With a mask (GlobalAveragePooling1D after Masking or Embedding(mask_zero=True)),
    the average is over the unmasked steps: :math:`\sum_t m_t x_t / \sum_t m_t`.

    Shape: ``(N, C, *spatial)`` (``channels_first``) or ``(N, *spatial, C)`` ->
    ``(N, C)``, or with ``keepdims`` the input's rank with size-1 spatial axes.
    """

    def __init__(self, kind: Literal["max", "avg"], spatial: int, *, keepdims: bool,
                 channels_first: bool) -> None:
        super().__init__()
        self.kind, self.keepdims, self.channels_first = kind, keepdims, channels_first
        start = 2 if channels_first else 1
        self.axes = tuple(range(start, start + spatial))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "max":
            return x.amax(dim=self.axes, keepdim=self.keepdims)
        if mask is None:
            return x.mean(dim=self.axes, keepdim=self.keepdims)
        weights = mask.to(x.dtype).unsqueeze(1 if self.channels_first else -1)
        total = (x * weights).sum(dim=self.axes, keepdim=self.keepdims)
        return total / weights.sum(dim=self.axes, keepdim=self.keepdims)

    def extra_repr(self) -> str:
        return f"{self.kind}, axes={self.axes}, keepdims={self.keepdims}"


class Pad(nn.Module):
    """Keras ZeroPadding1D/2D/3D and Cropping1D/2D/3D on channel-first input: ``F.pad`` with
    ``amounts`` in its order (last axis first, ``(left, right, top, bottom)`` for images),
    positive to add zeros, negative to remove rows and columns.
    Shape: ``(N, C, *spatial) -> (N, C, *spatial + amounts per axis)``."""

    def __init__(self, amounts: tuple[int, ...]) -> None:
        super().__init__()
        self.amounts = amounts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.amounts)

    def extra_repr(self) -> str:
        return f"amounts={self.amounts}"


class UpSampling(nn.Module):
    """Keras UpSampling1D/2D/3D on channel-first input: each position repeated ``size[i]``
    times along spatial axis ``i`` (``"nearest"``), or bilinear interpolation between
    pixel centers (``"bilinear"``, images only, ``align_corners=False`` like Keras).
    Shape: ``(N, C, *spatial) -> (N, C, *(spatial * size))``."""

    def __init__(self, size: tuple[int, ...], interpolation: Literal["nearest", "bilinear"]) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "bilinear":
            target = (x.shape[2] * self.size[0], x.shape[3] * self.size[1])
            return F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        for axis, repeats in enumerate(self.size, start=2):
            x = x.repeat_interleave(repeats, dim=axis)
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}, interpolation={self.interpolation!r}"


#: Keras's interpolations -> F.interpolate's modes (Keras's torch backend).
_RESIZE_MODES = {"bilinear": "bilinear", "nearest": "nearest-exact", "bicubic": "bicubic"}


class Resizing(nn.Module):
    """Keras Resizing on channel-first images, as Keras's torch backend computes it.

    ``fit``: ``"stretch"`` resizes the whole image; ``"crop"`` first takes the largest
    centered window of the target's aspect ratio (Keras's ``crop_to_aspect_ratio``);
    ``"pad"`` first pads both sides with ``fill_value`` to that aspect ratio
    (``pad_to_aspect_ratio``). Then ``F.interpolate``: ``"bilinear"`` and ``"bicubic"``
    between pixel centers (``align_corners=False``, ``antialias`` when downscaling if
    set), ``"nearest"`` as ``"nearest-exact"``.
    Shape: ``(N, C, H, W) -> (N, C, height, width)``.
    """

    def __init__(self, size: tuple[int, int], interpolation: str, *, antialias: bool,
                 fit: Literal["stretch", "crop", "pad"], fill_value: float) -> None:
        super().__init__()
        self.size, self.interpolation, self.antialias = size, interpolation, antialias
        self.fit, self.fill_value = fit, fill_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (height, width), (target_h, target_w) = x.shape[2:], self.size
        if self.fit == "crop":
            crop_h = max(min(height, int(width * target_h / target_w)), 1)
            crop_w = max(min(width, int(height * target_w / target_h)), 1)
            top, left = int((height - crop_h) / 2), int((width - crop_w) / 2)
            x = x[:, :, top : top + crop_h, left : left + crop_w]
        elif self.fit == "pad":
            top = int((max(height, int(width * target_h / target_w)) - height) / 2)
            left = int((max(width, int(height * target_w / target_h)) - width) / 2)
            x = F.pad(x, (left, left, top, top), value=self.fill_value)
        smooth = self.interpolation != "nearest"
        return F.interpolate(x, size=self.size, mode=_RESIZE_MODES[self.interpolation],
                             align_corners=False if smooth else None,
                             antialias=self.antialias and smooth)

    def extra_repr(self) -> str:
        return (f"size={self.size}, interpolation={self.interpolation!r}, "
                f"antialias={self.antialias}, fit={self.fit!r}")


class PReLU(nn.Module):
    r"""Keras PReLU on channel-last input:
    :math:`y = \max(x, 0) - \alpha \max(-x, 0)` with a learned ``alpha`` per position
    and channel, shared (size 1) along Keras's ``shared_axes``.

    Shape: ``(N, *shape)`` unchanged; ``alpha``: ``shape`` with the shared axes 1 (Keras's
    layout, so its weight goes across as it is).
    """

    def __init__(self, alpha_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(alpha_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - self.alpha * torch.relu(-x)


class KerasReLU(nn.Module):
    r"""Keras's ReLU layer with ``max_value``, ``negative_slope`` and ``threshold``.

    .. math::
        y = \min(x \cdot [x > \theta], \text{max\_value}) - s \cdot \max(\theta - x, 0)

    (``x * [x > 0]`` is ``max(x, 0)`` when ``threshold`` :math:`\theta` is 0; no upper
    clip when ``max_value`` is None). Element-wise; any shape.
    """

    def __init__(self, max_value: float | None, negative_slope: float, threshold: float) -> None:
        super().__init__()
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope and self.max_value is None and not self.threshold:
            return F.leaky_relu(x, self.negative_slope)
        y = torch.where(x > self.threshold, x, 0.0) if self.threshold else F.relu(x)
        if self.max_value is not None:
            y = y.clamp(0.0, self.max_value)
        if self.negative_slope:
            y = y - self.negative_slope * F.relu(self.threshold - x)
        return y

    def extra_repr(self) -> str:
        return (f"max_value={self.max_value}, negative_slope={self.negative_slope}, "
                f"threshold={self.threshold}")


class Rescaling(nn.Module):
    """Keras Rescaling: ``y = x * scale + offset`` (scalars or per-channel vectors).

    ``scale`` and ``offset`` are buffers already shaped to broadcast against the
    tensor in its layout inside the model. Any shape.
    """

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("offset", offset, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.offset.to(x.dtype)


class Reshape(nn.Module):
    """Keras Reshape: ``(N, *in) -> (N, *target_shape)`` (one entry may be -1)."""

    def __init__(self, target_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.target_shape = target_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.target_shape)

    def extra_repr(self) -> str:
        return f"target_shape={self.target_shape}"


class Permute(nn.Module):
    """Keras Permute: the non-batch axes in the order ``dims`` (1-based, Keras's).

    Shape: ``(N, d_1, ..., d_k) -> (N, d_dims[0], ..., d_dims[k-1])``.
    """

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class RepeatVector(nn.Module):
    """Keras RepeatVector: each sample's vector ``n`` times. Shape: ``(N, F) -> (N, n, F)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, self.n, -1)

    def extra_repr(self) -> str:
        return f"n={self.n}"


class Dropout(nn.Module):
    """Keras Dropout and SpatialDropout: zero entries with probability ``rate`` in training.

    Kept entries are scaled by ``1 / (1 - rate)``; inference is the identity. With a
    ``noise_shape`` (Keras's argument, in the axis order of the tensor this module gets;
    None: the input's size there) one keep/drop draw covers every entry along its size-1
    axes: ``(None, None, 1, 1)`` on ``(N, C, H, W)`` drops whole channels (Keras's
    SpatialDropout2D), ``(None, 1, 1, 1)`` whole samples (EfficientNet's drop-connect).
    Draws from torch's RNG (not Keras's ``seed``).
    """

    def __init__(self, rate: float, *, noise_shape: tuple[int | None, ...] | None = None) -> None:
        super().__init__()
        self.rate, self.noise_shape = rate, noise_shape

    def mask_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of the keep/drop draw for an input of ``shape`` (with a noise shape)."""
        assert self.noise_shape is not None
        return tuple(n if s is None else s for n, s in zip(shape, self.noise_shape, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        if self.noise_shape is None:
            return F.dropout(x, self.rate, True)
        keep = x.new_empty(self.mask_shape(x.shape)).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, noise_shape={self.noise_shape}"


class GaussianNoise(nn.Module):
    r"""Keras GaussianNoise (``mode="add"``): :math:`x + \epsilon`,
    :math:`\epsilon \sim N(0, \text{stddev}^2)`; and GaussianDropout (``mode="multiply"``):
    :math:`x \cdot \epsilon`, :math:`\epsilon \sim N(1, \text{rate} / (1 - \text{rate}))`.

    A fresh draw per entry in training; inference is the identity. Draws from torch's RNG
    (not Keras's ``seed``). Shape: any, unchanged.
    """

    def __init__(self, stddev: float, mode: Literal["add", "multiply"]) -> None:
        super().__init__()
        self.stddev, self.mode = stddev, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stddev == 0:
            return x
        noise = torch.randn_like(x) * self.stddev
        return x + noise if self.mode == "add" else x * (noise + 1.0)

    def extra_repr(self) -> str:
        return f"stddev={self.stddev}, mode={self.mode!r}"


class ScaledSum(nn.Module):
    """Keras's CustomScaleLayer (InceptionResNetV2's residual): ``x0 + x1 * scale``.

    Shape: two tensors that broadcast against each other; the broadcast shape.
    """

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return inputs[0] + inputs[1] * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class Merge(nn.Module):
    """Keras Add/Subtract/Multiply/Average/Maximum/Minimum of several tensors.

    The inputs broadcast against each other (same rank; size-1 axes stretch).
    """

    def __init__(self, op: Literal["add", "subtract", "multiply", "average", "maximum",
                                   "minimum"]) -> None:
        super().__init__()
        self.op = op

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        y = inputs[0]
        for x in inputs[1:]:
            if self.op in ("add", "average"):
                y = y + x
            elif self.op == "subtract":
                y = y - x
            elif self.op == "multiply":
                y = y * x
            elif self.op == "maximum":
                y = torch.maximum(y, x)
            else:
                y = torch.minimum(y, x)
        return y / len(inputs) if self.op == "average" else y

    def extra_repr(self) -> str:
        return self.op


class Concatenate(nn.Module):
    """Keras Concatenate along ``dim`` (the axis inside the model)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(inputs), dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Masking(nn.Module):
    r"""Keras Masking: a step whose features all equal ``mask_value`` is masked.

    .. math:: m_t = \bigvee_f [x_{t,f} \ne v], \qquad y_t = m_t \, x_t

    Returns ``(y, m)``; layers that read masks (RNNs, BatchNormalization,
    GlobalAveragePooling1D) skip the masked steps. Shape: ``(N, T, F)`` -> same, mask
    ``(N, T)``.
    """

    def __init__(self, mask_value: float) -> None:
        super().__init__()
        self.mask_value = mask_value

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (x != self.mask_value).any(dim=-1)
        return x * mask.unsqueeze(-1).to(x.dtype), mask

    def extra_repr(self) -> str:
        return f"mask_value={self.mask_value}"


class Embedding(nn.Module):
    """Keras Embedding: integer ids -> rows of ``weight`` (input_dim, output_dim).

    With ``mask_zero`` id 0 is padding: returns ``(y, ids != 0)`` for the layers that
    read masks. Shape: ``(N, *) -> (N, *, output_dim)``; float ids are truncated like
    Keras's cast to int.
    """

    def __init__(self, input_dim: int, output_dim: int, *, mask_zero: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_dim, output_dim))
        self.mask_zero = mask_zero

    def forward(self, ids: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ids = ids.long()
        y = F.embedding(ids, self.weight)
        return (y, ids != 0) if self.mask_zero else y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, mask_zero={self.mask_zero}"


class Softmax(nn.Module):
    r"""Keras Softmax over one or several axes ``dims`` (the axes inside the model).

    .. math:: y = \exp(x - \operatorname{logsumexp}_{dims}(x))
    """

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.dims) == 1:
            return torch.softmax(x, dim=self.dims[0])
        return torch.exp(x - torch.logsumexp(x, dim=self.dims, keepdim=True))

    def extra_repr(self) -> str:
        return f"dims={self.dims}"
