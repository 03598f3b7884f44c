"""Keras initializers for PyTorch tensors, filled in place.

Fans follow the PyTorch weight layout, which gives the same numbers as Keras's
kernel layout: Linear ``(out, in)`` has ``fan_in = in``, ``fan_out = out``;
ConvNd ``(out, in, *k)`` has ``fan_in = in * prod(k)``, ``fan_out = out * prod(k)``;
a vector ``(C,)`` has ``fan_in = fan_out = C``.

``variance_scaling`` is the family behind the named ones: with
``n = fan_in | fan_out | (fan_in + fan_out) / 2`` and ``s = scale / n``,
uniform draws from ``[-sqrt(3 s), sqrt(3 s)]``, truncated normal uses standard
deviation ``sqrt(s) / 0.87962566103423978`` cut at two deviations (Keras's rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from bnlab.nn.keras_objects import Spec, resolve
from bnlab.nn.keras_objects import serialize as _serialize

Initializer = Callable[[Tensor], None]

# Standard deviation of a unit normal truncated to [-2, 2]; Keras divides by it.
_TRUNCATED_STD = 0.87962566103423978


def fans(shape: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a tensor in PyTorch's weight layout."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


class Constant:
    """Fill with ``value``."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, t: Tensor) -> None:
        with torch.no_grad():
            t.fill_(self.value)

    def __repr__(self) -> str:
        return f"constant({self.value})"


class RandomNormal:
    """Normal(mean, stddev); Keras default stddev 0.05."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05) -> None:
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, t: Tensor) -> None:
        with torch.no_grad():
            t.normal_(self.mean, self.stddev)


class RandomUniform:
    """Uniform(minval, maxval); Keras default [-0.05, 0.05]."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05) -> None:
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, t: Tensor) -> None:
        with torch.no_grad():
            t.uniform_(self.minval, self.maxval)


class TruncatedNormal:
    """Normal(mean, stddev) redrawn outside two standard deviations; Keras default 0.05."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05) -> None:
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, t: Tensor) -> None:
        with torch.no_grad():
            torch.nn.init.trunc_normal_(t, self.mean, self.stddev,
                                        self.mean - 2 * self.stddev, self.mean + 2 * self.stddev)


class VarianceScaling:
    """Keras's variance scaling: ``s = scale / n`` with n from ``mode``; see the module doc."""

    def __init__(
        self,
        scale: float = 1.0,
        mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in",
        distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = "truncated_normal",
    ) -> None:
        if scale <= 0:
            raise ValueError(f"variance_scaling needs scale > 0; got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"variance_scaling mode must be fan_in, fan_out or fan_avg; got {mode!r}")
        if distribution == "normal":  # Keras's alias of truncated_normal
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "variance_scaling distribution must be truncated_normal (alias normal), "
                f"untruncated_normal or uniform; got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, t: Tensor) -> None:
        fan_in, fan_out = fans(t.shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        s = self.scale / max(1.0, n)
        with torch.no_grad():
            if self.distribution == "uniform":
                limit = math.sqrt(3.0 * s)
                t.uniform_(-limit, limit)
            elif self.distribution == "untruncated_normal":
                t.normal_(0.0, math.sqrt(s))
            else:
                std = math.sqrt(s) / _TRUNCATED_STD
                torch.nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std)


class Orthogonal:
    """A (semi-)orthogonal matrix times ``gain``, over the flattened trailing dims."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def __call__(self, t: Tensor) -> None:
        torch.nn.init.orthogonal_(t, gain=self.gain)


class Identity:
    """``gain`` times the identity matrix (2D tensors only), Keras's ``identity``."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def __call__(self, t: Tensor) -> None:
        if t.dim() != 2:
            raise ValueError(f"the identity initializer needs a 2D tensor; got shape {tuple(t.shape)}")
        with torch.no_grad():
            torch.nn.init.eye_(t).mul_(self.gain)


def _scaling(scale: float, mode: str, distribution: str) -> Callable[[], VarianceScaling]:
    return lambda: VarianceScaling(scale, mode, distribution)  # type: ignore[arg-type]


REGISTRY: dict[str, Callable[..., Initializer]] = {
    "zeros": lambda: Constant(0.0),
    "ones": lambda: Constant(1.0),
    "constant": Constant,
    "random_normal": RandomNormal,
    "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": _scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _scaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": _scaling(2.0, "fan_in", "uniform"),
    "he_normal": _scaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _scaling(1.0, "fan_in", "truncated_normal"),
    "orthogonal": Orthogonal,
    "identity": Identity,
}


def get(spec: Spec) -> Initializer:
    """Resolve an initializer spec (see :mod:`bnlab.nn.keras_objects`) to a callable."""
    if spec is None:
        raise ValueError(f"an initializer is required; choose from: {', '.join(sorted(REGISTRY))}")
    return resolve(spec, REGISTRY, "initializer")


def serialize(spec: Spec) -> dict | None:
    """Keras 3's serialized form of a initializer spec (see :func:`bnlab.nn.keras_objects.serialize`)."""
    return _serialize(spec, REGISTRY, "initializer")
