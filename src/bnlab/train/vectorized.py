"""Train many replicas of one model as one stacked computation: :func:`fit_replicas`.

Replicas are models of the same architecture (the seeds of a lab variant). Their
parameters, BN moving statistics and optimizer state are stacked along a new leading
axis ``R`` and every layer runs once for all of them (batched matrix products, the BN
core over the replicas' merged channels, ``torch.func.vmap`` for the rest)::

    models = [build_model(layers, shape, seed=s) for s in seeds]
    histories = fit_replicas(models, data, config, seeds=seeds)   # one History per seed

Each replica is the run :func:`bnlab.train.fit` would have done alone with the same seed:

- initial weights: the replica's own model, built by the caller from its seed;
- data order and the train-mode evaluation order: the replica's own NumPy streams
  (:func:`bnlab.train.fit.derive_streams`), drawn in the same sequence as ``fit``;
- dropout masks: a ``torch.Generator`` per replica seeded like ``fit`` seeds torch's
  global generator, drawn the way ``torch.nn.functional.dropout`` draws on the CPU
  (``bernoulli_(1 - p)`` over the layer's input, scaled by ``1 / (1 - p)``);
- BN: the pure functional core (:mod:`bnlab.functional`) with the replicas as extra
  channels, each replica carrying its own moving statistics (an adapter calls
  ``batch_norm``, ``batch_renorm`` or ``ghost_batch_norm`` with the layer's settings);
  replicas may differ in a plain BN layer's momentum (runs of variants that differ
  only there share a stack), each folding its batch in with its own;
- optimizer: the same :mod:`bnlab.train.optimizers` class over the stacked tensors; its
  updates are elementwise, so each replica's slice gets its own update (Adam's step
  count is shared because every replica steps together). The stacked loss is the sum of
  the replicas' losses, whose gradient with respect to one replica's parameters is that
  replica's gradient alone;
- divergence: checked per replica at every evaluation, as ``fit`` does; a replica that
  diverges keeps the weights it had when it stopped, its records are padded with NaN like
  ``fit``'s, and the other replicas go on. (Its slice keeps being computed, from zeros:
  stopping it would change the shapes of the others' stacks.)
- evaluations and probes: the same numbers per replica, computed for the whole stack.

Results equal ``fit``'s to float32 rounding (batched matrix products and the composite
BN path round differently from the per-model kernels); the tests compare every history
number at 1e-5.

:func:`vectorization_blocker` names what this path cannot reproduce exactly (then train
the replicas one by one with ``fit``): models other than :class:`bnlab.models.
SequentialModel`, layers it does not know, BN layers that are synchronized, raise on
non-finite statistics, or carry regularizers or constraints, and frozen BN layers.

Memory: :func:`stack_bytes` estimates a stack's peak (parameters, gradients, optimizer
slots, statistics, activations of a training batch and of an evaluation chunk); a caller
splits a group that would not fit its budget. :func:`multiply_adds` measures a model's
work per sample, which decides whether stacking pays (:mod:`bnlab.lab.vectorized`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from bnlab.functional import NonFiniteStatisticsWarning, batch_norm
from bnlab.functional.act import activate
from bnlab.functional.axes import kept_axes
from bnlab.functional.batch_norm import normalize_inference, normalize_training
from bnlab.functional.ghost import ghost_batch_norm
from bnlab.functional.renorm import batch_renorm
from bnlab.models import SequentialModel
from bnlab.models.layers import (
    Conv1D,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    GlobalPooling,
    KerasReLU,
    Pad,
    Pooling,
    Rescaling,
    Reshape,
    SeparableConv2D,
)
from bnlab.models.norms import GroupNormalization, LayerNormalization, Normalization
from bnlab.models.recurrent import GRU, LSTM, SimpleRNN
from bnlab.nn import BatchNormalization
from bnlab.nn.act import BatchNormAct
from bnlab.train.batchnorm import batch_statistics
from bnlab.train.config import TrainConfig
from bnlab.train.evaluation import (
    chunks,
    features_tensor,
    model_device_dtype,
    targets_tensor,
)
from bnlab.train.fit import (
    NAN,
    TrainTestArrays,
    _check_seed,
    all_finite,
    check_model_output,
    derive_streams,
    epoch_logs,
    history_of,
    padded_evals,
    steps_per_epoch,
)
from bnlab.train.history import EPOCH_METRICS, EvalRecord, FinalMetrics, History, ProbeTrace
from bnlab.train.losses import get_loss
from bnlab.train.metrics import chance_accuracy, correct
from bnlab.train.optimizers import get_optimizer
from bnlab.train.probes import MAX_PROBE_VALUES

__all__ = ["fit_replicas", "multiply_adds", "stack_bytes", "vectorization_blocker"]

Mode = Literal["train", "inference", "batch_statistics"]

#: Layers whose forward is a pure function of their parameters and input (no random
#: draws, no state): ``vmap`` of the module is each replica's forward.
_PURE_LAYERS: tuple[type[nn.Module], ...] = (
    Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Pooling, GlobalPooling,
    Pad, KerasReLU, Rescaling, Reshape, LayerNormalization, GroupNormalization,
    Normalization, LSTM, GRU, SimpleRNN, nn.Flatten, nn.Identity,
)
_RECURRENT = (LSTM, GRU, SimpleRNN)
#: Optimizer slots per parameter (state tensors the size of the parameter).
_OPTIMIZER_SLOTS = {"sgd": 1, "adam": 3, "rmsprop": 3}


def vectorization_blocker(model: nn.Module, config: TrainConfig) -> str | None:
    """Why replicas of ``model`` cannot be stacked exactly, or None when they can."""
    if not isinstance(model, SequentialModel):
        return f"the model is a {type(model).__name__}, not a bnlab SequentialModel"
    for (name, layer), rule in zip(model.layers.items(), model.mask_rules, strict=True):
        if rule == "produce":
            return f"layer {name}: masks of padded sequences are not stacked"
        if isinstance(layer, BatchNormalization):
            reason = _bn_blocker(layer)
            if reason is not None:
                return f"layer {name}: {reason}"
        elif isinstance(layer, _RECURRENT) and (layer.dropout or layer.recurrent_dropout):
            return f"layer {name}: recurrent dropout draws its masks inside the layer"
        elif not isinstance(layer, (*_PURE_LAYERS, Dropout)) and not _is_activation(layer):
            return f"layer {name}: {type(layer).__name__} layers are not supported"
    return None


def _bn_blocker(layer: BatchNormalization) -> str | None:
    if layer.synchronized:
        return "synchronized batch normalization needs one process per replica"
    if layer.on_nonfinite != "skip":
        return "on_nonfinite='raise' stops a run at a batch, which a stack cannot do per replica"
    if not layer.trainable:
        return "a frozen BN layer (trainable=False)"
    if any(
        getattr(layer, name) is not None
        for name in ("gamma_regularizer", "beta_regularizer", "gamma_constraint", "beta_constraint")
    ):
        return "BN regularizers and constraints are applied per model"
    return None


def _is_activation(layer: nn.Module) -> bool:
    """An activation module (elementwise, or softmax over one axis): no parameters, no state."""
    return (
        type(layer).__module__.startswith(("torch.nn.modules.activation", "bnlab.models.activations"))
        and not any(True for _ in layer.parameters())
        and not any(True for _ in layer.buffers())
    )


def multiply_adds(model: SequentialModel) -> int:
    """Multiply-adds of one sample's forward pass through the Dense, Conv2D and LSTM layers.

    Dense: ``prod(output) * in_features``; convolutions: ``prod(output) * in_channels /
    groups * prod(kernel)``; recurrent layers: ``T * gates * units * (in_features + units)``.
    Other layers count 0; a size that may vary (None) counts 1.
    """
    total, shape = 0, model.input_shape
    for name, layer in model.layers.items():
        out = model.output_shapes[name]
        if isinstance(layer, Dense):
            total += _size(out) * layer.in_features
        elif isinstance(layer, Conv1D | Conv2D | DepthwiseConv2D):
            total += _size(out) * layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        elif isinstance(layer, SeparableConv2D):
            depthwise, pointwise = layer.depthwise, layer.pointwise
            total += _size(out) // pointwise.out_channels * (
                depthwise.out_channels * math.prod(depthwise.kernel_size) + pointwise.in_channels * pointwise.out_channels
            )
        elif isinstance(layer, _RECURRENT):
            steps = shape[0] or 1
            total += steps * layer.gates * layer.units * (layer.in_features + layer.units)
        shape = out
    return total


def _size(shape: Sequence[int | None]) -> int:
    return math.prod(d or 1 for d in shape)


def stack_bytes(model: SequentialModel, config: TrainConfig, replicas: int) -> int:
    """Estimated bytes of a stack of ``replicas`` copies of ``model`` (its peak while training).

    Per replica: parameters with their gradients, optimizer slots and a copy; BN
    statistics twice; each layer's output three times (value, saved for backward,
    gradient) for a training batch. Plus one inference pass for all replicas (about
    :func:`eval_pass_size` samples per replica, every layer's output).
    """
    itemsize = next(iter(model.parameters())).element_size()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    per_sample = _size(model.input_shape) + sum(_size(s) for s in model.output_shapes.values())
    slots = 3 + _OPTIMIZER_SLOTS.get(config.optimizer, 3)
    per_replica = params * slots + buffers * 2 + per_sample * 3 * config.batch_size
    chunk = eval_pass_size(model, replicas, config.batch_size) * replicas
    return int((per_replica * replicas + per_sample * chunk) * itemsize)


#: A batch-statistics evaluation pass of a stack covers about this many values in its
#: widest layer output, all replicas together (512 KiB of float32): its BN layers copy
#: the stack into a channel layout and back, and the pass's input, output and those
#: copies then stay in a core's L2 cache. Measured on the circles MLP (500 test samples):
#: 30 replicas, one evaluation 10.3 ms in passes of 87 samples against 14.8 ms in passes
#: of 349 (2 MiB); with 100 replicas one pass of everything (25 MiB per layer) took twice
#: as long as passes of 100 samples.
BATCH_STATISTICS_PASS_VALUES = 2**17
#: An inference pass covers about this many (2 MiB of float32): it copies nothing (BN
#: keeps the replica axis as a kept axis), so fewer, larger passes pay. 30 circles
#: replicas, one evaluation 11.6-13.1 ms with inference passes of 87 samples against
#: 8.1-11.9 ms with passes of 174-500 (interleaved, one core).
INFERENCE_PASS_VALUES = 2**19


def eval_pass_size(
    model: SequentialModel, replicas: int, batch_size: int, values: int = INFERENCE_PASS_VALUES
) -> int:
    """Samples per replica in one evaluation pass of about ``values`` values in the widest
    layer output (all replicas together), at least ``batch_size``."""
    widest = max(_size(s) for s in (model.input_shape, *model.output_shapes.values()))
    return max(batch_size, values // (widest * replicas))


def fit_replicas(
    models: Sequence[nn.Module],
    data: TrainTestArrays,
    config: TrainConfig,
    *,
    seeds: Sequence[int],
    eval_chunk: int | None = None,
) -> list[History]:
    """Train ``models[r]`` with seed ``seeds[r]`` for every r at once; one History each.

    ``histories[r]`` equals ``fit(models[r], data, config, seed=seeds[r]).`` to float32
    rounding (see the module docstring), and each model is left trained in eval mode.

    Args:
        models: replicas of one architecture (same layer types, shapes and settings),
            each built from its own seed; ``vectorization_blocker`` must return None for
            them.
        data: as for :func:`bnlab.train.fit`.
        config: as for :func:`bnlab.train.fit`.
        seeds: one non-negative int per model.
        eval_chunk: most samples per replica in one evaluation pass (default
            :func:`eval_pass_size`: :data:`INFERENCE_PASS_VALUES` for inference passes,
            :data:`BATCH_STATISTICS_PASS_VALUES` for batch statistics). Results do not
            depend on it.

    Raises:
        ValueError: no models, a seed count that differs from the model count, models that
            differ in architecture, a model this path cannot reproduce (the message says
            why), or anything :func:`bnlab.train.fit` rejects.
    """
    if not models:
        raise ValueError("fit_replicas: give at least one model")
    if len(seeds) != len(models):
        raise ValueError(f"fit_replicas: got {len(models)} models but {len(seeds)} seeds; give one seed per model")
    seeds = [_check_seed(s) for s in seeds]
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit_replicas: config must be a TrainConfig; got {type(config).__name__}")
    for model in models:
        reason = vectorization_blocker(model, config)
        if reason is not None:
            raise ValueError(f"fit_replicas: cannot stack this model: {reason}; train it with fit()")
    _check_same_architecture(models)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)
        return _Replicas(list(models), data, config, seeds, eval_chunk).train()


def varies_per_replica(layer: nn.Module) -> bool:
    """Whether replicas of a stack may differ in this layer's momentum, center and scale.

    True for a plain BN layer with a numeric momentum (no renorm, no ghost batches, not
    the cumulative average). Its moving update ``lerp(old, batch, 1 - momentum)`` then
    takes each replica's weight, which is exactly its run alone. A replica without
    ``beta`` (``center=False``) or ``gamma`` (``scale=False``) gets a constant one in the
    stack, 0 or 1, which its gradient never moves (it is zeroed): ``x * 1 + 0`` is
    ``x`` to the bit, and every optimizer here leaves a weight whose gradients are all 0
    where it started.
    """
    return (
        isinstance(layer, BatchNormalization)
        and layer.momentum is not None
        and not layer.renorm
        and layer.virtual_batch_size is None
    )


#: What replicas of a stack may differ in (see :func:`varies_per_replica`), as the
#: layer's repr shows it.
_PER_REPLICA_IN_REPR = re.compile(r"\bmomentum=[-+.0-9e]+|, (?:center|scale)=False")
#: A BN layer's constant in place of a missing parameter.
_NEUTRAL = {"gamma": 1.0, "beta": 0.0}


def _check_same_architecture(models: Sequence[SequentialModel]) -> None:
    def signature(model: SequentialModel) -> list[Any]:
        rows: list[Any] = [model.extra_repr()]
        for name, layer in model.layers.items():
            per_replica = varies_per_replica(layer)
            text = repr(layer)
            rows.append((name, _PER_REPLICA_IN_REPR.sub("", text) if per_replica else text))
            tensors = [*layer.named_parameters(), *layer.named_buffers()]
            rows.extend((n, tuple(t.shape), t.dtype) for n, t in tensors if not (per_replica and n in _NEUTRAL))
        return rows

    first = signature(models[0])
    for i, m in enumerate(models[1:], start=1):
        if signature(m) != first:
            raise ValueError(
                f"fit_replicas: model {i} differs from model 0 in its layers, shapes or settings; "
                f"replicas must share one architecture"
            )


# ---------------------------------------------------------------------- stacked model
#: Activations that act on each value alone, so they run on the stack as they are.
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.GELU, nn.SiLU,
    nn.LeakyReLU, nn.Softplus,
)

LayerKind = Literal["dropout", "bn", "dense", "flatten", "elementwise", "softmax", "vmap"]


@dataclass
class _Layer:
    """One layer of the stack: its module, the stacked permute before it, and how it runs."""

    name: str
    module: nn.Module
    permute: tuple[int, ...] | None
    kind: LayerKind
    call: Callable[..., Any] | None = None


def _stacked_permute(permute: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return None if permute is None else (0, *(i + 1 for i in permute))


def _kind(module: nn.Module) -> LayerKind:
    if isinstance(module, Dropout):
        return "dropout"
    if isinstance(module, BatchNormalization):
        return "bn"
    if isinstance(module, Dense) and isinstance(module.activation, (*_ELEMENTWISE, nn.Softmax)):
        return "dense"
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
        return "flatten"
    if isinstance(module, _ELEMENTWISE):
        return "elementwise"
    if isinstance(module, nn.Softmax):
        return "softmax"
    return "vmap"


class _Stack:
    """R replicas of a SequentialModel: stacked parameters (leaves) and BN buffers.

    ``params[layer][name]``: (R, *shape) tensors, trainable ones require grad, each
    replica's in the layout the stack computes with (:func:`_stack_layout`);
    ``buffers[layer][name]``: (R, *shape) buffers (BN moving statistics and counts).
    A BN layer's parameters and moving statistics are kept merged instead, (R*C, ...)
    (:func:`_merged`): the channel order the functional core runs the stack in.

    How each layer runs on a stack ``x`` of shape (R, N, ...), replica r in ``x[r]``:

    - Dense: one batched matrix product ``x @ W^T + b`` (R, N, F) -> (R, N, U);
    - BN in inference: the core's inference transform with the replica axis as one more
      kept axis (statistics per replica and channel);
    - BN with batch statistics: the replicas become channels: ``x`` is moved to
      (N, ..., R*C, ...) with the replica axis merged into the first normalized axis, and
      the functional core runs once; every statistic is per channel, so per replica.
      Replicas whose momentum
      differs (:func:`varies_per_replica`) get the batch statistics from the
      core (momentum 0) and fold them in with ``lerp(old, batch, 1 - momentum_r)``, the
      core's own update with each replica's weight. A step in which a replica's batch
      statistics are not finite is rerun one replica at a time (the core then keeps that
      replica's moving statistics and updates the others', as ``fit`` would for each).
      An evaluation with batch statistics of a plain BN layer calls the core's training
      transform alone (:func:`~bnlab.functional.batch_norm.normalize_training`): there
      are no moving statistics to fold;
    - element-wise activations and Flatten act on the stack directly;
    - anything else (Conv2D, pooling, padding, LSTM) through ``vmap`` of the module.
    """

    def __init__(self, models: list[SequentialModel]) -> None:
        template = models[0]
        self.R = len(models)
        self.layers: list[_Layer] = []
        self.params: dict[str, dict[str, Tensor]] = {}
        self.buffers: dict[str, dict[str, Tensor]] = {}
        self.replica_layers: dict[str, list[nn.Module]] = {}
        #: BN layers whose replicas differ in momentum: each channel's batch weight
        #: ``1 - momentum_r``, (R*C,) in the merged channel order.
        self.batch_weights: dict[str, Tensor] = {}
        for (name, module), permute in zip(template.layers.items(), template.permutes, strict=True):
            layer = _Layer(name, module, _stacked_permute(permute), _kind(module))
            replicas = self.replica_layers[name] = [m.layers[name] for m in models]
            self.params[name] = _stacked_parameters(replicas, layer.kind)
            self.buffers[name] = {
                bname: _stacked(layer.kind, bname, [r.get_buffer(bname) for r in replicas])
                for bname, _ in module.named_buffers()
            }
            if layer.kind == "vmap":
                layer.call = vmap(_pure_call(module)) if self.params[name] else vmap(module)
            self.layers.append(layer)
        self.final_permute = _stacked_permute(template.final_permute)
        self.dropout_orders: dict[str, tuple[int, ...]] = {}  # see _memory_orders
        self.trainable = [p for ps in self.params.values() for p in ps.values() if p.requires_grad]
        for name, replicas in self.replica_layers.items():
            momenta = [getattr(r, "momentum", None) for r in replicas]
            if len(set(momenta)) > 1:
                moving = self.buffers[name]["moving_mean"]
                weights = torch.tensor([1.0 - m for m in momenta], dtype=moving.dtype)
                self.batch_weights[name] = weights.repeat_interleave(moving.numel() // self.R)

    def forward(
        self,
        x: Tensor,
        mode: Mode,
        generators: Sequence[torch.Generator] = (),
        capture: dict[str, str] | None = None,
        groups: int = 1,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the stack on ``x`` (R, N, ...); returns the output (R, N, K) and captures.

        ``mode``: "train" (batch statistics, updates the BN buffers, dropout from
        ``generators``), "inference" (moving statistics, no dropout) or
        "batch_statistics" (batch statistics, nothing updated, no dropout).
        ``capture``: layer name -> "input" | "output" values to return, keyed
        ``"<layer>.<where>"``.
        ``groups``: in "batch_statistics" mode, BN normalizes each of ``groups`` equal
        consecutive parts of the N samples by its own statistics (that many batches in
        one pass).
        """
        captured: dict[str, Tensor] = {}
        for layer in self.layers:
            if layer.permute is not None:
                x = x.permute(layer.permute)
            if capture and capture.get(layer.name) == "input":
                captured[f"{layer.name}.input"] = x
            x = self._layer(layer, x, mode, generators, groups)
            if capture and capture.get(layer.name) == "output":
                captured[f"{layer.name}.output"] = x
        if self.final_permute is not None:
            x = x.permute(self.final_permute)
        return x, captured

    def _layer(
        self, layer: _Layer, x: Tensor, mode: Mode, generators: Sequence[torch.Generator], groups: int
    ) -> Tensor:
        kind, module, params = layer.kind, layer.module, self.params[layer.name]
        if kind == "dense":
            return _activation(module.activation, _dense(x, params["weight"], params.get("bias")))
        if kind == "bn":
            if groups > 1:  # (R, G*b, ...) -> (R*G, b, ...): each batch a replica of its own
                n = x.shape[1]
                y = self._bn(layer, x.reshape(self.R * groups, n // groups, *x.shape[2:]), mode, groups)
                return y.reshape(x.shape)
            return self._bn(layer, x, mode)
        if kind in ("elementwise", "softmax"):
            return _activation(module, x)
        if kind == "flatten":
            return x.flatten(2)
        if kind == "dropout":
            if mode != "train":
                return x
            return _dropout(x, module, generators, self.dropout_orders.get(layer.name))
        return layer.call(params, x) if params else layer.call(x)  # type: ignore[misc]

    def _bn(self, layer: _Layer, x: Tensor, mode: Mode, groups: int = 1) -> Tensor:
        params, buffers = self.params[layer.name], self.buffers[layer.name]
        module: BatchNormalization = layer.module  # type: ignore[assignment]
        if mode == "inference":
            # Moving statistics per (replica, channel): the replica axis is one more kept
            # axis of the core's inference transform, which needs no channel layout.
            kept = (0, *(a + 1 for a in kept_axes(module.axis, x.dim() - 1)))
            gamma, beta, mean, variance = (
                None if t is None else t.unflatten(0, (self.R, -1))
                for t in (params.get("gamma"), params.get("beta"), buffers["moving_mean"],
                          buffers["moving_variance"])
            )
            y = normalize_inference(x, gamma, beta, mean, variance, kept, module.epsilon)
            return _bn_activation(module, y)
        # Batch statistics: the replicas become channels of one call of the core.
        if groups > 1:
            params = {k: _per_group(v, self.R, groups) for k, v in params.items()}
        kept = kept_axes(module.axis, x.dim() - 1)
        first = kept[0] + 1  # the replica axis goes right before it, then the two merge
        merged = x.movedim(0, kept[0]).flatten(kept[0], first)
        if mode == "batch_statistics" and not module.renorm and module.virtual_batch_size is None:
            # The output alone: no moving statistics to read or fold. (Renorm and ghost
            # batches read them and take the path below, as does a batch whose statistics
            # are not finite, whose replicas are then normalized one by one.)
            y, _, _, finite = normalize_training(
                merged, params.get("gamma"), params.get("beta"), kept, module.epsilon, None,
                module.implementation,
            )
            if finite is not False:
                return _bn_activation(module, _unmerged(y, kept[0], x.shape[0]))
        if groups > 1:
            buffers = {
                k: v.repeat_interleave(groups) if k == _COUNT else _per_group(v, self.R, groups)
                for k, v in buffers.items()
            }
        stats = {k: v[0] if k == _COUNT else v for k, v in buffers.items()}
        batch_weight = self.batch_weights.get(layer.name) if mode == "train" else None
        momentum = None if batch_weight is None else 0.0  # 0: the core returns the batch's
        y, new = _bn_call(module, kept, momentum)(params, stats, merged)
        if new["moving_mean"] is stats["moving_mean"]:
            # Some replica's batch statistics are not finite: the core skipped the update
            # for all of them. Redo the layer per replica, which skips only that one.
            y, new, counted = self._bn_one_by_one(layer.name, params, buffers, x, groups)
        else:
            if batch_weight is not None:
                for k in ("moving_mean", "moving_variance"):
                    new[k] = torch.lerp(stats[k], new[k], batch_weight)
            y, counted = _unmerged(y, kept[0], x.shape[0]), 1
        if mode == "train":
            new[_COUNT] = buffers[_COUNT] + counted
            self.buffers[layer.name] = new
        return y

    def _bn_one_by_one(
        self,
        name: str,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        x: Tensor,
        groups: int,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """A BN layer with batch statistics on each slice ``x[i]`` with its replica's own
        layer (``i // groups``); ``params`` and ``buffers`` merged, one slice per ``x[i]``.

        Returns the output, the new statistics and, per slice, 1 where the batch was
        folded in and 0 where it was skipped (as alone, a skipped batch is not counted).
        """
        n = x.shape[0]
        params = {k: v.unflatten(0, (n, -1)) for k, v in params.items()}
        buffers = {k: v if k == _COUNT else v.unflatten(0, (n, -1)) for k, v in buffers.items()}
        outputs, updates, counted = [], [], []
        for i in range(n):
            call = _bn_call(self.replica_layers[name][i // groups])  # type: ignore[arg-type]
            own = {k: v[i] for k, v in buffers.items()}
            y, new = call({k: v[i] for k, v in params.items()}, own, x[i])
            outputs.append(y)
            updates.append(new)
            counted.append(int(new["moving_mean"] is not own["moving_mean"]))  # the core's skip
        stacked = {k: _stacked("bn", k, [u[k] for u in updates]) for k in updates[0] if k != _COUNT}
        return torch.stack(outputs), stacked, torch.tensor(counted)

    def retire(self, replicas: Sequence[int], optimizer: torch.optim.Optimizer) -> None:
        """Zero stopped replicas' parameters, optimizer slots and moving means (variances 1).

        A stopped replica's slice is still computed (the stack keeps its shape) but no
        longer recorded. Left as it was (huge or non-finite values), it would send the
        whole stack's BN layers down their ill-conditioned or non-finite paths, which
        round differently from the runs alone of the replicas still training; zeros keep
        every later batch of it finite and well conditioned.
        """
        with torch.no_grad():  # every stacked tensor is replica-major: (R, ...) or (R*C, ...)
            for tensor in self.trainable:
                tensor.view(self.R, -1)[replicas] = 0.0
                for slot in optimizer.state.get(tensor, {}).values():
                    if isinstance(slot, Tensor) and slot.shape == tensor.shape:
                        slot.view(self.R, -1)[replicas] = 0.0
            for buffers in self.buffers.values():
                for name, tensor in buffers.items():
                    if name != _COUNT:
                        fill = 1.0 if "variance" in name or "stddev" in name else 0.0
                        tensor.view(self.R, -1)[replicas] = fill

    def write_back(self, models: list[SequentialModel], replicas: Sequence[int]) -> None:
        """Copy replicas' slices of the stack into their models (weights and statistics)."""
        kinds = {layer.name: layer.kind for layer in self.layers}
        with torch.no_grad():
            for r in replicas:
                for name, module in models[r].layers.items():
                    for pname, parameter in module.named_parameters():
                        stacked = self._by_replica(kinds[name], pname, self.params[name][pname])
                        parameter.copy_(_model_layout(kinds[name], pname, stacked[r], parameter.shape))
                    for bname, buffer in module.named_buffers():
                        buffer.copy_(self._by_replica(kinds[name], bname, self.buffers[name][bname])[r])

    def _by_replica(self, kind: LayerKind, name: str, tensor: Tensor) -> Tensor:
        """A stacked tensor with the replica axis first, (R, ...) (a view)."""
        return tensor.unflatten(0, (self.R, -1)) if _merged(kind, name) else tensor


def _stacked_parameters(replicas: Sequence[nn.Module], kind: LayerKind) -> dict[str, Tensor]:
    """A layer's parameters stacked over its replicas: leaves of (R, *shape), or (R*C, ...)
    for a BN layer (:func:`_merged`), each replica's in the layout the stack computes
    with (:func:`_stack_layout`).

    A BN replica without ``gamma`` or ``beta`` (:func:`varies_per_replica`) gets the
    neutral constant 1 or 0 in its slice, and a gradient hook zeroes that slice's
    gradient, so it stays the constant.
    """
    own = [dict(r.named_parameters()) for r in replicas]
    stacked: dict[str, Tensor] = {}
    for pname in dict.fromkeys(n for params in own for n in params):
        present = [params.get(pname) for params in own]
        template = next(p for p in present if p is not None)
        tensor = _stacked(
            kind,
            pname,
            [
                _stack_layout(kind, pname, p.detach() if p is not None else torch.full_like(template, _NEUTRAL[pname]))
                for p in present
            ],
        ).requires_grad_(template.requires_grad)
        if None in present:
            keep = torch.tensor([p is not None for p in present])
            if _merged(kind, pname):  # one entry per merged row: R*C
                keep = keep.repeat_interleave(template.shape[0])
            keep = keep.reshape(-1, *[1] * (tensor.dim() - 1))
            tensor.register_hook(lambda grad, keep=keep: torch.where(keep, grad, 0.0))
        stacked[pname] = tensor
    return stacked


#: A BN layer's batch count: one per replica, (R,), never merged.
_COUNT = "num_batches_tracked"


def _merged(kind: LayerKind, name: str) -> bool:
    """Whether the stack keeps this tensor of a layer of ``kind`` merged: a BN layer's
    parameters and moving statistics are (R*C, ...), replica r's channel c at r*C + c,
    the channel order the functional core runs the stack in; everything else is
    stacked, (R, ...)."""
    return kind == "bn" and name != _COUNT


def _stacked(kind: LayerKind, name: str, tensors: Sequence[Tensor]) -> Tensor:
    """One tensor per replica, stacked (R, ...) or merged (R*C, ...) (:func:`_merged`)."""
    return torch.cat(tensors) if _merged(kind, name) else torch.stack(tensors)


def _per_group(tensor: Tensor, replicas: int, groups: int) -> Tensor:
    """A merged (R*C, ...) tensor for ``groups`` batches of each replica, (R*G*C, ...)."""
    return tensor.unflatten(0, (replicas, -1)).repeat_interleave(groups, dim=0).flatten(0, 1)


def _unmerged(y: Tensor, axis: int, replicas: int) -> Tensor:
    """A BN output with the replicas merged into ``axis`` back in the stack's (R, N, ...)."""
    return y.unflatten(axis, (replicas, -1)).movedim(axis, 0)


def _stack_layout(kind: LayerKind, pname: str, value: Tensor) -> Tensor:
    """One replica's parameter as the stack keeps it. A Dense layer's weight (U, F) is
    kept as its transpose (F, U) and its bias (U,) as a row (1, U): the batched product
    ``baddbmm(bias, x, weight)`` then takes them as they are, with no views to make
    (and to differentiate) at every step. A one-unit Dense layer keeps its weight as the
    row (1, F) (:func:`_transposed_weight`). Other layers keep the model's layout."""
    if kind == "dense":
        if pname == "weight":
            return value.T if _transposed_weight(value.shape) else value
        return value.unsqueeze(0)
    return value


def _model_layout(kind: LayerKind, pname: str, value: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of :func:`_stack_layout`: a replica's slice in its model's layout
    ``shape``."""
    if kind == "dense":
        if pname == "weight":
            return value.T if _transposed_weight(shape) else value
        return value.squeeze(0)
    return value


def _transposed_weight(shape: torch.Size) -> bool:
    """Whether the stack keeps a Dense weight of the model's ``shape`` (U, F) transposed.

    Yes unless U is 1. The batched product of a (R, N, F) input with one column per
    replica is a matrix-vector product, which runs 2-4x faster (forward; 1.1-1.8x with
    the backward) when that column is the transposed view of a (R, 1, F) row than when
    it is stored as (R, F, 1) (measured at R = 10 and 30, N = 32 and 500, F = 50); with
    several units, the stored transpose is as fast or faster.
    """
    return shape[0] > 1


def _dense(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ W^T + b`` per replica: x (R, N, ..., F), the stack's weight (R, F, U), or
    (R, 1, F) for one unit, and bias (R, 1, U) (:func:`_stack_layout`)."""
    if weight.shape[1] != x.shape[-1]:  # one unit (_transposed_weight): the row's view (R, F, 1)
        weight = weight.mT
    flat = x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])  # (R, N*..., F)
    y = torch.bmm(flat, weight) if bias is None else torch.baddbmm(bias, flat, weight)
    return y if x.dim() == 3 else y.reshape(*x.shape[:-1], weight.shape[2])


def _activation(module: nn.Module, x: Tensor) -> Tensor:
    """An activation module on a stack: softmax's axis moves past the replica axis.

    Its ``forward`` is called directly: the stack runs the layers' computations, not the
    models' module hooks (which ``nn.Module.__call__`` would look for on every step).
    """
    if isinstance(module, nn.Softmax):
        dim = module.dim if module.dim is not None and module.dim < 0 else (module.dim or 0) + 1
        return torch.softmax(x, dim=dim)
    return module.forward(x)


def _pure_call(module: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    def call(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(module, params, (x,))

    return call


def _bn_call(
    layer: BatchNormalization,
    kept: tuple[int, ...] | None = None,
    momentum: float | None = None,
) -> Callable[[dict[str, Tensor], dict[str, Tensor], Tensor], tuple[Tensor, dict[str, Tensor]]]:
    """The adapter from a BN layer's settings to the functional core, in training mode.

    Returns ``call(params, buffers, x) -> (y, new_buffers)``: the new buffers are the
    statistics the core returns, detached (the caller counts the batch). ``kept``: the
    normalized axes (default: the layer's axis on ``x``); ``momentum``: instead of the
    layer's.
    """
    common: dict[str, Any] = {
        "training": True,
        "momentum": layer.momentum if momentum is None else momentum,
        "epsilon": layer.epsilon,
        "on_nonfinite": layer.on_nonfinite,
        "implementation": layer.implementation,
        "name": layer.name,
    }

    def call(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        axes = kept if kept is not None else kept_axes(layer.axis, x.dim())
        gamma, beta = params.get("gamma"), params.get("beta")
        count = buffers["num_batches_tracked"]
        if layer.renorm:
            result: Any = batch_renorm(
                x, gamma, beta, buffers["moving_mean"], buffers["moving_variance"],
                buffers["moving_stddev"], buffers["renorm_mean"], buffers["renorm_stddev"],
                axis=axes, renorm_momentum=layer.renorm_momentum,
                renorm_clipping=layer.renorm_clipping, num_batches_tracked=count, **common,
            )
        elif layer.virtual_batch_size is not None:
            result = ghost_batch_norm(
                x, gamma, beta, buffers["moving_mean"], buffers["moving_variance"],
                virtual_batch_size=layer.virtual_batch_size, axis=axes, num_batches_tracked=count,
                unbiased_moving_variance=layer.unbiased_moving_variance, **common,
            )
        else:
            result = batch_norm(
                x, gamma, beta, buffers["moving_mean"], buffers["moving_variance"], axis=axes,
                num_batches_tracked=count, unbiased_moving_variance=layer.unbiased_moving_variance,
                **common,
            )
        new = dict(buffers)
        # A skipped update returns the given statistics themselves: keep them (callers
        # test for that identity); new ones carry the batch's autograd history.
        new.update(
            (k, v if v is buffers[k] else v.detach())
            for k, v in zip(result._fields[1:], result[1:], strict=True)
        )
        return _bn_activation(layer, result.output), new

    return call


def _bn_activation(layer: BatchNormalization, y: Tensor) -> Tensor:
    """A BatchNormAct layer's activation on its normalized output (others: ``y``)."""
    if isinstance(layer, BatchNormAct):
        return activate(y, layer.activation, layer.activation_kwargs, inplace=False)
    return y


def _dropout(
    x: Tensor, layer: Dropout, generators: Sequence[torch.Generator], order: tuple[int, ...] | None
) -> Tensor:
    """The Dropout layer's training forward on each replica's slice, from its own generator.

    Plain dropout is ``torch.nn.functional.dropout``, which on the CPU draws
    ``noise = empty_like(x).bernoulli_(1 - p)`` (values in the input's *memory* order),
    divides it by ``1 - p`` and returns ``x * noise``; p = 1 draws nothing. ``order``: the
    dimensions of one replica's input from the largest stride to the smallest in the run
    alone (None: row-major), so the noise is drawn in that memory order too. Dropout with a
    noise shape (spatial dropout: (N, C, 1, ...)) draws ``keep`` of the layer's
    :meth:`~bnlab.models.layers.Dropout.mask_shape` and returns ``x * keep / (1 - p)``.
    """
    p = layer.rate
    if p == 0.0:
        return x
    shape = x.shape[1:]
    if layer.noise_shape is not None:
        small = layer.mask_shape(shape)
        keep = torch.stack(
            [torch.empty(small, dtype=x.dtype).bernoulli_(1.0 - p, generator=g) for g in generators]
        )
        return x * keep / (1.0 - p)
    if p == 1.0:
        return x * torch.zeros((), dtype=x.dtype)
    dims = order if order is not None and len(order) == len(shape) else tuple(range(len(shape)))
    back = tuple(sorted(range(len(dims)), key=dims.__getitem__))
    laid_out = [shape[d] for d in dims]
    noise = torch.stack(
        [torch.empty(laid_out, dtype=x.dtype).bernoulli_(1.0 - p, generator=g).permute(back) for g in generators]
    )
    noise.div_(1.0 - p)
    return x * noise


def _memory_orders(model: SequentialModel, x: Tensor) -> dict[str, tuple[int, ...]]:
    """Per Dropout layer, its input's dimensions by decreasing stride in a run of ``model``.

    Found with one forward pass on ``x`` in which BN layers use batch statistics
    (the layouts of a training step) and nothing changes (:func:`batch_statistics`).
    """
    orders: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, layer in model.layers.items():
        if isinstance(layer, Dropout):

            def hook(module: nn.Module, inputs: tuple[Tensor, ...], name: str = name) -> None:
                t = inputs[0]
                orders[name] = tuple(sorted(range(t.dim()), key=lambda d: (-t.stride(d), d)))

            handles.append(layer.register_forward_pre_hook(hook))
    try:
        with torch.no_grad(), batch_statistics(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return orders


# ---------------------------------------------------------------------- training loop
class _Replicas:
    """One call of :func:`fit_replicas`: the stack, the per-replica streams and records."""

    def __init__(
        self,
        models: list[SequentialModel],
        data: TrainTestArrays,
        config: TrainConfig,
        seeds: list[int],
        eval_chunk: int | None,
    ) -> None:
        self.models, self.config, self.R = models, config, len(models)
        self.loss_fn = get_loss(config.loss)
        device, dtype = model_device_dtype(models[0])
        if device.type != "cpu":
            raise ValueError(f"fit_replicas: models must be on the CPU; got {device}")
        self.x_train = features_tensor(data.x_train, "fit: data.x_train", dtype, device)
        self.x_test = features_tensor(data.x_test, "fit: data.x_test", dtype, device)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"fit: data.x_train samples have shape {tuple(self.x_train.shape[1:])} but data.x_test "
                f"samples have {tuple(self.x_test.shape[1:])}; both sets must have the same sample shape"
            )
        self.y_train = targets_tensor(data.y_train, len(self.x_train), "fit: data.y_train", dtype, device)
        self.y_test = targets_tensor(data.y_test, len(self.x_test), "fit: data.y_test", dtype, device)
        outputs = check_model_output(models[0], self.x_train, self.y_train, config.batch_size, self.loss_fn)
        self.chance_accuracy = chance_accuracy(self.y_test, outputs)

        self.has_bn = any(isinstance(m, BatchNormalization) for m in models[0].modules())
        self.stack = _Stack(models)
        self.stack.dropout_orders = _memory_orders(models[0], self.x_train[: config.batch_size])
        if not self.stack.trainable:
            raise ValueError("fit: the model has no trainable parameters; unfreeze some layers")
        self.optimizer = get_optimizer(config.optimizer, self.stack.trainable, config.optimizer_args)
        self.steps_per_epoch = steps_per_epoch(len(self.x_train), config.batch_size, self.has_bn)

        streams = [derive_streams(s) for s in seeds]
        self.shuffle_rngs = [s[0] for s in streams]
        self.test_orders = torch.stack(
            [torch.as_tensor(s[1].permutation(len(self.x_test))) for s in streams]
        )  # (R, N_test)
        self.generators = [torch.Generator().manual_seed(s[2]) for s in streams]
        self.inference_chunk = eval_chunk or eval_pass_size(models[0], self.R, config.batch_size)
        self.statistics_chunk = eval_chunk or eval_pass_size(
            models[0], self.R, config.batch_size, BATCH_STATISTICS_PASS_VALUES
        )

        self.step = 0
        self.alive = [True] * self.R
        self.diverged = [False] * self.R
        self.initial_loss: Tensor | None = None
        self.epochs: list[dict[str, list[float]]] = [{k: [] for k in EPOCH_METRICS} for _ in range(self.R)]
        self.evals: list[list[EvalRecord]] = [[] for _ in range(self.R)]
        self.probe_steps: list[list[list[int]]] = [[[] for _ in config.probes] for _ in range(self.R)]
        self.probe_rows: list[list[list[tuple[float, ...]]]] = [
            [[] for _ in config.probes] for _ in range(self.R)
        ]
        for probe in config.probes:
            if probe.layer not in models[0].layers:
                raise ValueError(f"unknown probe layer {probe.layer!r}; choose from: {', '.join(models[0].layers)}")

    # ------------------------------------------------------------------ loop
    def train(self) -> list[History]:
        for _ in range(self.config.epochs):
            self._epoch()
            if not any(self.alive):
                break
        total = self.steps_per_epoch * self.config.epochs
        done = [r for r in range(self.R) if not self.diverged[r]]
        finals = dict.fromkeys(range(self.R), FinalMetrics(NAN, NAN, NAN, NAN))
        if done:
            train = self._inference_metrics(self.x_train, self.y_train)
            test = self._inference_metrics(self.x_test, self.y_test)
            for r in done:
                finals[r] = FinalMetrics(train[0][r], train[1][r], test[0][r], test[1][r])
            self.stack.write_back(self.models, done)
        for model in self.models:
            model.eval()
        return [self._history(r, finals[r], total) for r in range(self.R)]

    def _history(self, r: int, final: FinalMetrics, total: int) -> History:
        e = self.epochs[r]
        evals = self.evals[r]
        if self.diverged[r]:
            for values in e.values():
                values.extend([NAN] * (self.config.epochs - len(values)))
            evals = padded_evals(evals, self.config, self.steps_per_epoch, self.has_bn)
        probes = {}
        for i, spec in enumerate(self.config.probes):
            steps, rows = list(self.probe_steps[r][i]), list(self.probe_rows[r][i])
            if self.diverged[r]:
                first = steps[-1] + spec.every_steps if steps else 0
                for s in range(first, total, spec.every_steps):
                    steps.append(s)
                    rows.append(tuple(math.nan for _ in spec.percentiles))
            probes[spec.key] = ProbeTrace(percentiles=spec.percentiles, steps=tuple(steps), values=tuple(rows))
        initial = NAN if self.initial_loss is None else float(self.initial_loss[r])
        return history_of(
            e,
            has_bn=self.has_bn,
            evals=tuple(evals),
            probes=probes,
            final=final,
            diverged=self.diverged[r],
            steps_per_epoch=self.steps_per_epoch,
            initial_loss=initial,
            chance_accuracy=self.chance_accuracy,
        )

    def _epoch(self) -> None:
        """Train one epoch for every live replica and evaluate them."""
        n, bs, spe = len(self.x_train), self.config.batch_size, self.steps_per_epoch
        every = self.config.eval_every_steps
        if self.config.shuffle:
            perms = torch.stack([torch.as_tensor(rng.permutation(n)) for rng in self.shuffle_rngs])
        else:
            perms = torch.arange(n).expand(self.R, n)
        stopped = [False] * self.R  # diverged during this epoch
        losses: list[Tensor] = []
        outputs: list[Tensor] = []
        for b in range(spe):
            idx = perms[:, b * bs : (b + 1) * bs]  # (R, B)
            loss, out = self._step(self.x_train[idx], self.y_train[idx])
            losses.append(loss)
            outputs.append(out)
            if every is not None and self.step % every == 0 and b < spe - 1:
                self._stop_non_finite(losses, stopped)
                if not any(self.alive):
                    break
                self._validate()
        self._stop_non_finite(losses, stopped)
        logs = {r: epoch_logs(NAN, NAN, NAN, NAN, NAN if self.has_bn else None) for r in range(self.R) if stopped[r]}
        live = [r for r in range(self.R) if self.alive[r]]
        if live:
            sizes = [min(bs, n - b * bs) for b in range(spe)]
            seen = sum(sizes)
            weights = torch.tensor(sizes, dtype=torch.float64)
            train_loss = ((torch.stack(losses).double() * weights[:, None]).sum(0) / seen).tolist()
            y_seen = self.y_train[perms[:, :seen]]
            correct = self._correct_counts(y_seen, torch.cat(outputs, dim=1)).tolist()
            records = self._validate()
            for r in live:
                rec = records[r]
                logs[r] = epoch_logs(
                    train_loss[r], correct[r] / seen, rec.val_loss, rec.val_accuracy, rec.val_accuracy_train_mode
                )
        for r, log in logs.items():
            for key, values in self.epochs[r].items():
                value = log[key]
                values.append(NAN if value is None else value)

    def _stop_non_finite(self, losses: list[Tensor], stopped: list[bool]) -> None:
        """Stop the live replicas whose losses this epoch are not all finite (``fit``'s check)."""
        if all_finite(losses):
            return
        finite = torch.isfinite(torch.stack(losses)).all(dim=0).tolist()
        newly = [r for r in range(self.R) if self.alive[r] and not finite[r]]
        for r in newly:
            self.alive[r], self.diverged[r], stopped[r] = False, True, True
        if newly:
            self.stack.write_back(self.models, newly)  # the weights it had when it stopped
            self.stack.retire(newly, self.optimizer)

    def _step(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step of every replica; returns losses (R,) and outputs (R, B, K)."""
        capture, due = self._probes_due()
        out, captured = self.stack.forward(xb, "train", self.generators, capture)
        losses = self._losses(yb, out)
        if self.initial_loss is None:
            self.initial_loss = losses.detach()
        for p in self.stack.trainable:
            p.grad = None
        losses.sum().backward()
        self.optimizer.step()
        if due:
            self._record_probes(captured, due)
        self.step += 1
        return losses.detach(), out.detach()

    def _losses(self, y: Tensor, out: Tensor) -> Tensor:
        """Each replica's mean loss (R,): targets y (R, N, ...), outputs (R, N, K)."""
        per_sample = self.loss_fn(y.flatten(0, 1), out.flatten(0, 1), reduction="none")
        return per_sample.view(out.shape[0], -1).mean(dim=1)

    def _correct_counts(self, y: Tensor, out: Tensor) -> Tensor:
        """Each replica's number of correct predictions (R,) int64, shapes as in :meth:`_losses`."""
        return correct(y.flatten(0, 1), out.flatten(0, 1)).view(out.shape[0], -1).sum(dim=1)

    def _probes_due(self) -> tuple[dict[str, str], list[int]]:
        due = [i for i, spec in enumerate(self.config.probes) if self.step % spec.every_steps == 0]
        return {self.config.probes[i].layer: self.config.probes[i].where for i in due}, due

    def _record_probes(self, captured: dict[str, Tensor], due: list[int]) -> None:
        """Percentiles of each live replica's slice, as :func:`bnlab.train.probes.percentiles`."""
        for i in due:
            spec = self.config.probes[i]
            flat = captured[spec.key].detach().reshape(self.R, -1)
            if flat.shape[1] > MAX_PROBE_VALUES:
                flat = flat[:, :: math.ceil(flat.shape[1] / MAX_PROBE_VALUES)]
            qs = torch.tensor(spec.percentiles, dtype=torch.float64) / 100.0
            values = torch.quantile(flat.to(torch.float64), qs, dim=1).T.tolist()  # (R, len(q))
            for r in range(self.R):
                if self.alive[r]:
                    self.probe_steps[r][i].append(self.step)
                    self.probe_rows[r][i].append(tuple(values[r]))

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _inference_metrics(self, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
        """Per replica (loss, accuracy) in inference mode, as ``inference_metrics``.

        The passes (at most ``self.inference_chunk`` samples per replica each) only run
        the stack; the loss, the correct predictions and the finite check are taken once
        over all of their outputs (as in :meth:`_batch_statistics_accuracy`).
        """
        every = (self.R, *[-1] * x.dim())  # each replica sees the same samples
        outputs = [
            self.stack.forward(x[s].expand(every), "inference")[0]
            for s in chunks(x.shape[0], self.inference_chunk)
        ]
        ys, out = y.expand(self.R, *y.shape), torch.cat(outputs, dim=1)
        return self._losses(ys, out).tolist(), self._accuracies(ys, out)

    def _accuracies(self, y: Tensor, out: Tensor) -> list[float]:
        """Per replica accuracy of outputs ``out`` (R, N, K) for targets ``y`` (R, N, ...);
        NaN where some output is not finite."""
        correct = self._correct_counts(y, out).tolist()
        finite = torch.isfinite(out).flatten(1).all(dim=1).tolist()
        return [c / out.shape[1] if f else NAN for c, f in zip(correct, finite, strict=True)]

    @torch.no_grad()
    def _batch_statistics_accuracy(self) -> list[float]:
        """Per replica accuracy with batch statistics, as ``batch_statistics_accuracy``.

        The full batches run in passes of several batches each (``groups``, at most
        about ``self.statistics_chunk`` samples per replica), the last partial one in its own.
        """
        n, bs = self.x_test.shape[0], self.config.batch_size
        full = n // bs
        per_pass = max(1, self.statistics_chunk // bs)
        parts = [
            (slice(first * bs, min(first + per_pass, full) * bs), min(per_pass, full - first))
            for first in range(0, full, per_pass)
        ]
        if n - full * bs >= 2:  # a trailing batch of one sample is skipped
            parts.append((slice(full * bs, n), 1))
        if not parts:
            return [NAN] * self.R
        outputs = [
            self.stack.forward(self.x_test[self.test_orders[:, s]], "batch_statistics", groups=groups)[0]
            for s, groups in parts
        ]
        out = torch.cat(outputs, dim=1)
        return self._accuracies(self.y_test[self.test_orders[:, : out.shape[1]]], out)

    def _validate(self) -> list[EvalRecord]:
        """Evaluate every replica now; appends the record of each live one and returns all."""
        val_loss, val_acc = self._inference_metrics(self.x_test, self.y_test)
        train_mode: list[float | None] = (
            list(self._batch_statistics_accuracy()) if self.has_bn else [None] * self.R
        )
        epoch = self.step / self.steps_per_epoch
        records = [
            EvalRecord(self.step, epoch, val_loss[r], val_acc[r], train_mode[r]) for r in range(self.R)
        ]
        for r in range(self.R):
            if self.alive[r]:
                self.evals[r].append(records[r])
        return records
