"""Fashion-MNIST (Zalando's article images) and ``fashion6``, a small 6-class colour task.

The Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``)
installs the standard gzipped IDX files under ``/usr/share/datasets/fashion-mnist``:
60 000 training and 10 000 test 28x28 grayscale images, 10 classes, 6 000 training
and 1 000 test images per class. Another folder with the same four files (gzipped
or not) can be given as ``path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bnlab.data.arrays import balanced_indices, images_to_float, raw_to_dataset
from bnlab.data.dataset import Dataset
from bnlab.data.idx import decode_idx_files, find_idx_files

__all__ = [
    "FASHION6_CLASSES",
    "FASHION6_SOURCE_LABELS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "load_fashion6",
    "load_fashion_mnist",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Six categories that are mostly distinct but include two look-alike pairs
# (T-shirt/top vs Dress, Sneaker vs Ankle boot), like a 6-class scene task
# (buildings/street, glacier/mountain) where accuracy neither saturates nor collapses.
FASHION6_SOURCE_LABELS: tuple[int, ...] = (0, 1, 3, 7, 8, 9)
FASHION6_CLASSES: tuple[str, ...] = tuple(FASHION_MNIST_CLASSES[i] for i in FASHION6_SOURCE_LABELS)

_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` or give path=<folder with "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz>"
)


def _raw(path: str | os.PathLike[str] | None, dataset: str) -> dict[str, np.ndarray]:
    folder = Path(FASHION_MNIST_DIR if path is None else path)
    files = find_idx_files(folder, dataset=dataset, hint=_HINT)
    return decode_idx_files("fashion_mnist", files)


def load_fashion_mnist(
    *,
    path: str | os.PathLike[str] | None = None,
    flatten: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Fashion-MNIST: 60 000 training and 10 000 test 28x28 grayscale images of 10 classes.

    Classes: `FASHION_MNIST_CLASSES` (T-shirt/top, Trouser, Pullover, Dress, Coat,
    Sandal, Shirt, Sneaker, Bag, Ankle boot). The split is the distribution's own
    train/test split; decoded arrays are cached.

    Args:
        path: folder with the four IDX files; default ``/usr/share/datasets/fashion-mnist``.
        flatten: ``(N, 784)`` rows for MLPs instead of ``(N, 28, 28, 1)`` images.
        limit_train: keep only the first k training rows (like ``x_train[:k]``).
        limit_test: keep only the first k test rows.

    Shape:
        x: ``(N, 28, 28, 1)`` float32 in ``[0, 1]`` (pixel ``k / 255``), or ``(N, 784)``;
        y: ``(N,)`` int64 in ``[0, 10)``.

    Raises:
        DatasetError: when the files are absent (says what to install) or corrupt.
    """
    return raw_to_dataset(
        "fashion_mnist",
        _raw(path, "fashion_mnist"),
        flatten=flatten,
        limit_train=limit_train,
        limit_test=limit_test,
        class_names=FASHION_MNIST_CLASSES,
    )


def load_fashion6(
    *,
    path: str | os.PathLike[str] | None = None,
    train_per_class: int = 200,
    test_per_class: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Six Fashion-MNIST classes as small 3-channel images: a quick CNN image task.

    Classes (new label: name): 0 T-shirt/top, 1 Trouser, 2 Dress, 3 Sneaker, 4 Bag,
    5 Ankle boot (`FASHION6_CLASSES`; Fashion-MNIST labels 0, 1, 3, 7, 8, 9).

    Training set: ``train_per_class`` images of each class drawn without replacement
    from Fashion-MNIST's training set with ``numpy.random.default_rng([seed, 0])``
    (class by class in the order above), kept in their original file order; the
    default 200 per class gives 1 200 images, 38 steps per epoch at batch size 32.
    Test set: all 6 000 test images of the six classes in file order, or
    ``test_per_class`` of each drawn the same way with ``default_rng([seed, 1])``.
    The same ``seed`` always selects the same images.

    Args:
        path: folder with the four Fashion-MNIST IDX files (default as `load_fashion_mnist`).
        train_per_class: training images per class, 1..6000.
        test_per_class: test images per class, 1..1000; default all 1 000.
        seed: data seed of the selection (independent of the training seed).

    Shape:
        x: ``(N, 28, 28, 3)`` float32 in ``[0, 1]``, the gray value repeated in R, G and B;
        y: ``(N,)`` int64 in ``[0, 6)``.

    Raises:
        DatasetError: when the files are absent or a per-class count exceeds the data.
    """
    raw = _raw(path, "fashion6")
    remap = np.full(len(FASHION_MNIST_CLASSES), -1, dtype=np.int64)
    remap[list(FASHION6_SOURCE_LABELS)] = np.arange(len(FASHION6_SOURCE_LABELS))
    parts = {}
    for split, per_class, stream in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        y = raw[f"y_{split}"]
        option = f"{split}_per_class"
        if per_class is None:
            rows = np.flatnonzero(np.isin(y, FASHION6_SOURCE_LABELS))
        else:
            rng = np.random.default_rng([seed, stream])
            rows = balanced_indices(
                y, FASHION6_SOURCE_LABELS, per_class, rng, option=option, dataset="fashion6"
            )
        x = images_to_float(
            raw[f"x_{split}"][rows], what=f"dataset 'fashion6' {split} samples"
        )  # (N, 28, 28, 1)
        parts[f"x_{split}"] = np.repeat(x, 3, axis=-1)  # (N, 28, 28, 3)
        parts[f"y_{split}"] = remap[y[rows].astype(np.int64)]
    return Dataset(
        name="fashion6", num_classes=len(FASHION6_CLASSES), class_names=FASHION6_CLASSES, **parts
    )
