"""Keras-like training: :func:`fit` and :func:`seeded` model construction.

How the lab trains one run (variant, seed)::

    from bnlab.models import build_model
    from bnlab.train import fit

    model = build_model(layers, data.input_shape, seed=seed)   # weights from the seed alone
    history = fit(model, data, config, seed=seed, progress=False)
    record = history.to_dict()

For a model built by hand, ``with seeded(seed): model = make_model()`` does the same as
``build_model(..., seed=seed)``: torch's generator is seeded for the construction and
restored afterwards.

``fit`` does what ``model.compile(optimizer, loss, metrics=["accuracy"]); model.fit(x, y,
epochs, batch_size, validation_data=(x_test, y_test), shuffle=True)`` does in Keras, and
records more: train-mode validation accuracy, evaluations every ``eval_every_steps`` steps,
and layer percentiles (:class:`ProbeSpec`).

Reproducibility: the same initial weights, data, config and seed give the same history bit
for bit on the same machine, torch build and thread count. ``fit`` draws from its own
random streams derived from ``seed`` (shuffling, the train-mode evaluation order, and the
global torch generator, which dropout uses) and restores the caller's torch random state
on exit.

Threads: ``fit`` leaves ``torch.set_num_threads`` alone. Small models (the circles MLP)
run fastest on one thread; a lab running one process per core should call
``torch.set_num_threads(1)`` in each worker.

Speed: data are converted to tensors once; batches are gathered with ``index_select``
from a per-epoch permutation; per-step losses and outputs stay tensors until the next
evaluation (no ``.item()`` per step).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bnlab.functional import NonFiniteStatisticsWarning
from bnlab.nn.views import preserved
from bnlab.train.batchnorm import apply_constraints, batch_norm_layers, regularization_loss
from bnlab.train.config import TrainConfig
from bnlab.train.evaluation import (
    batch_statistics_accuracy,
    features_tensor,
    inference_chunk,
    inference_metrics,
    model_device_dtype,
    targets_tensor,
)
from bnlab.train.history import EPOCH_METRICS, EvalRecord, FinalMetrics, History
from bnlab.train.losses import LossFn, get_loss
from bnlab.train.metrics import chance_accuracy, correct_count
from bnlab.train.optimizers import get_optimizer
from bnlab.train.probes import ProbeRecorder
from bnlab.train.progress import TrainProgress

__all__ = ["EpochCallback", "TrainTestArrays", "fit", "seeded"]

NAN = float("nan")

#: ``on_epoch_end(epoch, logs)``: 0-based epoch; logs = the epoch's five numbers.
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

    Build a model inside the block so its initial weights depend on ``seed`` alone,
    whatever ran before, and the caller's random state is left as it was::

        with seeded(seed):
            model = make_model()

    Inside, ``torch.manual_seed(seed)`` has been called, so ``seeded(s)`` gives the same
    weights as ``bnlab.models.build_model(..., seed=s)`` and as ``torch.manual_seed(s)``
    followed by the construction. Only torch's CPU generator is saved and restored.

    Raises:
        ValueError: ``seed`` is not a non-negative integer.
    """
    _check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def derive_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Independent streams from ``seed``: shuffling, train-mode evaluation order, torch seed."""
    shuffle_seq, order_seq, torch_seq = np.random.SeedSequence(seed).spawn(3)
    torch_seed = int(torch_seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    return np.random.default_rng(shuffle_seq), np.random.default_rng(order_seq), torch_seed


def steps_per_epoch(n: int, batch_size: int, has_bn: bool) -> int:
    """``ceil(n / batch_size)``, minus a trailing batch of one sample when the model has BN.

    Keras would train on that batch; a BN layer cannot normalise one sample (zero
    variance; PyTorch's raises), so it is dropped instead.
    """
    steps = math.ceil(n / batch_size)
    if has_bn and n - (steps - 1) * batch_size == 1:
        if steps == 1:
            raise ValueError(
                f"fit: a model with batch normalization cannot train on a single sample per batch "
                f"(training set of {n}, batch_size {batch_size}); use at least 2 training samples"
            )
        steps -= 1
    return steps


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
    - ``final``: train and test sets in inference mode after the last epoch;
    - ``initial_loss``: the first batch's loss before the first update (the start a later
      blow-up of the loss is measured against);
    - ``chance_accuracy``: the test accuracy of always predicting the test set's most
      frequent class (:func:`bnlab.train.metrics.chance_accuracy`).

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
            global torch generator (dropout) for the duration of the call. The initial
            weights are the caller's: build the model with ``build_model(..., seed=seed)``
            or inside :func:`seeded`.
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
    shuffle_rng, order_rng, torch_seed = derive_streams(seed)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # Non-finite batch statistics mean the run diverged, which the History reports.
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        torch.manual_seed(torch_seed)
        run = _Run(model, data, config, shuffle_rng, order_rng)
        return run.train(progress=progress, on_epoch_end=on_epoch_end)


def check_model_output(
    model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, batch_size: int, loss_fn: LossFn
) -> int:
    """One inference-mode forward: builds lazily-shaped layers (so the optimizer sees
    every parameter) without touching moving statistics, and checks the output.

    Returns the number of output units K of the model's (N, K) output.

    Raises:
        ValueError: the model cannot take the data, or its output does not fit the targets.
    """
    bs = min(batch_size, len(x_train))
    try:
        with torch.no_grad(), preserved(model, buffers_of=()):
            out = model.eval()(x_train[:bs])
    except RuntimeError as error:  # e.g. a Linear layer built for another feature count
        text = str(error).strip()
        raise ValueError(
            f"fit: the model cannot take the training data (samples of shape "
            f"{tuple(x_train.shape[1:])}): {text.splitlines()[0] if text else type(error).__name__}; "
            f"build the model for data.input_shape"
        ) from error
    y = y_train[:bs]
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
    return int(out.shape[1])


class _Run:
    """One call of :func:`fit`: the prepared tensors, optimizer and the records so far."""

    def __init__(
        self,
        model: nn.Module,
        data: TrainTestArrays,
        config: TrainConfig,
        shuffle_rng: np.random.Generator,
        order_rng: np.random.Generator,
    ) -> None:
        self.model, self.config, self.shuffle_rng = model, config, shuffle_rng
        self.loss_fn: LossFn = get_loss(config.loss)
        self.device, dtype = model_device_dtype(model)
        self.x_train = features_tensor(data.x_train, "fit: data.x_train", dtype, self.device)
        self.x_test = features_tensor(data.x_test, "fit: data.x_test", dtype, self.device)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"fit: data.x_train samples have shape {tuple(self.x_train.shape[1:])} but data.x_test "
                f"samples have {tuple(self.x_test.shape[1:])}; both sets must have the same sample shape"
            )
        self.y_train = targets_tensor(data.y_train, len(self.x_train), "fit: data.y_train", dtype, self.device)
        self.y_test = targets_tensor(data.y_test, len(self.x_test), "fit: data.y_test", dtype, self.device)
        outputs = check_model_output(model, self.x_train, self.y_train, config.batch_size, self.loss_fn)
        self.chance_accuracy = chance_accuracy(self.y_test, outputs)

        # Looked up once: the step is the hot path.
        self.bn_layers = [layer for _, layer in batch_norm_layers(model)]
        self.has_bn = bool(self.bn_layers)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("fit: the model has no trainable parameters; unfreeze some layers")
        self.optimizer = get_optimizer(config.optimizer, self.params, config.optimizer_args)
        self.steps_per_epoch = steps_per_epoch(len(self.x_train), config.batch_size, self.has_bn)
        self.test_order = torch.as_tensor(order_rng.permutation(len(self.x_test)), device=self.device)
        self.chunk_train = inference_chunk(self.x_train, config.batch_size)
        self.chunk_test = inference_chunk(self.x_test, config.batch_size)

        self.step = 0
        self.diverged = False
        self.initial_loss: torch.Tensor | None = None
        self.epochs: dict[str, list[float]] = {k: [] for k in EPOCH_METRICS}
        self.evals: list[EvalRecord] = []

    # ------------------------------------------------------------------ loop
    def train(self, *, progress: bool, on_epoch_end: EpochCallback | None) -> History:
        recorder = ProbeRecorder(self.model, self.config.probes) if self.config.probes else None
        try:
            with TrainProgress(
                enabled=progress, epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch
            ) as bar:
                for epoch in range(self.config.epochs):
                    logs = self._epoch(recorder, bar)
                    for key, values in self.epochs.items():
                        value = logs[key]
                        values.append(NAN if value is None else value)
                    bar.epoch(logs)
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, dict(logs))
                    if self.diverged:
                        break
        finally:
            if recorder is not None:
                recorder.close()
        total = self.steps_per_epoch * self.config.epochs
        if self.diverged:
            for values in self.epochs.values():
                values.extend([NAN] * (self.config.epochs - len(values)))
            self.evals = padded_evals(self.evals, self.config, self.steps_per_epoch, self.has_bn)
            final = FinalMetrics(NAN, NAN, NAN, NAN)
        else:
            train_loss, train_acc = inference_metrics(
                self.model, self.x_train, self.y_train, self.loss_fn, self.chunk_train
            )
            test_loss, test_acc = inference_metrics(
                self.model, self.x_test, self.y_test, self.loss_fn, self.chunk_test
            )
            final = FinalMetrics(train_loss, train_acc, test_loss, test_acc)
        self.model.eval()
        return history_of(
            self.epochs,
            has_bn=self.has_bn,
            evals=tuple(self.evals),
            probes=recorder.traces(pad_until=total if self.diverged else None) if recorder else {},
            final=final,
            diverged=self.diverged,
            steps_per_epoch=self.steps_per_epoch,
            initial_loss=NAN if self.initial_loss is None else float(self.initial_loss),
            chance_accuracy=self.chance_accuracy,
        )

    def _epoch(self, recorder: ProbeRecorder | None, bar: TrainProgress) -> dict[str, float | None]:
        """Train one epoch and evaluate; returns the epoch's logs (NaN if it diverged)."""
        n, bs, spe = len(self.x_train), self.config.batch_size, self.steps_per_epoch
        every = self.config.eval_every_steps
        if self.config.shuffle:
            perm = torch.as_tensor(self.shuffle_rng.permutation(n), device=self.device)
        else:
            perm = torch.arange(n, device=self.device)
        self.model.train()
        # Per-step numbers stay tensors; they are read at evaluations only.
        losses: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for b in range(spe):
            idx = perm[b * bs : (b + 1) * bs]
            result = self._step(
                self.x_train.index_select(0, idx), self.y_train.index_select(0, idx), recorder
            )
            if result is None:
                self.diverged = True
                break
            losses.append(result[0])
            outputs.append(result[1])
            bar.step()
            if every is not None and self.step % every == 0 and b < spe - 1:
                if not all_finite(losses):
                    self.diverged = True
                    break
                self.evals.append(self._validate())
        if self.diverged or not all_finite(losses):
            self.diverged = True
            return epoch_logs(NAN, NAN, NAN, NAN, NAN if self.has_bn else None)
        sizes = [min(bs, n - b * bs) for b in range(spe)]
        seen = sum(sizes)
        weights = torch.tensor(sizes, dtype=torch.float64, device=self.device)
        train_loss = (torch.stack(losses).double() * weights).sum().item() / seen
        y_seen = self.y_train.index_select(0, perm[:seen])
        train_acc = correct_count(y_seen, torch.cat(outputs)).item() / seen
        record = self._validate()
        self.evals.append(record)
        return epoch_logs(train_loss, train_acc, record.val_loss, record.val_accuracy, record.val_accuracy_train_mode)

    def _step(
        self, xb: torch.Tensor, yb: torch.Tensor, recorder: ProbeRecorder | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One optimizer step; returns (detached loss, detached output), None if BN refused."""
        if recorder is not None:
            recorder.arm(self.step)
        try:
            out = self.model(xb)
        except FloatingPointError:  # a BN layer with on_nonfinite="raise" saw NaN/inf
            return None
        finally:
            if recorder is not None:
                recorder.disarm()
        loss = self.loss_fn(yb, out)
        reg = regularization_loss(self.bn_layers)
        if reg is not None:
            loss = loss + reg
        if self.initial_loss is None:
            self.initial_loss = loss.detach()
        for p in self.params:
            p.grad = None
        loss.backward()
        self.optimizer.step()
        apply_constraints(self.bn_layers)
        self.step += 1
        return loss.detach(), out.detach()

    def _validate(self) -> EvalRecord:
        """Evaluate the test set now (inference mode, and batch statistics with BN)."""
        val_loss, val_acc = inference_metrics(
            self.model, self.x_test, self.y_test, self.loss_fn, self.chunk_test
        )
        train_mode = (
            batch_statistics_accuracy(
                self.model, self.x_test, self.y_test, self.test_order, self.config.batch_size
            )
            if self.has_bn
            else None
        )
        return EvalRecord(self.step, self.step / self.steps_per_epoch, val_loss, val_acc, train_mode)


def padded_evals(
    evals: list[EvalRecord], config: TrainConfig, steps_per_epoch: int, has_bn: bool
) -> list[EvalRecord]:
    """``evals`` and NaN records for the planned evaluations after the last one (divergence)."""
    epochs, spe = config.epochs, steps_per_epoch
    last = evals[-1].step if evals else 0
    planned = set(range(spe, spe * epochs + 1, spe))
    if config.eval_every_steps is not None:
        planned |= set(range(config.eval_every_steps, spe * epochs + 1, config.eval_every_steps))
    train_mode = NAN if has_bn else None
    return evals + [EvalRecord(s, s / spe, NAN, NAN, train_mode) for s in sorted(planned) if s > last]


def all_finite(losses: list[torch.Tensor]) -> bool:
    return bool(torch.isfinite(torch.stack(losses)).all()) if losses else True


def history_of(epochs: Mapping[str, Sequence[float]], *, has_bn: bool, **rest: Any) -> History:
    """A History from a run's per-epoch lists (:data:`EPOCH_METRICS`) and its other fields.

    The train-mode test accuracy is kept only for a model with BN (None otherwise).
    """
    series = {k: tuple(epochs[k]) for k in EPOCH_METRICS}
    if not has_bn:
        series["val_accuracy_train_mode"] = None
    return History(**series, **rest)


def epoch_logs(
    loss: float, accuracy: float, val_loss: float, val_accuracy: float, train_mode: float | None
) -> dict[str, float | None]:
    return {
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "val_accuracy_train_mode": train_mode,
    }
