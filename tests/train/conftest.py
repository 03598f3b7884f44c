"""Small datasets and models for the trainer's tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.data import Dataset
from bnlab.nn import BatchNormalization


def _rings(n_train: int = 96, n_test: int = 40, *, seed: int = 0) -> Dataset:
    """Two noisy concentric rings, (N, 2) float32 features and 0/1 labels."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, 2, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.where(y == 1, 0.5, 1.0) + rng.normal(0, 0.1, size=n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return Dataset(
        name="rings",
        x_train=x[:n_train],
        y_train=y[:n_train].astype(np.int64),
        x_test=x[n_train:],
        y_test=y[n_train:].astype(np.int64),
        num_classes=2,
        class_names=("outer", "inner"),
    )


def _blobs(n_train: int = 90, n_test: int = 30, *, classes: int = 3, seed: int = 0) -> Dataset:
    """Gaussian blobs in 4 dimensions with ``classes`` classes."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.integers(0, classes, size=n)
    centers = rng.normal(0, 2, size=(classes, 4))
    x = (centers[y] + rng.normal(0, 1, size=(n, 4))).astype(np.float32)
    return Dataset(
        name="blobs",
        x_train=x[:n_train],
        y_train=y[:n_train].astype(np.int64),
        x_test=x[n_train:],
        y_test=y[n_train:].astype(np.int64),
        num_classes=classes,
        class_names=tuple(f"c{i}" for i in range(classes)),
    )


def make_mlp(bn: str | None = None, *, hidden: int = 8, inputs: int = 2, outputs: int = 1, **bn_args) -> nn.Module:
    """Linear -> [BN] -> ReLU -> Linear -> sigmoid/softmax; ``bn`` in None, "bnlab", "torch"."""
    layers: list[nn.Module] = [nn.Linear(inputs, hidden)]
    if bn == "bnlab":
        layers.append(BatchNormalization(hidden, **bn_args))
    elif bn == "torch":
        layers.append(nn.BatchNorm1d(hidden, momentum=0.01, eps=1e-3))
    else:
        layers.append(nn.Identity())
    layers += [nn.ReLU(), nn.Linear(hidden, outputs), nn.Sigmoid() if outputs == 1 else nn.Softmax(dim=1)]
    return nn.Sequential(*layers)


@pytest.fixture
def rings() -> Dataset:
    return _rings()


@pytest.fixture
def make_rings() -> Callable[..., Dataset]:
    """``make_rings(n_train=96, n_test=40, seed=0)``: two noisy rings, 0/1 labels."""
    return _rings


@pytest.fixture
def make_blobs() -> Callable[..., Dataset]:
    """``make_blobs(n_train=90, n_test=30, classes=3, seed=0)``: 4-d Gaussian blobs."""
    return _blobs


@pytest.fixture
def mlp() -> Callable[..., nn.Module]:
    """``mlp(bn=None|"bnlab"|"torch", seed=0, **kwargs)``: a seeded small MLP."""

    def build(bn: str | None = None, *, seed: int = 0, **kwargs) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_mlp(bn, **kwargs)

    return build
