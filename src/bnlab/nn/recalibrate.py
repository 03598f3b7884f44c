r"""Precise batch-normalization statistics: :func:`recalibrate`.

During training the moving statistics are an exponential average over batches
produced by *changing* weights, dominated by the last few hundred steps. After
training, :func:`recalibrate` replaces them with the true population statistics
of each BN layer's input under the final weights (fvcore's "precise BN"; Wu &
Johnson, "Rethinking 'Batch' in BatchNorm", 2021, section 3):

.. math::
    \mu = \frac{1}{N}\sum_i x_i, \qquad
    \sigma^2 = \frac{1}{N}\sum_i (x_i - \mu)^2 \;\;(\text{or } \tfrac{1}{N-1} \text{ for unbiased layers})

over every value :math:`x_i` the layer sees along its reduced axes in the given
batches. Each batch contributes its count, mean and centred sum of squares in
float64, merged with Chan's formula — so the result is weighted by batch size and
does not depend on how the data is split into batches *for a given input to the
layer*.

Two ways to produce each layer's input (``mode``):

- ``"train"`` (default, fvcore's choice): one pass over the data with every BN
  layer normalizing with its batch statistics, as in training. The statistics of
  a later layer are those of the features it saw *during training*, whose
  distribution depends on the batch size (the paper's "train-time features").
- ``"eval"``: the inference network itself. Layers are recalibrated one at a
  time in the order the forward pass reaches them; while layer ``k`` collects,
  layers before it already normalize with their *new* population statistics
  (eval mode). Each layer's statistics are then exactly the population statistics
  of its input at inference, and nothing depends on the batch split. It costs one
  (partial) pass over the data per BN layer, so ``batches`` must be re-iterable
  (a list or a DataLoader, not a generator).

Everything else in the model is run in eval mode (dropout off, as at inference)
and is left as it was; parameters never change (no gradients are computed).
Which variance is stored follows the layer: the biased population variance for
bnlab's Keras-style layers (``unbiased_moving_variance=False``, what their
inference uses and Keras stores), the unbiased one for PyTorch layers, whose
``running_var`` is unbiased by convention. ``num_batches_tracked`` keeps its
value. Frozen layers (:func:`bnlab.nn.freeze`, ``trainable=False``) are left
alone and normalize with their statistics. PyTorch layers with
``track_running_stats=False`` have no statistics and are skipped. Synchronized
layers merge the population statistics of every rank (call it on every rank).
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, suppress
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import SyncBatchNorm as TorchSyncBatchNorm
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.functional.axes import kept_axes
from bnlab.functional.moments import Moments, merge_moments, moments_of, stack_merge
from bnlab.functional.sync import world_size
from bnlab.nn.batchnorm import BatchNormalization
from bnlab.nn.freeze import is_frozen
from bnlab.nn.sync import SyncBatchNorm
from bnlab.nn.views import BatchNormView, batch_norm_layers, view

__all__ = ["RecalibrationMode", "recalibrate"]

RecalibrationMode = Literal["train", "eval"]


def recalibrate(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    *,
    mode: RecalibrationMode = "train",
    progress: bool | None = None,
) -> dict[str, int]:
    """Set every BN layer's moving mean and variance to its input's population statistics.

    Args:
        model: any module containing bnlab and/or PyTorch BN layers; changed in place.
        batches: an iterable of input tensors or of ``(x, y, ...)`` tuples/lists
            (the first element is the model input), e.g. the training DataLoader.
            Inputs are moved to the model's device.
        num_batches: use only the first ``num_batches`` batches (>= 1); None uses
            all. fvcore uses 200 batches; more is more precise.
        mode: ``"train"`` (inputs produced with batch statistics, fvcore) or
            ``"eval"`` (the inference network, layer by layer); see the module doc.
        progress: show a progress bar; None shows one when stderr is a terminal.

    Returns:
        Layer name -> number of values per channel its statistics were computed
        from (0: the data never reached the layer; its statistics are unchanged
        and a warning says so).

    Raises:
        ValueError: ``num_batches`` < 1, an unknown ``mode``, or ``mode="eval"``
            with a one-shot iterator.
        TypeError: a batch that is neither a tensor nor a tuple/list starting with one.

    Example::

        model.train(); fit(...)                     # moving statistics: an EMA
        bnlab.recalibrate(model, train_loader, num_batches=200)
        model.eval()                                # population statistics now

    Reference: Wu & Johnson, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"recalibrate: mode must be 'train' or 'eval'; got {mode!r}")
    if num_batches is not None and not (isinstance(num_batches, int) and num_batches >= 1):
        raise ValueError(f"recalibrate: num_batches must be an int >= 1 or None; got {num_batches!r}")
    if mode == "eval" and iter(batches) is batches:
        raise ValueError(
            "recalibrate: mode='eval' goes over the data once per BN layer, so batches must be "
            f"re-iterable; got a one-shot {type(batches).__name__}; pass a list or a DataLoader"
        )
    layers = {name: m for name, m in batch_norm_layers(model) if _recalibrates(m)}
    if not layers:
        return {}
    session = _Session(model, layers, batches, num_batches, progress)
    with session:
        if mode == "train":
            session.run_train_mode()
        else:
            session.run_eval_mode()
    counts = {name: int(session.moments[name].count) if name in session.moments else 0
              for name in layers}
    missed = [name for name, n in counts.items() if n == 0]
    if missed:
        warnings.warn(
            f"recalibrate: the data never reached BN layer(s) {', '.join(map(repr, missed))}; "
            "their moving statistics are unchanged",
            RuntimeWarning,
            stacklevel=2,
        )
    return counts


def _recalibrates(module: nn.Module) -> bool:
    if is_frozen(module):
        return False
    return not (isinstance(module, _BatchNorm) and module.running_mean is None)


class _StopForwardSignal(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends a forward pass early once the layer being recalibrated has its input."""


class _Session:
    """State of one call: hooks, saved modes and buffers, accumulated moments."""

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        batches: Iterable[Any],
        num_batches: int | None,
        progress: bool | None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.batches = batches
        self.num_batches = num_batches
        self.moments: dict[str, Moments] = {}
        self.collecting: set[str] = set(layers)
        self.one_at_a_time = False  # mode="eval": one target layer per pass
        self.target: str | None = None
        self.device = _device_of(model)
        self._stack = ExitStack()
        self._modes = {m: m.training for m in model.modules()}
        self._saved = {name: _save(view(m)) for name, m in layers.items()}
        self._bar = _ProgressBar(progress, self._length())

    # ---------------------------------------------------------------- set-up
    def __enter__(self) -> _Session:
        self._stack.enter_context(torch.no_grad())
        self._stack.enter_context(self._bar)
        for name, module in self.layers.items():
            handle = module.register_forward_pre_hook(self._hook(name), with_kwargs=True)
            self._stack.callback(handle.remove)
        return self

    def __exit__(self, error_type: type[BaseException] | None, *exc: object) -> None:
        self._stack.close()
        for module, training in self._modes.items():
            module.training = training
        for name, module in self.layers.items():
            # After an error the model gets its old statistics back, not partial ones.
            moments = self.moments.get(name) if error_type is None else None
            _restore(view(module), self._saved[name], moments)

    def _hook(self, name: str):
        def collect(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in self.collecting:
                return
            if self.target is None and self.one_at_a_time:
                # The first uncalibrated layer the data reaches is this pass's target;
                # the others wait: their input depends on its new statistics.
                self.target = name
                self.collecting = {name}
            x = args[0]
            mask = args[1] if len(args) > 1 else kwargs.get("mask")
            kept = kept_axes(view(module).axis, x.dim())
            if isinstance(module, BatchNormalization) and not module.built:
                module.build(tuple(x.shape[d] for d in kept))  # its forward may not run
            batch = moments_of(x, kept, mask)
            previous = self.moments.get(name)
            self.moments[name] = batch if previous is None else merge_moments(previous, batch)
            if self.one_at_a_time:
                raise _StopForwardSignal  # nothing after the target matters in this pass
        return collect

    # ----------------------------------------------------------------- modes
    def run_train_mode(self) -> None:
        self.model.eval()
        for module in self.layers.values():
            module.train()
        self._bar.describe("recalibrating BN statistics (train-mode features)")
        for x in self._inputs():
            self.model(x)
            self._bar.advance()
        for name, module in self.layers.items():
            self._merge_ranks(name, module)

    def run_eval_mode(self) -> None:
        self.model.eval()
        self.one_at_a_time = True
        remaining = dict(self.layers)
        while remaining:
            self.collecting = set(remaining)
            self.target = None
            self._bar.describe(f"recalibrating BN layer {len(self.layers) - len(remaining) + 1}"
                               f"/{len(self.layers)} (inference features)")
            for x in self._inputs():
                with suppress(_StopForwardSignal):
                    self.model(x)
                self._bar.advance()
            if self.target is None:
                break  # the data reaches none of the remaining layers
            target = self.target
            self._merge_ranks(target, remaining.pop(target))
            _write(view(self.layers[target]), self.moments[target])

    # ---------------------------------------------------------------- helpers
    def _inputs(self) -> Iterator[Tensor]:
        batches: Iterable[Any] = self.batches
        if self.num_batches is not None:
            batches = itertools.islice(batches, self.num_batches)
        for batch in batches:
            yield _model_input(batch, self.device)

    def _length(self) -> int | None:
        try:
            total = len(self.batches)  # type: ignore[arg-type]
        except TypeError:
            total = None
        if self.num_batches is not None:
            total = self.num_batches if total is None else min(total, self.num_batches)
        return total

    def _merge_ranks(self, name: str, module: nn.Module) -> None:
        """For a synchronized layer, merge every rank's moments (all ranks call this)."""
        group = _sync_group(module)
        if group is False or world_size(group) <= 1:
            return
        local = self.moments.get(name)
        if local is None:  # no data reached it here; the other ranks' data still counts
            stat = view(module).mean
            if stat is None:
                raise RuntimeError(
                    f"recalibrate: synchronized layer {name!r} is not built on this rank; pass "
                    "num_features or run one forward before recalibrating"
                )
            zeros = torch.zeros(stat.shape, dtype=torch.float64, device=stat.device)
            local = Moments(zeros.new_zeros(()), zeros, zeros.clone())
        payload = torch.cat([local.count.reshape(1), local.mean.reshape(-1), local.m2.reshape(-1)])
        parts = [torch.empty_like(payload) for _ in range(world_size(group))]
        dist.all_gather(parts, payload, group=group)
        stacked = torch.stack(parts)
        c = local.mean.numel()
        shape = local.mean.shape
        self.moments[name] = stack_merge(stacked[:, 0], stacked[:, 1:1 + c].reshape(-1, *shape),
                                         stacked[:, 1 + c:].reshape(-1, *shape))


def _sync_group(module: nn.Module) -> Any:
    """The process group of a synchronized layer, or False for a local one."""
    if isinstance(module, BatchNormalization):
        return module.process_group if module.synchronized else False
    if isinstance(module, SyncBatchNorm | TorchSyncBatchNorm):
        return module.process_group
    return False


def _save(layer: BatchNormView) -> dict[str, Tensor] | None:
    """Every buffer a training-mode forward may change (renorm layers have more)."""
    if layer.mean is None:
        return None  # an unbuilt bnlab layer: built by the first forward
    return {name: buffer.detach().clone() for name, buffer in layer.module.named_buffers()}


def _buffer(layer: BatchNormView, name: str) -> Tensor:
    return layer.module.get_buffer(name)


def _restore(layer: BatchNormView, saved: dict[str, Tensor] | None, moments: Moments | None) -> None:
    """Undo what the recalibration forwards did, then store the population statistics."""
    if layer.mean is None:
        return
    with torch.no_grad():
        if saved is None:
            layer.num_batches_tracked.zero_()
        else:
            for key, value in saved.items():
                _buffer(layer, key).copy_(value)
    if moments is not None and moments.count > 0:
        _write(layer, moments)


def _write(layer: BatchNormView, moments: Moments) -> None:
    with torch.no_grad():
        layer.mean.copy_(moments.mean.reshape(layer.mean.shape))
        variance = moments.variance(unbiased=layer.unbiased).reshape(layer.variance.shape)
        layer.variance.copy_(variance)
        module = layer.module
        if isinstance(module, BatchNormalization) and module.renorm:
            # Renorm tracks sqrt(variance + epsilon) and derives the variance from it.
            module.moving_stddev.copy_((variance + layer.epsilon).sqrt())


def _model_input(batch: Any, device: torch.device | None) -> Tensor:
    x = batch[0] if isinstance(batch, tuple | list) and batch else batch
    if not isinstance(x, Tensor):
        raise TypeError(
            "recalibrate: expected batches of tensors or (x, y) tuples/lists starting with a "
            f"tensor; got {type(batch).__name__}"
            + (f" starting with {type(x).__name__}" if x is not batch else "")
        )
    return x if device is None else x.to(device)


def _device_of(model: nn.Module) -> torch.device | None:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return None


class _ProgressBar:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool | None, total: int | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress

            self._progress = Progress(console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("recalibrating BN statistics", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=self.total, description=text)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
