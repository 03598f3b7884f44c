r"""Per-channel (count, mean, M2) moments and Chan's formula to merge them.

Synchronized statistics (one set of moments per rank) and population statistics
(one per batch) both need the mean and variance of data that arrives in parts.
Adding up sums of squares loses the variance to cancellation when the mean is
large; merging *centred* moments does not (Chan, Golub & LeVeque, 1979):

.. math::
    n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
    \bar x = \bar x_a + \delta \frac{n_b}{n},\quad
    M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n}

where :math:`M_2 = \sum_i (x_i - \bar x)^2`, so the biased variance is
:math:`M_2 / n` and the unbiased one :math:`M_2 / (n - 1)`. Moments are float64
tensors; merging happens in float64; every function returns new tensors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from bnlab.functional.axes import reduced_axes

__all__ = ["Moments", "merge_moments", "moments_of", "stack_merge"]


class Moments(NamedTuple):
    """Count, mean and centred sum of squares per statistic (float64).

    ``count`` is a 0-d tensor (every channel sees the same number of values);
    ``mean`` and ``m2`` have the statistic's shape, e.g. ``(C,)``.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor

    def variance(self, *, unbiased: bool = False) -> Tensor:
        """``m2 / n`` (biased) or ``m2 / (n - 1)`` (unbiased); 0 where too few values."""
        divisor = self.count - 1 if unbiased else self.count
        return self.m2 / divisor.clamp_min(1)


def moments_of(x: Tensor, kept: tuple[int, ...], mask: Tensor | None = None) -> Moments:
    r"""Moments of ``x`` per kept index, taken over every other axis.

    Two passes around the mean (a second pass corrects the first pass's rounding),
    so :math:`M_2` has no cancellation. They run in float32 (float64 for float64
    input; half precision is promoted) without a float64 copy of ``x``; the
    results are float64. ``mask`` (bool, the shape of ``x`` without the kept axes,
    or already broadcast to ``x``) leaves False positions out. An empty input gives
    count 0, mean 0 and M2 0.

    Shape: ``x`` any rank >= 2; ``mean``/``m2`` have the sizes of the kept axes.
    """
    dims = reduced_axes(kept, x.dim())
    stat = tuple(x.shape[d] for d in kept)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    values = x.detach().to(compute)
    if mask is None:
        n = x.numel() // max(1, _prod(stat))
        count = torch.tensor(float(n), dtype=torch.float64, device=x.device)
        if n == 0:
            zeros = torch.zeros(stat, dtype=torch.float64, device=x.device)
            return Moments(count, zeros, zeros.clone())
        first = values.mean(dim=dims, keepdim=True)
        centered = values - first
        residual = centered.mean(dim=dims, keepdim=True)
        # sum (x - mean)^2 = sum (x - first)^2 - n * residual^2, residual tiny.
        m2 = centered.square().sum(dim=dims) - n * residual.square().reshape(stat)
        return Moments(count, _add64(first, residual, stat), m2.clamp_min(0).to(torch.float64))
    weight = mask
    if weight.dim() != x.dim():
        for d in kept:
            weight = weight.unsqueeze(d)
    weight = weight.expand(x.shape).to(compute)
    per_channel = weight.sum(dim=dims, keepdim=True)
    count = per_channel.reshape(-1)[0] if per_channel.numel() else values.new_zeros(())
    safe = per_channel.clamp_min(1.0)
    values = torch.where(weight > 0, values, torch.zeros((), dtype=compute, device=x.device))
    first = values.sum(dim=dims, keepdim=True) / safe
    centered = (values - first) * weight
    residual = centered.sum(dim=dims, keepdim=True) / safe
    m2 = centered.square().sum(dim=dims) - (per_channel * residual.square()).reshape(stat)
    return Moments(count.reshape(()).to(torch.float64), _add64(first, residual, stat),
                   m2.clamp_min(0).to(torch.float64))


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan's pairwise formula: the moments of the union of the two parts."""
    count = a.count + b.count
    safe = count.clamp_min(1.0)
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / safe)
    m2 = a.m2 + b.m2 + delta.square() * (a.count * b.count / safe)
    return Moments(count, mean, m2)


def stack_merge(counts: Tensor, means: Tensor, m2s: Tensor) -> Moments:
    r"""Merge ``k`` parts at once: counts ``(k,)``, means and m2s ``(k, *stat)``.

    :math:`n = \sum_r n_r`, :math:`\bar x = \sum_r n_r \bar x_r / n`,
    :math:`M_2 = \sum_r M_{2,r} + n_r (\bar x_r - \bar x)^2` — the k-way form of
    Chan's formula (the deltas are taken from the merged mean, so nothing cancels).
    Parts with count 0 contribute nothing; all-empty gives zeros.
    """
    counts = counts.to(torch.float64)
    weights = counts.reshape(-1, *([1] * (means.dim() - 1)))
    total = counts.sum()
    mean = (weights * means).sum(dim=0) / total.clamp_min(1.0)
    m2 = (m2s + weights * (means - mean).square()).sum(dim=0)
    return Moments(total, mean, m2)


def _add64(first: Tensor, residual: Tensor, stat: tuple[int, ...]) -> Tensor:
    # In float32, a residual below half an ulp of the mean would vanish in the sum.
    return (first.to(torch.float64) + residual.to(torch.float64)).reshape(stat)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out
