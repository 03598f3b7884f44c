"""One view over bnlab's and PyTorch's batch-normalization layers.

Freezing, recalibration, folding and synchronization work on "every BN layer of
a model", whichever library made it. This module is the one place that knows how
each kind names its parts and which conventions it follows:

==========================  ==================================  ===================================
                            :class:`BatchNormalization`         ``torch.nn.BatchNorm*d`` / SyncBN
==========================  ==================================  ===================================
scale / offset              ``gamma`` / ``beta`` (each may be   ``weight`` / ``bias`` (both None
                            None)                               when ``affine=False``)
moving statistics           ``moving_mean/variance``            ``running_mean/var`` (None when
                                                                ``track_running_stats=False``)
stored variance             biased (Keras) unless               unbiased
                            ``unbiased_moving_variance``
kept (channel) axes         ``axis`` (int or tuple)             1
==========================  ==================================  ===================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy

from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["BatchNormView", "batch_norm_layers", "is_batch_norm", "preserved", "view"]

BATCH_NORM_TYPES: tuple[type[nn.Module], ...] = (BatchNormalization, _BatchNorm)


def is_batch_norm(module: nn.Module) -> bool:
    """True for bnlab's :class:`BatchNormalization` and every ``torch`` ``_BatchNorm``."""
    return isinstance(module, BATCH_NORM_TYPES)


def batch_norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every BN layer in ``model``, in module order.

    The root itself is included (name ``""``) when it is a BN layer.
    """
    return [(name, m) for name, m in model.named_modules() if is_batch_norm(m)]


@contextmanager
def preserved(model: nn.Module, buffers_of: Iterable[nn.Module] | None = None) -> Iterator[None]:
    """Give ``model`` back its modes and BN state on exit, even if the block raised.

    On exit every module of ``model`` gets its ``training`` flag back, and the buffers
    of ``buffers_of`` (default: the BN layers of ``model``, :func:`batch_norm_layers`;
    ``model.modules()`` for all; ``()`` for modes only) get back both their objects and
    their values on entry: a layer may update a buffer in place or replace it with a new
    tensor, and restoring both undoes either. (State a module keeps outside its buffers
    is not restored; bnlab's and PyTorch's BN layers keep none.)

    Example::

        with preserved(model):
            model.train()
            model(x)          # moving statistics updated ...
        # ... and restored here, with every module's mode
    """
    modules = [m for _, m in batch_norm_layers(model)] if buffers_of is None else buffers_of
    saved = [(module, name, buffer, buffer.detach().clone())
             for module in modules
             for name, buffer in module.named_buffers(recurse=False)
             if buffer is not None and not is_lazy(buffer)]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, value in saved:
                buffer.copy_(value)
                setattr(module, name, buffer)
        for module, mode in modes:
            module.training = mode


@dataclass(frozen=True)
class BatchNormView:
    """Library-independent access to one BN layer's parts.

    Attributes:
        module: the layer.
        axis: the kept axis or axes as the layer states them (may be negative).
        epsilon: added to the variance.
        unbiased: the moving variance is stored unbiased (PyTorch) rather than biased.
    """

    module: nn.Module
    axis: int | tuple[int, ...]
    epsilon: float
    unbiased: bool

    @property
    def is_torch(self) -> bool:
        return isinstance(self.module, _BatchNorm)

    @property
    def mean(self) -> Tensor | None:
        """The moving mean buffer, or None (unbuilt bnlab layer, torch without running stats)."""
        if self.is_torch:
            return self.module.running_mean
        return self.module.moving_mean if self.module.built else None

    @property
    def variance(self) -> Tensor | None:
        if self.is_torch:
            return self.module.running_var
        return self.module.moving_variance if self.module.built else None

    @property
    def num_batches_tracked(self) -> Tensor | None:
        if self.is_torch:
            return self.module.num_batches_tracked
        return self.module.num_batches_tracked if self.module.built else None

    @property
    def gamma(self) -> Tensor | None:
        return self.module.weight if self.is_torch else self.module.gamma

    @property
    def beta(self) -> Tensor | None:
        return self.module.bias if self.is_torch else self.module.beta

    @property
    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(p for p in (self.gamma, self.beta) if p is not None)


def view(module: nn.Module) -> BatchNormView:
    """The :class:`BatchNormView` of a BN layer.

    Raises:
        TypeError: ``module`` is not a bnlab or torch batch-normalization layer.
    """
    if isinstance(module, _BatchNorm):
        return BatchNormView(module, 1, float(module.eps), True)
    if isinstance(module, BatchNormalization):
        return BatchNormView(module, module.axis, module.epsilon, module.unbiased_moving_variance)
    raise TypeError(
        "expected a bnlab.nn.BatchNormalization or a torch.nn.BatchNorm1d/2d/3d/SyncBatchNorm; "
        f"got {type(module).__name__}"
    )
