"""Batch normalization as a pure function.

``batch_norm`` computes the normalized output *and* the new moving statistics and
returns both; it never writes into its arguments. That one property lets the
same code serve the stateful module, ``torch.func.vmap`` over many models, and
distributed statistics. ``batch_norm_update_`` is its training step for a caller that
owns the statistics tensors (the layer's buffers): same numbers, written in place.

Three implementations compute the same numbers:

- ``"native"``: PyTorch's fused ATen kernel (``torch.native_batch_norm``), used
  for the standard case of one kept axis and no mask. Its running statistics are
  computed on scratch buffers and then folded with our own momentum rule.
- ``"composite"``: plain tensor operations, used for tuples of axes, masks,
  ``torch.func`` transforms and ill-conditioned inputs. It subtracts a per-channel
  shift (the float64-accumulated mean) before the two-pass variance, so data with
  mean 1e4 and standard deviation 1e-2 normalizes as accurately as in float64.
- ``"reference"``: the paper's Algorithm 1 with the closed-form backward pass
  (:mod:`bnlab.functional.reference`), kept readable and used to test the others.

``"auto"`` picks native where it applies and falls back to composite otherwise.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
import weakref
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

import torch
from torch import Tensor

from bnlab.functional.axes import AxisArg, broadcast_shape, kept_axes, reduced_axes, stat_shape
from bnlab.functional.reference import reference_batch_norm_train

Implementation = Literal["auto", "native", "composite", "reference"]
NonFinitePolicy = Literal["skip", "raise"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)
# Above this ratio |mean| / std the fused kernel's `x * a + b` form loses more than
# ~1e-4 of the output in float32; such channels take the shifted composite path.
_ILL_CONDITIONED = 1e3
_PROBE_SCALE = -1.0 / _ILL_CONDITIONED**2


class BatchNormResult(NamedTuple):
    """What :func:`batch_norm` returns: the output and the *new* moving statistics."""

    output: Tensor
    moving_mean: Tensor
    moving_variance: Tensor


class NonFiniteStatisticsWarning(RuntimeWarning):
    """A training batch had non-finite statistics; the moving statistics were kept."""


def batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    *,
    training: bool,
    axis: AxisArg = 1,
    momentum: float | None = 0.99,
    epsilon: float = 1e-3,
    num_batches_tracked: int | Tensor = 0,
    unbiased_moving_variance: bool = False,
    mask: Tensor | None = None,
    on_nonfinite: NonFinitePolicy = "skip",
    implementation: Implementation = "auto",
    name: str = "batch_norm",
) -> BatchNormResult:
    r"""Normalize ``x`` per channel and return the output with updated moving statistics.

    .. math::
        y = \gamma \, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    In training, :math:`\mu` and :math:`\sigma^2` are the mean and the *biased*
    variance of the batch, taken over every axis except ``axis``; in inference they
    are the moving statistics.

    Moving statistics (training only), Keras convention:

    .. math::
        m \leftarrow \text{momentum} \cdot m + (1 - \text{momentum}) \cdot \mu_B

    ``momentum`` is the weight of the *old* value: Keras's 0.99 equals PyTorch's
    ``momentum=0.01``. ``momentum=0.0`` keeps only the last batch. ``momentum=None``
    gives the cumulative average over all batches seen (PyTorch's option), using
    ``num_batches_tracked`` batches seen so far. The variance update uses the
    biased batch variance like Keras; ``unbiased_moving_variance=True`` stores the
    unbiased one like PyTorch (the output always uses the biased variance).

    Args:
        x: input, any rank >= 2, floating point. float16/bfloat16 are computed in
            float32 and returned in their own dtype.
        gamma: scale per kept index, shape ``stat_shape``; None means 1.
        beta: offset per kept index; None means 0.
        moving_mean: current moving mean, shape ``stat_shape``. Not modified.
        moving_variance: current moving variance, shape ``stat_shape``. Not modified.
        training: batch statistics and an update (True) or moving statistics (False).
        axis: kept axis or axes, Keras semantics; default 1 is the channel axis of
            PyTorch's (N, C, ...) layout; -1 for channel-last.
        momentum: weight of the old moving value in [0, 1], or None (cumulative).
        epsilon: added to the variance, > 0. Keras default 1e-3 (PyTorch uses 1e-5).
        num_batches_tracked: batches already folded into the moving statistics;
            only used when ``momentum`` is None.
        unbiased_moving_variance: store ``n/(n-1)`` times the batch variance.
        mask: boolean tensor with the shape of ``x`` without the kept axis (Keras:
            "one dimension less than the inputs"); False positions are left out of
            the batch statistics. All positions are normalized.
        on_nonfinite: when a batch's statistics are NaN/inf: ``"skip"`` keeps the
            moving statistics and warns; ``"raise"`` raises ``FloatingPointError``.
        implementation: ``"auto"``, ``"native"``, ``"composite"`` or ``"reference"``.
        name: the layer's name, used in error messages.

    Shape:
        - x: ``(N, C, *)`` for ``axis=1``; in general any shape.
        - statistics: the sizes of the kept axes, ``(C,)`` for one axis.
        - output: same shape and dtype as ``x``.

    Raises:
        ValueError: bad rank/axis/shape, or training with one value per channel.
        FloatingPointError: non-finite batch statistics with ``on_nonfinite="raise"``.

    Example:
        >>> x = torch.randn(8, 3, 4, 4)
        >>> y, mm, mv = batch_norm(x, None, None, torch.zeros(3), torch.ones(3), training=True)
        >>> round(y.mean().item(), 5) == 0.0
        True

    Reference: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
    Training by Reducing Internal Covariate Shift", ICML 2015, Algorithm 1.
    """
    kept = kept_axes(axis, x.dim())
    _check_arguments(x, gamma, beta, moving_mean, moving_variance, kept, momentum, epsilon,
                     mask, implementation, on_nonfinite, name)
    if not training:
        return BatchNormResult(
            _normalize_inference(x, gamma, beta, moving_mean, moving_variance, kept, epsilon),
            moving_mean,
            moving_variance,
        )

    count = _count_per_channel(x, kept, mask)
    if x.numel() == 0:
        # An empty batch has no statistics: pass it through the inference transform
        # (keeps autograd and shape) and leave the moving statistics alone.
        y = _normalize_inference(x, gamma, beta, moving_mean, moving_variance, kept, epsilon)
        return BatchNormResult(y, moving_mean, moving_variance)
    if mask is None and count <= 1:
        _raise_single_value(x, kept, name)

    fused = fused_training_step(
        x, gamma, beta, moving_mean, moving_variance, num_batches_tracked, kept, momentum,
        epsilon, unbiased_moving_variance, mask, on_nonfinite, implementation, name, False,
    )
    if not isinstance(fused, str):
        return BatchNormResult(*fused)
    implementation = fused  # the kernel does not apply, or the batch is ill-conditioned
    functorch = _any_functorch(x, gamma, beta, moving_mean, moving_variance)

    y, mean, var = _normalize_training(x, gamma, beta, kept, epsilon, mask, implementation)
    new_mean, new_var = update_moving_statistics(
        moving_mean, moving_variance, mean.detach(), var.detach(),
        count=count, momentum=momentum, num_batches_tracked=num_batches_tracked,
        unbiased=unbiased_moving_variance, on_nonfinite=on_nonfinite, name=name,
        check=not functorch,
    )
    return BatchNormResult(y, new_mean, new_var)


def batch_norm_update_(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    num_batches_tracked: Tensor,
    *,
    axis: AxisArg = 1,
    momentum: float | None = 0.99,
    epsilon: float = 1e-3,
    unbiased_moving_variance: bool = False,
    mask: Tensor | None = None,
    on_nonfinite: NonFinitePolicy = "skip",
    implementation: Implementation = "auto",
    name: str = "batch_norm",
) -> Tensor:
    """A training step of :func:`batch_norm` that updates the moving statistics in place.

    For a caller that owns the statistics tensors, such as
    :class:`bnlab.nn.BatchNormalization` with its buffers. Normalizes ``x`` with the
    batch statistics exactly like ``batch_norm(..., training=True)`` and writes the new
    moving statistics that it would return into ``moving_mean`` and
    ``moving_variance``, then adds 1 to ``num_batches_tracked``. A batch that leaves
    the statistics unchanged in :func:`batch_norm` (empty, or non-finite statistics
    with ``on_nonfinite="skip"``) changes nothing here either, the count included.
    Output, gradients and statistics are the same numbers, bit for bit.

    On the fused path (one kept axis, no mask, no ``torch.func`` transform) the
    update is one in-place ``lerp_`` per statistic (a single ``_foreach_lerp_``), with no
    new statistics tensors to copy back; every other case calls :func:`batch_norm` and
    copies its result.

    Args:
        x, gamma, beta, axis, momentum, epsilon, unbiased_moving_variance, mask,
            on_nonfinite, implementation, name: as for :func:`batch_norm`.
        moving_mean, moving_variance: the statistics, updated in place.
        num_batches_tracked: 0-dim integer tensor, the batches folded in so far (the
            cumulative average with ``momentum=None`` weighs by it); incremented in
            place.

    Returns:
        The normalized output, shape and dtype of ``x``.

    Raises:
        As :func:`batch_norm`, before anything is modified.

    Example:
        >>> mean, var, count = torch.zeros(3), torch.ones(3), torch.zeros((), dtype=torch.long)
        >>> y = batch_norm_update_(torch.randn(8, 3), None, None, mean, var, count, momentum=0.9)
        >>> int(count)
        1
    """
    kept = kept_axes(axis, x.dim())
    _check_arguments(x, gamma, beta, moving_mean, moving_variance, kept, momentum, epsilon,
                     mask, implementation, on_nonfinite, name)
    fused = fused_training_step(
        x, gamma, beta, moving_mean, moving_variance, num_batches_tracked, kept, momentum,
        epsilon, unbiased_moving_variance, mask, on_nonfinite, implementation, name, True,
    )
    if not isinstance(fused, str):
        return fused[0]
    result = batch_norm(
        x, gamma, beta, moving_mean, moving_variance, training=True, axis=kept,
        momentum=momentum, epsilon=epsilon, num_batches_tracked=num_batches_tracked,
        unbiased_moving_variance=unbiased_moving_variance, mask=mask,
        on_nonfinite=on_nonfinite, implementation=fused, name=name,
    )
    if result.moving_mean is not moving_mean:
        with torch.no_grad():  # the statistics take values, not autograd history
            moving_mean.copy_(result.moving_mean)
            moving_variance.copy_(result.moving_variance)
            num_batches_tracked.add_(1)
    return result.output


def batch_norm_inference_validated(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    kept: tuple[int, ...],
    epsilon: float,
    name: str,
) -> Tensor:
    """``batch_norm(..., training=False).output`` for arguments already validated.

    The inference counterpart of :func:`fused_training_step`, for a layer whose
    statistics were built for the input's feature count and whose ``epsilon`` was
    checked when set; ``kept`` is the output of
    :func:`~bnlab.functional.axes.kept_axes`. Only the input's dtype is checked here.
    """
    _check_floating(x, name)
    return _normalize_inference(x, gamma, beta, moving_mean, moving_variance, kept, epsilon)


def update_moving_statistics(
    moving_mean: Tensor,
    moving_variance: Tensor,
    batch_mean: Tensor,
    batch_variance: Tensor,
    *,
    count: int | Tensor,
    momentum: float | None,
    num_batches_tracked: int | Tensor = 0,
    unbiased: bool = False,
    on_nonfinite: NonFinitePolicy = "skip",
    name: str = "batch_norm",
    check: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""Fold one batch's statistics into the moving ones; returns new tensors.

    ``new = momentum * old + (1 - momentum) * batch`` (Keras convention), or the
    cumulative average ``old + (batch - old) / (t + 1)`` when ``momentum`` is None,
    where ``t = num_batches_tracked``. ``batch_variance`` is biased; with
    ``unbiased=True`` it is scaled by ``count / (count - 1)`` first.

    If any batch statistic is not finite, the old statistics are returned unchanged
    (computed with ``torch.where``, so it also works under ``vmap``); with
    ``check=True`` a :class:`NonFiniteStatisticsWarning` is issued, or
    ``FloatingPointError`` raised when ``on_nonfinite="raise"``.
    """
    if unbiased:
        count_t = torch.as_tensor(count, dtype=batch_variance.dtype, device=batch_variance.device)
        batch_variance = batch_variance * count_t / (count_t - 1).clamp_min(1)
    dtype = moving_mean.dtype
    batch_mean = batch_mean.to(dtype)
    batch_variance = batch_variance.to(moving_variance.dtype)
    if momentum is None:
        seen = torch.as_tensor(num_batches_tracked, dtype=dtype, device=moving_mean.device)
        new_weight = 1.0 / (seen + 1.0)
        new_mean = moving_mean * (1.0 - new_weight) + batch_mean * new_weight
        new_var = moving_variance * (1.0 - new_weight) + batch_variance * new_weight
    else:
        new_mean = moving_mean * momentum + batch_mean * (1.0 - momentum)
        new_var = moving_variance * momentum + batch_variance * (1.0 - momentum)
    finite = torch.isfinite(batch_mean).all() & torch.isfinite(batch_variance).all()
    if check and not bool(finite):
        _report_nonfinite(on_nonfinite, name)
        return moving_mean, moving_variance
    return torch.where(finite, new_mean, moving_mean), torch.where(finite, new_var, moving_variance)


def _report_nonfinite(on_nonfinite: str, name: str) -> None:
    """Warn (``"skip"``) or raise (``"raise"``) about a batch with non-finite statistics.

    The warning points at the user's line: the first caller outside bnlab and outside
    PyTorch's module machinery (``model(x)`` reaches a layer through both).
    """
    message = (
        f"{name}: the batch statistics are not finite (NaN or inf in the input or "
        "activations); the moving statistics were left unchanged"
    )
    if on_nonfinite == "raise":
        raise FloatingPointError(message + "; pass on_nonfinite='skip' to skip such batches")
    warnings.warn(message, NonFiniteStatisticsWarning, stacklevel=_user_stacklevel())


_LIBRARY_DIRS = (
    str(Path(__file__).resolve().parents[1]),  # bnlab
    str(Path(torch.nn.modules.__file__).resolve().parent),  # torch.nn.Module.__call__
)


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning issued by this module's caller: the first frame outside
    bnlab and torch.nn's modules (2 = the direct caller of ``warnings.warn``'s caller)."""
    frame, level = sys._getframe(2), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


def batch_moments(
    x: Tensor, kept: tuple[int, ...], mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Shifted two-pass batch mean and biased variance, differentiable.

    With a per-channel shift :math:`s` (the float64-accumulated mean, a constant):
    :math:`\mu = s + \overline{x - s}`, :math:`\sigma^2 = \overline{(x - s - \overline{x - s})^2}`.
    Because ``x - s`` is small and exact, cancellation does not eat the variance.

    Returns ``(centered, mean, variance)`` where ``centered = x - mu`` has the shape
    of ``x`` and ``mean``/``variance`` broadcast against it (1 on reduced axes).
    With a mask, masked-out positions get weight 0 in both moments.
    """
    dims = reduced_axes(kept, x.dim())
    if mask is None:
        shift = x.detach().mean(dim=dims, keepdim=True, dtype=torch.float64).to(x.dtype)
        shifted = x - shift
        residual = shifted.mean(dim=dims, keepdim=True)
        centered = shifted - residual
        variance = centered.square().mean(dim=dims, keepdim=True)
        return centered, shift + residual, variance
    weight = _broadcast_mask(mask, x, kept).to(x.dtype)
    total = weight.sum(dim=dims, keepdim=True).clamp_min(1.0)
    masked = torch.where(weight > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
    shift = (masked.detach().sum(dim=dims, keepdim=True, dtype=torch.float64) / total).to(x.dtype)
    shifted = x - shift
    residual = (shifted * weight).sum(dim=dims, keepdim=True) / total
    centered = shifted - residual
    variance = (centered.square() * weight).sum(dim=dims, keepdim=True) / total
    return centered, shift + residual, variance


def _normalize_training(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    kept: tuple[int, ...],
    epsilon: float,
    mask: Tensor | None,
    implementation: Implementation,
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode output and the batch's (mean, biased variance) per kept index."""
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    xc = x.to(compute)
    if implementation == "reference":
        y, mean, var = reference_batch_norm_train(xc, _cast(gamma, compute), _cast(beta, compute),
                                                  kept, epsilon)
        return y.to(x.dtype), mean, var
    if implementation == "native" or (
        implementation == "auto" and _native_applies(xc, kept, mask, gamma, beta)
    ):
        y, mean, var = _native_training(xc, _cast(gamma, compute), _cast(beta, compute),
                                        kept[0], epsilon)
        if implementation == "native" or not _ill_conditioned(mean, var, epsilon):
            return y.to(x.dtype), mean, var
    centered, mean, var = batch_moments(xc, kept, mask)
    y = _affine(centered * torch.rsqrt(var + epsilon), gamma, beta, kept, compute)
    return y.to(x.dtype), mean.reshape(_stat_shape(x, kept)), var.reshape(_stat_shape(x, kept))


class FusedPlan(NamedTuple):
    """What a training step on the fused kernel needs to know of its input, worked out once.

    Made by :func:`plan_fused_training` and used by :func:`run_fused_training_step`. It
    depends on the input's shape and dtype, on the dtypes of the parameters and
    statistics, and on the caller's ``kept``, ``unbiased`` and ``implementation``: a
    caller that keeps a plan (the layer keeps its last one) drops it when any of these
    changes.
    """

    shape: torch.Size
    dtype: torch.dtype
    implementation: Implementation
    channel_axis: int
    count: int  # values per channel
    compute: torch.dtype  # float32 for half inputs, else the input's dtype
    direct: bool  # channels on axis 1 and every tensor in `compute`: no move, no cast
    kernel_momentum: float  # leaves the batch variance (biased or not) in the scratch
    unread_mean: Tensor  # see _unread_running_mean


def plan_fused_training(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    kept: tuple[int, ...],
    unbiased: bool,
    mask: Tensor | None,
    implementation: Implementation,
    name: str,
) -> FusedPlan | None:
    """The plan of a fused training step for ``x``, or None when the kernel does not apply.

    It does not apply with several kept axes, a mask, a ``torch.func`` transform, an
    empty or non-floating-point batch, or an implementation other than auto/native;
    the caller then computes the step with that implementation (:func:`batch_norm`
    checks everything again). ``kept`` is the output of
    :func:`~bnlab.functional.axes.kept_axes`; the other arguments are validated.

    Raises:
        ValueError: one value per channel (with the remedy).
    """
    if not (
        mask is None
        and len(kept) == 1
        and (implementation == "auto" or implementation == "native")
        and x.is_floating_point()
        and x.numel() > 0
        and not _any_functorch(x, gamma, beta, moving_mean, moving_variance)
    ):
        return None
    channel_axis = kept[0]
    count = x.numel() // x.shape[channel_axis]
    if count <= 1:
        _raise_single_value(x, kept, name)
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    direct = channel_axis == 1 and all(
        t is None or t.dtype == compute for t in (x, gamma, beta, moving_mean, moving_variance)
    )
    # The kernel's running-variance update with momentum (n-1)/n leaves exactly the
    # *biased* batch variance in a zero-initialized scratch (momentum 1.0: the unbiased).
    kernel_momentum = 1.0 if unbiased else (count - 1) / count
    return FusedPlan(
        x.shape, x.dtype, implementation, channel_axis, count, compute, direct,
        kernel_momentum, _unread_running_mean(x.shape[channel_axis], compute, x.device),
    )


def fused_training_step(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    num_batches_tracked: int | Tensor,
    kept: tuple[int, ...],
    momentum: float | None,
    epsilon: float,
    unbiased: bool,
    mask: Tensor | None,
    on_nonfinite: NonFinitePolicy,
    implementation: Implementation,
    name: str,
    in_place: bool,
) -> tuple[Tensor, Tensor, Tensor] | Implementation:
    """:func:`plan_fused_training`, then :func:`run_fused_training_step`.

    The hot path of :func:`batch_norm` and :func:`batch_norm_update_`, for validated
    arguments. Returns the implementation to compute the step with instead, having
    changed nothing, when the kernel does not apply (the one given) or the batch is
    ill-conditioned (``"composite"``).
    """
    plan = plan_fused_training(x, gamma, beta, moving_mean, moving_variance, kept, unbiased,
                               mask, implementation, name)
    if plan is None:
        return implementation
    return run_fused_training_step(plan, x, gamma, beta, moving_mean, moving_variance,
                                   num_batches_tracked, momentum, epsilon, on_nonfinite, name,
                                   in_place)


def run_fused_training_step(
    plan: FusedPlan,
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    num_batches_tracked: int | Tensor,
    momentum: float | None,
    epsilon: float,
    on_nonfinite: NonFinitePolicy,
    name: str,
    in_place: bool,
) -> tuple[Tensor, Tensor, Tensor] | Implementation:
    r"""One training step on the fused kernel, with as few extra operations as possible.

    ``plan`` is :func:`plan_fused_training` of an input of ``x``'s shape and dtype with
    the same settings. Same numbers as :func:`_native_training` +
    :func:`update_moving_statistics`, but per-call overhead is most of the cost at
    small sizes (each extra tensor operation, and each Python frame, costs 1-3% of a
    (256, 512) training step on a CPU), so: the kernel itself leaves the batch variance
    in a scratch tensor; one ``addcmul`` and one ``aminmax`` read back together tell
    whether the statistics are finite and whether some channel is ill-conditioned
    (``|mean| > 1e3 * sqrt(var + eps)``); the moving statistics are two ``lerp``\ s with
    a scalar weight. With ``in_place`` the lerps write into ``moving_mean`` /
    ``moving_variance`` (one ``_foreach_lerp_`` dispatch) and ``num_batches_tracked``
    (a tensor then) is incremented: the layer's own buffers. Otherwise new tensors are
    returned.

    Returns ``(output, moving_mean, moving_variance)`` with the new (or updated)
    statistics, or the given ones if the batch's are non-finite (reported as
    ``on_nonfinite`` says). Returns ``"composite"``, having changed nothing, when with
    ``implementation="auto"`` some channel is ill-conditioned: the shifted two-pass
    path computes that step.

    Raises:
        FloatingPointError: non-finite statistics with ``on_nonfinite="raise"``.
    """
    if plan.direct:  # the common case: no move or cast before or after the kernel
        moved, restore, cast_mean, cast_var = x, False, False, False
    else:
        compute, channel_axis = plan.compute, plan.channel_axis
        xc = x if x.dtype == compute else x.to(compute)
        moved = xc if channel_axis == 1 else xc.movedim(channel_axis, 1)
        if gamma is not None and gamma.dtype != compute:
            gamma = gamma.to(compute)
        if beta is not None and beta.dtype != compute:
            beta = beta.to(compute)
        restore = moved is not x
        cast_mean = moving_mean.dtype != compute
        cast_var = moving_variance.dtype != compute
    # The kernel saves the scratch variance for the backward pass: never write into it
    # later. The running mean is never read (the kernel returns the batch mean).
    batch_var = moved.new_zeros(moved.shape[1])
    y, batch_mean, _ = torch.native_batch_norm(
        moved, gamma, beta, plan.unread_mean, batch_var, True, plan.kernel_momentum, epsilon,
    )
    if restore:
        y = y if plan.channel_axis == 1 else y.movedim(1, plan.channel_axis)
        y = y if y.dtype == x.dtype else y.to(x.dtype)
    # probe = var - mean^2 / 1e6 is below -eps exactly when |mean| / sqrt(var + eps) > 1e3;
    # NaN fails both comparisons, and an inf shows up at one end.
    low, high = torch.aminmax(torch.addcmul(batch_var, batch_mean, batch_mean,
                                            value=_PROBE_SCALE))
    low_value, high_value = low.item(), high.item()
    if not (low_value >= -epsilon and high_value < math.inf):
        if not (math.isfinite(low_value) and math.isfinite(high_value)) and not bool(
            torch.isfinite(batch_mean).all() & torch.isfinite(batch_var).all()
        ):
            _report_nonfinite(on_nonfinite, name)
            return y, moving_mean, moving_variance
        # Ill-conditioned (or mean^2 overflowed, which is certainly ill-conditioned).
        if plan.implementation == "auto":
            return "composite"
    # Weight of the batch: 1 - momentum, or 1 / (t + 1) for the cumulative average.
    weight = 1.0 - momentum if momentum is not None else 1.0 / (int(num_batches_tracked) + 1.0)
    if cast_mean:
        batch_mean = batch_mean.to(moving_mean.dtype)
    if cast_var:
        batch_var = batch_var.to(moving_variance.dtype)
    if in_place:
        # One dispatch for both (the same lerp_ per tensor, so the same numbers).
        torch._foreach_lerp_((moving_mean, moving_variance), (batch_mean, batch_var), weight)
        num_batches_tracked.add_(1)  # type: ignore[union-attr]  # a Tensor when in place
        return y, moving_mean, moving_variance
    return (y, torch.lerp(moving_mean, batch_mean, weight),
            torch.lerp(moving_variance, batch_var, weight))


@functools.lru_cache(maxsize=64)
def _unread_running_mean_cached(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # usable outside inference mode later
        return torch.empty(channels, dtype=dtype, device=device)


def _unread_running_mean(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A running-mean buffer for the fused kernel to write into and nobody to read.

    The kernel insists on a running mean when it updates a running variance, but the
    batch mean it returns is all we use: its write into this buffer is discarded. One
    buffer per (size, dtype, device) is shared by every call (a fresh tensor per call
    measured 1-4% of a (256, 512) training step, in allocation and cache misses). The
    kernel's write does not bump the buffer's version counter, and the backward pass
    of a training step reads the saved batch statistics, not this buffer, so sharing it
    between graphs is safe. Under inference mode a fresh tensor is returned.
    """
    if torch.is_inference_mode_enabled():
        return torch.empty(channels, dtype=dtype, device=device)
    return _unread_running_mean_cached(channels, dtype, device)


def _native_training(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, channel_axis: int, epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused ATen kernel on (N, C, *) with the channel moved to axis 1.

    The kernel's running statistics are scratch buffers updated with momentum 1.0,
    which leaves exactly the batch mean and the unbiased batch variance in them.
    """
    moved = x if channel_axis == 1 else x.movedim(channel_axis, 1)
    channels = moved.shape[1]
    scratch_mean = moved.new_zeros(channels)
    scratch_var = moved.new_zeros(channels)
    y, _, _ = torch.native_batch_norm(moved, gamma, beta, scratch_mean, scratch_var,
                                      True, 1.0, epsilon)
    n = moved.numel() // channels
    biased_var = scratch_var * ((n - 1) / n)
    if channel_axis != 1:
        y = y.movedim(1, channel_axis)
    return y, scratch_mean, biased_var


def _normalize_inference(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    mean: Tensor,
    variance: Tensor,
    kept: tuple[int, ...],
    epsilon: float,
) -> Tensor:
    r"""Inference transform :math:`\gamma (x - m) / \sqrt{v + \epsilon} + \beta`; samples are independent."""
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    xc = x if x.dtype == compute else x.to(compute)
    mean_c = mean if mean.dtype == compute else mean.to(compute)
    var_c = variance if variance.dtype == compute else variance.to(compute)
    if (
        len(kept) == 1
        and not _any_functorch(x, gamma, beta, mean, variance)
        and not _moving_ill_conditioned(mean, variance, epsilon)
    ):
        moved = xc if kept[0] == 1 else xc.movedim(kept[0], 1)
        gamma_c = gamma if gamma is None or gamma.dtype == compute else gamma.to(compute)
        beta_c = beta if beta is None or beta.dtype == compute else beta.to(compute)
        y = torch.batch_norm(moved, gamma_c, beta_c, mean_c, var_c, False, 0.0, epsilon,
                             torch.backends.cudnn.enabled)
        y = y if kept[0] == 1 else y.movedim(1, kept[0])
        return y if y.dtype == x.dtype else y.to(x.dtype)
    shape = broadcast_shape(x.shape, kept)
    normalized = (xc - mean_c.reshape(shape)) * torch.rsqrt(var_c.reshape(shape) + epsilon)
    return _affine(normalized, gamma, beta, kept, compute).to(x.dtype)


def _affine(
    normalized: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    kept: tuple[int, ...],
    dtype: torch.dtype,
) -> Tensor:
    """``gamma * normalized + beta`` with the parameters broadcast along the kept axes."""
    shape = broadcast_shape(normalized.shape, kept)
    if gamma is not None:
        normalized = normalized * gamma.to(dtype).reshape(shape)
    if beta is not None:
        normalized = normalized + beta.to(dtype).reshape(shape)
    return normalized


def _native_applies(
    x: Tensor, kept: tuple[int, ...], mask: Tensor | None, *params: Tensor | None
) -> bool:
    return len(kept) == 1 and mask is None and not _any_functorch(x, *params)


def _ill_conditioned(mean: Tensor, variance: Tensor, epsilon: float) -> bool:
    """True when some channel's |mean| / std is large enough to hurt the fused kernel."""
    if mean.numel() == 0:
        return False
    ratio = mean.detach().abs() * torch.rsqrt(variance.detach().to(mean.dtype) + epsilon)
    return bool((ratio > _ILL_CONDITIONED).any())


# id(moving_mean) -> (weakref(mean), weakref(variance), their _version counters, epsilon,
# verdict). Inference reuses the same moving statistics call after call; the verdict of
# _ill_conditioned stays valid until either tensor is modified in place (which bumps its
# version counter) or replaced. Saves several small operations and a sync per call.
_CONDITION_CACHE: dict[int, tuple[Any, Any, int, int, float, bool]] = {}
_CONDITION_CACHE_SIZE = 256


def _moving_ill_conditioned(mean: Tensor, variance: Tensor, epsilon: float) -> bool:
    """:func:`_ill_conditioned` for moving statistics, memoized per tensor version."""
    try:
        versions = (mean._version, variance._version)
    except RuntimeError:  # inference-mode tensors have no version counter to key on
        return _ill_conditioned(mean, variance, epsilon)
    entry = _CONDITION_CACHE.get(id(mean))
    if (
        entry is not None
        and entry[0]() is mean
        and entry[1]() is variance
        and (entry[2], entry[3]) == versions
        and entry[4] == epsilon
    ):
        return entry[5]
    verdict = _ill_conditioned(mean, variance, epsilon)
    if len(_CONDITION_CACHE) >= _CONDITION_CACHE_SIZE:
        _CONDITION_CACHE.clear()
    _CONDITION_CACHE[id(mean)] = (weakref.ref(mean), weakref.ref(variance), *versions, epsilon,
                                  verdict)
    return verdict


def _any_functorch(*tensors: Tensor | None) -> bool:
    """Whether any tensor is wrapped by a torch.func transform (vmap, grad, jvp)."""
    if not torch._C._are_functorch_transforms_active():  # one call instead of one per tensor
        return False
    return any(
        t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors
    )


def _raise_single_value(x: Tensor, kept: tuple[int, ...], name: str) -> NoReturn:
    raise ValueError(
        f"{name}: training needs more than 1 value per channel to compute batch "
        f"statistics; got input shape {tuple(x.shape)} with axis={kept}. Use a batch "
        "size > 1 (e.g. drop_last=True in the DataLoader) or call model.eval() to "
        "normalize with the moving statistics."
    )


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _stat_shape(x: Tensor, kept: tuple[int, ...]) -> tuple[int, ...]:
    return stat_shape(x.shape, kept)


def _count_per_channel(x: Tensor, kept: tuple[int, ...], mask: Tensor | None) -> int | Tensor:
    """Values per statistic: an int, or a tensor of per-channel counts with a mask."""
    if mask is None:
        kept_size = math.prod(x.shape[d] for d in kept)
        return x.numel() // kept_size if kept_size else 0
    dims = reduced_axes(kept, x.dim())
    return _broadcast_mask(mask, x, kept).to(torch.float32).sum(dim=dims).reshape(
        _stat_shape(x, kept)
    )


def _broadcast_mask(mask: Tensor, x: Tensor, kept: tuple[int, ...]) -> Tensor:
    """Insert size-1 dims at the kept axes so a (x without channel) mask broadcasts."""
    for d in kept:
        mask = mask.unsqueeze(d)
    return mask.expand(x.shape).bool()


def _check_floating(x: Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input; got dtype {x.dtype}")


def _check_arguments(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    kept: tuple[int, ...],
    momentum: float | None,
    epsilon: float,
    mask: Tensor | None,
    implementation: str,
    on_nonfinite: str,
    name: str,
) -> None:
    _check_floating(x, name)
    expected = _stat_shape(x, kept)
    if not (
        moving_mean.shape == expected
        and moving_variance.shape == expected
        and (gamma is None or gamma.shape == expected)
        and (beta is None or beta.shape == expected)
    ):
        for label, t in (("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                         ("moving_variance", moving_variance)):
            if t is not None and t.shape != expected:
                raise ValueError(
                    f"{name}: {label} has shape {tuple(t.shape)} but the input "
                    f"{tuple(x.shape)} with axis={kept} needs {expected}"
                )
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{name}: momentum must be in [0, 1] or None; got {momentum!r}")
    if not epsilon > 0:
        raise ValueError(f"{name}: epsilon must be > 0; got {epsilon!r}")
    if implementation not in ("auto", "native", "composite", "reference"):
        raise ValueError(
            f"{name}: unknown implementation {implementation!r}; choose from auto, native, "
            "composite, reference"
        )
    if on_nonfinite not in ("skip", "raise"):
        raise ValueError(f"{name}: on_nonfinite must be 'skip' or 'raise'; got {on_nonfinite!r}")
    if implementation == "native" and (len(kept) != 1 or mask is not None):
        raise ValueError(
            f"{name}: the native implementation needs exactly one kept axis and no mask; "
            f"got axis={kept} and mask={'given' if mask is not None else None}"
        )
    if implementation == "reference" and mask is not None:
        raise ValueError(f"{name}: the reference implementation does not take a mask")
    if mask is not None:
        want = tuple(n for d, n in enumerate(x.shape) if d not in kept)
        if tuple(mask.shape) != want:
            raise ValueError(
                f"{name}: mask must have the input's shape without the kept axis {kept}, "
                f"i.e. {want}; got {tuple(mask.shape)}"
            )
