"""Array helpers shared by the loaders: pixel scaling, layout, subsetting."""

from __future__ import annotations

import numpy as np

from bnlab.data.dataset import Dataset, DatasetError

MAX_CLASSES = 100_000
"""Most classes a dataset may have (labels ``0 .. MAX_CLASSES - 1``)."""

_SPARSE_CLASSES = 1024
"""Label spaces up to this size are always accepted, however few labels occur."""

_SPARSE_FACTOR = 100
"""Above `_SPARSE_CLASSES`, ``max label + 1`` may be at most this many times the distinct labels."""

__all__ = [
    "MAX_CLASSES",
    "balanced_indices",
    "class_count",
    "images_to_float",
    "labels_to_int64",
    "limit_rows",
    "raw_to_dataset",
]


def images_to_float(x: np.ndarray, *, what: str, flatten: bool = False) -> np.ndarray:
    """Pixels as a fresh float32 array, channel-last, ``uint8`` scaled to ``[0, 1]``.

    ``uint8`` values ``k`` become ``k / 255`` (Keras's ``x / 255``); float arrays are
    copied as float32 unchanged. ``(N, H, W)`` gains a channel axis ``(N, H, W, 1)``;
    ``(N, H, W, C)`` and ``(N, features)`` keep their shape. With ``flatten=True``
    every sample becomes one row, ``(N, H*W*C)``.

    Raises:
        DatasetError: for other dtypes or fewer than 2 dimensions (``what`` names the source).
    """
    if x.ndim < 2:
        raise DatasetError(f"{what}: expected samples of shape (N, ...); got shape {x.shape}")
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out /= np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32, copy=True)
    else:
        raise DatasetError(
            f"{what}: expected uint8 pixels (scaled by 1/255) or floats; got dtype {x.dtype}"
        )
    if out.ndim == 3:
        out = out[..., np.newaxis]  # (N, H, W, 1)
    if flatten:
        out = out.reshape(len(out), -1)  # (N, H*W*C)
    return out


def labels_to_int64(y: np.ndarray, *, what: str) -> np.ndarray:
    """Integer class ids as a fresh int64 ``(N,)`` array.

    Raises:
        DatasetError: when ``y`` is not 1-D, not integer, or holds ids outside
            ``[0, MAX_CLASSES)`` (checked before the cast, so a uint64 ``2**64 - 1`` is
            reported as it is, never wrapped to -1).
    """
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{what}: expected integer labels of shape (N,); got {y.dtype} array of shape {y.shape}"
        )
    if y.size:
        # Range first, in the file's own dtype: a uint64 2**64-1 must not wrap to -1.
        low, high = int(y.min()), int(y.max())
        if low < 0:
            raise DatasetError(f"{what}: labels must be >= 0; got minimum {low}")
        if high >= MAX_CLASSES:
            raise DatasetError(
                f"{what}: label {high} is out of range; class ids must be below {MAX_CLASSES} "
                "(0 .. number of classes - 1); the labels are corrupt or not class ids"
            )
    return y.astype(np.int64, copy=True)


def class_count(*labels: np.ndarray, what: str) -> int:
    """Number of classes the labels imply, ``max label + 1`` (labels already checked).

    Refuses a label space that is mostly empty: above `_SPARSE_CLASSES` classes,
    ``max + 1`` may be at most `_SPARSE_FACTOR` times the number of distinct labels
    (labels ``{0, 1, 90000}`` are a corrupt file, not 90001 classes).

    Raises:
        DatasetError: naming the largest label and how many distinct labels occur.
    """
    present = np.unique(np.concatenate([np.asarray(y, dtype=np.int64) for y in labels]))
    if present.size == 0:
        return 1
    n = int(present[-1]) + 1
    if n > _SPARSE_CLASSES and n > _SPARSE_FACTOR * present.size:
        raise DatasetError(
            f"{what}: the largest label {n - 1} implies {n} classes but only {present.size} "
            f"distinct labels occur; class ids must be 0 .. number of classes - 1 "
            "(give class_names to declare the classes)"
        )
    return n


def limit_rows(
    x: np.ndarray, y: np.ndarray, limit: int | None, *, option: str, dataset: str
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` rows (Keras's ``x_train[:limit]``); all rows when ``limit`` is None.

    Raises:
        DatasetError: when ``limit`` exceeds the available rows.
    """
    if limit is None:
        return x, y
    if limit > len(x):
        raise DatasetError(
            f"dataset {dataset!r}: option {option}={limit} exceeds the {len(x)} available rows; "
            f"give at most {len(x)} or leave {option} out"
        )
    return x[:limit], y[:limit]


def balanced_indices(
    y: np.ndarray,
    classes: tuple[int, ...],
    per_class: int,
    rng: np.random.Generator,
    *,
    option: str,
    dataset: str,
) -> np.ndarray:
    """Row indices holding ``per_class`` random rows of each class, in ascending order.

    For each class ``c`` in ``classes`` (in that order) ``per_class`` of the rows with
    ``y == c`` are drawn without replacement by ``rng.choice``; the union is returned
    sorted, so the rows keep their order in the source file.

    Raises:
        DatasetError: when a class has fewer than ``per_class`` rows.
    """
    picked = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        if per_class > len(rows):
            raise DatasetError(
                f"dataset {dataset!r}: option {option}={per_class} exceeds the {len(rows)} rows "
                f"of class {c}; give at most {len(rows)}"
            )
        picked.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(picked))


def raw_to_dataset(
    name: str,
    raw: dict[str, np.ndarray],
    *,
    flatten: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """A `Dataset` from decoded ``x_train, y_train, x_test, y_test`` arrays (not modified).

    Applies `limit_rows` to each split, then `images_to_float` and `labels_to_int64`
    (fresh arrays). Without ``class_names`` the classes are ``"0", "1", ...`` up to
    the largest label found in either split (see `class_count`).

    Raises:
        DatasetError: on mismatching lengths, bad dtypes, labels outside ``class_names``,
            labels of `MAX_CLASSES` or more, or a mostly empty label space.
    """
    x_tr, y_tr = limit_rows(
        raw["x_train"], raw["y_train"], limit_train, option="limit_train", dataset=name
    )
    x_te, y_te = limit_rows(
        raw["x_test"], raw["y_test"], limit_test, option="limit_test", dataset=name
    )
    y_train = labels_to_int64(y_tr, what=f"dataset {name!r} training labels")
    y_test = labels_to_int64(y_te, what=f"dataset {name!r} test labels")
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if class_names is None:
        n = class_count(y_train, y_test, what=f"dataset {name!r} labels")
        class_names = tuple(str(i) for i in range(n))
    elif top >= len(class_names):
        raise DatasetError(
            f"dataset {name!r}: labels go up to {top} but class_names has only "
            f"{len(class_names)} names {class_names!r}; give one name per class"
        )
    return Dataset(
        name=name,
        x_train=images_to_float(x_tr, what=f"dataset {name!r} training samples", flatten=flatten),
        y_train=y_train,
        x_test=images_to_float(x_te, what=f"dataset {name!r} test samples", flatten=flatten),
        y_test=y_test,
        num_classes=len(class_names),
        class_names=class_names,
    )
