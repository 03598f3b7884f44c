"""Labels far out of range are one-line data errors, never an allocation of their size.

Each loader runs in a child process under a memory cap (``limits.run_capped``), so a
regression that builds ``max_label + 1`` class names fails here instead of exhausting
the machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.data import DatasetError, load_dataset, write_idx
from bnlab.data.arrays import MAX_CLASSES
from limits import run_capped


def _npz(path, y_train, y_test=(0, 1)):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (len(y_train), 4, 4), dtype=np.uint8),
        y_train=np.asarray(y_train),
        x_test=rng.integers(0, 256, (len(y_test), 4, 4), dtype=np.uint8),
        y_test=np.asarray(y_test, dtype=np.asarray(y_train).dtype),
    )
    return path


@pytest.mark.parametrize(
    ("labels", "dtype", "shown"),
    [
        ([0, 1, 2**40], np.int64, "1099511627776"),
        ([0, 1, 2**64 - 1], np.uint64, "18446744073709551615"),
        ([0, 1, 2**31 - 1], np.int32, "2147483647"),
    ],
    ids=["int64-2**40", "uint64-max", "int32-max"],
)
def test_huge_npz_label_is_a_one_line_error_under_a_memory_cap(tmp_path, labels, dtype, shown):
    path = _npz(tmp_path / "d.npz", np.array(labels, dtype=dtype), y_test=[0, 1])
    code = (
        "from bnlab.data import DatasetError, load_dataset\n"
        "try:\n"
        f"    load_dataset('npz', path={str(path)!r})\n"
        "except DatasetError as e:\n"
        "    print('DatasetError:', e)\n"
    )
    done = run_capped(code, env={"BNLAB_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.strip()
    assert out.startswith("DatasetError:") and "\n" not in out
    assert shown in out and str(MAX_CLASSES) in out
    assert "minimum -1" not in out


def test_int32_idx_label_of_2_31_is_refused(tmp_path, write_idx_split):
    y = np.array([0, 1, 2**31 - 1] + [0] * 9, dtype=np.int32)
    write_idx_split(tmp_path / "idx", gz=False)
    write_idx(tmp_path / "idx" / "train-labels-idx1-ubyte", y)
    with pytest.raises(DatasetError, match=r"label 2147483647 is out of range.*below 100000"):
        load_dataset("idx", path=str(tmp_path / "idx"))


def test_sparse_label_space_is_refused_with_the_counts(tmp_path):
    path = _npz(tmp_path / "d.npz", np.array([0, 1, 0, 90_000]), y_test=[1, 0])
    with pytest.raises(DatasetError, match=r"largest label 90000 implies 90001 classes but only 3"):
        load_dataset("npz", path=str(path))


def test_label_spaces_that_are_plausible_still_load(tmp_path):
    # 1000 classes, few present (a subset of a large task): allowed.
    path = _npz(tmp_path / "a.npz", np.array([3, 999, 5]), y_test=[1, 2])
    assert load_dataset("npz", path=str(path)).num_classes == 1000
    # dense labels up to 2000: allowed.
    labels = np.arange(2001) % 2001
    path = _npz(tmp_path / "b.npz", labels, y_test=[1, 2])
    assert load_dataset("npz", path=str(path)).num_classes == 2001


def test_negative_label_reports_the_real_minimum(tmp_path):
    path = _npz(tmp_path / "d.npz", np.array([0, -7, 1], dtype=np.int16), y_test=[0, 1])
    with pytest.raises(DatasetError, match="got minimum -7"):
        load_dataset("npz", path=str(path))
