"""Conversions between bnlab's Keras vocabulary and PyTorch's batch norm.

The one place that knows both naming schemes:

============================  ============================  =========================================
bnlab / Keras                 PyTorch                       relation
============================  ============================  =========================================
``momentum`` (old weight)     ``momentum`` (new weight)     ``torch = 1 - keras``; None = cumulative
``epsilon`` (1e-3)            ``eps`` (1e-5)                same meaning, different defaults
``gamma`` / ``beta``          ``weight`` / ``bias``         same tensors
``moving_mean/variance``      ``running_mean/var``          torch stores the *unbiased* variance
``center``/``scale`` False    ``affine=False``              torch drops both at once
``trainable=False``           (none) ``eval()`` + no grad   frozen: inference statistics in train()
state_dict keys (as above)    ``weight``, ``running_var``   either loads; ``state_dict_names`` picks
============================  ============================  =========================================

A layer made by :func:`from_torch_batchnorm` (and so :func:`replace_batchnorm`) writes
PyTorch's keys in its ``state_dict`` (``state_dict_names="torch"``): a converted model
saves and loads the checkpoints of the original one.
"""

from __future__ import annotations

from torch import nn

from bnlab.nn.batchnorm import TORCH_STATE_NAMES, BatchNormalization

TORCH_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
KERAS_TO_TORCH_NAMES = TORCH_STATE_NAMES  # defined by the layer, whose state_dict uses it
# The torch class for an input rank, and the input rank a torch class takes (1d: (N, C)
# or (N, C, L); both map back to BatchNorm1d).
_TORCH_CLASS_BY_RANK = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d,
                        5: nn.BatchNorm3d}
_RANK_BY_TORCH_CLASS = {nn.BatchNorm1d: 2, nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}


def torch_momentum(keras_momentum: float | None) -> float | None:
    """PyTorch's momentum (weight of the *new* batch) for a Keras momentum: ``1 - m``.

    >>> torch_momentum(0.99)
    0.01
    """
    return None if keras_momentum is None else _complement(keras_momentum)


def keras_momentum(torch_momentum: float | None) -> float | None:
    """Keras's momentum (weight of the *old* value) for a PyTorch momentum: ``1 - m``."""
    return None if torch_momentum is None else _complement(torch_momentum)


def _complement(m: float) -> float:
    """``1 - m`` rounded to 15 significant digits, so that 0.1 -> 0.9 -> 0.1 round-trips
    exactly (plain ``1 - (1 - 0.1)`` is 0.09999999999999998)."""
    return float(f"{1.0 - m:.15g}")


def from_torch_batchnorm(module: nn.modules.batchnorm._BatchNorm) -> BatchNormalization:
    """Build a bnlab layer that behaves exactly like ``module`` in train and eval mode.

    Copies weight/bias/running statistics and keeps PyTorch's semantics: its momentum
    (converted), its epsilon, the unbiased moving-variance update, and its state_dict
    keys (``state_dict_names="torch"``). ``track_running_stats=False`` (batch
    statistics in eval mode) is not available in bnlab and raises. The input rank of
    ``BatchNorm2d``/``3d`` (4/5; 2 for ``BatchNorm1d``) is recorded for ``to_torch()``.
    """
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        raise TypeError(
            f"from_torch expects a torch.nn.BatchNorm1d/2d/3d or SyncBatchNorm; got {type(module).__name__}"
        )
    if not module.track_running_stats:
        raise ValueError(
            "from_torch: the module has track_running_stats=False (batch statistics in eval "
            "mode), which bnlab's BatchNormalization does not model; use a module with running stats"
        )
    layer = BatchNormalization(
        module.num_features,
        momentum=keras_momentum(module.momentum),
        epsilon=module.eps,
        center=module.affine,
        scale=module.affine,
        unbiased_moving_variance=True,
        state_dict_names="torch",
        device=module.running_mean.device,
        dtype=module.running_mean.dtype,
    )
    layer.load_state_dict(module.state_dict())
    layer.input_rank = _RANK_BY_TORCH_CLASS.get(type(module))
    layer.train(module.training)
    return layer


def to_torch_batchnorm(
    layer: BatchNormalization, dims: int | None = None
) -> nn.modules.batchnorm._BatchNorm:
    """The ``torch.nn.BatchNorm{dims}d`` equivalent of a built bnlab layer.

    ``dims`` picks the class by the input it will see: 1 for (N, C) or (N, C, L),
    2 for (N, C, H, W), 3 for (N, C, D, H, W). None (default) takes the rank of the
    last input the layer normalized (``layer.input_rank``; set by :func:`from_torch_batchnorm`
    too).

    Needs one channel axis (``axis=1``) and ``center == scale``. The moving
    statistics are copied as they are; note that PyTorch will continue updating
    the variance with the unbiased estimate.

    Raises:
        ValueError: unbuilt layer, another axis, ``center != scale``, ``dims`` not 1/2/3,
            or ``dims=None`` for a layer that has seen no input (or one of rank > 5).
    """
    if not layer.built:
        raise ValueError(f"{layer.name}: to_torch needs a built layer; pass num_features or run a forward")
    if layer.axis not in (1,) or layer.features is None or len(layer.features) != 1:
        raise ValueError(f"{layer.name}: to_torch needs axis=1 (channel-first); got axis={layer.axis}")
    if layer.center != layer.scale:
        raise ValueError(
            f"{layer.name}: PyTorch has one affine flag; got center={layer.center}, scale={layer.scale}"
        )
    classes = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
    if dims is None:
        if layer.input_rank not in _TORCH_CLASS_BY_RANK:
            seen = ("has seen no input" if layer.input_rank is None
                    else f"has seen rank-{layer.input_rank} input, which no torch BatchNorm takes")
            raise ValueError(
                f"{layer.name}: to_torch picks BatchNorm1d/2d/3d by the input rank, but the "
                f"layer {seen}; pass dims=1, 2 or 3 (or run a forward first)"
            )
        cls = _TORCH_CLASS_BY_RANK[layer.input_rank]
    elif dims in classes:
        cls = classes[dims]
    else:
        raise ValueError(f"{layer.name}: to_torch dims must be 1, 2, 3 or None; got {dims!r}")
    module = cls(
        layer.features[0],
        eps=layer.epsilon,
        momentum=torch_momentum(layer.momentum),
        affine=layer.scale,
        device=layer.moving_mean.device,
        dtype=layer.moving_mean.dtype,
    )
    module.load_state_dict({torch_name: getattr(layer, keras).detach()
                            for keras, torch_name in KERAS_TO_TORCH_NAMES.items()
                            if getattr(layer, keras) is not None})
    module.train(layer.training)
    return module


def replace_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every torch BatchNorm1d/2d/3d/SyncBatchNorm in ``model`` for bnlab's, in place.

    Outputs are identical in train and eval mode (same momentum, epsilon, unbiased
    variance update). Returns ``model``; a bare BN module returns its replacement.
    """
    if isinstance(model, TORCH_BATCHNORMS):
        return from_torch_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, TORCH_BATCHNORMS):
            setattr(model, name, from_torch_batchnorm(child))
        else:
            replace_batchnorm(child)
    return model
