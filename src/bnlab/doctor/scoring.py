"""Loss and accuracy of a batch, for bnlab models (probabilities) and plain PyTorch models.

:class:`Scorer` turns a model's output and the targets into a summed loss and a
number of correct predictions. Without a ``loss``/``accuracy`` given it infers what
the output is, once, from the first batch it sees:

=====================  ======================================  ==============================
output                 read as                                 loss / prediction
=====================  ======================================  ==============================
(N, C), C > 1          probabilities when every row is >= 0    ``-log p_y`` (clipped at 1e-7,
                       and sums to 1 (bnlab's softmax models);  Keras) / ``argmax``
                       logits otherwise                        ``cross_entropy`` / ``argmax``
(N, 1) or (N,)         probabilities when all in [0, 1]        binary cross-entropy (clipped)
                       (sigmoid); logits otherwise             / ``p > 0.5``; with logits
                                                               ``z > 0``
=====================  ======================================  ==============================

Targets are class ids (N,), one-hot rows (N, C), or 0/1 values for one output unit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bnlab.train import get_loss

__all__ = ["AccuracyFn", "LossArg", "Scorer"]

LossArg = str | Callable[[Tensor, Tensor], Tensor] | None
AccuracyFn = Callable[[Tensor, Tensor], Tensor | float]
OutputKind = Literal["probabilities", "logits", "other"]

_CLIP = 1e-7  # Keras's epsilon: probabilities are clipped to [eps, 1 - eps]


class Scorer:
    """Summed loss and correct count per batch.

    Args:
        loss: None (infer from the output), a bnlab loss name (``"binary_crossentropy"``,
            ``"sparse_categorical_crossentropy"``, ...: Keras semantics on probabilities,
            called ``loss(y_true, y_pred)``) or a callable ``loss(outputs, targets)`` in
            PyTorch's order returning the batch mean.
        accuracy: None (infer) or a callable ``accuracy(outputs, targets)`` returning the
            fraction of correct predictions in the batch.
    """

    def __init__(self, loss: LossArg = None, accuracy: AccuracyFn | None = None) -> None:
        if isinstance(loss, str):
            keras_loss = get_loss(loss)
            self._loss: Callable[[Tensor, Tensor], Tensor] | None = (
                lambda out, y: keras_loss(y, out)
            )
        elif loss is None or callable(loss):
            self._loss = loss
        else:
            raise TypeError(
                f"doctor: loss must be None, a bnlab loss name or a callable(outputs, targets); "
                f"got {type(loss).__name__}"
            )
        if accuracy is not None and not callable(accuracy):
            raise TypeError(
                f"doctor: accuracy must be None or a callable(outputs, targets); got "
                f"{type(accuracy).__name__}"
            )
        self._accuracy = accuracy
        self.kind: OutputKind | None = None

    def score(self, out: Tensor, y: Tensor | None) -> tuple[float | None, float | None]:
        """``(summed loss, number correct)`` over the batch; None where not computable."""
        if y is None:
            return None, None
        n = out.shape[0]
        if self.kind is None:
            self.kind = _kind(out)
        loss = self._loss(out, y) if self._loss is not None else _auto_loss(out, y, self.kind)
        if self._accuracy is not None:
            correct: float | None = float(self._accuracy(out, y)) * n
        else:
            correct = _auto_correct(out, y, self.kind)
        return (None if loss is None else float(loss.double()) * n), correct


def _kind(out: Tensor) -> OutputKind:
    if out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1):
        finite = out[torch.isfinite(out)]
        if finite.numel() and bool(((finite >= 0) & (finite <= 1)).all()):
            return "probabilities"
        return "logits"
    if out.dim() == 2:
        rows = out.double()
        if bool((rows >= 0).all()) and bool(((rows.sum(1) - 1).abs() < 1e-3).all()):
            return "probabilities"
        return "logits"
    return "other"


def _class_ids(y: Tensor, classes: int) -> Tensor | None:
    if y.dim() == 2 and y.shape[1] == classes and classes > 1:
        return y.argmax(dim=1)
    y = y.reshape(-1)
    if y.dtype.is_floating_point:
        if not bool((y == y.round()).all()):
            return None
        y = y.long()
    return y.long()


def _auto_loss(out: Tensor, y: Tensor, kind: OutputKind) -> Tensor | None:
    if kind == "other":
        return None
    if out.dim() == 1 or out.shape[1] == 1:
        target = y.reshape(-1).to(torch.float64)
        z = out.reshape(-1).to(torch.float64)
        if kind == "probabilities":
            return F.binary_cross_entropy(z.clamp(_CLIP, 1 - _CLIP), target)
        return F.binary_cross_entropy_with_logits(z, target)
    ids = _class_ids(y, out.shape[1])
    if ids is None:
        return None
    if kind == "probabilities":
        p = out.to(torch.float64).clamp(_CLIP, 1 - _CLIP)
        p = p / p.sum(dim=1, keepdim=True)
        return F.nll_loss(p.log(), ids)
    return F.cross_entropy(out.to(torch.float64), ids)


def _auto_correct(out: Tensor, y: Tensor, kind: OutputKind) -> float | None:
    if kind == "other":
        return None
    if not bool(torch.isfinite(out).all()):
        return float("nan")  # a diverged model's "predictions" mean nothing
    if out.dim() == 1 or out.shape[1] == 1:
        threshold = 0.5 if kind == "probabilities" else 0.0
        predicted = (out.reshape(-1) > threshold).long()
        return float((predicted == y.reshape(-1).long()).sum())
    ids = _class_ids(y, out.shape[1])
    if ids is None:
        return None
    return float((out.argmax(dim=1) == ids).sum())
