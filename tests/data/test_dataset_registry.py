"""The registry: names, option validation, messages, and loader/declaration conformance."""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

from bnlab.data import (
    Dataset,
    DatasetError,
    check_dataset_options,
    dataset_info,
    list_datasets,
    load_dataset,
)

ALL = [
    "basic_motions",
    "blobs",
    "breast_cancer",
    "circles",
    "fashion6",
    "fashion_mnist",
    "idx",
    "image_folder",
    "japanese_vowels",
    "mnist",
    "moons",
    "npz",
    "wine",
]
REQUIRED = {"npz": {"path"}, "image_folder": {"path"}}


def test_list_datasets_is_sorted_and_complete():
    assert list_datasets() == ALL


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(DatasetError) as e:
        load_dataset("cirlces")
    msg = str(e.value)
    assert "'cirlces'" in msg and ", ".join(ALL) in msg
    assert isinstance(e.value, ValueError)


def test_unknown_option_names_it_its_value_and_the_allowed_ones():
    with pytest.raises(DatasetError) as e:
        load_dataset("circles", nosie=0.3)
    msg = str(e.value)
    assert "'nosie'" in msg and "nosie=0.3" in msg
    assert "allowed: n_samples, noise, factor, random_state, train_size" in msg


@pytest.mark.parametrize(
    ("name", "key", "value", "allowed"),
    [
        ("circles", "noise", -0.5, "a number >= 0"),
        ("circles", "noise", True, "a number >= 0"),
        ("circles", "noise", float("nan"), "a number >= 0"),
        ("circles", "n_samples", 10.5, "an integer >= 2"),
        ("circles", "factor", 1.0, "a number > 0 and < 1"),
        ("moons", "random_state", "7", "an integer >= 0"),
        ("blobs", "centers", 1, "an integer >= 2 or a list"),
        ("blobs", "centers", [[0, 0], [1]], "equal-length coordinate lists"),
        ("blobs", "center_box", [3, -3], "[low, high] with numbers low < high"),
        ("mnist", "flatten", 1, "true or false"),
        ("mnist", "limit_train", 0, "an integer >= 1 (or leave it out)"),
        ("fashion6", "train_per_class", 7000, "an integer >= 1 and <= 6000"),
        ("image_folder", "image_size", [0, 32], "[height, width] with integers 1..4096"),
        ("image_folder", "image_size", [60000, 60000], "[height, width] with integers 1..4096"),
        ("image_folder", "color_mode", "rgba", "one of 'rgb', 'grayscale'"),
        ("image_folder", "validation_split", 1.5, "a number > 0 and < 1"),
        ("idx", "class_names", ["a", "a"], "a list of distinct non-empty strings"),
        ("npz", "path", 3, "a file-system path"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_invalid_value_names_option_value_and_what_is_allowed(name, key, value, allowed):
    with pytest.raises(DatasetError) as e:
        check_dataset_options(name, {key: value})
    msg = str(e.value)
    assert f"{key}={value!r}" in msg
    assert allowed in msg
    assert "\n" not in msg


def test_effective_options_say_what_the_loader_uses():
    """image_folder holds out 0.2 when neither validation_split nor test_path is given:
    the resolved options (recorded, shown by `bnlab show` and the report) say so."""
    assert check_dataset_options("image_folder", {"path": "p"})["validation_split"] == 0.2
    assert check_dataset_options("image_folder", {"path": "p", "validation_split": 0.3})[
        "validation_split"
    ] == 0.3
    separate = check_dataset_options("image_folder", {"path": "p", "test_path": "q"})
    assert separate["validation_split"] is None


def test_values_are_converted_to_canonical_form():
    got = check_dataset_options("image_folder", {"path": "~/pics", "image_size": [32, 48]})
    assert got["image_size"] == (32, 48)
    assert got["path"] == os.path.expanduser("~/pics") and not got["path"].startswith("~")
    assert check_dataset_options("image_folder", {"path": "p", "image_size": 16})["image_size"] == (
        16,
        16,
    )
    got = check_dataset_options("circles", {"noise": 0})
    assert got == {
        "n_samples": 1000,
        "noise": 0.0,
        "factor": 0.8,
        "random_state": 1,
        "train_size": None,
    }
    assert isinstance(got["noise"], float)
    got = check_dataset_options("blobs", {"centers": [[0, 1], [2, 3]], "center_box": [-1, 1]})
    assert got["centers"] == ((0.0, 1.0), (2.0, 3.0)) and got["center_box"] == (-1.0, 1.0)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_missing_required_path_says_which_option_to_give(name):
    with pytest.raises(DatasetError, match=rf"dataset '{name}' needs option 'path'"):
        load_dataset(name)


def test_where_prefixes_the_message():
    with pytest.raises(
        DatasetError, match=r"^exp\.toml \[data\]: dataset 'circles': invalid noise=-1"
    ):
        check_dataset_options("circles", {"noise": -1}, where="exp.toml [data]")
    with pytest.raises(DatasetError, match=r"^exp\.toml \[data\]: unknown dataset 'x'"):
        check_dataset_options("x", {}, where="exp.toml [data]")


@pytest.mark.parametrize("name", ALL)
def test_declared_options_match_the_loader_signature(name):
    """Registry-driven conformance: names, order and defaults agree with the loader."""
    info = dataset_info(name)
    sig = inspect.signature(info.loader)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    assert [p.name for p in info.params] == list(sig.parameters)
    for p in info.params:
        default = sig.parameters[p.name].default
        if p.name in REQUIRED.get(name, set()):
            assert default is inspect.Parameter.empty
        else:
            assert default == p.default, p.name
            if p.default is not None:
                assert p.check(p.default) == p.default  # defaults are valid canonical values
        assert p.doc and p.allowed
    assert info.summary and "\n" not in info.summary


def test_dataset_validates_its_arrays_and_hides_them_in_repr():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 1, 0], np.int64)
    d = Dataset("toy", x, y, x[:2], y[:2], 2, ("a", "b"))
    assert d.input_shape == (3,)
    assert repr(d) == (
        "Dataset(name='toy', x_train=(4, 3), x_test=(2, 3), num_classes=2, class_names=('a', 'b'))"
    )
    with pytest.raises(DatasetError, match=r"x_train must be a float32 array .* got float64"):
        Dataset("toy", x.astype(np.float64), y, x, y, 2, ("a", "b"))
    with pytest.raises(DatasetError, match=r"y_test must be an int64 array .* got int32"):
        Dataset("toy", x, y, x, y.astype(np.int32), 2, ("a", "b"))
    with pytest.raises(DatasetError, match=r"x_train has 4 rows but y_train has 3"):
        Dataset("toy", x, y[:3], x, y, 2, ("a", "b"))
    with pytest.raises(DatasetError, match=r"labels in \[0, 1\], outside \[0, 0\]"):
        Dataset("toy", x, y, x, y, 1, ("a",))
    with pytest.raises(
        DatasetError, match=r"class_names must be a tuple of num_classes=2 .*\['a', 'b'\]"
    ):
        Dataset("toy", x, y, x, y, 2, ["a", "b"])  # type: ignore[arg-type]
