"""Shared data-test fixtures: an isolated cache per test, and a writer of tiny IDX sets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import clear_memory_cache, write_idx

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IdxWriter = Callable[..., dict[str, np.ndarray]]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every data test gets its own empty cache directory and an empty in-process memo."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(cache))
    clear_memory_cache()
    yield cache
    clear_memory_cache()


def _write_idx_split(
    folder: Path,
    *,
    gz: bool,
    y_train: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    image_shape: tuple[int, int] = (5, 4),
) -> dict[str, np.ndarray]:
    """Write the four MNIST-named IDX files of random uint8 images; return the arrays.

    Default labels: 12 training rows ``i % 3`` and 6 test rows ``(5 - i) % 3``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if y_train is None:
        y_train = np.arange(12) % 3
    if y_test is None:
        y_test = np.arange(6)[::-1] % 3
    rng = np.random.default_rng(len(y_train))
    arrays = {
        "x_train": rng.integers(0, 256, size=(len(y_train), *image_shape), dtype=np.uint8),
        "y_train": np.asarray(y_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, size=(len(y_test), *image_shape), dtype=np.uint8),
        "y_test": np.asarray(y_test, dtype=np.uint8),
    }
    for stem, a in zip(IDX_STEMS, arrays.values(), strict=True):
        write_idx(folder / (stem + (".gz" if gz else "")), a)
    return arrays


@pytest.fixture
def write_idx_split() -> IdxWriter:
    """``write_idx_split(folder, *, gz, y_train=None, y_test=None, image_shape=(5, 4))``."""
    return _write_idx_split
