"""``BatchNormalization``: Keras's layer, as a PyTorch module.

The module holds state (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``,
``num_batches_tracked``) and delegates every computation to
:mod:`bnlab.functional`, the way ``torch.nn.BatchNorm2d`` calls ``F.batch_norm``: a
plain training step is :func:`bnlab.functional.batch_norm_update_` on the layer's
buffers and inference is :func:`bnlab.functional.batch_norm`'s inference transform,
both entered after their argument checks (``training_update_``,
``normalize_inference``), which the layer does itself: its settings when they are set,
its input on each call; the variants (synchronized, renorm, ghost batches) return new statistics
that the module copies into its buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bnlab.functional.axes import kept_axes, stat_shape
from bnlab.functional.batch_norm import (
    Implementation,
    NonFinitePolicy,
    check_arguments,
    normalize_inference,
    trace_time_check,
    training_update_,
)
from bnlab.functional.ghost import check_virtual_batch_size, ghost_batch_norm
from bnlab.functional.renorm import batch_renorm, check_renorm_clipping
from bnlab.functional.sync import sync_batch_norm
from bnlab.nn import constraints, initializers, regularizers
from bnlab.nn.keras_objects import Spec

_WEIGHT_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")
# PyTorch's names for the layer's state (see bnlab.convert for the rest of the mapping).
TORCH_STATE_NAMES = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "num_batches_tracked": "num_batches_tracked",
}
StateDictNames = Literal["keras", "torch"]
# Extra state of batch renormalization, in Keras's weight order after the above.
_RENORM_STATE = ("moving_stddev", "renorm_mean", "renorm_stddev")


class BatchNormalization(nn.Module):
    r"""Batch normalization with Keras's arguments and defaults, for PyTorch tensors.

    .. math::
        y = \gamma \, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    **Axes.** ``axis`` is the axis (or tuple of axes) that is *kept*: one
    statistic per index along it; every other axis is reduced. The default
    ``axis=1`` is the channel axis of PyTorch's (N, C), (N, C, L), (N, C, H, W)
    and (N, C, D, H, W) layouts (Keras's default ``-1`` is its channel-last
    axis). Use ``axis=-1`` for (N, T, C) sequences.

    **Training** (``model.train()``): :math:`\mu, \sigma^2` are the batch mean
    and *biased* variance; the moving statistics are updated. **Inference**
    (``model.eval()``): the moving statistics are used; samples are independent
    and nothing changes. **Frozen** (``trainable=False`` or :meth:`freeze`):
    inference behaviour even under ``model.train()``, and ``gamma``/``beta`` stop
    requiring gradients — what Keras does for a non-trainable BN layer, and what
    fine-tuning usually wants.

    **Moving statistics**, Keras convention:
    ``moving = momentum * moving + (1 - momentum) * batch``. ``momentum`` is the
    weight of the *old* value: 0.99 here equals PyTorch's ``momentum=0.01``
    (see :func:`bnlab.convert.torch_momentum`). ``momentum=0.0`` keeps only the
    last batch; ``momentum=None`` keeps the cumulative average (PyTorch's option).
    The variance update uses the biased batch variance (Keras);
    ``unbiased_moving_variance=True`` stores the unbiased one (PyTorch). A batch
    whose statistics are NaN/inf never reaches the moving statistics.

    Args:
        num_features: size of the kept axis (int) or axes (tuple). None builds the
            layer on the first forward, like Keras's ``build``; create the optimizer
            after that forward (or pass ``num_features``).
        axis: kept axis or axes; default 1 (channel-first). Negative values count
            from the end.
        momentum: weight of the old moving value, in [0, 1], or None; default 0.99.
        epsilon: added to the variance, > 0; default 1e-3 (Keras; PyTorch uses 1e-5).
        center: learn an offset ``beta``; default True. Off: ``beta`` is None.
        scale: learn a scale ``gamma``; default True. Off: ``gamma`` is None (Keras
            suggests this when the next layer is linear or ReLU).
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: names (``"zeros"``, ``"ones"``,
            ``"constant(0.5)"``, ``"random_normal"``, ...), tables or callables;
            see :mod:`bnlab.nn.initializers`.
        beta_regularizer, gamma_regularizer: ``"l1"``, ``"l2(1e-4)"``,
            ``"l1_l2(l1=.., l2=..)"`` or a callable; the penalty is returned by
            :meth:`regularization_loss` for the trainer to add to the loss.
        beta_constraint, gamma_constraint: ``"non_neg"``, ``"unit_norm"``,
            ``"max_norm(2)"``, ``"min_max_norm(0.5, 2)"`` or a callable; applied by
            :meth:`apply_constraints`, which a trainer calls after each step.
        trainable: False freezes the layer (see above); default True.
        unbiased_moving_variance: store the unbiased batch variance (PyTorch).
        on_nonfinite: ``"skip"`` (warn and keep the moving statistics) or
            ``"raise"`` (``FloatingPointError``) for a non-finite training batch.
        implementation: ``"auto"`` (native kernel where it applies), ``"native"``,
            ``"composite"`` or ``"reference"`` (the paper's Algorithm 1).
        name: label used in error messages; default ``"batch_normalization"``.
        synchronized: compute training statistics over every rank of the
            ``torch.distributed`` process group (:attr:`process_group`, default the
            world), weighted by each rank's batch size, with the gradients of that
            computation (Keras's ``synchronized``); plain BN without a process
            group. See :func:`bnlab.functional.sync.sync_batch_norm`.
        sync_timeout: seconds a synchronized layer waits for the other ranks
            before raising :class:`bnlab.functional.sync.SynchronizationError`
            naming the layer; None (default) uses the process group's timeout.
        renorm: batch renormalization (Ioffe 2017, Keras 3 semantics): training
            output corrected towards the moving statistics by ``r``/``d`` (constants
            in the backward pass); adds the buffers ``moving_stddev``,
            ``renorm_mean``, ``renorm_stddev``. See :mod:`bnlab.functional.renorm`.
        renorm_clipping: ``{"rmax": .., "rmin": .., "dmax": ..}`` (each optional) or
            None; settable later (``layer.renorm_clipping = ...``), e.g. by
            :class:`bnlab.nn.RenormClippingScheduler`. Ignored without ``renorm``.
        renorm_momentum: weight of the old value of ``renorm_mean``/``renorm_stddev``,
            in [0, 1]; default 0.99 (Keras).
        virtual_batch_size: ghost batch normalization: in training, each group of
            this many consecutive samples is normalized with its own statistics and
            the moving statistics take the groups' averages (one update per step);
            the batch size must be a multiple. None (default): the whole batch. See
            :mod:`bnlab.functional.ghost`.
        state_dict_names: the keys :meth:`state_dict` writes: ``"keras"`` (default:
            ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``,
            ``num_batches_tracked``) or ``"torch"`` (``weight``, ``bias``,
            ``running_mean``, ``running_var``, ``num_batches_tracked``, what
            ``torch.nn.BatchNorm2d`` writes). ``load_state_dict`` accepts either
            naming whatever this says. Layers made by :meth:`from_torch` (and so
            :func:`bnlab.convert.replace_batchnorm`) use ``"torch"``: the converted
            model saves and loads the same checkpoints as the original.

    Shape:
        - Input: ``(N, C, *)`` with ``axis=1``; in general any rank >= 2.
        - Mask (optional, training): the input's shape without the kept axis;
          False positions are left out of the batch statistics.
        - Output: same as the input.

    Raises:
        ValueError: input rank/axis/feature count not matching the layer, or a
            training batch with a single value per channel (with the remedy).

    Example:
        >>> bn = BatchNormalization(16)            # Keras defaults, channel-first
        >>> y = bn(torch.randn(8, 16, 5, 5))
        >>> bn.eval(); z = bn(torch.randn(2, 16, 5, 5))

    Reference: Ioffe & Szegedy, ICML 2015.
    """

    gamma: nn.Parameter | None
    beta: nn.Parameter | None
    moving_mean: Tensor
    moving_variance: Tensor
    num_batches_tracked: Tensor

    def __init__(
        self,
        num_features: int | Sequence[int] | None = None,
        *,
        axis: int | Sequence[int] = 1,
        momentum: float | None = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Spec = "zeros",
        gamma_initializer: Spec = "ones",
        moving_mean_initializer: Spec = "zeros",
        moving_variance_initializer: Spec = "ones",
        beta_regularizer: Spec = None,
        gamma_regularizer: Spec = None,
        beta_constraint: Spec = None,
        gamma_constraint: Spec = None,
        trainable: bool = True,
        unbiased_moving_variance: bool = False,
        on_nonfinite: NonFinitePolicy = "skip",
        implementation: Implementation = "auto",
        name: str = "batch_normalization",
        synchronized: bool = False,
        sync_timeout: float | None = None,
        renorm: bool = False,
        renorm_clipping: dict[str, float] | None = None,
        renorm_momentum: float = 0.99,
        virtual_batch_size: int | None = None,
        state_dict_names: StateDictNames = "keras",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # Validated when set (here and on any later assignment): see the properties below.
        self.momentum = momentum
        self.epsilon = epsilon
        self.on_nonfinite = on_nonfinite
        self.implementation = implementation
        if not isinstance(axis, int) and (not isinstance(axis, Sequence) or isinstance(axis, str)):
            raise TypeError(
                f"{name}: axis must be an int or a sequence of ints such as (1, 2); got "
                f"{axis!r} of type {type(axis).__name__}"
            )
        self.axis = axis if isinstance(axis, int) else tuple(axis)
        self.center = bool(center)
        self.scale = bool(scale)
        self.unbiased_moving_variance = bool(unbiased_moving_variance)
        if sync_timeout is not None and not (isinstance(sync_timeout, int | float) and sync_timeout > 0):
            raise ValueError(f"{name}: sync_timeout must be seconds > 0 or None; got {sync_timeout!r}")
        self.synchronized = bool(synchronized)
        self.sync_timeout = None if sync_timeout is None else float(sync_timeout)
        self.process_group: Any = None  # torch.distributed group for synchronized; None = world
        self.renorm = bool(renorm)
        self.renorm_clipping = renorm_clipping  # validated by the property setter
        if isinstance(renorm_momentum, bool) or not (
            isinstance(renorm_momentum, int | float) and 0.0 <= renorm_momentum <= 1.0
        ):
            raise ValueError(f"{name}: renorm_momentum must be in [0, 1]; got {renorm_momentum!r}")
        self.renorm_momentum = float(renorm_momentum)
        check_virtual_batch_size(virtual_batch_size, name=name)
        self.virtual_batch_size = virtual_batch_size
        _check_combination(self)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self._factory: dict[str, Any] = {"device": device, "dtype": dtype or torch.float32}
        self._trainable = bool(trainable)
        if state_dict_names not in ("keras", "torch"):
            raise ValueError(
                f"{name}: state_dict_names must be 'keras' or 'torch'; got {state_dict_names!r}"
            )
        self.state_dict_names: StateDictNames = state_dict_names
        self.features: tuple[int, ...] | None = None
        self.input_rank: int | None = None  # of the last input seen; to_torch() uses it
        self.register_parameter("gamma", None)
        self.register_parameter("beta", None)
        if num_features is not None:
            self.build(num_features)

    # ----------------------------------------------------------------- state
    @property
    def built(self) -> bool:
        """Whether the weights exist (``num_features`` given or a forward has run)."""
        return self.features is not None

    def build(self, num_features: int | Sequence[int]) -> None:
        """Create ``gamma``, ``beta`` and the moving statistics for ``num_features``."""
        features = (num_features,) if isinstance(num_features, int) else tuple(num_features)
        if not features or any(not isinstance(n, int) or n < 0 for n in features):
            raise ValueError(f"{self.name}: num_features must be positive int(s); got {num_features!r}")
        self.features = features
        empty = lambda: torch.empty(features, **self._factory)  # noqa: E731
        if self.scale:
            self.gamma = nn.Parameter(empty(), requires_grad=self._trainable)
            self.gamma_initializer(self.gamma)
        if self.center:
            self.beta = nn.Parameter(empty(), requires_grad=self._trainable)
            self.beta_initializer(self.beta)
        self.register_buffer("moving_mean", empty())
        self.register_buffer("moving_variance", empty())
        self.moving_mean_initializer(self.moving_mean)
        self.moving_variance_initializer(self.moving_variance)
        self.register_buffer(
            "num_batches_tracked",
            torch.zeros((), dtype=torch.long, device=self._factory["device"]),
        )
        if self.renorm:
            for state in _RENORM_STATE:
                self.register_buffer(state, empty())
            self._init_renorm_state()

    def _init_renorm_state(self) -> None:
        # Keras: the stddevs start at sqrt(moving variance), renorm_mean at the moving mean.
        with torch.no_grad():
            self.moving_stddev.copy_(self.moving_variance.sqrt())
            self.renorm_stddev.copy_(self.moving_variance.sqrt())
            self.renorm_mean.copy_(self.moving_mean)

    def reset_moving_statistics(self) -> None:
        """Re-initialize the moving statistics and the batch count."""
        self._require_built("reset_moving_statistics")
        self.moving_mean_initializer(self.moving_mean)
        self.moving_variance_initializer(self.moving_variance)
        if self.renorm:
            self._init_renorm_state()
        self.num_batches_tracked.zero_()

    @property
    def renorm_clipping(self) -> dict[str, float]:
        """The renorm clipping in effect, ``{"rmax", "rmin", "dmax"}`` (missing = unclipped)."""
        return dict(self._renorm_clipping)

    @renorm_clipping.setter
    def renorm_clipping(self, value: dict[str, float] | None) -> None:
        self._renorm_clipping = check_renorm_clipping(value, name=self.name)

    @property
    def momentum(self) -> float | None:
        """Weight of the old moving value, in [0, 1] (Keras convention), or None (cumulative)."""
        return self._momentum

    @momentum.setter
    def momentum(self, value: float | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not (isinstance(value, int | float) and 0.0 <= value <= 1.0)
        ):
            raise ValueError(
                f"{self.name}: momentum must be in [0, 1] (weight of the old moving value, Keras "
                f"convention) or None (cumulative average); got {value!r}"
            )
        self._momentum = None if value is None else float(value)

    @property
    def epsilon(self) -> float:
        """Added to the variance before the square root, > 0."""
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if isinstance(value, bool) or not (
            isinstance(value, int | float) and 0 < value < float("inf")
        ):  # inf would make every output the constant beta
            raise ValueError(
                f"{self.name}: epsilon must be a number > 0; got {value!r} (finite: inf "
                "would make every output beta)"
            )
        self._epsilon = float(value)

    @property
    def on_nonfinite(self) -> NonFinitePolicy:
        """``"skip"`` (warn, keep the moving statistics) or ``"raise"`` for a non-finite batch."""
        return self._on_nonfinite

    @on_nonfinite.setter
    def on_nonfinite(self, value: NonFinitePolicy) -> None:
        if value not in ("skip", "raise"):
            raise ValueError(f"{self.name}: on_nonfinite must be 'skip' or 'raise'; got {value!r}")
        self._on_nonfinite: NonFinitePolicy = value

    @property
    def implementation(self) -> Implementation:
        """``"auto"``, ``"native"``, ``"composite"`` or ``"reference"``."""
        return self._implementation

    @implementation.setter
    def implementation(self, value: Implementation) -> None:
        if value not in ("auto", "native", "composite", "reference"):
            raise ValueError(
                f"{self.name}: unknown implementation {value!r}; choose from auto, native, "
                "composite, reference"
            )
        self._implementation: Implementation = value

    @property
    def trainable(self) -> bool:
        """False: frozen — inference statistics in any mode, no parameter gradients."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        for p in (self.gamma, self.beta):
            if p is not None:
                p.requires_grad_(self._trainable)

    def freeze(self) -> BatchNormalization:
        """Freeze (``trainable = False``) and return self."""
        self.trainable = False
        return self

    def unfreeze(self) -> BatchNormalization:
        """Unfreeze (``trainable = True``) and return self."""
        self.trainable = True
        return self

    @property
    def uses_batch_statistics(self) -> bool:
        """True when a forward pass normalizes with batch statistics and updates."""
        return self.training and self._trainable

    # --------------------------------------------------------------- compute
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalize ``x``; in training also update the moving statistics."""
        kept = trace_time_check(self._check_input, x, mask)
        training = self.training and self._trainable
        if training and torch._C._are_functorch_transforms_active():
            self._check_vmap(x)
        # From the registries (one dictionary read each, not nn.Module's attribute lookup).
        params, buffers = self._parameters, self._buffers
        state = (x, params["gamma"], params["beta"], buffers["moving_mean"],
                 buffers["moving_variance"])
        if not (self.synchronized or self.renorm or self.virtual_batch_size is not None):
            # Plain BN, as torch.nn.BatchNorm2d calls F.batch_norm: the functional core
            # after the checks that _check_input has done.
            if not training:
                return normalize_inference(*state, kept, self._epsilon)
            return training_update_(
                *state, buffers["num_batches_tracked"], kept, self._momentum, self._epsilon,
                self.unbiased_moving_variance, mask, self._on_nonfinite, self._implementation,
                self.name,
            )
        common: dict[str, Any] = {
            "axis": kept, "momentum": self._momentum, "epsilon": self._epsilon,
            "num_batches_tracked": buffers["num_batches_tracked"], "mask": mask,
            "on_nonfinite": self._on_nonfinite, "name": self.name,
        }
        if self.synchronized:
            result = sync_batch_norm(
                *state, training=training, unbiased_moving_variance=self.unbiased_moving_variance,
                group=self.process_group, timeout=self.sync_timeout, **common,
            )
        elif self.renorm:
            result = batch_renorm(
                *state, self.moving_stddev, self.renorm_mean, self.renorm_stddev,
                training=training, renorm_momentum=self.renorm_momentum,
                renorm_clipping=self._renorm_clipping, implementation=self._implementation,
                **common,
            )
        else:
            result = ghost_batch_norm(
                *state, virtual_batch_size=self.virtual_batch_size, training=training,
                unbiased_moving_variance=self.unbiased_moving_variance,
                implementation=self._implementation, **common,
            )
        if training and result.moving_mean is not self.moving_mean:
            with torch.no_grad():  # result fields after the output are named like the buffers
                for field, value in zip(result._fields[1:], result[1:], strict=True):
                    getattr(self, field).copy_(value)
                self.num_batches_tracked.add_(1)
        return result.output

    def _check_vmap(self, x: Tensor) -> None:
        """Training under ``vmap`` updates the buffers in place: they must be batched too."""
        is_batched = torch._C._functorch.is_batchedtensor
        if is_batched(x) and not is_batched(self.moving_mean):
            raise RuntimeError(
                f"{self.name}: vmap over the layer in training mode cannot update its "
                "(unbatched) moving statistics in place; pass stacked buffers to "
                "torch.func.functional_call inside vmap (see the README's \"vmap over "
                "models\"), or call bnlab.functional.batch_norm, which returns the new "
                "statistics"
            )

    def _check_input(self, x: Tensor, mask: Tensor | None) -> tuple[int, ...]:
        """The input's kept axes; builds the layer on its first input, else checks its size.

        The settings were validated when they were set, and the weights have the size the
        input is checked against here, so :func:`bnlab.functional.batch_norm`'s argument
        check is only needed for what those cannot vouch for: a non-float input, a mask,
        an implementation other than ``"auto"``. Also records the input's rank for
        :meth:`to_torch`.
        """
        if self.input_rank != x.dim():
            self.input_rank = x.dim()
        try:
            kept = kept_axes(self.axis, x.dim())
        except ValueError as error:  # name the layer and the shape it was given
            raise ValueError(f"{self.name}: {error}; input shape {tuple(x.shape)}") from None
        features = stat_shape(x.shape, kept)
        if features != self.features:
            if self.features is None:
                self.build(features)
            else:
                raise ValueError(
                    f"{self.name}: expected {_plural(self.features)} along axis {self.axis}, "
                    f"got input shape {tuple(x.shape)} ({_plural(features)}); the layer was "
                    f"built for {self.features}"
                )
        if mask is not None or self._implementation != "auto" or not x.is_floating_point():
            check_arguments(x, self.gamma, self.beta, self.moving_mean, self.moving_variance, kept,
                            self._momentum, self._epsilon, mask, self._implementation,
                            self._on_nonfinite, self.name)
        return kept

    def regularization_loss(self) -> Tensor:
        """Sum of the gamma/beta regularizer penalties (a scalar; 0 when none)."""
        total = torch.zeros((), device=self.moving_mean.device if self.built else None)
        for weight, regularizer in ((self.gamma, self.gamma_regularizer),
                                    (self.beta, self.beta_regularizer)):
            if weight is not None and regularizer is not None:
                total = total + regularizer(weight)
        return total

    def apply_constraints(self) -> None:
        """Project gamma/beta onto their constraints, in place; call after each step."""
        for weight, constraint in ((self.gamma, self.gamma_constraint),
                                   (self.beta, self.beta_constraint)):
            if weight is not None:
                constraints.apply_(weight, constraint)

    # ---------------------------------------------------------- Keras weights
    def get_keras_weights(self) -> list[np.ndarray]:
        """Weights in Keras's ``get_weights()`` order: [gamma], [beta], moving_mean, moving_variance."""
        self._require_built("get_keras_weights")
        return [getattr(self, n).detach().cpu().numpy().copy() for n in self._keras_names()]

    def set_keras_weights(self, weights: Sequence[np.ndarray | Tensor]) -> None:
        """Load weights given in Keras's ``get_weights()`` order (e.g. from a Keras model)."""
        names = self._keras_names()
        if len(weights) != len(names):
            raise ValueError(
                f"{self.name}: expected {len(names)} arrays ({', '.join(names)}); got {len(weights)}"
            )
        if not self.built:
            self.build(tuple(np.shape(weights[0])))
        targets = [getattr(self, name) for name in names]
        tensors = [torch.as_tensor(np.asarray(v), dtype=t.dtype) for v, t in zip(weights, targets, strict=True)]
        for name, target, tensor in zip(names, targets, tensors, strict=True):
            if tuple(tensor.shape) != tuple(target.shape):  # all checked before any is copied
                raise ValueError(
                    f"{self.name}: {name} must have shape {tuple(target.shape)}; got {tuple(tensor.shape)}"
                )
        with torch.no_grad():
            for target, tensor in zip(targets, tensors, strict=True):
                target.copy_(tensor)

    def _keras_names(self) -> list[str]:
        names = [n for n in _WEIGHT_ORDER
                 if (n != "gamma" or self.scale) and (n != "beta" or self.center)]
        return names + list(_RENORM_STATE) if self.renorm else names

    # ------------------------------------------------------------ PyTorch interop
    @classmethod
    def from_torch(cls, module: nn.modules.batchnorm._BatchNorm) -> BatchNormalization:
        """A bnlab layer with the same statistics, parameters and behaviour as a torch BN."""
        from bnlab.convert import from_torch_batchnorm  # convert imports this module

        return from_torch_batchnorm(module)

    def to_torch(self, dims: int | None = None) -> nn.modules.batchnorm._BatchNorm:
        """The equivalent ``torch.nn.BatchNorm{dims}d`` (channel axis 1 only).

        ``dims`` (1, 2 or 3) defaults to the class that takes the input the layer has seen
        (rank 2 or 3: ``BatchNorm1d``; 4: ``BatchNorm2d``; 5: ``BatchNorm3d``); see
        :func:`bnlab.convert.to_torch_batchnorm`.
        """
        from bnlab.convert import to_torch_batchnorm  # convert imports this module

        return to_torch_batchnorm(self, dims)

    # ------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.state_dict_names == "torch":
            for keras, torch_name in TORCH_STATE_NAMES.items():
                if prefix + keras in destination:
                    destination[prefix + torch_name] = destination.pop(prefix + keras)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], *args: Any) -> None:
        # Either naming loads: PyTorch's keys are renamed to the layer's own first.
        for keras, torch_name in TORCH_STATE_NAMES.items():
            if prefix + torch_name in state_dict and prefix + keras not in state_dict:
                state_dict[prefix + keras] = state_dict.pop(prefix + torch_name)
        # A not-yet-built layer takes its feature count from the checkpoint.
        key = prefix + "moving_mean"
        if not self.built and key in state_dict:
            self.build(tuple(state_dict[key].shape))
        missing_before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      *args)
        if self.state_dict_names == "torch":  # name what is missing as state_dict() would
            for i in range(missing_before, len(missing_keys)):
                local = missing_keys[i][len(prefix):]
                missing_keys[i] = prefix + TORCH_STATE_NAMES.get(local, local)

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise RuntimeError(
                f"{self.name}: {what} needs the layer built; pass num_features or run a forward first"
            )

    def extra_repr(self) -> str:
        momentum = "None (cumulative)" if self.momentum is None else self.momentum
        parts = [f"{self.features if self.built else 'unbuilt'}", f"axis={self.axis}",
                 f"momentum={momentum}", f"epsilon={self.epsilon}"]
        if not self.center:
            parts.append("center=False")
        if not self.scale:
            parts.append("scale=False")
        if not self._trainable:
            parts.append("trainable=False")
        if self.synchronized:
            parts.append("synchronized=True")
        if self.renorm:
            parts.append(f"renorm=True, renorm_clipping={self._renorm_clipping}, "
                         f"renorm_momentum={self.renorm_momentum}")
        if self.virtual_batch_size is not None:
            parts.append(f"virtual_batch_size={self.virtual_batch_size}")
        return ", ".join(parts)


def _check_combination(layer: BatchNormalization) -> None:
    """Options that do not compose (yet) fail at construction, not mid-training."""
    chosen = [f"{flag}" for flag, on in (("synchronized=True", layer.synchronized),
                                         ("renorm=True", layer.renorm),
                                         ("virtual_batch_size", layer.virtual_batch_size is not None))
              if on]
    if len(chosen) > 1:
        raise ValueError(
            f"{layer.name}: {' and '.join(chosen)} cannot be combined; choose one of them"
        )
    if layer.renorm and layer.unbiased_moving_variance:
        raise ValueError(
            f"{layer.name}: renorm=True derives moving_variance from moving_stddev (Keras), so "
            "unbiased_moving_variance=True does not apply; drop one of them"
        )


def _plural(features: tuple[int, ...] | None) -> str:
    if features is None:
        return "no features"
    return f"{features[0]} features" if len(features) == 1 else f"{features} features"
