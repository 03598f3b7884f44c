r"""Keras's other normalization layers: LayerNormalization, GroupNormalization, Normalization.

- **LayerNormalization** over the kept-by-Keras ``axis`` (one or several) of each
  sample: :math:`y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta`, with
  :math:`\mu, \sigma^2` the mean and biased variance over those axes, ``gamma`` and
  ``beta`` of their shape. ``rms_scaling=True`` is Keras's variant:
  :math:`y = \gamma x / \sqrt{\sigma^2 + \epsilon}` (the *centered* variance, no
  centering of ``x``, no ``beta``) — exactly what Keras 3 computes.
- **GroupNormalization**: the channels split into ``groups`` consecutive groups; each
  sample's group is normalized over its channels and spatial positions, then the
  per-channel ``gamma``/``beta`` apply.
- **Normalization** (preprocessing, adapted): :math:`y = (x - m) / \max(\sqrt{v}, 10^{-7})`
  with the ``mean``/``variance`` the layer was adapted to (Keras's weights) or given;
  ``invert=True`` computes :math:`m + x \max(\sqrt{v}, 10^{-7})`.

The modules work on the layout the model gives them: LayerNormalization and
Normalization on channel-last tensors, GroupNormalization on channel-first ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupNormalization", "LayerNormalization", "Normalization"]

_KERAS_EPSILON = 1e-7  # keras.config.epsilon(), Normalization's floor on the std


class LayerNormalization(nn.Module):
    """Keras LayerNormalization over ``axes`` (of the channel-last tensor); see the module doc.

    ``gamma``/``beta`` have the sizes of those axes (Keras's weight shapes).
    """

    def __init__(self, sizes: tuple[int, ...], axes: tuple[int, ...], *, epsilon: float,
                 center: bool, scale: bool, rms_scaling: bool) -> None:
        super().__init__()
        self.axes, self.epsilon, self.rms_scaling = axes, epsilon, rms_scaling
        gamma = nn.Parameter(torch.empty(sizes)) if scale or rms_scaling else None
        beta = nn.Parameter(torch.empty(sizes)) if center and not rms_scaling else None
        self.register_parameter("gamma", gamma)
        self.register_parameter("beta", beta)

    def _broadcast(self, w: Tensor | None, rank: int) -> Tensor | None:
        if w is None:
            return None
        shape = [1] * rank
        for axis, size in zip(self.axes, w.shape, strict=True):
            shape[axis] = size
        return w.reshape(shape)

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=self.axes, keepdim=True)
        var = (x - mean).square().mean(dim=self.axes, keepdim=True)  # biased
        inv = torch.rsqrt(var + self.epsilon)
        gamma, beta = self._broadcast(self.gamma, x.dim()), self._broadcast(self.beta, x.dim())
        y = x * inv if self.rms_scaling else (x - mean) * inv
        if gamma is not None:
            y = y * gamma
        return y if beta is None else y + beta

    def extra_repr(self) -> str:
        return f"axes={self.axes}, epsilon={self.epsilon}, rms_scaling={self.rms_scaling}"


class GroupNormalization(nn.Module):
    """Keras GroupNormalization on channel-first ``(N, C, *)``; see the module doc."""

    def __init__(self, channels: int, groups: int, *, epsilon: float, center: bool,
                 scale: bool) -> None:
        super().__init__()
        self.groups, self.epsilon = groups, epsilon
        self.register_parameter("gamma", nn.Parameter(torch.empty(channels)) if scale else None)
        self.register_parameter("beta", nn.Parameter(torch.empty(channels)) if center else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.groups, self.gamma, self.beta, self.epsilon)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, epsilon={self.epsilon}"


class Normalization(nn.Module):
    """Keras Normalization with fixed statistics; see the module doc.

    ``mean``/``variance`` are buffers of Keras's weight shape (the kept axes);
    ``shape`` broadcasts them against the channel-last input. Adapted layers also
    keep Keras's ``count`` (bookkeeping, no effect on the output; a float buffer so that
    :func:`bnlab.models.count_params` counts it like Keras does).
    """

    def __init__(self, mean: Tensor, variance: Tensor, shape: tuple[int, ...], *,
                 invert: bool, adapted: bool) -> None:
        super().__init__()
        self.shape, self.invert, self.adapted = shape, invert, adapted
        self.register_buffer("mean", mean, persistent=adapted)
        self.register_buffer("variance", variance, persistent=adapted)
        self.register_buffer("count", torch.zeros(()), persistent=adapted)

    def forward(self, x: Tensor) -> Tensor:
        mean = self.mean.reshape(self.shape).to(x.dtype)
        std = self.variance.reshape(self.shape).to(x.dtype).sqrt().clamp_min(_KERAS_EPSILON)
        return mean + x * std if self.invert else (x - mean) / std

    def extra_repr(self) -> str:
        return f"invert={self.invert}, adapted={self.adapted}"
