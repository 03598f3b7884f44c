"""wine and breast_cancer: shapes, the stratified split, feature_scale and standardize."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from bnlab.data import DatasetError, load_dataset


@pytest.mark.parametrize(
    ("name", "bunch", "shapes", "classes"),
    [
        ("wine", datasets.load_wine, ((124, 13), (54, 13)), ("class_0", "class_1", "class_2")),
        (
            "breast_cancer",
            datasets.load_breast_cancer,
            ((398, 30), (171, 30)),
            ("malignant", "benign"),
        ),
    ],
)
def test_raw_scaled_and_standardized(name, bunch, shapes, classes) -> None:
    raw = bunch()
    x_tr, x_te, y_tr, y_te = train_test_split(
        raw.data, raw.target, test_size=0.3, random_state=0, stratify=raw.target
    )
    d = load_dataset(name)
    assert (d.x_train.shape, d.x_test.shape) == shapes and d.class_names == classes
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_array_equal(d.x_train, x_tr.astype(np.float32))
    np.testing.assert_array_equal(d.y_test, y_te)
    # stratified: each class's share of the training rows is within one row of the whole's
    np.testing.assert_allclose(np.bincount(d.y_train), np.bincount(raw.target) * 0.7, atol=1)

    scaled = load_dataset(name, feature_scale=10.0)
    np.testing.assert_allclose(scaled.x_test, 10 * x_te, rtol=1e-6)

    scaler = StandardScaler().fit(x_tr)
    for factor in (1.0, 10.0):
        s = load_dataset(name, standardize=True, feature_scale=factor)
        np.testing.assert_allclose(s.x_train, scaler.transform(x_tr), atol=2e-6)
        np.testing.assert_allclose(s.x_test, scaler.transform(x_te), atol=2e-6)
        np.testing.assert_array_equal(s.y_train, y_tr)
    # the raw features span orders of magnitude: the point of the input_scaling study
    spread = x_tr.std(axis=0)
    assert spread.max() / spread.min() > 1e3


def test_invalid_options() -> None:
    with pytest.raises(DatasetError, match=r"invalid feature_scale=0"):
        load_dataset("wine", feature_scale=0)
    with pytest.raises(DatasetError, match=r"invalid standardize=1; expected"):
        load_dataset("breast_cancer", standardize=1)
    with pytest.raises(DatasetError, match=r"invalid test_fraction=1.0"):
        load_dataset("wine", test_fraction=1.0)
