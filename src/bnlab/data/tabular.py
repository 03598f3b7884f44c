"""scikit-learn's bundled tabular sets, wine and breast_cancer, with optional scaling.

Both ship inside scikit-learn (``load_wine``, ``load_breast_cancer``), so they load
offline. Their features span orders of magnitude (wine: hue ~1 next to proline ~750;
breast cancer: smoothness ~0.1 next to worst area ~880), which is what makes them a
test of input scaling.

The rows are split once, stratified by class, with ``train_test_split(test_size=
test_fraction, random_state=random_state, stratify=y)``. Then, in this order:

1. every feature is multiplied by ``feature_scale`` (``10`` makes the scales ten times
   larger, and the spread between features stays the same);
2. with ``standardize=True``, each feature is standardized with the mean and the
   population standard deviation of the TRAINING rows (scikit-learn's
   ``StandardScaler().fit(x_train)``), applied to both splits:
   ``x' = (x - mean_train) / std_train``. A constant feature (std 0) is only centred.

Features are float32 ``(N, n_features)``; labels int64 ``(N,)`` in scikit-learn's
class order. scikit-learn is imported inside the loader (see `bnlab.data.toy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bnlab.data.dataset import Dataset

__all__ = ["load_breast_cancer", "load_wine", "standardize_by_train"]


def standardize_by_train(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean) / std`` with the training rows' per-feature mean and population std.

    Equals ``StandardScaler().fit(x_train)`` applied to both arrays (float64 arithmetic,
    a zero std treated as 1).
    """
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def _load(
    name: str,
    bunch: Callable[[], Any],
    *,
    standardize: bool,
    feature_scale: float,
    test_fraction: float,
    random_state: int,
) -> Dataset:
    from sklearn.model_selection import train_test_split

    data = bunch()
    x = np.asarray(data.data, dtype=np.float64) * feature_scale
    y = np.asarray(data.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=random_state, stratify=y
    )
    if standardize:
        x_train, x_test = standardize_by_train(x_train, x_test)
    names = tuple(str(c) for c in data.target_names)
    return Dataset(
        name,
        x_train.astype(np.float32),
        y_train,
        x_test.astype(np.float32),
        y_test,
        len(names),
        names,
    )


def load_wine(
    *,
    standardize: bool = False,
    feature_scale: float = 1.0,
    test_fraction: float = 0.3,
    random_state: int = 0,
) -> Dataset:
    """The wine recognition set: 178 wines, 13 chemical features, 3 cultivars.

    Args:
        standardize: standardize with the training split's statistics (module docstring).
        feature_scale: factor applied to every raw feature first.
        test_fraction: share of the rows held out for testing, stratified.
        random_state: seed of the split.

    Shape:
        x: ``(124, 13)`` / ``(54, 13)`` float32 at the default split; y: int64 0-2.
    """
    from sklearn.datasets import load_wine as bunch

    return _load(
        "wine",
        bunch,
        standardize=standardize,
        feature_scale=feature_scale,
        test_fraction=test_fraction,
        random_state=random_state,
    )


def load_breast_cancer(
    *,
    standardize: bool = False,
    feature_scale: float = 1.0,
    test_fraction: float = 0.3,
    random_state: int = 0,
) -> Dataset:
    """The Wisconsin breast cancer set: 569 tumours, 30 features, malignant or benign.

    Args:
        standardize: standardize with the training split's statistics (module docstring).
        feature_scale: factor applied to every raw feature first.
        test_fraction: share of the rows held out for testing, stratified.
        random_state: seed of the split.

    Shape:
        x: ``(398, 30)`` / ``(171, 30)`` float32 at the default split; y: int64,
        0 = malignant, 1 = benign.
    """
    from sklearn.datasets import load_breast_cancer as bunch

    return _load(
        "breast_cancer",
        bunch,
        standardize=standardize,
        feature_scale=feature_scale,
        test_fraction=test_fraction,
        random_state=random_state,
    )
