"""Keras-style .npz files (x_train, y_train, x_test, y_test)."""

from __future__ import annotations

import numpy as np
import pytest

import bnlab.data.npz as npz_module
from bnlab.data import DatasetError, load_dataset


def _write(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def _keras_like(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (10, 6, 6), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 10, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (4, 6, 6), dtype=np.uint8),
        "y_test": np.array([9, 0, 1, 2], np.uint8),
    }
    return _write(tmp_path / "mnist.npz", **arrays), arrays


def test_keras_mnist_layout_loads_scaled_with_a_channel_axis(tmp_path):
    path, a = _keras_like(tmp_path)
    d = load_dataset("npz", path=str(path))
    assert d.x_train.shape == (10, 6, 6, 1) and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.x_train[..., 0], a["x_train"] / np.float32(255))
    np.testing.assert_array_equal(d.y_test, [9, 0, 1, 2])
    assert d.y_test.dtype == np.int64
    assert d.num_classes == 10


def test_float_and_channel_last_arrays_are_kept(tmp_path):
    x = np.linspace(0, 1, 2 * 3 * 3 * 2, dtype=np.float64).reshape(2, 3, 3, 2)
    path = _write(
        tmp_path / "f.npz", x_train=x, y_train=np.array([0, 1]), x_test=x, y_test=np.array([1, 0])
    )
    d = load_dataset("npz", path=str(path), class_names=["no", "yes"], flatten=True)
    np.testing.assert_array_equal(d.x_test, x.reshape(2, 18).astype(np.float32))
    assert d.class_names == ("no", "yes")


def test_missing_keys_are_named_with_what_the_file_holds(tmp_path):
    path = _write(tmp_path / "m.npz", x_train=np.zeros((2, 2, 2), np.uint8), y_train=np.zeros(2))
    with pytest.raises(
        DatasetError, match=r"lacks the arrays x_test, y_test; it holds x_train, y_train"
    ):
        load_dataset("npz", path=str(path))


def test_object_arrays_are_refused_not_unpickled(tmp_path):
    obj = np.array([{"a": 1}, None], dtype=object)
    path = tmp_path / "o.npz"
    np.savez(path, x_train=obj, y_train=obj, x_test=obj, y_test=obj)
    with pytest.raises(DatasetError, match=r"not a readable .npz of plain arrays"):
        load_dataset("npz", path=str(path))


def test_bad_files(tmp_path):
    with pytest.raises(DatasetError, match=r"path='.*nope.npz' is not a file"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"junk.npz is not a readable .npz"):
        load_dataset("npz", path=str(tmp_path / "junk.npz"))
    path = _write(
        tmp_path / "i.npz",
        x_train=np.zeros((2, 2, 2), np.int64),
        y_train=np.zeros(2, np.int64),
        x_test=np.zeros((2, 2, 2), np.int64),
        y_test=np.zeros(2, np.int64),
    )
    with pytest.raises(DatasetError, match=r"expected uint8 pixels .* or floats; got dtype int64"):
        load_dataset("npz", path=str(path))
    path = _write(
        tmp_path / "l.npz",
        x_train=np.zeros((2, 2, 2), np.uint8),
        y_train=np.array([0.5, 1]),
        x_test=np.zeros((2, 2, 2), np.uint8),
        y_test=np.zeros(2, np.int64),
    )
    with pytest.raises(DatasetError, match=r"expected integer labels of shape \(N,\); got float64"):
        load_dataset("npz", path=str(path))


def test_second_load_in_process_does_not_read_the_file(tmp_path, monkeypatch):
    path, _ = _keras_like(tmp_path)
    first = load_dataset("npz", path=str(path))

    def fail(_path):
        raise AssertionError("file decoded twice")

    monkeypatch.setattr(npz_module, "_read", fail)
    second = load_dataset("npz", path=str(path))
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert not np.shares_memory(first.x_train, second.x_train)
