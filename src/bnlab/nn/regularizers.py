r"""Keras weight regularizers: a penalty added to the training loss.

``l1(l1=0.01)``: :math:`\lambda_1 \sum |w|`; ``l2(l2=0.01)``: :math:`\lambda_2 \sum w^2`
(Keras has no 1/2); ``l1_l2(l1=0.01, l2=0.01)``: both. Layers report the sum of
their penalties with ``regularization_loss()``; the trainer adds it to the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bnlab.nn.keras_objects import Spec, resolve
from bnlab.nn.keras_objects import serialize as _serialize

Regularizer = Callable[[Tensor], Tensor]


class L1L2:
    r"""Penalty :math:`\lambda_1 \sum |w| + \lambda_2 \sum w^2`."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        if l1 < 0 or l2 < 0:
            raise ValueError(f"regularization factors must be >= 0; got l1={l1}, l2={l2}")
        self.l1, self.l2 = float(l1), float(l2)

    def __call__(self, w: Tensor) -> Tensor:
        penalty = torch.zeros((), dtype=w.dtype, device=w.device)
        if self.l1:
            penalty = penalty + self.l1 * w.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * w.square().sum()
        return penalty

    def __repr__(self) -> str:
        return f"l1_l2(l1={self.l1}, l2={self.l2})"


REGISTRY: dict[str, Callable[..., Regularizer]] = {
    "l1": lambda l1=0.01: L1L2(l1=l1),
    "l2": lambda l2=0.01: L1L2(l2=l2),
    "l1_l2": lambda l1=0.01, l2=0.01: L1L2(l1=l1, l2=l2),
}


def get(spec: Spec) -> Regularizer | None:
    """Resolve a regularizer spec; None stays None."""
    return resolve(spec, REGISTRY, "regularizer")


def serialize(spec: Spec) -> dict | None:
    """Keras 3's serialized form of a regularizer spec (see :func:`bnlab.nn.keras_objects.serialize`)."""
    return _serialize(spec, REGISTRY, "regularizer")
