"""Array helpers shared by the loaders: pixel scaling, layout, subsetting."""

from __future__ import annotations

import numpy as np

from bnlab.data.dataset import Dataset, DatasetError

__all__ = [
    "balanced_indices",
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
        DatasetError: when ``y`` is not 1-D, not integer, or holds negative ids.
    """
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(
            f"{what}: expected integer labels of shape (N,); got {y.dtype} array of shape {y.shape}"
        )
    out = y.astype(np.int64, copy=True)
    if out.size and out.min() < 0:
        raise DatasetError(f"{what}: labels must be >= 0; got minimum {out.min()}")
    return out


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
    the largest label found in either split.

    Raises:
        DatasetError: on mismatching lengths, bad dtypes, or labels outside ``class_names``.
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
        class_names = tuple(str(i) for i in range(top + 1))
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
