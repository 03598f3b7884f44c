"""What :func:`bnlab.doctor.examine` measures on: data of many shapes as re-iterable batches.

Accepted ``data`` (and ``calibration``):

==============================================  ==============================================
value                                           batches
==============================================  ==============================================
:class:`bnlab.data.Dataset`                     evaluation: ``(x_test, y_test)``; calibration:
                                                ``(x_train, y_train)`` (the statistics the
                                                moving averages estimate come from training)
an ``(x, y)`` tuple of arrays or tensors        shuffled once with ``seed``, cut in batches
an array or tensor ``x`` alone                  the same, without labels (no accuracy/loss)
a ``torch.utils.data.Dataset``                  a DataLoader (shuffled with ``seed``)
an iterable of batches (a list, a DataLoader):  as given; a one-shot iterator is read once
tensors or ``(x, y, ...)`` tuples/lists         into a list
==============================================  ==============================================

Shuffling matters: training-mode (batch statistics) results depend on which samples
share a batch, and data stored class by class would give one-class batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bnlab.data import Dataset

__all__ = ["Batch", "Batches", "DataLike", "as_batches", "model_device_dtype", "split"]

Batch = tuple[Tensor, Tensor | None]
DataLike = Any  # see the module docstring


@dataclass(frozen=True)
class Batches:
    """A re-iterable source of ``(x, y or None)`` batches on the model's device.

    Attributes:
        name: what the data is, for the report (``"fashion6 test split"``).
        samples: number of samples when known.
        batch_size: the batch size when the batches are cut here (None: as given).
    """

    name: str
    samples: int | None
    batch_size: int | None
    _make: Callable[[], Iterator[Batch]]

    def __iter__(self) -> Iterator[Batch]:
        return self._make()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"name": self.name, "samples": self.samples, "batch_size": self.batch_size}


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device of the model's first tensor and its first floating parameter dtype."""
    device = torch.device("cpu")
    for tensor in (*model.parameters(), *model.buffers()):
        device = tensor.device
        break
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return device, p.dtype
    return device, torch.get_default_dtype()


def split(data: DataLike) -> tuple[DataLike, DataLike, str, str]:
    """``(evaluation, calibration, evaluation name, calibration name)`` for ``data``.

    A :class:`bnlab.data.Dataset` is evaluated on its test split and calibrated on
    its training split; anything else serves as both.
    """
    if isinstance(data, Dataset):
        return (
            (data.x_test, data.y_test),
            (data.x_train, data.y_train),
            f"{data.name} test split",
            f"{data.name} training split",
        )
    return data, data, "data", "data"


def as_batches(
    data: DataLike,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    max_batches: int | None = None,
) -> Batches:
    """Wrap ``data`` (see the module docstring) as :class:`Batches`.

    Floating inputs are cast to the model's ``dtype``; integer inputs (token ids) keep
    theirs. ``max_batches`` keeps only the first batches.

    Raises:
        TypeError: ``data`` is none of the accepted forms.
        ValueError: ``x`` and ``y`` disagree in length, or the data is empty.
    """
    if isinstance(data, Dataset):
        data = (data.x_test, data.y_test)
    if _is_array(data):
        return _tensor_batches(_tensor(data, "x"), None, batch_size, seed, device, dtype, name,
                               max_batches)
    if isinstance(data, tuple) and len(data) == 2 and all(_is_array(v) for v in data):
        x, y = _tensor(data[0], "x"), _tensor(data[1], "y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"doctor: x has {x.shape[0]} samples but y has {y.shape[0]}; pass (x, y) of "
                "equal length"
            )
        return _tensor_batches(x, y, batch_size, seed, device, dtype, name, max_batches)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        generator = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                             generator=generator)
        return _iterable_batches(loader, device, dtype, name, max_batches, len(data), batch_size)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | dict):
        if iter(data) is data:  # a generator: read once, keep for the several passes
            data = list(data)
        samples = None
        if isinstance(data, list | tuple):
            samples = sum(int(_split_batch(b, name)[0].shape[0]) for b in data)
        elif (max_batches is None and isinstance(data, torch.utils.data.DataLoader)
              and not data.drop_last):
            with suppress(TypeError):  # an IterableDataset may have no length
                samples = len(data.dataset)  # type: ignore[arg-type]
        return _iterable_batches(data, device, dtype, name, max_batches, samples, None)
    raise TypeError(
        "doctor: data must be a bnlab Dataset, (x, y) arrays/tensors, an array/tensor x, a "
        f"torch Dataset or an iterable of batches; got {type(data).__name__}"
    )


def _is_array(value: Any) -> bool:
    return isinstance(value, Tensor | np.ndarray)


def _tensor(value: Any, what: str) -> Tensor:
    t = value if isinstance(value, Tensor) else torch.as_tensor(np.ascontiguousarray(value))
    if t.dim() == 0 or t.shape[0] == 0:
        raise ValueError(f"doctor: {what} must have at least one sample (N, ...); got shape "
                         f"{tuple(t.shape)}")
    return t


def _to_model(x: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    return x.to(device=device, dtype=dtype) if x.dtype.is_floating_point else x.to(device)


def _tensor_batches(
    x: Tensor, y: Tensor | None, batch_size: int, seed: int, device: torch.device,
    dtype: torch.dtype, name: str, max_batches: int | None,
) -> Batches:
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x = _to_model(x, device, dtype)
    y = None if y is None else y.to(device)
    starts = range(0, n, batch_size)
    if max_batches is not None:
        starts = starts[:max_batches]

    def make() -> Iterator[Batch]:
        for start in starts:
            idx = order[start:start + batch_size].to(device)
            yield x.index_select(0, idx), None if y is None else y.index_select(0, idx)

    samples = min(n, len(starts) * batch_size)
    return Batches(name, samples, batch_size, make)


def _split_batch(batch: Any, name: str) -> Batch:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, tuple | list) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], y
    raise TypeError(
        f"doctor: {name}: expected batches of tensors or (x, y) tuples/lists of tensors; got "
        f"{type(batch).__name__}"
    )


def _iterable_batches(
    data: Iterable[Any], device: torch.device, dtype: torch.dtype, name: str,
    max_batches: int | None, samples: int | None, batch_size: int | None,
) -> Batches:
    def make() -> Iterator[Batch]:
        for i, batch in enumerate(data):
            if max_batches is not None and i >= max_batches:
                return
            x, y = _split_batch(batch, name)
            yield _to_model(x, device, dtype), None if y is None else y.to(device)

    return Batches(name, samples, batch_size, make)
