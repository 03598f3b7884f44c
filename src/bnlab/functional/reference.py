r"""The paper's Algorithm 1 with its closed-form backward pass, kept readable.

This is the yardstick the fast paths are tested against; it is not tuned for
speed. The input is viewed as a matrix ``(M, C)``: ``M`` values per statistic
(every reduced position) and ``C`` statistics (every kept index).

Forward, per column:

.. math::
    \mu = \frac{1}{M}\sum_i x_i,\quad
    \sigma^2 = \frac{1}{M}\sum_i (x_i - \mu)^2,\quad
    \hat x_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}},\quad
    y_i = \gamma \hat x_i + \beta

Backward, with :math:`g_i = \partial L / \partial y_i`:

.. math::
    \frac{\partial L}{\partial \beta} = \sum_i g_i,\quad
    \frac{\partial L}{\partial \gamma} = \sum_i g_i \hat x_i,\quad
    \frac{\partial L}{\partial x_i} = \frac{\gamma}{M\sqrt{\sigma^2+\epsilon}}
      \Big(M g_i - \sum_j g_j - \hat x_i \sum_j g_j \hat x_j\Big)

Reference: Ioffe & Szegedy (2015), Algorithm 1 and Section 3.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnlab.functional.axes import reduced_axes


class ReferenceBatchNorm(torch.autograd.Function):
    """Training-mode batch normalization on a matrix ``(M, C)`` with an explicit backward.

    ``forward(x, gamma, beta, epsilon) -> (y, mean, biased_variance)``; ``gamma`` and
    ``beta`` are ``(C,)`` tensors (pass ones/zeros for "no scale/offset"). Mean and
    variance are returned for the moving-statistics update and carry no gradient.
    """

    @staticmethod
    def forward(x: Tensor, gamma: Tensor, beta: Tensor, epsilon: float) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        mean = x.mean(dim=0)
        centered = x - mean
        variance = centered.square().mean(dim=0)
        inv_std = torch.rsqrt(variance + epsilon)
        x_hat = centered * inv_std
        return x_hat * gamma + beta, mean, variance

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, gamma, _beta, epsilon = inputs
        _y, mean, variance = output
        inv_std = torch.rsqrt(variance + epsilon)
        ctx.save_for_backward(x, gamma, mean, inv_std)
        ctx.mark_non_differentiable(mean, variance)

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, gamma, mean, inv_std = ctx.saved_tensors
        m = x.shape[0]
        x_hat = (x - mean) * inv_std
        grad_beta = grad_y.sum(dim=0)
        grad_gamma = (grad_y * x_hat).sum(dim=0)
        grad_x = (gamma * inv_std / m) * (m * grad_y - grad_beta - x_hat * grad_gamma)
        return grad_x, grad_gamma, grad_beta, None


def reference_batch_norm_train(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    kept: tuple[int, ...],
    epsilon: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run :class:`ReferenceBatchNorm` on any layout by viewing it as ``(M, C)``.

    Returns ``(y, mean, biased_variance)`` with ``y`` in the layout of ``x`` and the
    statistics shaped like the kept axes.
    """
    dims = reduced_axes(kept, x.dim())
    stat_shape = tuple(x.shape[d] for d in kept)
    channels = 1
    for n in stat_shape:
        channels *= n
    # Reduced axes first, kept axes last: (M, C).
    permuted = x.permute(*dims, *kept)
    matrix = permuted.reshape(-1, channels)
    ones = torch.ones(channels, dtype=x.dtype, device=x.device)
    g = ones if gamma is None else gamma.reshape(channels)
    b = torch.zeros_like(ones) if beta is None else beta.reshape(channels)
    y, mean, variance = ReferenceBatchNorm.apply(matrix, g, b, epsilon)
    inverse = [0] * x.dim()
    for position, d in enumerate((*dims, *kept)):
        inverse[d] = position
    y = y.reshape(permuted.shape).permute(*inverse)
    return y, mean.reshape(stat_shape), variance.reshape(stat_shape)
