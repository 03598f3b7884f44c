"""Frozen batch normalization for whole models: :func:`freeze` and :func:`unfreeze`.

A frozen BN layer is a fixed per-channel affine map: it normalizes with its
moving statistics in *every* mode — ``model.train()`` included — and neither its
statistics nor its ``gamma``/``beta`` change. It is what fine-tuning with small
batches wants (detectron2's and torchvision's ``FrozenBatchNorm2d``), and what
Keras does for a BN layer with ``trainable = False``.

- bnlab's :class:`~bnlab.nn.BatchNormalization`: ``trainable = False`` (the
  layer itself switches to inference statistics and stops requiring gradients).
- PyTorch's ``BatchNorm1d/2d/3d``/``SyncBatchNorm``: ``requires_grad = False`` on
  ``weight``/``bias`` and a forward pre-hook that puts the layer in eval mode
  right before each forward, so a later ``model.train()`` cannot switch it back
  to batch statistics. The layer's class, parameters and state-dict keys stay
  as they are; :func:`unfreeze` removes the hook.

Frozen layers are skipped by :func:`bnlab.recalibrate`.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.nn.batchnorm import BatchNormalization
from bnlab.nn.views import batch_norm_layers

__all__ = ["freeze", "is_frozen", "unfreeze"]


def freeze(model: nn.Module) -> list[str]:
    """Freeze every batch-normalization layer of ``model``, in place.

    After it, each BN layer uses its moving statistics in train and eval mode,
    and no training step changes its statistics, ``num_batches_tracked``,
    ``gamma`` or ``beta`` (they no longer require gradients, so create the
    optimizer afterwards or it will simply get no gradient for them).

    Args:
        model: any module; the model itself may be a BN layer.

    Returns:
        The qualified names (``model.get_submodule(name)``) of the layers frozen,
        in module order; ``""`` is the model itself.

    Raises:
        ValueError: a PyTorch layer with ``track_running_stats=False`` (it has no
            statistics to freeze); nothing is changed in that case.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> freeze(model)
        ['1']
        >>> _ = model.train()(torch.randn(2, 3, 8, 8))
        >>> bool(model[1].running_mean.eq(0).all())   # statistics unchanged
        True
    """
    layers = batch_norm_layers(model)
    for name, module in layers:
        if isinstance(module, _BatchNorm) and module.running_mean is None:
            raise ValueError(
                f"freeze: layer {name or type(module).__name__!r} has track_running_stats=False, "
                "so it has no moving statistics to normalize with; build it with "
                "track_running_stats=True (and train or recalibrate it) before freezing"
            )
    for _, module in layers:
        _freeze_layer(module)
    return [name for name, _ in layers]


def unfreeze(model: nn.Module) -> list[str]:
    """Undo :func:`freeze` for every BN layer of ``model``: batch statistics in training again.

    bnlab layers get ``trainable = True``; PyTorch layers lose the eval hook and
    their ``weight``/``bias`` require gradients again. Each layer takes the mode of
    its parent on the next ``model.train()``/``model.eval()``.

    Returns:
        The qualified names of the BN layers, in module order.
    """
    layers = batch_norm_layers(model)
    for _, module in layers:
        if isinstance(module, BatchNormalization):
            module.unfreeze()
            continue
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _stay_in_eval:
                del module._forward_pre_hooks[key]
        for parameter in (module.weight, module.bias):
            if parameter is not None:
                parameter.requires_grad_(True)
    return [name for name, _ in layers]


def is_frozen(module: nn.Module) -> bool:
    """Whether a BN layer is frozen (bnlab: ``trainable`` False; torch: has the eval hook)."""
    if isinstance(module, BatchNormalization):
        return not module.trainable
    if isinstance(module, _BatchNorm):
        return any(hook is _stay_in_eval for hook in module._forward_pre_hooks.values())
    raise TypeError(
        f"is_frozen expects a bnlab or torch batch-normalization layer; got {type(module).__name__}"
    )


def _freeze_layer(module: nn.Module) -> None:
    if isinstance(module, BatchNormalization):
        module.freeze()
        return
    for parameter in (module.weight, module.bias):
        if parameter is not None:
            parameter.requires_grad_(False)
    if not is_frozen(module):
        module.register_forward_pre_hook(_stay_in_eval)
    module.eval()


def _stay_in_eval(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: a frozen torch BN layer always runs in eval mode.

    A module-level function (not a closure), so frozen models deep-copy and
    pickle like any other.
    """
    if module.training:
        module.train(False)
