r"""Keras weight constraints: a projection applied after each optimizer step.

For BN's vectors (``axis=0`` covers the whole vector):
``non_neg``: :math:`w \leftarrow \max(w, 0)`;
``unit_norm``: :math:`w / (\epsilon + \lVert w \rVert)`;
``max_norm(max_value=2)``: :math:`w \cdot \mathrm{clip}(\lVert w\rVert, 0, c) / (\epsilon + \lVert w\rVert)`;
``min_max_norm(min_value=0, max_value=1, rate=1)``: the norm is moved to
``rate * clip(n, min, max) + (1 - rate) * n``. :math:`\epsilon` is Keras's 1e-7.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bnlab.nn.keras_objects import Spec, resolve
from bnlab.nn.keras_objects import serialize as _serialize

Constraint = Callable[[Tensor], Tensor]
_EPSILON = 1e-7


def _norm(w: Tensor, axis: int) -> Tensor:
    return w.square().sum(dim=axis, keepdim=True).sqrt()


class NonNeg:
    """Clamp to >= 0."""

    def __call__(self, w: Tensor) -> Tensor:
        return w.clamp_min(0.0)


class UnitNorm:
    """Scale to unit L2 norm along ``axis``."""

    def __init__(self, axis: int = 0) -> None:
        self.axis = axis

    def __call__(self, w: Tensor) -> Tensor:
        return w / (_EPSILON + _norm(w, self.axis))


class MinMaxNorm:
    """Keep the L2 norm along ``axis`` in [min_value, max_value], moved at ``rate``."""

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: int = 0) -> None:
        if not 0 <= min_value <= max_value:
            raise ValueError(
                f"min_max_norm needs 0 <= min_value <= max_value; got {min_value}, {max_value}"
            )
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w: Tensor) -> Tensor:
        norm = _norm(w, self.axis)
        desired = self.rate * norm.clamp(self.min_value, self.max_value) + (1 - self.rate) * norm
        return w * (desired / (_EPSILON + norm))


REGISTRY: dict[str, Callable[..., Constraint]] = {
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "max_norm": lambda max_value=2.0, axis=0: MinMaxNorm(0.0, max_value, 1.0, axis),
    "min_max_norm": MinMaxNorm,
}


def get(spec: Spec) -> Constraint | None:
    """Resolve a constraint spec; None stays None."""
    return resolve(spec, REGISTRY, "constraint")


def apply_(w: Tensor, constraint: Constraint | None) -> None:
    """Project ``w`` in place (no autograd) when a constraint is set."""
    if constraint is not None:
        with torch.no_grad():
            w.copy_(constraint(w))


def serialize(spec: Spec) -> dict | None:
    """Keras 3's serialized form of a constraint spec (see :func:`bnlab.nn.keras_objects.serialize`)."""
    return _serialize(spec, REGISTRY, "constraint")
