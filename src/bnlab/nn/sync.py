"""Synchronized batch normalization for whole models: :func:`convert_sync`.

bnlab layers get ``synchronized=True``; PyTorch's ``BatchNorm1d/2d/3d`` and
``SyncBatchNorm`` are replaced by :class:`SyncBatchNorm`, which keeps PyTorch's
parameter names, defaults and state-dict keys (checkpoints load unchanged) and
computes with :func:`bnlab.functional.sync.sync_batch_norm`: every rank's count,
an empty batch on a rank, and a timeout that names the layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.functional import batch_norm
from bnlab.functional.sync import sync_batch_norm
from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["SyncBatchNorm", "convert_sync"]


class SyncBatchNorm(_BatchNorm):
    r"""PyTorch-style batch normalization with statistics over every rank of a process group.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    A drop-in for ``torch.nn.SyncBatchNorm``: same arguments, defaults
    (``momentum=0.1`` is the weight of the *new* batch, ``eps=1e-5``), parameters
    (``weight``, ``bias``), buffers (``running_mean``, ``running_var`` — unbiased,
    ``num_batches_tracked``) and state-dict keys. In training the mean and biased
    variance are taken over the channel axis 1's complement on the concatenation
    of every rank's batch; ranks may have different batch sizes, including 0.
    Without a process group (or with one rank) it is ``BatchNorm{1,2,3}d``.

    Args:
        num_features: channels C.
        eps, momentum, affine, track_running_stats: as ``torch.nn.BatchNorm2d``.
        process_group: the ``torch.distributed`` group; None is the world.
        sync_timeout: seconds to wait for the other ranks before raising
            :class:`bnlab.functional.sync.SynchronizationError` naming the layer;
            None uses the process group's timeout.
        name: the layer's name in error messages (:func:`convert_sync` uses its
            path in the model).

    Shape: ``(N, C, *)`` -> same shape.

    Example::

        model = bnlab.nn.convert_sync(torchvision_model, sync_timeout=120)
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        *,
        sync_timeout: float | None = None,
        name: str = "sync_batch_norm",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        if sync_timeout is not None and not (isinstance(sync_timeout, int | float) and sync_timeout > 0):
            raise ValueError(f"{name}: sync_timeout must be seconds > 0 or None; got {sync_timeout!r}")
        self.process_group = process_group
        self.sync_timeout = None if sync_timeout is None else float(sync_timeout)
        self.name = name

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"{self.name}: expected at least 2D input (N, C, ...); got shape {tuple(input.shape)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        use_batch = self.training or self.running_mean is None
        tracking = self.training and self.running_mean is not None
        channels = input.shape[1]
        mean = self.running_mean if self.running_mean is not None else input.new_zeros(channels)
        var = self.running_var if self.running_var is not None else input.new_ones(channels)
        tracked = self.num_batches_tracked if self.num_batches_tracked is not None else 0
        arguments: dict[str, Any] = {
            # PyTorch's momentum weighs the new batch; Keras's (bnlab's) the old value.
            "training": use_batch, "axis": 1,
            "momentum": None if self.momentum is None else 1.0 - self.momentum,
            "epsilon": self.eps, "num_batches_tracked": tracked,
            "unbiased_moving_variance": True, "name": self.name,
        }
        if self.training:
            result = sync_batch_norm(input, self.weight, self.bias, mean, var,
                                     group=self.process_group, timeout=self.sync_timeout,
                                     **arguments)
        else:
            # Eval without running statistics uses this rank's batch, like BatchNorm2d
            # (and torch.nn.SyncBatchNorm): only training synchronizes.
            result = batch_norm(input, self.weight, self.bias, mean, var, **arguments)
        if tracking and result.moving_mean is not mean:
            with torch.no_grad():
                self.running_mean.copy_(result.moving_mean)
                self.running_var.copy_(result.moving_variance)
                self.num_batches_tracked.add_(1)
        return result.output

    def extra_repr(self) -> str:
        timeout = "" if self.sync_timeout is None else f", sync_timeout={self.sync_timeout:g}"
        return super().extra_repr() + timeout


def convert_sync(
    model: nn.Module,
    *,
    process_group: Any = None,
    sync_timeout: float | None = None,
) -> nn.Module:
    """Make every batch-normalization layer of ``model`` synchronized, in place.

    - :class:`bnlab.nn.BatchNormalization`: ``synchronized = True`` and the given
      ``process_group``/``sync_timeout`` (a layer keeps its own timeout when
      ``sync_timeout`` is None).
    - ``torch.nn.BatchNorm1d/2d/3d`` and ``torch.nn.SyncBatchNorm``: replaced by
      :class:`SyncBatchNorm` with the same parameters, buffers, mode,
      ``requires_grad`` flags and hooks (so a frozen layer stays frozen); its name
      in error messages is its path in the model.

    Statistics stay identical on every rank; outputs and gradients equal plain BN
    on the concatenation of the ranks' batches. Call it before wrapping the model
    in ``DistributedDataParallel`` and before creating the optimizer (replaced
    layers have new parameter objects).

    Args:
        model: any module; a bare BN layer is converted and returned.
        process_group: the ``torch.distributed`` group to synchronize over; None is
            the world (read when the layer runs, so the group may be created later).
        sync_timeout: seconds each layer waits for the other ranks; None keeps the
            layer's setting (default: the process group's timeout).

    Returns:
        ``model`` (or the replacement when ``model`` itself is a torch BN layer).

    Raises:
        ValueError: a bnlab layer uses ``renorm`` or ``virtual_batch_size`` (not
            synchronizable); the model is left unchanged.

    Example::

        model = bnlab.nn.convert_sync(model, sync_timeout=60)
        model = torch.nn.parallel.DistributedDataParallel(model)
    """
    if sync_timeout is not None and not (isinstance(sync_timeout, int | float) and sync_timeout > 0):
        raise ValueError(f"convert_sync: sync_timeout must be seconds > 0 or None; got {sync_timeout!r}")
    incompatible = [name or type(m).__name__ for name, m in model.named_modules()
                    if isinstance(m, BatchNormalization) and (m.renorm or m.virtual_batch_size)]
    if incompatible:
        raise ValueError(
            f"convert_sync: layer(s) {', '.join(map(repr, incompatible))} use renorm or "
            "virtual_batch_size, which do not synchronize; nothing was converted. Turn those "
            "options off first, or synchronize plain batch normalization only"
        )
    root = _convert(model, "", process_group, sync_timeout)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}" if name else child_name
            replacement = _convert(child, path, process_group, sync_timeout)
            if replacement is not child:
                setattr(module, child_name, replacement)
    return root


def _convert(
    module: nn.Module, path: str, process_group: Any, sync_timeout: float | None
) -> nn.Module:
    """The synchronized version of ``module``: configured in place, a replacement, or itself."""
    if isinstance(module, BatchNormalization):
        module.synchronized = True
    if isinstance(module, BatchNormalization | SyncBatchNorm):
        module.process_group = process_group
        if sync_timeout is not None:
            module.sync_timeout = float(sync_timeout)
        return module
    if isinstance(module, _BatchNorm):
        return _to_sync(module, path or "sync_batch_norm", process_group, sync_timeout)
    return module


def _to_sync(
    module: _BatchNorm, name: str, process_group: Any, sync_timeout: float | None
) -> SyncBatchNorm:
    reference = module.running_mean if module.running_mean is not None else module.weight
    new = SyncBatchNorm(
        module.num_features, module.eps, module.momentum, module.affine,
        module.track_running_stats, process_group, sync_timeout=sync_timeout, name=name,
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
    )
    if module.affine:
        # Keep the parameter objects: an optimizer created earlier still updates them.
        new.weight, new.bias = module.weight, module.bias
    with torch.no_grad():
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            if getattr(module, key) is not None:
                getattr(new, key).copy_(getattr(module, key))
    new.train(module.training)
    new._forward_pre_hooks.update(module._forward_pre_hooks)
    new._forward_hooks.update(module._forward_hooks)
    return new
