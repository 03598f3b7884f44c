"""Activations by Keras name -> ``torch.nn.Module``.

One registry maps lowercase names to factories. Keras semantics where they differ
from PyTorch's defaults:

- ``softmax`` normalizes over the *channel* axis (Keras: the last axis). Inside a
  channel-first model that is axis 1 for images, so the factory takes the axis.
- ``gelu`` is the exact erf form (Keras ``activations.gelu(approximate=False)``).
- ``leaky_relu`` uses Keras's ``negative_slope=0.2`` (PyTorch's default is 0.01).
- ``elu`` alpha 1, ``selu`` the constants of Klambauer et al. (both frameworks agree).
- ``relu6`` is ``min(max(x, 0), 6)``; ``hard_sigmoid`` is Keras 3's ``relu6(x + 3) / 6``
  and ``hard_silu`` (alias ``hard_swish``) ``x * hard_sigmoid(x)``.
- ``linear`` and ``None`` are the identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "get_activation", "list_activations"]

_Factory = Callable[[int], nn.Module]

# name -> factory(channel_axis) -> module
ACTIVATIONS: dict[str, _Factory] = {
    "linear": lambda axis: nn.Identity(),
    "relu": lambda axis: nn.ReLU(),
    "sigmoid": lambda axis: nn.Sigmoid(),
    "tanh": lambda axis: nn.Tanh(),
    "softmax": lambda axis: nn.Softmax(dim=axis),
    "elu": lambda axis: nn.ELU(alpha=1.0),
    "selu": lambda axis: nn.SELU(),
    "gelu": lambda axis: nn.GELU(approximate="none"),
    "silu": lambda axis: nn.SiLU(),
    "swish": lambda axis: nn.SiLU(),
    "leaky_relu": lambda axis: nn.LeakyReLU(negative_slope=0.2),
    "softplus": lambda axis: nn.Softplus(),
    "relu6": lambda axis: nn.ReLU6(),
    "hard_sigmoid": lambda axis: nn.Hardsigmoid(),
    "hard_silu": lambda axis: nn.Hardswish(),
    "hard_swish": lambda axis: nn.Hardswish(),
    "softsign": lambda axis: nn.Softsign(),
    "mish": lambda axis: nn.Mish(),
    "exponential": lambda axis: _Exponential(),
    "log_softmax": lambda axis: nn.LogSoftmax(dim=axis),
}


class _Exponential(nn.Module):
    """Keras's ``exponential`` activation: ``exp(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.exp()


def list_activations() -> list[str]:
    """Sorted names accepted by :func:`get_activation` (plus ``None``)."""
    return sorted(ACTIVATIONS)


def get_activation(name: str | None, *, channel_axis: int = -1) -> nn.Module:
    """Return a fresh module for the Keras activation ``name``.

    Args:
        name: a name from :func:`list_activations` (case-insensitive) or ``None``
            (identity, like Keras's ``activation=None``).
        channel_axis: the axis ``softmax`` normalizes over; -1 for channel-last
            tensors, 1 for channel-first ones. Ignored by the element-wise activations.

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name is None:
        return nn.Identity()
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; choose from: {', '.join(list_activations())}"
        )
    return ACTIVATIONS[name.lower()](channel_axis)
