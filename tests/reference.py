r"""Obviously-right float64 formulas for batch normalization, the yardstick of the tests.

Everything here is written for reading, not speed: the input is cast to float64,
the kept axes are moved to the end and the tensor is viewed as a matrix
``(M, C)`` — ``M`` values per statistic, ``C`` statistics — so each formula is a
plain column reduction. Torch float64 (not numpy) so that autograd gives
reference gradients of the same formulas.

Training output (biased batch variance, Ioffe & Szegedy 2015, Algorithm 1):

.. math::
    \mu_c = \frac{1}{M}\sum_i x_{ic},\quad
    \sigma^2_c = \frac{1}{M}\sum_i (x_{ic} - \mu_c)^2,\quad
    y_{ic} = \gamma_c \frac{x_{ic} - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c

Moving statistics, Keras convention (``momentum`` weighs the *old* value):
``new = momentum * old + (1 - momentum) * batch``; ``momentum=None`` is the
cumulative average ``old + (batch - old) / (t + 1)`` after ``t`` batches
(PyTorch's ``momentum=None``). The variance folded in is the biased batch
variance, or ``M / (M - 1)`` times it when ``unbiased`` (PyTorch).

Inference: the same transform with the moving statistics in place of the batch's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

F64 = torch.float64


def kept_tuple(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Sorted non-negative kept axes."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def to_matrix(x: Tensor, kept: tuple[int, ...]) -> Tensor:
    """View ``x`` as ``(M, C)``: reduced axes flattened into rows, kept axes into columns."""
    reduced = [d for d in range(x.dim()) if d not in kept]
    columns = 1
    for d in kept:
        columns *= x.shape[d]
    return x.permute(*reduced, *kept).reshape(-1, columns)


def from_matrix(m: Tensor, like_shape: Sequence[int], kept: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`to_matrix`."""
    reduced = [d for d in range(len(like_shape)) if d not in kept]
    order = [*reduced, *kept]
    permuted = m.reshape([like_shape[d] for d in order])
    inverse = [order.index(d) for d in range(len(like_shape))]
    return permuted.permute(*inverse)


def stat_shape(shape: Sequence[int], kept: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[d] for d in kept)


def mask_matrix(mask: Tensor, x_shape: Sequence[int], kept: tuple[int, ...]) -> Tensor:
    """The (M, C) weight matrix of a mask shaped like ``x`` without the kept axes."""
    full = mask.to(F64)
    for d in kept:
        full = full.unsqueeze(d)
    return to_matrix(full.expand(*x_shape), kept)


def moments(
    x: Tensor, axis: int | Sequence[int], mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Batch mean and *biased* variance per kept index, float64, shaped like the kept axes.

    With a mask (shape of ``x`` without the kept axes), False positions get weight 0.
    """
    kept = kept_tuple(axis, x.dim())
    m = to_matrix(x.to(F64), kept)
    w = torch.ones_like(m) if mask is None else mask_matrix(mask, x.shape, kept)
    total = w.sum(dim=0)
    mean = (w * m).sum(dim=0) / total
    variance = (w * (m - mean) ** 2).sum(dim=0) / total
    shape = stat_shape(x.shape, kept)
    return mean.reshape(shape), variance.reshape(shape)


def normalize(
    x: Tensor,
    mean: Tensor,
    variance: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    axis: int | Sequence[int],
    epsilon: float,
) -> Tensor:
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta``, float64, shape of ``x``."""
    kept = kept_tuple(axis, x.dim())
    m = to_matrix(x.to(F64), kept)
    y = (m - mean.to(F64).reshape(-1)) / torch.sqrt(variance.to(F64).reshape(-1) + epsilon)
    if gamma is not None:
        y = y * gamma.to(F64).reshape(-1)
    if beta is not None:
        y = y + beta.to(F64).reshape(-1)
    return from_matrix(y, x.shape, kept)


def training_output(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    axis: int | Sequence[int],
    epsilon: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Training-mode output: normalized with the batch's own mean and biased variance.

    Differentiable in float64: autograd through it gives the reference gradients.
    """
    mean, variance = moments(x, axis, mask)
    return normalize(x, mean, variance, gamma, beta, axis, epsilon)


def inference_output(
    x: Tensor,
    moving_mean: Tensor,
    moving_variance: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    axis: int | Sequence[int],
    epsilon: float,
) -> Tensor:
    """Inference-mode output: normalized with the moving statistics."""
    return normalize(x, moving_mean, moving_variance, gamma, beta, axis, epsilon)


def moving_update(
    moving_mean: Tensor,
    moving_variance: Tensor,
    batch_mean: Tensor,
    batch_variance: Tensor,
    *,
    momentum: float | None,
    count: int,
    batches_seen: int = 0,
    unbiased: bool = False,
) -> tuple[Tensor, Tensor]:
    """One moving-statistics update; ``batch_variance`` is the biased one."""
    batch_variance = batch_variance.to(F64)
    if unbiased:
        batch_variance = batch_variance * count / (count - 1)
    weight_old = batches_seen / (batches_seen + 1) if momentum is None else momentum
    new_mean = weight_old * moving_mean.to(F64) + (1 - weight_old) * batch_mean.to(F64)
    new_var = weight_old * moving_variance.to(F64) + (1 - weight_old) * batch_variance
    return new_mean, new_var


def values_per_statistic(shape: Sequence[int], axis: int | Sequence[int]) -> int:
    kept = kept_tuple(axis, len(shape))
    count = 1
    for d, n in enumerate(shape):
        if d not in kept:
            count *= n
    return count


def run_training(
    batches: Sequence[Tensor],
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    *,
    axis: int | Sequence[int],
    momentum: float | None,
    epsilon: float,
    unbiased: bool = False,
) -> tuple[list[Tensor], Tensor, Tensor]:
    """Outputs of a sequence of training steps and the moving statistics after them."""
    outputs = []
    mean, var = moving_mean.to(F64), moving_variance.to(F64)
    for t, x in enumerate(batches):
        outputs.append(training_output(x, gamma, beta, axis, epsilon))
        batch_mean, batch_var = moments(x, axis)
        mean, var = moving_update(
            mean, var, batch_mean, batch_var, momentum=momentum,
            count=values_per_statistic(x.shape, axis), batches_seen=t, unbiased=unbiased,
        )
    return outputs, mean, var
