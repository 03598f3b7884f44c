"""The torch modules behind the Keras layer types that PyTorch lacks in Keras form.

All spatial modules work on channel-first tensors ``(N, C, H, W)``; the model
permutes Keras's channel-last input once (see ``sequential.py``). Weights use the
PyTorch layout; the Keras layout is the transpose:

========  ===============================  ====================================
layer     here                             Keras
========  ===============================  ====================================
Dense     ``weight`` (units, in)           ``kernel`` (in, units) = weight.T
Conv2D    ``weight`` (filters, in, kh, kw) ``kernel`` (kh, kw, in, filters)
LSTM      ``weight_ih`` (4u, in)           ``kernel`` (in, 4u) = weight_ih.T
          ``weight_hh`` (4u, u)            ``recurrent_kernel`` (u, 4u)
          ``bias`` (4u,)                   ``bias`` (4u,)
========  ===============================  ====================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LSTM",
    "Conv2D",
    "Dense",
    "MaxPooling2D",
    "ZeroPadding2D",
    "same_padding",
]

Pad4 = tuple[int, int, int, int]  # (left, right, top, bottom): the order of F.pad


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: ``(before, after)``.

    ``out = ceil(size / stride)``; the total padding is
    ``max((out - 1) * stride + kernel - size, 0)``, split with the extra pixel
    *after* (bottom/right), as TensorFlow and Keras do (PyTorch's
    ``padding='same'`` only exists for stride 1).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


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


class Conv2D(nn.Module):
    """Keras Conv2D on channel-first input: ``activation(conv(pad(x), weight) + bias)``.

    ``padding`` is the explicit ``(left, right, top, bottom)`` computed at build time
    (zeros for 'valid', :func:`same_padding` for 'same', asymmetric when needed).
    Shape: ``(N, C_in, H, W) -> (N, filters, H_out, W_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: tuple[int, int],
        *,
        strides: tuple[int, int],
        padding: Pad4,
        use_bias: bool,
        activation: nn.Module,
    ) -> None:
        super().__init__()
        self.in_channels, self.filters = in_channels, filters
        self.kernel_size, self.strides, self.padding = kernel_size, strides, padding
        self.weight = nn.Parameter(torch.empty(filters, in_channels, *kernel_size))
        self.register_parameter("bias", nn.Parameter(torch.empty(filters)) if use_bias else None)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.padding
        if left == right and top == bottom:
            y = F.conv2d(x, self.weight, self.bias, self.strides, padding=(top, left))
        else:
            y = F.conv2d(F.pad(x, self.padding), self.weight, self.bias, self.strides)
        return self.activation(y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.filters}, kernel_size={self.kernel_size}, "
            f"strides={self.strides}, padding={self.padding}, use_bias={self.bias is not None}"
        )


class MaxPooling2D(nn.Module):
    """Keras MaxPooling2D on channel-first input; 'same' padding never wins the max.

    Shape: ``(N, C, H, W) -> (N, C, H_out, W_out)``.
    """

    def __init__(self, pool_size: tuple[int, int], *, strides: tuple[int, int], padding: Pad4):
        super().__init__()
        self.pool_size, self.strides, self.padding = pool_size, strides, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding, value=-math.inf)
        return F.max_pool2d(x, self.pool_size, self.strides)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding}"


class ZeroPadding2D(nn.Module):
    """Keras ZeroPadding2D on channel-first input. Shape: ``(N, C, H, W) -> (N, C, H+t+b, W+l+r)``."""

    def __init__(self, padding: Pad4) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.padding)

    def extra_repr(self) -> str:
        return f"padding={self.padding}"


class LSTM(nn.Module):
    """Keras LSTM (one layer, batch first), gates in Keras's and PyTorch's order i, f, c, o.

    For each step ``t`` with ``z = x_t @ weight_ih.T + h @ weight_hh.T + bias``
    split into ``(i, f, g, o)``::

        i, f, o = recurrent_activation(i, f, o);  g = activation(g)
        c = f * c + i * g;  h = o * activation(c)

    One bias vector like Keras (``torch.nn.LSTM`` has two, ``bias_ih`` and
    ``bias_hh``, so its parameter count differs from Keras's). States start at zero.
    Not supported (Keras options): ``dropout``, ``recurrent_dropout``, masking,
    ``return_state``, ``go_backwards``, ``stateful``. The steps run in a Python loop
    (the input projection is one matmul for all steps): fine for the short sequences
    of the studies, slower than cuDNN for long ones.

    Shape: ``(N, T, in_features) -> (N, T, units)`` if ``return_sequences`` else
    ``(N, units)``.
    """

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        return_sequences: bool,
        use_bias: bool,
        activation: nn.Module,
        recurrent_activation: nn.Module,
    ) -> None:
        super().__init__()
        self.in_features, self.units, self.return_sequences = in_features, units, return_sequences
        self.weight_ih = nn.Parameter(torch.empty(4 * units, in_features))
        self.weight_hh = nn.Parameter(torch.empty(4 * units, units))
        self.register_parameter("bias", nn.Parameter(torch.empty(4 * units)) if use_bias else None)
        self.activation = activation
        self.recurrent_activation = recurrent_activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, steps, _ = x.shape
        xz = F.linear(x, self.weight_ih, self.bias)  # (N, T, 4u), all steps at once
        h = x.new_zeros(n, self.units)
        c = x.new_zeros(n, self.units)
        outputs = []
        for t in range(steps):
            z = xz[:, t] + F.linear(h, self.weight_hh)
            i, f, g, o = z.chunk(4, dim=1)
            i, f, o = (self.recurrent_activation(v) for v in (i, f, o))
            c = f * c + i * self.activation(g)
            h = o * self.activation(c)
            if self.return_sequences:
                outputs.append(h)
        return torch.stack(outputs, dim=1) if self.return_sequences else h

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, units={self.units}, "
            f"return_sequences={self.return_sequences}, use_bias={self.bias is not None}"
        )
