"""Keras-like training: :func:`fit`, :func:`evaluate` and :func:`seeded` model construction.

How the lab trains one run (variant, seed)::

    from bnlab.train import TrainConfig, fit, seeded

    with seeded(seed):                       # initial weights depend on the seed only
        model = build_model(layers, data.input_shape)
    history = fit(model, data, config, seed=seed, progress=False)
    record = history.to_dict()

``fit`` does what ``model.compile(optimizer, loss, metrics=["accuracy"]); model.fit(x, y,
epochs, batch_size, validation_data=(x_test, y_test), shuffle=True)`` does in Keras, and
records more: train-mode validation accuracy, evaluations every ``eval_every_steps`` steps,
and layer percentiles (:class:`ProbeSpec`).

Reproducibility: the same model weights, data, config and seed give the same history bit
for bit on the same machine, torch build and thread count. ``fit`` draws from its own
random streams derived from ``seed`` (shuffling, the train-mode evaluation order, and the
global torch generator for dropout), and restores the caller's torch random state on exit.

Threads: ``fit`` leaves ``torch.set_num_threads`` alone. Small models (the circles MLP)
run fastest on one thread; a lab running one process per core should call
``torch.set_num_threads(1)`` in each worker.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from bnlab.functional import NonFiniteStatisticsWarning
from bnlab.train.batchnorm import (
    apply_constraints,
    batch_norm_layers,
    batch_statistics,
    regularization_loss,
)
from bnlab.train.config import TrainConfig
from bnlab.train.history import EvalRecord, FinalMetrics, History
from bnlab.train.losses import LossFn, get_loss
from bnlab.train.metrics import correct_count
from bnlab.train.optimizers import get_optimizer
from bnlab.train.probes import ProbeRecorder
from bnlab.train.progress import TrainProgress

__all__ = ["EpochCallback", "TrainTestArrays", "evaluate", "fit", "seeded"]

NAN = float("nan")

#: Inference passes feed about this many input values per chunk (at least one batch).
INFERENCE_CHUNK_VALUES = 1_000_000

EpochCallback = Callable[[int, dict[str, float | None]], None]


class TrainTestArrays(Protocol):
    """What :func:`fit` reads from a dataset (:class:`bnlab.data.Dataset` has it).

    ``x_*``: float arrays (N, ...) in the model's input layout; ``y_*``: (N,) int class ids
    (0/1 for a single sigmoid output) or float targets shaped like the model's output.
    """

    @property
    def x_train(self) -> np.ndarray: ...
    @property
    def y_train(self) -> np.ndarray: ...
    @property
    def x_test(self) -> np.ndarray: ...
    @property
    def y_test(self) -> np.ndarray: ...


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator with ``seed`` inside the block, restore it after.

    Build the model inside the block so its initial weights depend on ``seed`` alone,
    whatever ran before, and the caller's random state is left as it was::

        with seeded(seed):
            model = build_model(layers, data.input_shape)

    Inside, ``torch.manual_seed(seed)`` has been called, so ``seeded(0)`` builds the same
    weights as ``torch.manual_seed(0)`` followed by the construction. Only torch's CPU
    generator is saved and restored (NumPy's and Python's are not touched).
    """
    _check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class _Tensors:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _to_tensors(data: TrainTestArrays, dtype: torch.dtype, device: torch.device) -> _Tensors:
    """Convert and check the four arrays once, before training."""

    def x_of(name: str) -> torch.Tensor:
        x = np.asarray(getattr(data, name))
        if x.ndim < 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(
                f"fit: data.{name} must be a non-empty numeric array (N, ...); "
                f"got shape {x.shape} dtype {x.dtype}"
            )
        return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)

    def y_of(name: str, n: int) -> torch.Tensor:
        y = np.asarray(getattr(data, name))
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(
                f"fit: data.{name} must have one target per sample ({n}); got shape {y.shape}; "
                f"check that x and y of the dataset match"
            )
        if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
            return torch.as_tensor(y.astype(np.int64), device=device)
        if np.issubdtype(y.dtype, np.floating):
            return torch.as_tensor(np.ascontiguousarray(y), dtype=dtype, device=device)
        raise ValueError(f"fit: data.{name} must hold int class ids or float targets; got dtype {y.dtype}")

    x_train, x_test = x_of("x_train"), x_of("x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"fit: data.x_train samples have shape {tuple(x_train.shape[1:])} but data.x_test samples "
            f"have {tuple(x_test.shape[1:])}; both sets must have the same sample shape"
        )
    return _Tensors(
        x_train=x_train,
        y_train=y_of("y_train", x_train.shape[0]),
        x_test=x_test,
        y_test=y_of("y_test", x_test.shape[0]),
    )


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _inference_chunk(x: torch.Tensor, batch_size: int) -> int:
    per_sample = max(1, math.prod(x.shape[1:]))
    return max(batch_size, INFERENCE_CHUNK_VALUES // per_sample)


@torch.no_grad()
def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, chunk: int
) -> tuple[float, float]:
    """(loss, accuracy) over (x, y) in inference mode; the model's modes are restored.

    loss = batch-size-weighted mean of the per-chunk losses + the BN regularization loss
    (as Keras's ``evaluate`` reports it). Accuracy is NaN when any output is non-finite.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        correct = torch.zeros((), dtype=torch.int64, device=x.device)
        finite = torch.ones((), dtype=torch.bool, device=x.device)
        for s in _chunks(x.shape[0], chunk):
            out = model(x[s])
            n = out.shape[0]
            total += loss_fn(y[s], out).double() * n
            correct += correct_count(y[s], out)
            finite &= torch.isfinite(out).all()
        reg = regularization_loss(model.modules())
        loss = total / x.shape[0] + (reg.double() if reg is not None else 0.0)
        loss_value = loss.item()
        accuracy = correct.item() / x.shape[0] if bool(finite) else NAN
    finally:
        for m, mode in modes:
            m.training = mode
    return loss_value, accuracy


@torch.no_grad()
def _accuracy_batch_statistics(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int
) -> float:
    """Accuracy over ``x[order]`` in batches of ``batch_size``, BN using batch statistics.

    Nothing in the model changes (see :func:`batch_statistics`). A trailing batch of one
    sample is skipped: batch statistics of one sample are meaningless (zero variance).
    """
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    finite = torch.ones((), dtype=torch.bool, device=x.device)
    seen = 0
    with batch_statistics(model):
        for s in _chunks(x.shape[0], batch_size):
            idx = order[s]
            if idx.numel() < 2:
                continue
            try:
                out = model(x.index_select(0, idx))
            except FloatingPointError:  # BN with on_nonfinite="raise" on a diverged model
                return NAN
            correct += correct_count(y.index_select(0, idx), out)
            finite &= torch.isfinite(out).all()
            seen += idx.numel()
    if seen == 0 or not bool(finite):
        return NAN
    return correct.item() / seen


def _steps_per_epoch(n: int, batch_size: int, has_bn: bool) -> int:
    steps = math.ceil(n / batch_size)
    last = n - (steps - 1) * batch_size
    if has_bn and last == 1:
        if steps == 1:
            raise ValueError(
                f"fit: a model with batch normalization cannot train on a single sample per batch "
                f"(training set of {n}, batch_size {batch_size}); use at least 2 training samples"
            )
        # Keras would train on it; PyTorch's BN refuses (zero variance). Drop it instead.
        steps -= 1
    return steps


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _check_output(out: object, y: torch.Tensor, loss: str, loss_fn: LossFn) -> None:
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"fit: the model must return a tensor (N, K) of probabilities; got {shape}; "
            f"end the model with a Dense layer (sigmoid for K=1, softmax for K>1)"
        )
    if out.shape[1] == 1 and not y.dtype.is_floating_point and bool((y > 1).any() | (y < 0).any()):
        raise ValueError(
            f"fit: the model has one output unit (binary) but the targets hold class ids up to "
            f"{int(y.max())}; end the model with Dense(num_classes, softmax) and a categorical loss"
        )
    loss_fn(y, out)  # raises a one-line ValueError when targets and outputs do not fit


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, loss: str, batch_size: int = 32
) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``(x, y)`` in inference mode, like Keras's ``evaluate``.

    Returns ``{"loss": float, "accuracy": float}``; the loss includes the BN layers'
    regularization losses. ``batch_size`` only sets the minimum chunk size.
    """
    loss_fn = get_loss(loss)
    device, dtype = _model_device_dtype(model)
    arrays = _to_tensors(_Arrays(x, y, x, y), dtype, device)
    chunk = _inference_chunk(arrays.x_test, batch_size)
    value, accuracy = _evaluate(model, arrays.x_test, arrays.y_test, loss_fn, chunk)
    return {"loss": value, "accuracy": accuracy}


@dataclass(frozen=True)
class _Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _derive_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Independent streams for shuffling, the train-mode evaluation order and torch."""
    shuffle_seq, order_seq, torch_seq = np.random.SeedSequence(seed).spawn(3)
    torch_seed = int(torch_seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return np.random.default_rng(shuffle_seq), np.random.default_rng(order_seq), torch_seed


def fit(
    model: nn.Module,
    data: TrainTestArrays,
    config: TrainConfig,
    *,
    seed: int,
    progress: bool = False,
    on_epoch_end: EpochCallback | None = None,
) -> History:
    """Train ``model`` on ``data`` as Keras's ``fit`` would, and return its :class:`History`.

    Per epoch: shuffle the training set (seeded; ``config.shuffle``), take mini-batches of
    ``config.batch_size`` (the last, partial one included like Keras, except that a last
    batch of *one* sample is dropped when the model has BN layers, which cannot normalise
    a single sample), and for each batch::

        loss = loss_fn(y, model(x)) + sum of BN regularization losses
        loss.backward(); optimizer.step(); BN constraints applied

    then evaluate the test set. Reported numbers:

    - ``loss``/``accuracy``: batch-size-weighted means over the epoch's batches, measured
      in training mode while the weights change (Keras's running means);
    - ``val_loss``/``val_accuracy``: test set in inference mode (``model.eval()``);
    - ``val_accuracy_train_mode`` (models with BN layers only, else None): test accuracy
      with BN normalising each batch by its own statistics, in batches of
      ``config.batch_size`` taken in a fixed seeded order, changing no buffer;
    - ``evals``: the validation numbers every ``config.eval_every_steps`` steps and at
      every epoch end; ``epoch = step / steps_per_epoch``;
    - ``probes``: see :class:`ProbeSpec`;
    - ``final``: train and test sets in inference mode after the last epoch.

    Divergence: when the training loss becomes non-finite (checked at every evaluation),
    training stops, ``diverged`` is True, and the epoch in progress and everything after
    it (epochs, evals, probes, final) are NaN, so every run of a study has lists of the
    same length. No exception is raised.

    The loss of an evaluation includes the BN regularization losses (as in Keras).
    Accuracy is NaN when the model outputs non-finite values.

    Args:
        model: a ``torch.nn.Module`` mapping a batch ``x`` to probabilities (N, K); its
            BN layers are found by type (:mod:`bnlab.train.batchnorm`). Trained in place;
            left in eval mode.
        data: anything with ``x_train, y_train, x_test, y_test`` arrays
            (:class:`bnlab.data.Dataset`).
        config: the :class:`TrainConfig`.
        seed: non-negative int; seeds shuffling, the train-mode evaluation order and the
            global torch generator (dropout) for the duration of the call. Seed the
            model's construction with :func:`seeded`.
        progress: show a progress bar when standard output is a terminal.
        on_epoch_end: called as ``on_epoch_end(epoch, logs)`` after every epoch actually
            trained (0-based like Keras; also after the epoch that diverged, with NaN),
            ``logs`` holding the epoch's ``loss, accuracy, val_loss, val_accuracy,
            val_accuracy_train_mode``.

    Raises:
        ValueError / TypeError: bad seed, data that do not fit the model or loss, a probe
            naming an unknown layer, a model without trainable parameters.
    """
    seed = _check_seed(seed)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig; got {type(config).__name__}")
    device, dtype = _model_device_dtype(model)
    tensors = _to_tensors(data, dtype, device)
    loss_fn = get_loss(config.loss)
    shuffle_rng, order_rng, torch_seed = _derive_streams(seed)

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # Non-finite batch statistics mean the run diverged, which History reports.
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        torch.manual_seed(torch_seed)
        return _fit(
            model, tensors, config, loss_fn, shuffle_rng, order_rng, progress, on_epoch_end
        )


def _fit(
    model: nn.Module,
    t: _Tensors,
    config: TrainConfig,
    loss_fn: LossFn,
    shuffle_rng: np.random.Generator,
    order_rng: np.random.Generator,
    progress: bool,
    on_epoch_end: EpochCallback | None,
) -> History:
    n_train, n_test = t.x_train.shape[0], t.x_test.shape[0]
    bs = config.batch_size
    device = t.x_train.device

    # A forward pass in inference mode builds lazily-shaped layers (so the optimizer sees
    # every parameter) without touching moving statistics, and checks the output early.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            probe_out = model(t.x_train[: min(bs, n_train)])
    except RuntimeError as error:  # e.g. a Linear layer built for another feature count
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"fit: the model cannot take the training data (samples of shape "
            f"{tuple(t.x_train.shape[1:])}): {first_line}; build the model for data.input_shape"
        ) from error
    finally:
        for m, mode in modes:
            m.training = mode
    _check_output(probe_out, t.y_train[: min(bs, n_train)], config.loss, loss_fn)
    has_bn = bool(batch_norm_layers(model))

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the model has no trainable parameters; unfreeze some layers")
    optimizer = get_optimizer(config.optimizer, params, config.optimizer_args)
    bn_layers = batch_norm_layers(model)  # looked up once: the loop below is the hot path

    spe = _steps_per_epoch(n_train, bs, has_bn)
    total_steps = spe * config.epochs
    every = config.eval_every_steps
    chunk_train = _inference_chunk(t.x_train, bs)
    chunk_test = _inference_chunk(t.x_test, bs)
    test_order = torch.as_tensor(order_rng.permutation(n_test), device=device)

    epochs: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
    train_mode_acc: list[float] = []
    evals: list[EvalRecord] = []
    diverged = False
    step = 0

    def validate(at_step: int) -> EvalRecord:
        val_loss, val_acc = _evaluate(model, t.x_test, t.y_test, loss_fn, chunk_test)
        tm = _accuracy_batch_statistics(model, t.x_test, t.y_test, test_order, bs) if has_bn else None
        return EvalRecord(at_step, at_step / spe, val_loss, val_acc, tm)

    recorder = ProbeRecorder(model, config.probes) if config.probes else None
    try:
        with TrainProgress(enabled=progress, epochs=config.epochs, steps_per_epoch=spe) as bar:
            for epoch in range(config.epochs):
                if config.shuffle:
                    perm = torch.as_tensor(shuffle_rng.permutation(n_train), device=device)
                else:
                    perm = torch.arange(n_train, device=device)
                model.train()
                # Per-step numbers stay on the device; they are read once per evaluation.
                losses: list[torch.Tensor] = []
                outputs: list[torch.Tensor] = []
                for b in range(spe):
                    idx = perm[b * bs : (b + 1) * bs]
                    xb = t.x_train.index_select(0, idx)
                    yb = t.y_train.index_select(0, idx)
                    if recorder is not None:
                        recorder.arm(step)
                    try:
                        out = model(xb)
                    except FloatingPointError:
                        # A BN layer with on_nonfinite="raise" saw NaN/inf activations.
                        diverged = True
                        break
                    finally:
                        if recorder is not None:
                            recorder.disarm()
                    loss = loss_fn(yb, out)
                    reg = regularization_loss(bn_layers)
                    if reg is not None:
                        loss = loss + reg
                    for p in params:
                        p.grad = None
                    loss.backward()
                    optimizer.step()
                    apply_constraints(bn_layers)
                    step += 1
                    losses.append(loss.detach())
                    outputs.append(out.detach())
                    bar.step()
                    if every is not None and step % every == 0 and b < spe - 1:
                        if not _finite(losses):
                            diverged = True
                            break
                        evals.append(validate(step))
                        model.train()
                if diverged or not _finite(losses):
                    diverged = True
                    logs = _epoch_logs(NAN, NAN, NAN, NAN, NAN if has_bn else None)
                else:
                    sizes = torch.tensor(
                        [min(bs, n_train - b * bs) for b in range(spe)], dtype=torch.float64, device=device
                    )
                    seen = int(sizes.sum().item())
                    train_loss = float((torch.stack(losses).double() * sizes).sum().item() / seen)
                    y_seen = t.y_train.index_select(0, perm[:seen])
                    train_acc = correct_count(y_seen, torch.cat(outputs)).item() / seen
                    record = validate(step)
                    evals.append(record)
                    logs = _epoch_logs(
                        train_loss, train_acc, record.val_loss, record.val_accuracy,
                        record.val_accuracy_train_mode,
                    )
                _append_epoch(epochs, train_mode_acc, logs)
                bar.epoch(logs)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, dict(logs))
                if diverged:
                    break
    finally:
        if recorder is not None:
            recorder.close()

    if diverged:
        _pad_after_divergence(epochs, train_mode_acc, evals, config, spe, has_bn)
        final = FinalMetrics(NAN, NAN, NAN, NAN)
    else:
        train_loss, train_acc = _evaluate(model, t.x_train, t.y_train, loss_fn, chunk_train)
        test_loss, test_acc = _evaluate(model, t.x_test, t.y_test, loss_fn, chunk_test)
        final = FinalMetrics(train_loss, train_acc, test_loss, test_acc)
    model.eval()
    return History(
        loss=tuple(epochs["loss"]),
        accuracy=tuple(epochs["accuracy"]),
        val_loss=tuple(epochs["val_loss"]),
        val_accuracy=tuple(epochs["val_accuracy"]),
        val_accuracy_train_mode=tuple(train_mode_acc) if has_bn else None,
        evals=tuple(evals),
        probes=recorder.traces(pad_until=total_steps if diverged else None) if recorder else {},
        final=final,
        diverged=diverged,
        steps_per_epoch=spe,
    )


def _finite(losses: list[torch.Tensor]) -> bool:
    return bool(torch.isfinite(torch.stack(losses)).all()) if losses else True


def _epoch_logs(
    loss: float, accuracy: float, val_loss: float, val_accuracy: float, train_mode: float | None
) -> dict[str, float | None]:
    return {
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "val_accuracy_train_mode": train_mode,
    }


def _append_epoch(
    epochs: dict[str, list[float]], train_mode_acc: list[float], logs: dict[str, float | None]
) -> None:
    for key, values in epochs.items():
        value = logs[key]
        values.append(NAN if value is None else value)
    tm = logs["val_accuracy_train_mode"]
    train_mode_acc.append(NAN if tm is None else tm)


def _pad_after_divergence(
    epochs: dict[str, list[float]],
    train_mode_acc: list[float],
    evals: list[EvalRecord],
    config: TrainConfig,
    spe: int,
    has_bn: bool,
) -> None:
    """Fill the epochs and evaluations that were not run with NaN, on the planned schedule."""
    for values in epochs.values():
        values.extend([NAN] * (config.epochs - len(values)))
    train_mode_acc.extend([NAN] * (config.epochs - len(train_mode_acc)))
    last = evals[-1].step if evals else 0
    planned = set(range(spe, spe * config.epochs + 1, spe))
    if config.eval_every_steps is not None:
        planned |= set(range(config.eval_every_steps, spe * config.epochs + 1, config.eval_every_steps))
    for s in sorted(x for x in planned if x > last):
        evals.append(EvalRecord(s, s / spe, NAN, NAN, NAN if has_bn else None))
