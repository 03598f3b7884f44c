"""Two-dimensional toy classification sets: circles, moons, blobs (scikit-learn's draws).

Each set is drawn once with ``shuffle=True`` and a fixed ``random_state``, then split
by position: the first ``train_size`` rows are the training set and the remaining
rows the test set (``train_size`` defaults to half, ``n_samples // 2``). The circles
study therefore trains on rows 0..499 and tests on rows 500..999 of
``make_circles(n_samples=1000, noise=0.1, random_state=1, factor=0.8)``.

Features are float32 ``(N, n_features)`` (raw coordinates, not standardized);
labels are int64 ``(N,)``.

Circles are drawn here, point for point as ``sklearn.datasets.make_circles`` draws
them (tested against it): the main study then starts without importing scikit-learn
and SciPy, which takes seconds in the command and again in every lab worker. Moons and
blobs import scikit-learn inside their loaders, not at module level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnlab.data.dataset import Dataset, DatasetError

__all__ = ["draw_circles", "load_blobs", "load_circles", "load_moons"]


def _split(
    name: str, x: np.ndarray, y: np.ndarray, train_size: int | None, class_names: tuple[str, ...]
) -> Dataset:
    n = len(x)
    if train_size is None:
        train_size = n // 2
    if not 1 <= train_size <= n - 1:
        raise DatasetError(
            f"dataset {name!r}: option train_size={train_size} leaves no training or no test "
            f"rows out of n_samples={n}; give 1 <= train_size <= {n - 1}"
        )
    x = x.astype(np.float32)
    y = y.astype(np.int64)
    return Dataset(
        name=name,
        x_train=x[:train_size].copy(),
        y_train=y[:train_size].copy(),
        x_test=x[train_size:].copy(),
        y_test=y[train_size:].copy(),
        num_classes=len(class_names),
        class_names=class_names,
    )


def load_circles(
    *,
    n_samples: int = 1000,
    noise: float = 0.1,
    factor: float = 0.8,
    random_state: int = 1,
    train_size: int | None = None,
) -> Dataset:
    """Two concentric noisy circles (:func:`draw_circles`), a binary task.

    Class 0 is the outer circle (radius 1), class 1 the inner one (radius ``factor``);
    Gaussian noise with standard deviation ``noise`` is added to both coordinates.
    The default ``factor=0.8`` makes the rings overlap under ``noise=0.1``, so the best
    achievable accuracy is well below 100 % (the classic "circles MLP" study).

    Args:
        n_samples: total points, split as evenly as possible between the circles.
        noise: standard deviation of the added Gaussian noise (>= 0).
        factor: inner radius relative to the outer one, in (0, 1).
        random_state: seed of the draw; the same seed gives the same points.
        train_size: first rows used for training, the rest for testing; default half.

    Shape:
        x: ``(N, 2)`` float32, values roughly in ``[-1 - 3*noise, 1 + 3*noise]``; y: ``(N,)`` int64 in {0, 1}.

    Example:
        >>> d = load_circles()
        >>> d.x_train.shape, d.x_test.shape
        ((500, 2), (500, 2))
    """
    x, y = draw_circles(n_samples, noise=noise, factor=factor, random_state=random_state)
    return _split("circles", x, y, train_size, ("outer", "inner"))


def draw_circles(
    n_samples: int, *, noise: float, factor: float, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.make_circles(n_samples, shuffle=True, noise, random_state, factor)``.

    ``n // 2`` points (class 0) at angles ``2 pi k / (n // 2)`` on the unit circle, the
    other ``n - n // 2`` (class 1) likewise on the circle of radius ``factor``; the rows
    are permuted by ``RandomState(random_state).shuffle``, then the same generator adds
    ``normal(0, noise)`` to every coordinate.

    Shape:
        x: ``(n, 2)`` float64; y: ``(n,)`` int64 in {0, 1}.
    """
    outer = n_samples // 2
    inner = n_samples - outer
    angles = [np.linspace(0, 2 * np.pi, n, endpoint=False) for n in (outer, inner)]
    radius = np.concatenate([np.ones(outer), np.full(inner, factor)])
    angle = np.concatenate(angles)
    x = np.stack([np.cos(angle) * radius, np.sin(angle) * radius], axis=1)
    y = np.concatenate([np.zeros(outer, np.int64), np.ones(inner, np.int64)])
    generator = np.random.RandomState(random_state)
    order = np.arange(n_samples)
    generator.shuffle(order)
    x, y = x[order], y[order]
    x += generator.normal(scale=noise, size=x.shape)
    return x, y


def load_moons(
    *,
    n_samples: int = 1000,
    noise: float = 0.1,
    random_state: int = 1,
    train_size: int | None = None,
) -> Dataset:
    """Two interleaving half circles (``sklearn.datasets.make_moons``), a binary task.

    Class 0 is the upper moon (centre (0, 0), radius 1), class 1 the lower moon
    (centre (1, 0.5)); Gaussian noise with standard deviation ``noise`` is added.

    Args:
        n_samples: total points, split as evenly as possible between the moons.
        noise: standard deviation of the added Gaussian noise (>= 0).
        random_state: seed of the draw.
        train_size: first rows used for training, the rest for testing; default half.

    Shape:
        x: ``(N, 2)`` float32, x1 roughly in ``[-1, 2]``, x2 in ``[-0.5, 1]`` before noise;
        y: ``(N,)`` int64 in {0, 1}.
    """
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=random_state)
    return _split("moons", x, y, train_size, ("upper", "lower"))


def load_blobs(
    *,
    n_samples: int = 1000,
    centers: int | Sequence[Sequence[float]] = 3,
    n_features: int = 2,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    random_state: int = 1,
    train_size: int | None = None,
) -> Dataset:
    """Isotropic Gaussian clusters (``sklearn.datasets.make_blobs``), one class per cluster.

    With an integer ``centers`` the cluster centres are drawn uniformly from
    ``center_box`` in ``n_features`` dimensions; with a list of coordinates those
    are the centres and ``n_features`` is their length (the option is then ignored).

    Args:
        n_samples: total points, split as evenly as possible between the clusters.
        centers: number of clusters (>= 2), or their coordinates ``[[x1, x2, ...], ...]``.
        n_features: dimension of the points when ``centers`` is a number.
        cluster_std: standard deviation of every cluster (> 0).
        center_box: ``(low, high)`` bounds of randomly drawn centres.
        random_state: seed of the draw.
        train_size: first rows used for training, the rest for testing; default half.

    Shape:
        x: ``(N, n_features)`` float32; y: ``(N,)`` int64 in ``[0, clusters)``.
    """
    from sklearn.datasets import make_blobs

    centers_arg: int | np.ndarray = (
        centers if isinstance(centers, int) else np.asarray(centers, dtype=np.float64)
    )
    x, y = make_blobs(
        n_samples=n_samples,
        centers=centers_arg,
        n_features=n_features,
        cluster_std=cluster_std,
        center_box=center_box,
        random_state=random_state,
    )
    k = centers if isinstance(centers, int) else len(centers)
    return _split("blobs", x, y, train_size, tuple(f"blob_{i}" for i in range(k)))
