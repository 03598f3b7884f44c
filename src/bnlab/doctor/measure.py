r"""What doctor measures on a trained model: :func:`measure` -> :class:`Measurements`.

Model level, on the evaluation data:

- **inference mode** (``model.eval()``: moving statistics) loss and accuracy;
- **training mode** (every BN layer normalizes each batch with its own statistics,
  dropout off, nothing updated: :func:`bnlab.train.batch_statistics`) loss and accuracy,
  in batches of the training batch size. Their gap is the first symptom of moving
  statistics that do not fit;
- **as is** (the modes the model was handed over in, buffers restored afterwards), when
  some BN layer's mode differs from the model's.

Per BN layer, on the calibration data (the training data when known), with the inputs
the layer receives in training mode (fvcore's "precise BN" features):

- the population mean :math:`\mu_c` and variance :math:`\sigma^2_c` of the layer's
  input per channel, exact in float64 (Chan-merged per-batch moments; the variance is
  biased for bnlab's Keras-style layers and unbiased for PyTorch's, as each stores it);
- against the stored moving statistics :math:`m_c, v_c`, per channel:

  .. math::
      d_c = \frac{|\mu_c - m_c|}{\sqrt{\sigma^2_c + \epsilon}}, \qquad
      r_c = \ln\frac{v_c + \epsilon}{\sigma^2_c + \epsilon}

  (:math:`d_c` = how many population standard deviations the moving mean is off;
  :math:`e^{|r_c|}` = by what factor the moving variance is off);
- update steps seen (``num_batches_tracked``) against the steps the momentum needs for
  the initial moving values to weigh less than 5 %: :func:`fade_steps`, and the weight
  :math:`m^t` the initial values still carry after :math:`t` steps;
- batch noise at the calibration batch size: the spread over batches of the batch
  mean (in population standard deviations) and of the log batch variance, median over
  channels;
- dead channels (:math:`|\gamma_c| <` :data:`DEAD_GAMMA`), channels with
  :math:`\sigma^2_c <` :data:`ZERO_VARIANCE` :math:`\cdot\,\epsilon`, non-finite
  statistics or parameters;
- after a dropout module (see :mod:`bnlab.doctor.trace`): the ratio of the input
  variance with dropout active (as in training) to that without (as at inference).

Nothing in the model changes: modes and buffers are restored after every pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.convert import keras_momentum
from bnlab.doctor.data import Batches
from bnlab.doctor.scoring import Scorer
from bnlab.doctor.trace import Structure, Tracer, display_name, dropout_rate
from bnlab.functional.axes import kept_axes
from bnlab.functional.moments import Moments, merge_moments, moments_of
from bnlab.nn import BatchNormalization, is_frozen
from bnlab.nn.views import batch_norm_layers, preserved, view
from bnlab.train import batch_statistics

__all__ = [
    "DEAD_GAMMA",
    "FADE_THRESHOLD",
    "ZERO_VARIANCE",
    "LayerMeasurement",
    "Measurements",
    "Metrics",
    "fade_steps",
    "initial_weight",
    "json_number",
    "json_steps",
    "measure",
    "momentum_for",
]

#: The initial moving values count as faded once they weigh less than this.
FADE_THRESHOLD = 0.05
#: A channel whose ``|gamma|`` is below this outputs (almost) the constant ``beta``.
DEAD_GAMMA = 1e-3
#: A channel whose population variance is below this times epsilon is (almost) constant.
ZERO_VARIANCE = 1e-2
#: Batches used to measure the dropout variance shift.
DROPOUT_BATCHES = 20


def fade_steps(momentum: float | None, threshold: float = FADE_THRESHOLD) -> float:
    r"""Update steps after which the initial moving values weigh less than ``threshold``.

    With Keras's momentum :math:`m` (weight of the old value) the initial value weighs
    :math:`m^t` after :math:`t` updates, so it takes
    :math:`\lceil \ln(\text{threshold}) / \ln m \rceil` steps: 299 at 0.99, 29 at 0.9, 14
    at 0.8 (threshold 0.05). ``momentum`` 0 (last batch only) and None (cumulative
    average, PyTorch's ``momentum=None``) replace the initial values at the first step:
    1. Momentum 1 never updates: ``inf``.

    >>> fade_steps(0.99), fade_steps(0.9), fade_steps(0.8), fade_steps(None)
    (299, 29, 14, 1)
    """
    if momentum is None or momentum <= 0:
        return 1
    if momentum >= 1:
        return math.inf
    return math.ceil(math.log(threshold) / math.log(momentum) - 1e-9)


def initial_weight(momentum: float | None, steps: int) -> float:
    """Weight the initial moving values still carry after ``steps`` updates: ``m ** steps``."""
    if momentum is None:
        return 0.0 if steps >= 1 else 1.0
    return float(momentum) ** steps


def momentum_for(steps: int, threshold: float = FADE_THRESHOLD) -> float:
    """The largest Keras momentum whose initial values fade below ``threshold`` in ``steps``.

    ``threshold ** (1 / steps)``; e.g. 190 steps -> 0.9844.
    """
    if steps < 1:
        raise ValueError(f"momentum_for: steps must be >= 1; got {steps}")
    return threshold ** (1.0 / steps)


@dataclass(frozen=True)
class Metrics:
    """Loss and accuracy over some data (None: no labels or not computable; NaN: diverged)."""

    loss: float | None
    accuracy: float | None
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"loss": json_number(self.loss), "accuracy": json_number(self.accuracy), "samples": self.samples}


@dataclass(frozen=True, eq=False)
class LayerMeasurement:
    """Everything measured about one BN layer (arrays are float64, one entry per channel).

    Attributes:
        name: qualified module name.
        kind: ``"bnlab.BatchNormalization"``, ``"torch.BatchNorm2d"``, ...
        channels: number of statistics (channels).
        momentum: Keras convention (weight of the old value; PyTorch's converted); None =
            cumulative average.
        epsilon: the layer's epsilon.
        steps_seen: ``num_batches_tracked`` (None: not tracked).
        steps_needed: :func:`fade_steps` of the momentum.
        frozen: :func:`bnlab.nn.is_frozen`.
        training: the layer's ``training`` flag as handed over.
        tracks_statistics: False for PyTorch layers with ``track_running_stats=False``.
        values_per_channel: values each population statistic was computed from (0: the
            data never reached the layer).
        population_mean, population_variance: over the calibration data.
        moving_mean, moving_variance: stored (None without running statistics).
        gamma, beta: None when the layer has none.
        initial_mean, initial_variance: the values the moving statistics started from
            (PyTorch: 0 and 1; bnlab: its initializers), for :meth:`predicted_by_initial`.
        batch_size: samples per calibration batch (the full batches).
        batch_mean_noise, batch_log_variance_noise: see the module docstring (None with
            fewer than two full batches).
        dropout_variance_ratio: median over channels of var(dropout on) / var(dropout off),
            for layers after a dropout module.
    """

    name: str
    kind: str
    channels: int
    momentum: float | None
    epsilon: float
    steps_seen: int | None
    steps_needed: float
    frozen: bool
    training: bool
    tracks_statistics: bool
    values_per_channel: int
    population_mean: np.ndarray
    population_variance: np.ndarray
    moving_mean: np.ndarray | None
    moving_variance: np.ndarray | None
    gamma: np.ndarray | None
    beta: np.ndarray | None
    initial_mean: np.ndarray | None = None
    initial_variance: np.ndarray | None = None
    batch_size: int | None = None
    batch_mean_noise: float | None = None
    batch_log_variance_noise: float | None = None
    dropout_variance_ratio: float | None = None

    # ----------------------------------------------------------- derived
    @property
    def initial_weight(self) -> float | None:
        """Weight of the initial moving values after ``steps_seen`` updates."""
        if self.steps_seen is None or not self.tracks_statistics:
            return None
        return initial_weight(self.momentum, self.steps_seen)

    @property
    def mean_distance(self) -> np.ndarray | None:
        """``|mu_pop - m| / sqrt(var_pop + eps)`` per channel."""
        if self.moving_mean is None or self.values_per_channel == 0:
            return None
        with np.errstate(invalid="ignore"):
            scale = np.sqrt(self.population_variance + self.epsilon)
            return np.abs(self.population_mean - self.moving_mean) / scale

    @property
    def log_variance_ratio(self) -> np.ndarray | None:
        """``ln((v + eps) / (var_pop + eps))`` per channel (NaN for a negative ``v``)."""
        if self.moving_variance is None or self.values_per_channel == 0:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log((self.moving_variance + self.epsilon)
                          / (self.population_variance + self.epsilon))

    def predicted_by_initial(self) -> tuple[np.ndarray, np.ndarray] | None:
        r"""Per-channel ``(mean distance, log variance ratio)`` the initial values alone explain.

        If the moving average had followed the population statistics exactly except for
        the weight :math:`w = m^t` the initial values still carry, it would hold
        :math:`w\,m_0 + (1 - w)\,\mu` and :math:`w\,v_0 + (1 - w)\,\sigma^2`. Comparing
        those with the population statistics like the stored ones gives what the
        unfaded initial values account for. None when unknown.
        """
        w = self.initial_weight
        if w is None or self.initial_mean is None or self.initial_variance is None:
            return None
        if self.values_per_channel == 0:
            return None
        mean = w * self.initial_mean + (1 - w) * self.population_mean
        variance = w * self.initial_variance + (1 - w) * self.population_variance
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.sqrt(self.population_variance + self.epsilon)
            return (np.abs(self.population_mean - mean) / scale,
                    np.log((variance + self.epsilon) / (self.population_variance + self.epsilon)))

    @property
    def nonfinite_statistics(self) -> np.ndarray:
        """Channels whose moving mean or variance is NaN/inf, or whose variance is negative."""
        if self.moving_mean is None or self.moving_variance is None:
            return np.zeros(0, dtype=np.int64)
        bad = ~np.isfinite(self.moving_mean) | ~np.isfinite(self.moving_variance)
        with np.errstate(invalid="ignore"):
            bad |= self.moving_variance < 0
        return np.flatnonzero(bad)

    @property
    def nonfinite_parameters(self) -> np.ndarray:
        """Channels whose gamma or beta is NaN/inf."""
        bad = np.zeros(self.channels, dtype=bool)
        for p in (self.gamma, self.beta):
            if p is not None:
                bad |= ~np.isfinite(p)
        return np.flatnonzero(bad)

    @property
    def nonfinite_inputs(self) -> bool:
        """The layer's input had NaN/inf values on the calibration data."""
        return self.values_per_channel > 0 and not bool(
            np.isfinite(self.population_mean).all() and np.isfinite(self.population_variance).all()
        )

    @property
    def dead_channels(self) -> np.ndarray:
        """Channels with ``|gamma| < DEAD_GAMMA``."""
        if self.gamma is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.abs(self.gamma) < DEAD_GAMMA)

    @property
    def zero_variance_channels(self) -> np.ndarray:
        """Channels whose population variance is below ``ZERO_VARIANCE * epsilon``."""
        if self.values_per_channel == 0:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.population_variance < ZERO_VARIANCE * self.epsilon)

    def summary(self) -> dict[str, Any]:
        """Headline numbers (JSON-ready): distances, worst channels, steps, noise."""
        d, r = self.mean_distance, self.log_variance_ratio
        return {
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "steps_seen": self.steps_seen,
            "steps_needed": json_steps(self.steps_needed),
            "initial_weight": json_number(self.initial_weight),
            "frozen": self.frozen,
            "training": self.training,
            "tracks_statistics": self.tracks_statistics,
            "values_per_channel": self.values_per_channel,
            "mean_distance": _spread(d),
            "log_variance_ratio": _spread(None if r is None else np.abs(r), signed=r),
            "batch_size": self.batch_size,
            "batch_mean_noise": json_number(self.batch_mean_noise),
            "batch_log_variance_noise": json_number(self.batch_log_variance_noise),
            "dropout_variance_ratio": json_number(self.dropout_variance_ratio),
            "dead_channels": self.dead_channels.tolist(),
            "zero_variance_channels": self.zero_variance_channels.tolist(),
            "nonfinite_statistics": self.nonfinite_statistics.tolist(),
            "nonfinite_parameters": self.nonfinite_parameters.tolist(),
        }


@dataclass(frozen=True, eq=False)
class Measurements:
    """Model-level metrics, per-layer measurements and the traced structure.

    Attributes:
        inference: inference-mode metrics on the evaluation data.
        train_mode: training-mode (batch statistics) metrics on the evaluation data.
        as_is: metrics with the modes as handed over, when they differ from both.
        layers: one :class:`LayerMeasurement` per BN layer, in module order.
        structure: see :class:`bnlab.doctor.trace.Structure`.
        batch_size: batch size of the training-mode passes (None: the data's own batches).
        train_batch_size: the batch size the model was trained with, when known.
        evaluation, calibration: descriptions of the data.
    """

    inference: Metrics
    train_mode: Metrics
    as_is: Metrics | None
    layers: tuple[LayerMeasurement, ...]
    structure: Structure
    batch_size: int | None
    train_batch_size: int | None
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, Any] = field(default_factory=dict)

    @property
    def accuracy_gap(self) -> float | None:
        """Training-mode minus inference-mode accuracy (None when unknown)."""
        a, b = self.train_mode.accuracy, self.inference.accuracy
        if a is None or b is None:
            return None
        return a - b

    def layer(self, name: str) -> LayerMeasurement:
        for m in self.layers:
            if m.name == name:
                return m
        raise KeyError(f"no BN layer {name!r}; layers: {', '.join(m.name for m in self.layers)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "inference": self.inference.to_dict(),
            "train_mode": self.train_mode.to_dict(),
            "as_is": None if self.as_is is None else self.as_is.to_dict(),
            "accuracy_gap": json_number(self.accuracy_gap),
            "batch_size": self.batch_size,
            "train_batch_size": self.train_batch_size,
            "evaluation": dict(self.evaluation),
            "calibration": dict(self.calibration),
            "layers": [m.summary() for m in self.layers],
        }


# --------------------------------------------------------------------------- passes


def measure(
    model: nn.Module,
    evaluation: Batches,
    calibration: Batches,
    scorer: Scorer,
    *,
    train_batch_size: int | None = None,
    seed: int = 0,
) -> Measurements:
    """Run every measurement pass (see the module docstring); the model is left as it was."""
    layers = {display_name(model, name): m for name, m in batch_norm_layers(model)}
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            population, noise, structure = _population_pass(model, calibration, layers, modes)
            inference = _metrics(model, evaluation, scorer, mode="eval")
            train_mode = _metrics(model, evaluation, scorer, mode="batch")
            as_is = None
            if _modes_mixed(model, layers, modes):
                as_is = _metrics(model, evaluation, scorer, mode="as_is")
            shifts = _dropout_pass(model, calibration, layers, structure, population, seed)
    finally:
        for module, training in modes.items():  # each pass restores them; this is a backstop
            module.training = training
    measured = tuple(
        _layer(name, module, population.get(name), noise.get(name), shifts.get(name), modes[module])
        for name, module in layers.items()
    )
    return Measurements(
        inference=inference,
        train_mode=train_mode,
        as_is=as_is,
        layers=measured,
        structure=structure,
        batch_size=calibration.batch_size,
        train_batch_size=train_batch_size,
        evaluation=evaluation.describe(),
        calibration=calibration.describe(),
    )


def _modes_mixed(model: nn.Module, layers: Mapping[str, nn.Module],
                 modes: Mapping[nn.Module, bool]) -> bool:
    """Some non-frozen BN layer's mode differs from the model's."""
    return any(modes[m] != modes[model] for m in layers.values() if not is_frozen(m))


def _metrics(model: nn.Module, batches: Batches, scorer: Scorer, *, mode: str) -> Metrics:
    """Loss/accuracy in ``mode``: "eval" (inference), "batch" (batch statistics), "as_is"."""
    totals = {"loss": 0.0, "correct": 0.0, "n": 0, "loss_n": 0, "correct_n": 0}
    context = batch_statistics(model) if mode == "batch" else preserved(model, model.modules())
    with context:
        if mode == "eval":
            model.eval()
        for x, y in batches:
            if mode == "batch" and x.shape[0] < 2:
                continue  # one sample has no batch variance
            try:
                out = model(x)
            except FloatingPointError:  # a BN layer with on_nonfinite="raise"
                return Metrics(math.nan, math.nan, batches.samples or 0)
            loss, correct = scorer.score(out, y)
            n = int(x.shape[0])
            totals["n"] += n
            if loss is not None:
                totals["loss"] += loss
                totals["loss_n"] += n
            if correct is not None:
                totals["correct"] += correct
                totals["correct_n"] += n
    loss_value = totals["loss"] / totals["loss_n"] if totals["loss_n"] else None
    accuracy = totals["correct"] / totals["correct_n"] if totals["correct_n"] else None
    return Metrics(loss_value, accuracy, int(totals["n"]))


class _Collector:
    """Per-layer float64 moments of the BN inputs (pre-hooks), merged over batches."""

    def __init__(self, layers: Mapping[str, nn.Module], keep_batches: bool) -> None:
        self.layers = layers
        self.keep_batches = keep_batches
        self.moments: dict[str, Moments] = {}
        self.batches: dict[str, list[tuple[int, Tensor, Tensor]]] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _Collector:
        for name, module in self.layers.items():
            self.handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _hook(self, name: str):
        def collect(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not args or not isinstance(args[0], Tensor):
                return
            x = args[0]
            kept = kept_axes(view(module).axis, x.dim())
            batch = moments_of(x.detach().to(torch.float64), kept)
            previous = self.moments.get(name)
            self.moments[name] = batch if previous is None else merge_moments(previous, batch)
            if self.keep_batches:
                samples = int(x.shape[0])
                self.batches.setdefault(name, []).append(
                    (samples, batch.mean.reshape(-1), batch.variance().reshape(-1)))
        return collect


def _population_pass(
    model: nn.Module,
    calibration: Batches,
    layers: Mapping[str, nn.Module],
    modes: Mapping[nn.Module, bool],
) -> tuple[dict[str, Moments], dict[str, tuple[int, float, float] | None], Structure]:
    """Population moments per layer, batch noise, and the structure seen on the first batch."""
    structure: Structure | None = None
    collector = _Collector(layers, keep_batches=True)
    with batch_statistics(model), collector:
        for x, _ in calibration:
            if x.shape[0] < 2:
                continue
            if structure is None:
                with Tracer(model, layers) as tracer:
                    tracer.model_input = x
                    _forward(model, x)
                # Report the modes the model was handed over in, not the measuring ones.
                structure = tracer.structure(
                    model_training=modes[model],
                    layer_training={name: modes[m] for name, m in layers.items()},
                )
            else:
                _forward(model, x)
    if structure is None:
        raise ValueError(
            f"doctor: the calibration data ({calibration.name}) has no batch of at least 2 "
            "samples; give more data or a larger batch size"
        )
    noise = {name: _noise(collector.batches[name], collector.moments[name], layers[name])
             for name in collector.moments}
    return collector.moments, noise, structure


def _forward(model: nn.Module, x: Tensor) -> None:
    # A BN layer with on_nonfinite="raise" may refuse a batch: the layers before it were
    # measured; the rest sees no input.
    with suppress(FloatingPointError):
        model(x)


def _noise(
    batches: list[tuple[int, Tensor, Tensor]], population: Moments, module: nn.Module
) -> tuple[int, float, float] | None:
    """(batch size, median batch-mean noise, median log-variance noise) over full batches."""
    if not batches:
        return None
    size = batches[0][0]
    full = [(mean, var) for n, mean, var in batches if n == size]
    if len(full) < 2:
        return (size, math.nan, math.nan)
    eps = view(module).epsilon
    means = torch.stack([m for m, _ in full])  # (B, C)
    variances = torch.stack([v for _, v in full])
    pop_var = population.variance().reshape(-1)
    mean_noise = means.std(dim=0) / (pop_var + eps).sqrt()
    log_var = ((variances + eps) / (pop_var + eps)).log()
    return (size, float(mean_noise.nanmedian()), float(log_var.std(dim=0).nanmedian()))


def _dropout_pass(
    model: nn.Module,
    calibration: Batches,
    layers: Mapping[str, nn.Module],
    structure: Structure,
    population: Mapping[str, Moments],
    seed: int,
) -> dict[str, float]:
    """Median over channels of var(input, dropout on) / var(input, dropout off) per layer."""
    after = {name for d in structure.dropout_before_bn for name in d.layers}
    if not after:
        return {}
    targets = {name: layers[name] for name in after}
    collector = _Collector(targets, keep_batches=False)
    with torch.random.fork_rng(devices=[]), batch_statistics(model), collector:
        torch.manual_seed(seed)
        for module in model.modules():
            if dropout_rate(module) is not None:
                module.train()
        for i, (x, _) in enumerate(calibration):
            if i >= DROPOUT_BATCHES:
                break
            if x.shape[0] >= 2:
                _forward(model, x)
    ratios = {}
    for name, moments in collector.moments.items():
        off = population[name].variance().reshape(-1)
        on = moments.variance().reshape(-1)
        eps = view(layers[name]).epsilon
        ratios[name] = float(((on + eps) / (off + eps)).nanmedian())
    return ratios


def _layer(
    name: str,
    module: nn.Module,
    population: Moments | None,
    noise: tuple[int, float, float] | None,
    dropout_ratio: float | None,
    training: bool,
) -> LayerMeasurement:
    layer = view(module)
    if isinstance(module, _BatchNorm):
        momentum = keras_momentum(module.momentum)
        kind = f"torch.{type(module).__name__}"
    else:
        momentum = module.momentum
        kind = f"bnlab.{type(module).__name__}"
    stat = layer.mean if layer.mean is not None else None
    channels = _channels(module, population, stat)
    if population is not None:
        pop_mean = _np(population.mean)
        pop_var = _np(population.variance(unbiased=layer.unbiased))
        count = int(population.count)
    else:
        pop_mean = np.full(channels, np.nan)
        pop_var = np.full(channels, np.nan)
        count = 0
    tracked = layer.num_batches_tracked
    tracks = layer.mean is not None
    initial = _initial_values(module, channels) if tracks else None
    size, mean_noise, var_noise = noise if noise is not None else (None, None, None)
    return LayerMeasurement(
        name=name,
        kind=kind,
        channels=channels,
        momentum=momentum,
        epsilon=layer.epsilon,
        steps_seen=None if tracked is None else int(tracked),
        steps_needed=fade_steps(momentum),
        frozen=is_frozen(module),
        training=training,
        tracks_statistics=tracks,
        values_per_channel=count,
        population_mean=pop_mean,
        population_variance=pop_var,
        moving_mean=None if layer.mean is None else _np(layer.mean),
        moving_variance=None if layer.variance is None else _np(layer.variance),
        gamma=None if layer.gamma is None else _np(layer.gamma),
        beta=None if layer.beta is None else _np(layer.beta),
        initial_mean=None if initial is None else initial[0],
        initial_variance=None if initial is None else initial[1],
        batch_size=size,
        batch_mean_noise=mean_noise,
        batch_log_variance_noise=var_noise,
        dropout_variance_ratio=dropout_ratio,
    )


def _initial_values(module: nn.Module, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """What the layer's moving mean and variance started from (PyTorch: 0 and 1)."""
    if isinstance(module, _BatchNorm):
        return np.zeros(channels), np.ones(channels)
    if not isinstance(module, BatchNormalization) or module.features is None:
        return None
    values = []
    with torch.random.fork_rng(devices=[]):  # a random initializer must not move the RNG
        for initializer in (module.moving_mean_initializer, module.moving_variance_initializer):
            t = torch.empty(module.features, dtype=torch.float64)
            initializer(t)
            values.append(_np(t))
    return values[0], values[1]


def _channels(module: nn.Module, population: Moments | None, stat: Tensor | None) -> int:
    if stat is not None:
        return stat.numel()
    if population is not None:
        return population.mean.numel()
    if isinstance(module, _BatchNorm):
        return int(module.num_features)
    if isinstance(module, BatchNormalization) and module.features is not None:
        return math.prod(module.features)
    return 0


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()


def json_number(x: float | None) -> float | None:
    """A JSON-ready number: NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def json_steps(steps: float) -> int | None:
    """A step count for JSON: an int, or None for "never" (inf)."""
    return int(steps) if math.isfinite(steps) else None


def _spread(values: np.ndarray | None, signed: np.ndarray | None = None,
            worst: int = 3) -> dict[str, Any] | None:
    """max, median and the worst channels (index, value) of a per-channel array."""
    if values is None or values.size == 0:
        return None
    finite = np.where(np.isfinite(values), values, np.inf)
    order = np.argsort(-finite, kind="stable")[:worst]
    shown = signed if signed is not None else values
    with np.errstate(invalid="ignore"):
        return {
            "max": json_number(np.nanmax(values)) if np.isfinite(values).any() else None,
            "median": json_number(np.nanmedian(values)) if np.isfinite(values).any() else None,
            "worst": [[int(i), json_number(shown[i])] for i in order],
        }
