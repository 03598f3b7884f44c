"""What a training run is asked to do: :class:`TrainConfig` and :class:`ProbeSpec`.

Both are frozen and validated on construction, so a bad value fails when the experiment is
read, not after an hour of training. Their ``to_dict``/``from_dict`` round-trip through
JSON/TOML-shaped dicts and reject unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from bnlab.train.losses import get_loss
from bnlab.train.optimizers import validate_optimizer_args

__all__ = ["ProbeSpec", "TrainConfig"]

ProbeWhere = Literal["input", "output"]


def _check_int(owner: str, name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}; got {value!r}")
    return value


def _check_keys(owner: str, raw: Mapping[str, Any], cls: type) -> None:
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(
            f"{owner}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )


@dataclass(frozen=True)
class ProbeSpec:
    """Record percentiles of one layer's input or output over training batches.

    Every ``every_steps`` optimizer steps (at steps 0, every_steps, 2*every_steps, ... where
    step = number of updates done before the batch), the values of the layer's input
    (``where="input"``) or output (``where="output"``) on the current training batch are
    flattened and their percentiles recorded. Batches with more than 100,000 values are
    subsampled with a fixed stride first. Percentiles use linear interpolation (NumPy's
    default).

    Args:
        layer: the layer name: a Keras-style name of a bnlab model (``"dense_1"``) or a
            dotted ``named_modules()`` name of any ``nn.Module`` (``"0"``, ``"block.bn"``).
        where: ``"input"`` or ``"output"``. Default ``"output"``.
        percentiles: in [0, 100], at least one. Default (15, 50, 85).
        every_steps: >= 1. Default 1.

    Raises:
        ValueError / TypeError: any argument out of range or of the wrong type.
    """

    layer: str
    where: ProbeWhere = "output"
    percentiles: tuple[float, ...] = (15, 50, 85)
    every_steps: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"ProbeSpec: layer must be a non-empty layer name; got {self.layer!r}")
        if self.where not in get_args(ProbeWhere):
            raise ValueError(f"ProbeSpec: where must be 'input' or 'output'; got {self.where!r}")
        pcts = tuple(self.percentiles)
        if not pcts:
            raise ValueError("ProbeSpec: percentiles must list at least one value in [0, 100]; got ()")
        for p in pcts:
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
                raise ValueError(f"ProbeSpec: percentiles must be numbers in [0, 100]; got {p!r} in {pcts!r}")
        object.__setattr__(self, "percentiles", pcts)
        _check_int("ProbeSpec", "every_steps", self.every_steps, minimum=1)

    @property
    def key(self) -> str:
        """The name under which the history stores this probe: ``"<layer>.<where>"``."""
        return f"{self.layer}.{self.where}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``ProbeSpec.from_dict`` reverses it."""
        return {
            "layer": self.layer,
            "where": self.where,
            "percentiles": list(self.percentiles),
            "every_steps": self.every_steps,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ProbeSpec:
        """Build from a dict with the field names; unknown keys raise ValueError."""
        _check_keys("ProbeSpec", raw, cls)
        kwargs = dict(raw)
        if "percentiles" in kwargs:
            kwargs["percentiles"] = tuple(kwargs["percentiles"])
        return cls(**kwargs)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, loss, epochs, batch size, evaluation cadence, probes.

    Args:
        optimizer: registered optimizer name (``"sgd"``, ``"adam"``, ``"rmsprop"``).
        optimizer_args: Keras-named arguments, e.g. ``{"learning_rate": 0.1}``; missing ones
            take Keras's defaults. Checked here against the optimizer's allowed arguments.
        loss: registered loss name (``"binary_crossentropy"``, ``"categorical_crossentropy"``,
            ``"sparse_categorical_crossentropy"``, ``"mse"``).
        epochs: >= 1.
        batch_size: >= 1. Also the batch size of the train-mode validation pass, so its
            batch statistics are comparable to training's.
        eval_every_steps: also evaluate on the test set every this many optimizer steps
            (>= 1); None evaluates at epoch ends only.
        shuffle: reshuffle the training set every epoch (seeded). Default True.
        probes: :class:`ProbeSpec` records to take during training; keys must be unique.

    Raises:
        ValueError / TypeError: a value out of range or of the wrong type, an unknown
            optimizer/loss/argument (the message lists the valid ones).
    """

    optimizer: str
    optimizer_args: dict[str, Any]
    loss: str
    epochs: int
    batch_size: int
    eval_every_steps: int | None = None
    shuffle: bool = True
    probes: tuple[ProbeSpec, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer_args, Mapping):
            raise TypeError(
                f"TrainConfig: optimizer_args must be a mapping of argument names to values; "
                f"got {self.optimizer_args!r}"
            )
        args = dict(self.optimizer_args)
        validate_optimizer_args(self.optimizer, args)
        object.__setattr__(self, "optimizer_args", args)
        get_loss(self.loss)
        _check_int("TrainConfig", "epochs", self.epochs, minimum=1)
        _check_int("TrainConfig", "batch_size", self.batch_size, minimum=1)
        if self.eval_every_steps is not None:
            _check_int("TrainConfig", "eval_every_steps", self.eval_every_steps, minimum=1)
        if not isinstance(self.shuffle, bool):
            raise TypeError(f"TrainConfig: shuffle must be true or false; got {self.shuffle!r}")
        probes = tuple(self.probes)
        for probe in probes:
            if not isinstance(probe, ProbeSpec):
                raise TypeError(f"TrainConfig: probes must be ProbeSpec objects; got {probe!r}")
        keys = [p.key for p in probes]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(
                f"TrainConfig: each layer/where pair may be probed once; duplicated: {', '.join(duplicates)}"
            )
        object.__setattr__(self, "probes", probes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``TrainConfig.from_dict`` reverses it."""
        return {
            "optimizer": self.optimizer,
            "optimizer_args": dict(self.optimizer_args),
            "loss": self.loss,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_every_steps": self.eval_every_steps,
            "shuffle": self.shuffle,
            "probes": [p.to_dict() for p in self.probes],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict with the field names (probes as dicts); unknown keys raise ValueError."""
        _check_keys("TrainConfig", raw, cls)
        kwargs = dict(raw)
        if "probes" in kwargs:
            kwargs["probes"] = tuple(
                p if isinstance(p, ProbeSpec) else ProbeSpec.from_dict(p) for p in kwargs["probes"]
            )
        return cls(**kwargs)

