"""Accuracy as Keras's ``metrics=["accuracy"]`` resolves it for our models.

- One output unit (sigmoid): binary accuracy, a sample is predicted 1 when ``p > 0.5``
  (strictly, like ``keras.metrics.binary_accuracy``).
- ``C > 1`` output units: the predicted class is ``argmax_c p_c`` (categorical accuracy;
  ties go to the first maximum, as in Keras).

Targets are class ids ``(N,)`` or targets shaped like the predictions (one-hot rows are
reduced with argmax; a (N, 1) column is read as 0/1).
"""

from __future__ import annotations

import torch

__all__ = ["correct_count"]


def correct_count(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Number of correctly classified samples in the batch, as a 0-dim int64 tensor.

    Returned as a tensor (not a Python int) so that a training loop can add it up without
    synchronising with the device on every step. Accuracy = sum of counts / samples.

    Shape:
        y_pred: (N, 1) probabilities or (N, C) class scores.
        y_true: (N,) class ids, (N, 1) 0/1 or (N, C) one-hot.
    """
    if y_pred.ndim != 2:
        raise ValueError(f"accuracy expects predictions of shape (N, K); got {tuple(y_pred.shape)}")
    if y_pred.shape[1] == 1:
        predicted = (y_pred[:, 0] > 0.5).long()
        labels = y_true.reshape(-1)
    else:
        predicted = y_pred.argmax(dim=1)
        labels = y_true.argmax(dim=1) if y_true.ndim == 2 else y_true
    if labels.shape != predicted.shape:
        raise ValueError(
            f"accuracy: targets of shape {tuple(y_true.shape)} do not fit predictions of "
            f"shape {tuple(y_pred.shape)}; pass class ids (N,)"
        )
    return (predicted == labels.long()).sum()
