"""Multivariate time series in the ``.ts`` format of sktime/aeon, and two bundled problems.

A ``.ts`` file is a header of ``@tag value`` lines followed by ``@data`` and one case per
line; ``#`` lines are comments. Tags read here (case-insensitive): ``@problemName``,
``@timeStamps`` (only ``false`` is supported), ``@missing`` (``true`` allows ``?`` values,
read as NaN), ``@univariate``, ``@dimension``/``@dimensions``, ``@equalLength``,
``@seriesLength`` and ``@classLabel true <labels...>`` or ``@classLabel false``. A case
line holds its channels separated by ``:``, each a ``,``-separated list of values, then
(with class labels) the label as the last ``:`` field::

    1.0,2.0,3.0:0.5,0.4,0.3:walking

Within a case every channel has the same length; cases may differ in length unless
``@equalLength true``.

The registered problems ``japanese_vowels`` and ``basic_motions`` are read from the
files the ``aeon`` package bundles (``pip install --no-deps aeon``: only the data files
are needed, so aeon's own dependencies are not). The package folder is found with
``importlib.util.find_spec("aeon")``, which does not import it.

Variable lengths are zero-padded at the END to the longest series of both splits
(post-padding, like Keras's ``pad_sequences(..., padding="post", dtype="float32")``),
so a ``Masking(mask_value=0.0)`` first layer masks the padded steps: a step is masked
when all its channels equal 0.0 (a genuine all-zero step would be masked too; none
occurs in these two problems).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnlab.data.dataset import Dataset, DatasetError

__all__ = [
    "AEON_INSTALL_HINT",
    "TimeSeriesFile",
    "find_aeon_problem",
    "load_basic_motions",
    "load_japanese_vowels",
    "pad_post",
    "read_ts",
]

AEON_INSTALL_HINT = "install its data files with `pip install --no-deps aeon`"

_BOOLEAN_TAGS = ("timestamps", "missing", "univariate", "equallength")


@dataclass(frozen=True)
class TimeSeriesFile:
    """The content of one ``.ts`` file.

    Attributes:
        problem_name: the ``@problemName`` value, or ``""`` when absent.
        series: one ``(T_i, C)`` float64 array per case (time first, channels last).
        labels: the class label of each case as written, or ``()`` without labels.
        class_labels: the labels declared by ``@classLabel true``, or ``()``.
    """

    problem_name: str
    series: tuple[np.ndarray, ...]
    labels: tuple[str, ...]
    class_labels: tuple[str, ...]


def _flag(value: str, path: Path, lineno: int, tag: str) -> bool:
    word = value.strip().lower()
    if word not in ("true", "false"):
        raise DatasetError(f"{path}:{lineno}: @{tag} must be true or false; got {value.strip()!r}")
    return word == "true"


def _count(value: str, path: Path, lineno: int, tag: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise DatasetError(
            f"{path}:{lineno}: @{tag} must be an integer >= 1; got {value.strip()!r}"
        )
    return n


def read_ts(path: str | os.PathLike[str]) -> TimeSeriesFile:
    """Parse a ``.ts`` file (see the module docstring for the format).

    Returns:
        A `TimeSeriesFile` with one ``(T_i, C)`` float64 array per case.

    Raises:
        DatasetError: one line naming ``file:line`` and what is wrong: a missing file, an
            unknown tag, a bad tag value, data before ``@data`` or no ``@data``, a value
            that is not a number (or ``?`` without ``@missing true``), channels of
            different lengths in one case, a channel count or length other than the
            declared one, or a label not among ``@classLabel``'s.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"time-series file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"time-series file {p} cannot be read: {e}") from None

    flags: dict[str, bool] = {}
    problem_name = ""
    dimensions: int | None = None
    series_length: int | None = None
    has_labels: bool | None = None
    class_labels: tuple[str, ...] = ()
    in_data = False
    series: list[np.ndarray] = []
    labels: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DatasetError(f"{p}:{lineno}: expected a @tag line or @data before the data")
            tag, _, value = line[1:].partition(" ")
            key = tag.lower()
            if key == "data":
                if has_labels is None:
                    raise DatasetError(f"{p}:{lineno}: @data before @classLabel")
                if flags.get("timestamps", False):
                    raise DatasetError(f"{p}: @timeStamps true is not supported")
                in_data = True
            elif key == "problemname":
                problem_name = value.strip()
            elif key in _BOOLEAN_TAGS:
                flags[key] = _flag(value, p, lineno, tag)
            elif key in ("dimension", "dimensions"):
                dimensions = _count(value, p, lineno, tag)
            elif key == "serieslength":
                series_length = _count(value, p, lineno, tag)
            elif key == "classlabel":
                words = value.split()
                if not words:
                    raise DatasetError(f"{p}:{lineno}: @classLabel needs true <labels...> or false")
                has_labels = _flag(words[0], p, lineno, tag)
                class_labels = tuple(words[1:])
                if has_labels and not class_labels:
                    raise DatasetError(f"{p}:{lineno}: @classLabel true lists no labels")
            else:
                raise DatasetError(f"{p}:{lineno}: unknown tag @{tag}")
            continue

        fields = line.split(":")
        if has_labels:
            label = fields.pop().strip()
            if label not in class_labels:
                raise DatasetError(
                    f"{p}:{lineno}: class label {label!r} is not one of @classLabel's "
                    f"{', '.join(class_labels)}"
                )
            labels.append(label)
        expected = (
            dimensions
            if dimensions is not None
            else (1 if flags.get("univariate") else (series[0].shape[1] if series else None))
        )
        if expected is not None and len(fields) != expected:
            raise DatasetError(f"{p}:{lineno}: {len(fields)} channels; expected {expected}")
        channels = []
        for c, field in enumerate(fields):
            values = []
            for token in field.split(","):
                token = token.strip()
                if token == "?" and flags.get("missing", False):
                    values.append(math.nan)
                    continue
                try:
                    values.append(float(token))
                except ValueError:
                    raise DatasetError(
                        f"{p}:{lineno}: channel {c}: {token!r} is not a number"
                        + (" (use @missing true for '?')" if token == "?" else "")
                    ) from None
            channels.append(values)
        lengths = {len(v) for v in channels}
        if len(lengths) != 1:
            raise DatasetError(
                f"{p}:{lineno}: channels of one case differ in length: {[len(v) for v in channels]}"
            )
        (length,) = lengths
        if flags.get("equallength") and series_length is not None and length != series_length:
            raise DatasetError(
                f"{p}:{lineno}: series length {length}; @seriesLength is {series_length}"
            )
        if flags.get("equallength") and series and length != series[0].shape[0]:
            raise DatasetError(
                f"{p}:{lineno}: series length {length} differs from the first case's "
                f"{series[0].shape[0]} under @equalLength true"
            )
        series.append(np.asarray(channels, dtype=np.float64).T)  # (T, C)
    if not in_data:
        raise DatasetError(f"{p}: no @data line")
    if not series:
        raise DatasetError(f"{p}: no cases after @data")
    return TimeSeriesFile(problem_name, tuple(series), tuple(labels), class_labels)


def pad_post(series: tuple[np.ndarray, ...] | list[np.ndarray], length: int) -> np.ndarray:
    """Stack ``(T_i, C)`` series into ``(N, length, C)`` float32, zeros after each series.

    Equals Keras's ``pad_sequences(series, maxlen=length, padding="post",
    dtype="float32", value=0.0)`` for series no longer than ``length``.

    Raises:
        ValueError: when a series is longer than ``length``.
    """
    channels = series[0].shape[1]
    out = np.zeros((len(series), length, channels), dtype=np.float32)
    for i, s in enumerate(series):
        if s.shape[0] > length:
            raise ValueError(f"series {i} has {s.shape[0]} steps, more than length={length}")
        out[i, : s.shape[0]] = s
    return out


def find_aeon_problem(problem: str) -> tuple[Path, Path] | None:
    """``(train, test)`` paths of aeon's bundled ``<problem>_{TRAIN,TEST}.ts``, or None.

    Located through ``importlib.util.find_spec("aeon")`` without importing aeon.
    """
    try:
        spec = importlib.util.find_spec("aeon")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        base = Path(folder) / "datasets" / "data" / problem
        train, test = base / f"{problem}_TRAIN.ts", base / f"{problem}_TEST.ts"
        if train.is_file() and test.is_file():
            return train, test
    return None


def _load_problem(name: str, problem: str) -> Dataset:
    found = find_aeon_problem(problem)
    if found is None:
        raise DatasetError(
            f"dataset {name!r} needs aeon's bundled {problem}_TRAIN.ts/_TEST.ts, and the "
            f"package aeon is not installed; {AEON_INSTALL_HINT}"
        )
    train, test = read_ts(found[0]), read_ts(found[1])
    for part, path in ((train, found[0]), (test, found[1])):
        if not part.labels:
            raise DatasetError(f"{path}: has no class labels (@classLabel false)")
    if train.series[0].shape[1] != test.series[0].shape[1]:
        raise DatasetError(f"{found[1]}: channel count differs from {found[0]}'s")
    classes = tuple(sorted(set(train.class_labels) | set(test.class_labels)))
    index = {c: i for i, c in enumerate(classes)}
    length = max(s.shape[0] for s in train.series + test.series)
    return Dataset(
        name,
        pad_post(train.series, length),
        np.array([index[c] for c in train.labels], dtype=np.int64),
        pad_post(test.series, length),
        np.array([index[c] for c in test.labels], dtype=np.int64),
        len(classes),
        classes,
    )


def load_japanese_vowels() -> Dataset:
    """JapaneseVowels (UCI): 9 speakers saying "ae", 12 LPC cepstrum channels, 7-29 steps.

    Shape:
        x: ``(N, 29, 12)`` float32, post-padded with zeros (module docstring); 270
        training and 370 test cases. y: ``(N,)`` int64, classes ``'1'``-``'9'`` (the
        speaker) in alphabetical order.

    Raises:
        DatasetError: when aeon is not installed (says what to install) or a file is malformed.
    """
    return _load_problem("japanese_vowels", "JapaneseVowels")


def load_basic_motions() -> Dataset:
    """BasicMotions: smart-watch 3D accelerometer and gyroscope, 100 steps at 10 Hz.

    Shape:
        x: ``(N, 100, 6)`` float32; 40 training and 40 test cases. y: ``(N,)`` int64,
        classes in alphabetical order: Badminton, Running, Standing, Walking.

    Raises:
        DatasetError: when aeon is not installed (says what to install) or a file is malformed.
    """
    return _load_problem("basic_motions", "BasicMotions")
