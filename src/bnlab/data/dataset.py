"""The `Dataset` record every loader returns, and the error every loader raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "DatasetError"]


class DatasetError(ValueError):
    """A dataset could not be found, read or built; the message is one line that says how to fix it.

    Raised for unknown dataset names (the message lists the valid ones), unknown or
    invalid options (it names the option, the value received and what is allowed),
    missing data files (it says what to install or which path option to give) and
    corrupt files (it names the file and what was wrong).
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """A supervised classification dataset split into a training and a test part.

    Images are channel-last like Keras, ``(N, H, W, C)`` float32 in ``[0, 1]``;
    tabular data is ``(N, features)`` float32. Labels are int64 class ids in
    ``[0, num_classes)`` with shape ``(N,)`` (binary tasks use 0/1).

    Every load returns fresh, writable arrays: mutating them never affects another
    load, even when the decoded data came from a cache.

    Attributes:
        name: registry name the data was loaded under (e.g. ``"circles"``).
        x_train: ``(N_train, *input_shape)`` float32.
        y_train: ``(N_train,)`` int64.
        x_test: ``(N_test, *input_shape)`` float32.
        y_test: ``(N_test,)`` int64.
        num_classes: number of classes, ``len(class_names)``.
        class_names: human-readable name of class ``i`` at position ``i``.

    Raises:
        DatasetError: when the arrays disagree with each other (dtype, length,
            feature shape, label range) or with ``class_names``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for part in ("x_train", "x_test"):
            x = getattr(self, part)
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 2:
                raise DatasetError(
                    f"Dataset {self.name!r}: {part} must be a float32 array of shape "
                    f"(N, ...); got {_describe(x)}"
                )
        for part in ("y_train", "y_test"):
            y = getattr(self, part)
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
                raise DatasetError(
                    f"Dataset {self.name!r}: {part} must be an int64 array of shape (N,); "
                    f"got {_describe(y)}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"Dataset {self.name!r}: train and test samples differ in shape: "
                f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            )
        for x_part, y_part in (("x_train", "y_train"), ("x_test", "y_test")):
            n_x, n_y = len(getattr(self, x_part)), len(getattr(self, y_part))
            if n_x != n_y:
                raise DatasetError(
                    f"Dataset {self.name!r}: {x_part} has {n_x} rows but {y_part} has {n_y}"
                )
        if not isinstance(self.class_names, tuple) or len(self.class_names) != self.num_classes:
            raise DatasetError(
                f"Dataset {self.name!r}: class_names must be a tuple of num_classes="
                f"{self.num_classes} names; got {self.class_names!r}"
            )
        for part in ("y_train", "y_test"):
            y = getattr(self, part)
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise DatasetError(
                    f"Dataset {self.name!r}: {part} holds labels in [{y.min()}, {y.max()}], "
                    f"outside [0, {self.num_classes - 1}]"
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``x_train.shape[1:]`` (Keras's ``input_shape``)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def describe(self, max_names: int = 10) -> str:
        """One line for people: sizes, sample shape and classes, e.g. ``circles: 500
        training and 500 test samples of shape (2,), 2 classes: outer, inner``."""
        names = ", ".join(self.class_names[:max_names])
        more = (
            f", ... ({self.num_classes - max_names} more)" if self.num_classes > max_names else ""
        )
        return (
            f"{self.name}: {len(self.x_train)} training and {len(self.x_test)} test samples of "
            f"shape {self.input_shape}, {self.num_classes} classes: {names}{more}"
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
            f"x_test={self.x_test.shape}, num_classes={self.num_classes}, "
            f"class_names={self.class_names!r})"
        )


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__
