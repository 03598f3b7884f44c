"""Keras-style ``.npz`` files such as ``mnist.npz`` (``keras.datasets.mnist``'s download)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from bnlab.data.arrays import raw_to_dataset
from bnlab.data.cache import cached_arrays, file_signature
from bnlab.data.dataset import Dataset, DatasetError

__all__ = ["NPZ_KEYS", "load_npz"]

NPZ_KEYS: tuple[str, ...] = ("x_train", "y_train", "x_test", "y_test")


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(
                    f"dataset 'npz': {path} lacks the arrays {', '.join(missing)}; it holds "
                    f"{', '.join(npz.files) or 'no arrays'} (expected {', '.join(NPZ_KEYS)})"
                )
            return {k: npz[k] for k in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(
            f"dataset 'npz': {path} is not a readable .npz of plain arrays: {e}"
        ) from None


def load_npz(
    *,
    path: str | os.PathLike[str],
    flatten: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """A ``.npz`` with arrays ``x_train, y_train, x_test, y_test`` as a `Dataset`.

    This is the layout of Keras's ``mnist.npz`` (``~/.keras/datasets/mnist.npz``),
    ``fashion-mnist`` and similar files: ``x`` uint8 ``(N, H, W)`` or ``(N, H, W, C)``
    (scaled to ``k / 255`` in ``[0, 1]``, a channel axis added to 3-D arrays) or float
    (kept), ``y`` integer class ids ``(N,)``. The file is read with
    ``allow_pickle=False``: object arrays are refused, never executed.

    Args:
        path: the ``.npz`` file.
        flatten: one row per sample ``(N, H*W*C)``, for MLPs.
        limit_train, limit_test: keep only the first k rows of each split.
        class_names: names of classes 0, 1, ...; default ``"0", "1", ...``.

    Raises:
        DatasetError: when the file is missing, unreadable, lacks a key or holds bad arrays.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(
            f"dataset 'npz': path={os.fspath(path)!r} is not a file; give the .npz path"
        )
    raw = cached_arrays("npz", {"source": file_signature(p)}, lambda: _read(p), disk=False)
    return raw_to_dataset(
        "npz",
        raw,
        flatten=flatten,
        limit_train=limit_train,
        limit_test=limit_test,
        class_names=class_names,
    )
