"""Evaluation passes: inference-mode loss/accuracy and batch-statistics accuracy.

Both leave the model exactly as they found it (modes, buffers) and run without autograd.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from bnlab.train.batchnorm import batch_statistics, regularization_loss
from bnlab.train.losses import LossFn, get_loss
from bnlab.train.metrics import correct_count

__all__ = ["evaluate"]

NAN = float("nan")

#: Inference passes feed about this many input values per chunk (at least one batch).
INFERENCE_CHUNK_VALUES = 1_000_000


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter (CPU/default if none)."""
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def features_tensor(x: object, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A checked (N, ...) input array as a tensor of the model's dtype, converted once."""
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"{name} must be a non-empty numeric array (N, ...); got shape {x.shape} dtype {x.dtype}"
        )
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


def targets_tensor(
    y: object, n: int, name: str, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Targets as int64 class ids, or floats of the model's dtype; one per sample."""
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise ValueError(
            f"{name} must have one target per sample ({n}); got shape {y.shape}; "
            f"check that x and y match"
        )
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return torch.as_tensor(y.astype(np.int64), device=device)
    if np.issubdtype(y.dtype, np.floating):
        return torch.as_tensor(np.ascontiguousarray(y), dtype=dtype, device=device)
    raise ValueError(f"{name} must hold int class ids or float targets; got dtype {y.dtype}")


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` covering ``range(n)``; the last may be shorter."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def inference_chunk(x: torch.Tensor, batch_size: int) -> int:
    """Chunk size for inference passes: about ``INFERENCE_CHUNK_VALUES`` inputs, >= batch_size.

    Inference results do not depend on the chunking (samples are independent), so big
    chunks only save Python overhead.
    """
    per_sample = max(1, math.prod(x.shape[1:]))
    return max(batch_size, INFERENCE_CHUNK_VALUES // per_sample)


@torch.no_grad()
def inference_metrics(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, chunk: int
) -> tuple[float, float]:
    """(loss, accuracy) over ``(x, y)`` in inference mode (``model.eval()``).

    ``loss = sum_chunks(n_chunk * loss_chunk) / N + BN regularization loss``, which is what
    Keras's ``evaluate`` reports. Accuracy is NaN when any output is non-finite (a
    diverged model's "predictions" mean nothing). The modes are restored afterwards.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        finite = torch.ones((), dtype=torch.bool, device=x.device)
        for s in chunks(x.shape[0], chunk):
            out = model(x[s])
            total += loss_fn(y[s], out).double() * out.shape[0]
            correct += correct_count(y[s], out)
            finite &= torch.isfinite(out).all()
        reg = regularization_loss(model.modules())
        loss = (total / x.shape[0] + (reg.double() if reg is not None else 0.0)).item()
        accuracy = correct.item() / x.shape[0] if bool(finite) else NAN
    finally:
        for m, mode in modes:
            m.training = mode
    return loss, accuracy


@torch.no_grad()
def batch_statistics_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int
) -> float:
    """Accuracy over ``x[order]`` in batches of ``batch_size``, BN using batch statistics.

    Nothing in the model changes (see :func:`bnlab.train.batch_statistics`). A trailing
    batch of one sample is skipped (one sample has no batch variance). NaN when the
    outputs are non-finite or a BN layer with ``on_nonfinite="raise"`` refuses a batch.
    """
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    finite = torch.ones((), dtype=torch.bool, device=x.device)
    seen = 0
    with batch_statistics(model):
        for s in chunks(x.shape[0], batch_size):
            idx = order[s]
            if idx.numel() < 2:
                continue
            try:
                out = model(x.index_select(0, idx))
            except FloatingPointError:
                return NAN
            correct += correct_count(y.index_select(0, idx), out)
            finite &= torch.isfinite(out).all()
            seen += idx.numel()
    if seen == 0 or not bool(finite):
        return NAN
    return correct.item() / seen


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, loss: str, batch_size: int = 32
) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``(x, y)`` in inference mode, like Keras's ``evaluate``.

    The loss includes the BN layers' regularization losses (as Keras reports it).
    ``batch_size`` is only the smallest chunk fed at once; results do not depend on it.

    Args:
        model: maps ``x`` to probabilities (N, K).
        x: (N, ...) inputs. y: (N,) class ids or targets shaped like the output.
        loss: a registered loss name.

    Returns:
        ``{"loss": float, "accuracy": float}``.

    Example::

        evaluate(model, data.x_test, data.y_test, loss="binary_crossentropy")
    """
    loss_fn = get_loss(loss)
    device, dtype = model_device_dtype(model)
    xt = features_tensor(x, "evaluate: x", dtype, device)
    yt = targets_tensor(y, xt.shape[0], "evaluate: y", dtype, device)
    value, accuracy = inference_metrics(model, xt, yt, loss_fn, inference_chunk(xt, batch_size))
    return {"loss": value, "accuracy": accuracy}
