"""Accuracy as Keras's ``metrics=["accuracy"]`` resolves it for our models.

- One output unit (sigmoid): binary accuracy, a sample is predicted 1 when ``p > 0.5``
  (strictly, like ``keras.metrics.binary_accuracy``).
- ``C > 1`` output units: the predicted class is ``argmax_c p_c`` (categorical accuracy;
  ties go to the first maximum, as in Keras).

Targets are class ids ``(N,)`` or targets shaped like the predictions (one-hot rows are
reduced with argmax; a (N, 1) column is read as 0/1).

``chance_accuracy`` is the bar a model must clear to have learned anything from its inputs:
the accuracy of always predicting the most frequent class.
"""

from __future__ import annotations

import torch

__all__ = ["chance_accuracy", "correct", "correct_count"]


def _labels(y_true: torch.Tensor, outputs: int) -> torch.Tensor:
    """The class ids accuracy compares predictions with (see the module docstring)."""
    if outputs == 1:
        return y_true.reshape(-1)
    return y_true.argmax(dim=1) if y_true.ndim == 2 else y_true


def correct(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Whether each sample is classified correctly, a bool tensor ``(N,)``.

    Shape:
        y_pred: (N, 1) probabilities or (N, C) class scores.
        y_true: (N,) class ids, (N, 1) 0/1 or (N, C) one-hot.
    """
    if y_pred.ndim != 2:
        raise ValueError(f"accuracy expects predictions of shape (N, K); got {tuple(y_pred.shape)}")
    predicted = (y_pred[:, 0] > 0.5).long() if y_pred.shape[1] == 1 else y_pred.argmax(dim=1)
    labels = _labels(y_true, y_pred.shape[1])
    if labels.shape != predicted.shape:
        raise ValueError(
            f"accuracy: targets of shape {tuple(y_true.shape)} do not fit predictions of "
            f"shape {tuple(y_pred.shape)}; pass class ids (N,)"
        )
    return predicted == labels.long()


def correct_count(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Number of correctly classified samples in the batch (:func:`correct`), a 0-dim int64 tensor.

    Returned as a tensor (not a Python int) so that a training loop can add it up without
    synchronising with the device on every step. Accuracy = sum of counts / samples.
    """
    return correct(y_true, y_pred).sum()


def chance_accuracy(y_true: torch.Tensor, outputs: int) -> float:
    """Accuracy of always predicting the most frequent class of ``y_true``: ``max_c n_c / N``.

    ``n_c`` counts the samples labelled ``c`` among the classes a model with ``outputs``
    units can predict (0/1 for one sigmoid unit, ``0..outputs-1`` otherwise), read from the
    targets as :func:`correct_count` reads them. No model that ignores its input does better
    on these targets, so a final accuracy at or below it means the model learned nothing.

    Example: labels ``[0, 1, 1, 2]`` and 3 outputs give 0.5.

    Raises:
        ValueError: ``outputs`` < 1 or no targets.
    """
    if outputs < 1 or len(y_true) == 0:
        raise ValueError(
            f"chance_accuracy needs outputs >= 1 and at least one target; got outputs={outputs}, "
            f"{len(y_true)} targets"
        )
    labels = _labels(y_true, outputs).long()
    classes = max(outputs, 2)
    counts = torch.bincount(labels[(labels >= 0) & (labels < classes)], minlength=classes)
    return int(counts.max()) / len(labels)
