"""circles / moons / blobs against scikit-learn called directly with the same arguments."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_circles, make_moons

from bnlab.data import DatasetError, load_blobs, load_circles, load_dataset, load_moons
from bnlab.data.toy import draw_circles


def test_circles_study_split_is_first_500_train_last_500_test():
    d = load_dataset("circles")
    x, y = make_circles(n_samples=1000, noise=0.1, random_state=1, factor=0.8)
    np.testing.assert_array_equal(d.x_train, x[:500].astype(np.float32))
    np.testing.assert_array_equal(d.y_train, y[:500])
    np.testing.assert_array_equal(d.x_test, x[500:].astype(np.float32))
    np.testing.assert_array_equal(d.y_test, y[500:])
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.input_shape == (2,)
    assert d.num_classes == 2 and d.class_names == ("outer", "inner")
    # class 0 is the outer ring: its noiseless radius is 1, the inner one 0.8
    radius = np.linalg.norm(x, axis=1)
    assert radius[y == 0].mean() == pytest.approx(1.0, abs=0.02)
    assert radius[y == 1].mean() == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize(
    ("n", "noise", "factor", "seed"),
    [(1000, 0.1, 0.8, 1), (7, 0.3, 0.5, 0), (1001, 0.0, 0.2, 12345), (2, 0.05, 0.9, 3), (64, 1.5, 0.01, 99)],
)
def test_circles_are_drawn_point_for_point_as_sklearn_draws_them(n, noise, factor, seed):
    x, y = draw_circles(n, noise=noise, factor=factor, random_state=seed)
    ref_x, ref_y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)


def test_moons_match_sklearn_with_custom_train_size():
    d = load_dataset("moons", n_samples=300, noise=0.2, random_state=7, train_size=200)
    x, y = make_moons(n_samples=300, noise=0.2, random_state=7)
    np.testing.assert_array_equal(d.x_train, x[:200].astype(np.float32))
    np.testing.assert_array_equal(d.y_test, y[200:])
    assert (len(d.x_train), len(d.x_test)) == (200, 100)
    # class 0 is the upper moon
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean()


def test_blobs_match_sklearn_for_count_and_coordinates():
    d = load_dataset(
        "blobs", n_samples=400, centers=4, n_features=3, cluster_std=0.5, random_state=3
    )
    x, y = make_blobs(
        n_samples=400,
        centers=4,
        n_features=3,
        cluster_std=0.5,
        center_box=(-10.0, 10.0),
        random_state=3,
    )
    np.testing.assert_array_equal(d.x_train, x[:200].astype(np.float32))
    np.testing.assert_array_equal(d.y_train, y[:200])
    assert d.num_classes == 4 and d.class_names == ("blob_0", "blob_1", "blob_2", "blob_3")
    assert d.input_shape == (3,)

    centers = [[0.0, 0.0], [5.0, 5.0]]
    d = load_dataset("blobs", n_samples=100, centers=centers, cluster_std=0.1)
    x, y = make_blobs(n_samples=100, centers=np.array(centers), cluster_std=0.1, random_state=1)
    np.testing.assert_array_equal(d.x_test, x[50:].astype(np.float32))
    assert d.num_classes == 2
    np.testing.assert_allclose(d.x_train[d.y_train == 1].mean(axis=0), [5.0, 5.0], atol=0.05)


@pytest.mark.parametrize("loader", [load_circles, load_moons, load_blobs], ids=lambda f: f.__name__)
def test_loads_are_deterministic_and_independent(loader):
    a, b = loader(), loader()
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    a.x_train[:] = 0  # a fresh array per load: mutating one load leaves the next intact
    assert np.abs(loader().x_train).sum() > 0
    assert len(a.x_train) == len(a.x_test) == 500  # default train_size is half


def test_different_random_state_gives_different_points():
    assert not np.array_equal(
        load_circles(random_state=1).x_train, load_circles(random_state=2).x_train
    )


@pytest.mark.parametrize("train_size", [1000, 5000])
def test_train_size_leaving_no_test_rows_is_rejected(train_size):
    with pytest.raises(DatasetError, match=rf"train_size={train_size} .* 1 <= train_size <= 999"):
        load_dataset("circles", train_size=train_size)
