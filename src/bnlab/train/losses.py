"""Losses with Keras 3's names and numerics, on probabilities (Keras's ``from_logits=False``).

The models of the lab end in ``sigmoid`` (one unit) or ``softmax`` (``C`` units), so every
loss here takes probabilities, clips them to ``[eps, 1 - eps]`` with ``eps = 1e-7`` as Keras
does, and returns the mean over the batch (Keras's ``"sum_over_batch_size"`` reduction).
The clipping matters: a saturated sigmoid gives a finite loss and a zero gradient, exactly
as in Keras, where ``F.binary_cross_entropy`` alone would give 100 and a huge gradient.
A NaN or infinite prediction gives a NaN or infinite loss, never an exception: training
then reports the run as diverged.

Targets may be class ids ``(N,)`` (what :class:`bnlab.data.Dataset` stores) or already in
the output's shape; each loss says how it converts them.

``reduction="none"`` returns the per-sample losses ``(N,)`` instead of their mean (Keras's
``reduction=None``): a stack of replicas computes all its losses in one call and takes
each replica's mean itself.

========================================  ============================================
name                                      per-sample loss (``p`` clipped probabilities)
========================================  ============================================
binary_crossentropy                       ``-mean_j(y log p + (1 - y) log(1 - p))``
categorical_crossentropy                  ``-sum_c y_c log(p_c / sum_k p_k)``
sparse_categorical_crossentropy           ``-log(p_y / sum_k p_k)``
mse                                       ``mean_j (y_j - p_j)^2``
========================================  ============================================
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "EPSILON",
    "LOSSES",
    "binary_crossentropy",
    "categorical_crossentropy",
    "get_loss",
    "list_losses",
    "mse",
    "sparse_categorical_crossentropy",
]

#: Keras's ``backend.epsilon()``: probabilities are clipped to ``[EPSILON, 1 - EPSILON]``.
EPSILON = 1e-7

Reduction = Literal["mean", "none"]


class LossFn(Protocol):
    """``loss(y_true, y_pred, reduction="mean")``: a scalar, or ``(N,)`` per sample with "none"."""

    def __call__(self, y_true: torch.Tensor, y_pred: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor: ...


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """The mean over the batch ("mean") or the per-sample values ("none")."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"loss reduction must be 'mean' or 'none'; got {reduction!r}")


def _target_like(y_true: torch.Tensor, y_pred: torch.Tensor, loss: str) -> torch.Tensor:
    """Targets as floats in ``y_pred``'s shape: ``(N,)`` ids become one-hot or a column."""
    if y_true.shape == y_pred.shape:
        return y_true.to(y_pred.dtype)
    if y_true.ndim == 1 and y_pred.ndim == 2 and y_true.shape[0] == y_pred.shape[0]:
        if y_pred.shape[1] == 1:  # (N,) -> (N, 1), like Keras's expand-to-same-rank
            return y_true.to(y_pred.dtype).unsqueeze(1)
        if y_true.dtype.is_floating_point:
            raise ValueError(
                f"{loss}: float targets of shape {tuple(y_true.shape)} do not match predictions "
                f"of shape {tuple(y_pred.shape)}; pass class ids (int) or targets shaped like the predictions"
            )
        return F.one_hot(y_true, y_pred.shape[1]).to(y_pred.dtype)
    raise ValueError(
        f"{loss}: targets of shape {tuple(y_true.shape)} do not fit predictions of shape "
        f"{tuple(y_pred.shape)}; pass class ids (N,) or targets shaped like the predictions"
    )


def binary_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Binary cross-entropy on probabilities, Keras's numerics.

    Equation (``p = clip(y_pred, 1e-7, 1 - 1e-7)``)::

        loss = mean_n mean_j -(y log p + (1 - y) log(1 - p))

    Shape:
        y_pred: (N, K) sigmoid probabilities (usually K = 1).
        y_true: (N,) 0/1 ids (for K = 1) or (N, K); returns a scalar ((N,) with "none").
    """
    target = _target_like(y_true, y_pred, "binary_crossentropy")
    p = torch.clamp(y_pred, EPSILON, 1.0 - EPSILON)
    if not target.requires_grad:  # the kernel has no derivative for the targets
        try:
            # PyTorch's kernel computes Keras's formula, log(1 - p) included, in one
            # operation forward and one backward (the formula written out takes about 30:
            # a tenth of a small model's training step).
            return _reduce(F.binary_cross_entropy(p, target, reduction="none").mean(dim=-1), reduction)
        except RuntimeError:
            pass  # it refuses a NaN prediction (clamp keeps NaN): a diverged run's NaN loss
    per_value = -(target * torch.log(p) + (1.0 - target) * torch.log(1.0 - p))
    return _reduce(per_value.mean(dim=-1), reduction)


def categorical_crossentropy(
    y_true: torch.Tensor, y_pred: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Categorical cross-entropy on probabilities, Keras's numerics.

    Equation (``q = clip(y_pred / sum_c y_pred, 1e-7, 1 - 1e-7)``)::

        loss = mean_n -sum_c y_c log q_c

    Shape:
        y_pred: (N, C) softmax probabilities.
        y_true: (N, C) one-hot (or soft) targets, or (N,) class ids (converted to one-hot).
    """
    target = _target_like(y_true, y_pred, "categorical_crossentropy")
    q = torch.clamp(y_pred / y_pred.sum(dim=-1, keepdim=True), EPSILON, 1.0 - EPSILON)
    return _reduce(-(target * torch.log(q)).sum(dim=-1), reduction)


def sparse_categorical_crossentropy(
    y_true: torch.Tensor, y_pred: torch.Tensor, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Sparse categorical cross-entropy on probabilities, Keras's numerics.

    Equation (``q`` as in :func:`categorical_crossentropy`)::

        loss = mean_n -log q_{y_n}

    Shape:
        y_pred: (N, C) softmax probabilities.
        y_true: (N,) int class ids in [0, C) (or (N, 1)).
    """
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true.squeeze(1)
    if y_true.dtype.is_floating_point or y_true.ndim != 1 or y_pred.ndim != 2:
        raise ValueError(
            f"sparse_categorical_crossentropy expects int class ids (N,) and predictions (N, C); "
            f"got targets {tuple(y_true.shape)} {y_true.dtype} and predictions {tuple(y_pred.shape)}; "
            f"use categorical_crossentropy for one-hot targets"
        )
    q = torch.clamp(y_pred / y_pred.sum(dim=-1, keepdim=True), EPSILON, 1.0 - EPSILON)
    return _reduce(F.nll_loss(torch.log(q), y_true, reduction="none"), reduction)


def mse(y_true: torch.Tensor, y_pred: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared error (Keras's ``mean_squared_error``).

    Equation::

        loss = mean_n mean_j (y_j - p_j)^2

    Shape:
        y_pred: (N, K).
        y_true: (N, K); or (N,) values for K = 1; or (N,) class ids for K > 1, converted
        to one-hot (Keras would broadcast them against every column instead).
    """
    target = _target_like(y_true, y_pred, "mse")
    return _reduce(((target - y_pred) ** 2).mean(dim=-1), reduction)


# Lowercase config names -> functions, in one place.
LOSSES: dict[str, LossFn] = {
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "mse": mse,
}


def list_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(LOSSES)


def get_loss(name: str) -> LossFn:
    """The loss registered as ``name``; an unknown name raises ValueError listing the valid ones."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from: {', '.join(list_losses())}")
    return LOSSES[name]
