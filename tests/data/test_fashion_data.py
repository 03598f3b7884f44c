"""Fashion-MNIST and fashion6: small written IDX sets, plus the real files when installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import (
    FASHION6_CLASSES,
    FASHION_MNIST_CLASSES,
    Dataset,
    DatasetError,
    clear_memory_cache,
    load_dataset,
)
from bnlab.data.fashion import FASHION6_SOURCE_LABELS, FASHION_MNIST_DIR

REAL_PRESENT = (Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz").is_file()
needs_real = pytest.mark.skipif(
    not REAL_PRESENT,
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture
def small(tmp_path: Path, write_idx_split) -> tuple[Path, dict[str, np.ndarray]]:
    """A 10-class Fashion-shaped set: 8 training and 3 test rows per class, 28x28."""
    y_train = np.tile(np.arange(10), 8)
    y_test = np.tile(np.arange(10), 3)[::-1]
    folder = tmp_path / "fashion"
    return folder, write_idx_split(
        folder, gz=True, y_train=y_train, y_test=y_test, image_shape=(28, 28)
    )


def test_fashion_mnist_from_a_folder(small):
    folder, a = small
    d = load_dataset("fashion_mnist", path=str(folder))
    assert d.x_train.shape == (80, 28, 28, 1) and d.class_names == FASHION_MNIST_CLASSES
    np.testing.assert_array_equal(d.x_test[..., 0], a["x_test"] / np.float32(255))
    np.testing.assert_array_equal(d.y_train, a["y_train"])


def test_fashion6_selection_is_balanced_seeded_and_remapped(small):
    folder, a = small
    d = load_dataset("fashion6", path=str(folder), train_per_class=5, seed=3)
    assert d.class_names == ("T-shirt/top", "Trouser", "Dress", "Sneaker", "Bag", "Ankle boot")
    assert d.x_train.shape == (30, 28, 28, 3) and d.num_classes == 6
    assert np.bincount(d.y_train).tolist() == [5] * 6
    assert np.bincount(d.y_test).tolist() == [3] * 6  # the full test set of the six classes
    # gray repeated into R, G, B
    np.testing.assert_array_equal(d.x_train[..., 0], d.x_train[..., 2])
    # reproduce the documented rule: per class rng.choice, union sorted, labels remapped
    rng = np.random.default_rng([3, 0])
    rows = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(a["y_train"] == c), size=5, replace=False)
                for c in FASHION6_SOURCE_LABELS
            ]
        )
    )
    np.testing.assert_array_equal(d.x_train[..., 1], a["x_train"][rows] / np.float32(255))
    remap = {src: new for new, src in enumerate(FASHION6_SOURCE_LABELS)}
    np.testing.assert_array_equal(d.y_train, [remap[int(v)] for v in a["y_train"][rows]])
    test_rows = np.flatnonzero(np.isin(a["y_test"], FASHION6_SOURCE_LABELS))
    np.testing.assert_array_equal(d.x_test[..., 0], a["x_test"][test_rows] / np.float32(255))

    again = load_dataset("fashion6", path=str(folder), train_per_class=5, seed=3)
    np.testing.assert_array_equal(again.x_train, d.x_train)
    other = load_dataset("fashion6", path=str(folder), train_per_class=5, seed=4)
    assert not np.array_equal(other.x_train, d.x_train)


def test_fashion6_test_per_class_and_limits(small):
    folder, _ = small
    d = load_dataset("fashion6", path=str(folder), train_per_class=8, test_per_class=2)
    assert np.bincount(d.y_test).tolist() == [2] * 6 and len(d.x_train) == 48
    with pytest.raises(DatasetError, match="train_per_class=9 exceeds the 8 rows of class 0"):
        load_dataset("fashion6", path=str(folder), train_per_class=9)


def test_missing_files_say_what_to_install(tmp_path):
    for name in ("fashion_mnist", "fashion6"):
        with pytest.raises(DatasetError) as e:
            load_dataset(name, path=str(tmp_path / "absent"))
        msg = str(e.value)
        assert "absent does not exist" in msg and "`apt-get install dataset-fashion-mnist`" in msg
        assert "give path=<folder with train-images-idx3-ubyte.gz" in msg


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fashion-cache")


@pytest.fixture(scope="module")
def fashion(real_cache: Path) -> Iterator[Dataset]:
    """The real Fashion-MNIST, decoded once per module into a module-wide cache directory."""
    if not REAL_PRESENT:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BNLAB_CACHE_DIR", str(real_cache))
        clear_memory_cache()
        yield load_dataset("fashion_mnist")
    clear_memory_cache()


@needs_real
def test_real_fashion_mnist(fashion):
    assert fashion.x_train.shape == (60000, 28, 28, 1) and fashion.x_test.shape == (
        10000,
        28,
        28,
        1,
    )
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    assert fashion.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # first is an ankle boot
    assert fashion.x_train.min() == 0.0 and fashion.x_train.max() == 1.0
    assert float(fashion.x_train[:1000].mean()) == pytest.approx(0.286, abs=0.01)


@needs_real
def test_real_fashion6_defaults(fashion, real_cache, monkeypatch):
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(real_cache))  # reuse the decoded arrays
    d = load_dataset("fashion6")
    assert d.x_train.shape == (1200, 28, 28, 3) and d.x_test.shape == (6000, 28, 28, 3)
    assert np.bincount(d.y_train).tolist() == [200] * 6
    assert np.bincount(d.y_test).tolist() == [1000] * 6
    assert d.class_names == FASHION6_CLASSES
    keep = np.isin(fashion.y_test, FASHION6_SOURCE_LABELS)
    np.testing.assert_array_equal(d.x_test[..., 0:1], fashion.x_test[keep])
