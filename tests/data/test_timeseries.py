"""The .ts reader on hand-written files, and aeon's bundled JapaneseVowels and BasicMotions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import DatasetError, load_dataset
from bnlab.data import timeseries as ts_module
from bnlab.data.timeseries import find_aeon_problem, pad_post, read_ts

needs_aeon = pytest.mark.skipif(
    find_aeon_problem("JapaneseVowels") is None or find_aeon_problem("BasicMotions") is None,
    reason="aeon is not installed (pip install --no-deps aeon)",
)

HEADER = """# a comment
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run
@data
"""


def _write(tmp_path: Path, text: str, name: str = "toy.ts") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_multivariate_variable_length_cases(tmp_path: Path) -> None:
    p = _write(tmp_path, HEADER + "1,2,3:4,5,6:run\n\n7.5,-8e-1:9,10:walk\n")
    f = read_ts(p)
    assert f.problem_name == "Toy"
    assert f.class_labels == ("walk", "run")
    assert f.labels == ("run", "walk")
    np.testing.assert_array_equal(f.series[0], [[1, 4], [2, 5], [3, 6]])  # (T, C)
    np.testing.assert_array_equal(f.series[1], [[7.5, 9], [-0.8, 10]])


def test_univariate_equal_length_with_missing_values(tmp_path: Path) -> None:
    text = (
        "@problemName U\n@timeStamps false\n@missing true\n@univariate true\n"
        "@equalLength true\n@seriesLength 3\n@classLabel false\n@data\n1,?,3\n4,5,6\n"
    )
    f = read_ts(_write(tmp_path, text))
    assert f.labels == () and f.class_labels == ()
    assert f.series[0].shape == (3, 1)
    assert math.isnan(f.series[0][1, 0]) and f.series[0][2, 0] == 3
    np.testing.assert_array_equal(f.series[1][:, 0], [4, 5, 6])


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("1,2:3:run\n", 10, "channels of one case differ in length: [2, 1]"),
        ("1,2:run\n", 10, "1 channels; expected 2"),
        ("1,x:3,4:run\n", 10, "channel 0: 'x' is not a number"),
        ("1,?:3,4:run\n", 10, "'?' is not a number (use @missing true"),
        ("1,2:3,4:jump\n", 10, "class label 'jump' is not one of @classLabel's walk, run"),
        ("1,2:3,4:run\n1:2:nope\n", 11, "class label 'nope'"),
    ],
)
def test_malformed_data_lines_name_file_and_line(
    tmp_path: Path, body: str, line: int, needle: str
) -> None:
    p = _write(tmp_path, HEADER + body)
    with pytest.raises(DatasetError) as e:
        read_ts(p)
    message = str(e.value)
    assert message.startswith(f"{p}:{line}: ") and needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("@problemName X\n@dimensions two\n", ":2: @dimensions must be an integer >= 1; got 'two'"),
        ("@missing maybe\n", ":1: @missing must be true or false; got 'maybe'"),
        ("@colour red\n", ":1: unknown tag @colour"),
        ("1,2,3\n", ":1: expected a @tag line or @data"),
        ("@classLabel true\n", ":1: @classLabel true lists no labels"),
        ("@data\n1,2\n", ":1: @data before @classLabel"),
        (
            "@equalLength true\n@seriesLength 3\n@classLabel false\n@data\n1,2\n",
            ":5: series length 2; @seriesLength is 3",
        ),
        ("@classLabel false\n", ": no @data line"),
        ("@classLabel false\n@data\n", ": no cases after @data"),
        ("@timeStamps true\n@classLabel false\n@data\n", ": @timeStamps true is not supported"),
    ],
)
def test_malformed_headers(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(DatasetError) as e:
        read_ts(p)
    assert str(e.value).startswith(str(p)) and needle in str(e.value), str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"time-series file not found: .*nope\.ts"):
        read_ts(tmp_path / "nope.ts")


def test_pad_post_matches_keras_pad_sequences() -> None:
    from keras.utils import pad_sequences

    rng = np.random.default_rng(0)
    series = [rng.normal(size=(t, 3)) for t in (4, 1, 6)]
    ours = pad_post(series, 6)
    theirs = pad_sequences(series, maxlen=6, padding="post", dtype="float32", value=0.0)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="series 2 has 6 steps, more than length=5"):
        pad_post(series, 5)


def test_absent_aeon_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts_module, "find_aeon_problem", lambda problem: None)
    with pytest.raises(DatasetError, match=r"pip install --no-deps aeon"):
        load_dataset("japanese_vowels")


def _lengths(x: np.ndarray) -> np.ndarray:
    """Steps up to the last step that is not all zeros (the post-padding)."""
    nonzero = (x != 0).any(axis=-1)
    return np.where(nonzero.any(axis=1), x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)


@needs_aeon
def test_japanese_vowels_from_aeon() -> None:
    d = load_dataset("japanese_vowels")
    assert d.x_train.shape == (270, 29, 12) and d.x_test.shape == (370, 29, 12)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.class_names == tuple("123456789")
    np.testing.assert_array_equal(np.bincount(d.y_train), [30] * 9)
    np.testing.assert_array_equal(np.bincount(d.y_test), [31, 35, 88, 44, 29, 24, 40, 50, 29])
    # The files' own lengths, padded at the end with zeros only.
    train_file, test_file = (read_ts(p) for p in find_aeon_problem("JapaneseVowels"))  # type: ignore[union-attr]
    true_lengths = np.array([s.shape[0] for s in train_file.series + test_file.series])
    assert true_lengths.min() == 7 and true_lengths.max() == 29
    x = np.concatenate([d.x_train, d.x_test])
    np.testing.assert_array_equal(_lengths(x), true_lengths)
    np.testing.assert_array_equal(x[0, :20], train_file.series[0].astype(np.float32))
    assert d.x_train[0, 0, 0] == np.float32(1.860936)


@needs_aeon
def test_basic_motions_from_aeon() -> None:
    d = load_dataset("basic_motions")
    assert d.x_train.shape == (40, 100, 6) and d.x_test.shape == (40, 100, 6)
    assert d.class_names == ("Badminton", "Running", "Standing", "Walking")
    np.testing.assert_array_equal(np.bincount(d.y_train), [10] * 4)
    np.testing.assert_array_equal(np.bincount(d.y_test), [10] * 4)
    assert np.isfinite(d.x_train).all()
