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

Under tracing
-------------
Two checks read batch or moving statistics on the host: whether some channel is
ill-conditioned (``|mean| / std > 1e3``, where the fused kernel loses accuracy) and
whether a training batch's statistics are finite. Under ``torch.compile``,
``torch.export`` / ``torch.onnx.export``, ``torch.jit.trace`` and ``torch.func``
transforms (see :func:`traced`) there is no host value to read, and the rule is:

- ``"auto"`` makes no data-dependent choice: inference uses the shifted form
  ``(x - m) * rsqrt(v + eps)`` and training the composite path, both accurate for
  every channel, so the check is not needed;
- a batch with non-finite statistics is still skipped (the moving statistics and
  ``num_batches_tracked`` keep their values, chosen by ``torch.where``), but
  silently: ``on_nonfinite`` (warn or raise) applies in eager mode only.

Eager mode keeps both checks, one small reduction read on the host per call: the
extremes of ``var - mean^2 / 1e6`` over the batch statistics in training, its
minimum over the moving statistics in inference.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn, TypeVar

import torch
from torch import Tensor

from bnlab.functional.axes import AxisArg, broadcast_shape, kept_axes, reduced_axes, stat_shape
from bnlab.functional.reference import reference_batch_norm_train

Implementation = Literal["auto", "native", "composite", "reference"]
NonFinitePolicy = Literal["skip", "raise"]

_T = TypeVar("_T")
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
    trace_time_check(check_arguments, x, gamma, beta, moving_mean, moving_variance, kept,
                     momentum, epsilon, mask, implementation, on_nonfinite, name)
    if not training:
        return BatchNormResult(
            normalize_inference(x, gamma, beta, moving_mean, moving_variance, kept, epsilon),
            moving_mean,
            moving_variance,
        )
    y, new_mean, new_var, _ = _training_step(
        x, gamma, beta, moving_mean, moving_variance, kept, momentum, epsilon,
        num_batches_tracked, unbiased_moving_variance, mask, on_nonfinite, implementation, name,
        in_place=False,
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
    :class:`bnlab.nn.BatchNormalization` with its buffers (the way ``torch.nn.BatchNorm2d``
    calls ``F.batch_norm``). Normalizes ``x`` with the batch statistics exactly like
    ``batch_norm(..., training=True)``, writes the new moving statistics that it would
    return into ``moving_mean`` and ``moving_variance``, then adds 1 to
    ``num_batches_tracked``. A batch that leaves the statistics unchanged in
    :func:`batch_norm` (empty, or non-finite statistics with ``on_nonfinite="skip"``)
    changes nothing here either, the count included. Output, gradients and statistics
    are the same numbers, bit for bit.

    Args:
        x, gamma, beta, axis, momentum, epsilon, unbiased_moving_variance, mask,
            on_nonfinite, implementation, name: as for :func:`batch_norm`.
        moving_mean, moving_variance: the statistics, updated in place; like
            ``F.batch_norm``'s running statistics they must not require gradients.
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
    trace_time_check(check_arguments, x, gamma, beta, moving_mean, moving_variance, kept,
                     momentum, epsilon, mask, implementation, on_nonfinite, name)
    return training_update_(
        x, gamma, beta, moving_mean, moving_variance, num_batches_tracked, kept, momentum,
        epsilon, unbiased_moving_variance, mask, on_nonfinite, implementation, name,
    )


def training_update_(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    num_batches_tracked: Tensor,
    kept: tuple[int, ...],
    momentum: float | None,
    epsilon: float,
    unbiased_moving_variance: bool,
    mask: Tensor | None,
    on_nonfinite: NonFinitePolicy,
    implementation: Implementation,
    name: str,
) -> Tensor:
    """:func:`batch_norm_update_` after its argument checks (``kept`` as from
    :func:`~bnlab.functional.axes.kept_axes`).

    For a caller that has validated the arguments already: the layer validates its
    settings when they are set and its input on each call.
    """
    y, _, _, updated = _training_step(
        x, gamma, beta, moving_mean, moving_variance, kept, momentum, epsilon,
        num_batches_tracked, unbiased_moving_variance, mask, on_nonfinite, implementation, name,
        in_place=True,
    )
    if updated is not False:
        num_batches_tracked.add_(1 if updated is True else updated)  # a 1/0 tensor if traced
    return y


def traced(*tensors: Tensor | None) -> bool:
    """Whether the current call is being traced into a graph or transformed.

    True under ``torch.compile``, ``torch.export`` (and so ``torch.onnx.export``),
    ``torch.jit.trace``, and when one of ``tensors`` is wrapped by a ``torch.func``
    transform (``vmap``, ``grad``, ``jvp``). There the tensors have no values to read
    on the host, so the functions of this module make no data-dependent choice (see
    the module docstring's "Under tracing").
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    if not torch._C._are_functorch_transforms_active():  # one call instead of one per tensor
        return False
    is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(t is not None and is_wrapped(t) for t in tensors)


def trace_time_check(check: Callable[..., _T], *args: Any) -> _T:
    """``check(*args)``, a check of shapes and settings that raises on bad input.

    Under ``torch.jit.trace`` sizes read from the input are traced tensors, and comparing
    them warns that the trace keeps the result as a constant: for a check that is the
    intent (it ran when the graph was recorded), so that warning is silenced here.
    """
    if not torch.jit.is_tracing():
        return check(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return check(*args)


def _training_step(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    kept: tuple[int, ...],
    momentum: float | None,
    epsilon: float,
    num_batches_tracked: int | Tensor,
    unbiased: bool,
    mask: Tensor | None,
    on_nonfinite: NonFinitePolicy,
    implementation: Implementation,
    name: str,
    in_place: bool,
) -> tuple[Tensor, Tensor, Tensor, bool | Tensor]:
    """Training output, new moving statistics, and whether they count as an update.

    With ``in_place`` the new statistics are written into ``moving_mean`` and
    ``moving_variance`` (and returned).

    The last value is True/False in eager mode (False: an empty or non-finite batch,
    the given statistics are returned) and a 0-dim integer tensor (1 or 0) under
    tracing, where a non-finite batch is skipped with ``torch.where``.
    """
    if x.numel() == 0:
        # An empty batch has no statistics: pass it through the inference transform
        # (keeps autograd and shape) and leave the moving statistics alone.
        y = normalize_inference(x, gamma, beta, moving_mean, moving_variance, kept, epsilon)
        return y, moving_mean, moving_variance, False
    count = _count_per_channel(x, kept, mask)
    if mask is None and count <= 1:
        _raise_single_value(x, kept, name)
    eager = not traced(x, gamma, beta, moving_mean, moving_variance)
    y, mean, var, finite = _normalize_batch(x, gamma, beta, kept, epsilon, mask, implementation, eager)
    new_mean, new_var, updated = _fold_statistics(
        moving_mean, moving_variance, mean, var, count, momentum, num_batches_tracked,
        unbiased, on_nonfinite, name, finite, in_place,
    )
    return y, new_mean, new_var, updated


def normalize_training(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    kept: tuple[int, ...],
    epsilon: float,
    mask: Tensor | None = None,
    implementation: Implementation = "auto",
) -> tuple[Tensor, Tensor, Tensor, bool | None]:
    r"""The training transform alone: ``x`` normalized by its own batch statistics.

    :math:`y = \gamma (x - \mu_B) / \sqrt{\sigma_B^2 + \epsilon} + \beta`, no moving
    statistics. Arguments as for :func:`batch_norm` after its checks (``kept`` as from
    :func:`~bnlab.functional.axes.kept_axes`, ``x`` not empty).

    Returns the output, the batch mean and biased variance per kept index (without
    autograd history), and whether those are all finite: read on the host in eager mode,
    None under tracing. ``"auto"`` runs the fused kernel for one kept axis without a
    mask and redoes the batch on the shifted composite path when a channel is
    ill-conditioned (the eager screen), the composite path otherwise.
    """
    return _normalize_batch(x, gamma, beta, kept, epsilon, mask, implementation,
                            eager=not traced(x, gamma, beta))


def _normalize_batch(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    kept: tuple[int, ...],
    epsilon: float,
    mask: Tensor | None,
    implementation: Implementation,
    eager: bool,
) -> tuple[Tensor, Tensor, Tensor, bool | None]:
    """:func:`normalize_training` with ``eager`` decided by the caller (the training step
    also counts the moving statistics it was given: one :func:`traced` call a step)."""
    fused_first = implementation == "auto" and eager and len(kept) == 1 and mask is None
    if implementation == "auto":
        implementation = "native" if fused_first else "composite"
    y, mean, var = _normalize_training(x, gamma, beta, kept, epsilon, mask, implementation)
    if not eager:
        return y, mean, var, None
    finite, ill_conditioned = _screen(mean, var, epsilon)
    if fused_first and ill_conditioned:  # the fused kernel lost accuracy: shifted path
        y, mean, var = _normalize_training(x, gamma, beta, kept, epsilon, mask, "composite")
        finite, _ = _screen(mean, var, epsilon)
    return y, mean, var, finite


def _screen(mean: Tensor, variance: Tensor, epsilon: float) -> tuple[bool, bool]:
    """Whether batch statistics are all finite, and whether some channel is ill-conditioned.

    Ill-conditioned: ``|mean| / sqrt(var + eps) > 1e3``, where the fused kernel's
    ``x * a + b`` form loses accuracy. One host read in the common case: the extremes
    of ``var - mean^2 / 1e6`` are finite and at least ``-eps`` exactly when every
    statistic is finite and no channel is ill-conditioned (NaN fails both comparisons).
    """
    if mean.numel() == 0:
        return True, False
    low, high = torch.aminmax(torch.addcmul(variance, mean, mean, value=_PROBE_SCALE))
    low_value, high_value = low.item(), high.item()
    if low_value >= -epsilon and high_value < math.inf:
        return True, False
    finite = _all_finite(mean, variance)
    # A finite low below -eps (or -inf from an overflowing mean^2) is ill-conditioning.
    return finite, finite and not low_value >= -epsilon


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
    where ``t = num_batches_tracked``; computed as ``torch.lerp(old, batch, weight)``.
    ``batch_variance`` is biased; with ``unbiased=True`` it is scaled by
    ``count / (count - 1)`` first.

    If any batch statistic is not finite, the old statistics are returned unchanged.
    With ``check=True`` (eager mode) that is decided on the host and reported: a
    :class:`NonFiniteStatisticsWarning`, or ``FloatingPointError`` with
    ``on_nonfinite="raise"``. With ``check=False`` it is decided by ``torch.where``,
    silently and without a host read (for ``vmap`` and traced graphs).
    """
    finite = _all_finite(batch_mean, batch_variance) if check else None
    new_mean, new_var, _ = _fold_statistics(
        moving_mean, moving_variance, batch_mean, batch_variance, count, momentum,
        num_batches_tracked, unbiased, on_nonfinite, name, finite,
    )
    return new_mean, new_var


def _all_finite(mean: Tensor, variance: Tensor) -> bool:
    """Whether every statistic is finite (one host read)."""
    return bool(torch.isfinite(mean).all() & torch.isfinite(variance).all())


def _fold_statistics(
    moving_mean: Tensor,
    moving_variance: Tensor,
    batch_mean: Tensor,
    batch_variance: Tensor,
    count: int | Tensor,
    momentum: float | None,
    num_batches_tracked: int | Tensor,
    unbiased: bool,
    on_nonfinite: NonFinitePolicy,
    name: str,
    finite: bool | None,
    in_place: bool = False,
) -> tuple[Tensor, Tensor, bool | Tensor]:
    """:func:`update_moving_statistics`, and whether the batch was folded in (see
    :func:`_training_step`). ``finite`` is whether the batch statistics are finite, as
    read on the host, or None to decide it with ``torch.where``. ``in_place`` writes
    the result into the moving statistics (the same ``lerp``, so the same numbers)."""
    if unbiased:
        if isinstance(count, Tensor):
            count = count.to(batch_variance.dtype)
            batch_variance = batch_variance * count / (count - 1).clamp_min(1)
        else:
            batch_variance = batch_variance * (count / max(count - 1, 1))
    if batch_mean.dtype != moving_mean.dtype:
        batch_mean = batch_mean.to(moving_mean.dtype)
    if batch_variance.dtype != moving_variance.dtype:
        batch_variance = batch_variance.to(moving_variance.dtype)
    if finite is False:
        _report_nonfinite(on_nonfinite, name)
        return moving_mean, moving_variance, False
    if momentum is not None:  # the batch's weight in the update
        mean_weight = var_weight = 1.0 - momentum
    else:
        mean_weight = _cumulative_weight(moving_mean, num_batches_tracked)
        var_weight = _cumulative_weight(moving_variance, num_batches_tracked)
    if finite is True and in_place:
        # Both statistics in one call, the same lerp as torch.lerp below (the same
        # numbers). The batch statistics carry no autograd history (_normalize_training).
        torch._foreach_lerp_(
            [moving_mean, moving_variance], [batch_mean, batch_variance],
            mean_weight if momentum is not None else [mean_weight, var_weight],
        )
        return moving_mean, moving_variance, True
    new_mean = torch.lerp(moving_mean, batch_mean, mean_weight)
    new_var = torch.lerp(moving_variance, batch_variance, var_weight)
    updated: bool | Tensor = True
    if finite is None:
        finite_t = torch.isfinite(batch_mean).all() & torch.isfinite(batch_variance).all()
        new_mean = torch.where(finite_t, new_mean, moving_mean)
        new_var = torch.where(finite_t, new_var, moving_variance)
        updated = finite_t.long()
    if in_place:
        with torch.no_grad():
            moving_mean.copy_(new_mean)
            moving_variance.copy_(new_var)
        return moving_mean, moving_variance, updated
    return new_mean, new_var, updated


def _cumulative_weight(moving: Tensor, num_batches_tracked: int | Tensor) -> Tensor:
    """Weight of the batch in the cumulative average (``momentum=None``): ``1 / (t + 1)``."""
    seen = torch.as_tensor(num_batches_tracked, dtype=moving.dtype, device=moving.device)
    return 1.0 / (seen + 1.0)


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
    implementation: Literal["native", "composite", "reference"],
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode output and the batch's (mean, biased variance) per kept index.

    The statistics carry no autograd history (the fused kernel's never do).
    """
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    xc = x if x.dtype == compute else x.to(compute)
    if implementation == "composite":
        centered, mean, var = batch_moments(xc, kept, mask)
        y = _affine(centered * torch.rsqrt(var + epsilon), gamma, beta, kept, compute)
        shape = stat_shape(x.shape, kept)
        return y.to(x.dtype), mean.detach().reshape(shape), var.detach().reshape(shape)
    gamma, beta = _cast(gamma, compute), _cast(beta, compute)
    if implementation == "native":
        y, mean, var = _native_training(xc, gamma, beta, kept[0], epsilon)
    else:
        y, mean, var = reference_batch_norm_train(xc, gamma, beta, kept, epsilon)
        mean, var = mean.detach(), var.detach()
    return (y if y.dtype == x.dtype else y.to(x.dtype)), mean, var


def _native_training(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, channel_axis: int, epsilon: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused ATen kernel on (N, C, *) with the channel moved to axis 1.

    Returns the output, the batch mean and the biased batch variance. The kernel
    insists on running statistics to update; in zero-initialized scratch buffers, its
    running-variance update with momentum ``(n-1)/n`` leaves exactly the biased batch
    variance (``(n-1)/n`` times the unbiased one it folds in).
    """
    moved = x if channel_axis == 1 else x.movedim(channel_axis, 1)
    channels = moved.shape[1]
    n = moved.numel() // channels
    scratch_mean, scratch_var = moved.new_zeros(channels), moved.new_zeros(channels)
    y, batch_mean, _ = torch.native_batch_norm(moved, gamma, beta, scratch_mean, scratch_var,
                                               True, (n - 1) / n, epsilon)
    if channel_axis != 1:
        y = y.movedim(1, channel_axis)
    return y, batch_mean, scratch_var


def normalize_inference(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    mean: Tensor,
    variance: Tensor,
    kept: tuple[int, ...],
    epsilon: float,
) -> Tensor:
    r"""Inference transform :math:`\gamma (x - m) / \sqrt{v + \epsilon} + \beta`; samples are independent.

    Arguments as for :func:`batch_norm` after its checks (``kept`` as from
    :func:`~bnlab.functional.axes.kept_axes`).

    In eager mode with no ill-conditioned channel, the fused form ``x * a + b`` with
    ``a = gamma / sqrt(v + eps)`` and ``b = beta - m * a`` per kept index, in one pass
    over ``x``: PyTorch's inference kernel for one kept axis, one ``addcmul`` for several
    (no copy of ``x`` into a channel layout). Otherwise (an ill-conditioned channel, or
    under tracing, where the check would read the statistics on the host) the shifted
    form ``(x - m) * rsqrt(v + eps)``, accurate for every channel.
    """
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    xc = x if x.dtype == compute else x.to(compute)
    mean_c = mean if mean.dtype == compute else mean.to(compute)
    var_c = variance if variance.dtype == compute else variance.to(compute)
    if not traced(x, gamma, beta, mean, variance) and not _ill_conditioned(mean, variance, epsilon):
        gamma_c = gamma if gamma is None or gamma.dtype == compute else gamma.to(compute)
        beta_c = beta if beta is None or beta.dtype == compute else beta.to(compute)
        if len(kept) == 1:
            moved = xc if kept[0] == 1 else xc.movedim(kept[0], 1)
            y = torch.batch_norm(moved, gamma_c, beta_c, mean_c, var_c, False, 0.0, epsilon,
                                 torch.backends.cudnn.enabled)
            y = y if kept[0] == 1 else y.movedim(1, kept[0])
        else:
            scale = torch.rsqrt(var_c + epsilon)
            if gamma_c is not None:
                scale = scale * gamma_c
            shift = -mean_c * scale if beta_c is None else beta_c - mean_c * scale
            shape = broadcast_shape(x.shape, kept)
            y = torch.addcmul(shift.reshape(shape), xc, scale.reshape(shape))
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


def _ill_conditioned(mean: Tensor, variance: Tensor, epsilon: float) -> bool:
    """Whether some channel of (moving) statistics is ill-conditioned (see :func:`_screen`).

    One host read: the lowest ``var - mean^2 / 1e6``. Channels with non-finite
    statistics do not count (a NaN low fails the comparison), as in :func:`_screen`.
    """
    if mean.numel() == 0:
        return False
    low = torch.addcmul(variance, mean, mean, value=_PROBE_SCALE).min().item()
    return low < -epsilon and _all_finite(mean, variance)


def _raise_single_value(x: Tensor, kept: tuple[int, ...], name: str) -> NoReturn:
    raise ValueError(
        f"{name}: training needs more than 1 value per channel to compute batch "
        f"statistics; got input shape {tuple(x.shape)} with axis={kept}. Use a batch "
        "size > 1 (e.g. drop_last=True in the DataLoader) or call model.eval() to "
        "normalize with the moving statistics."
    )


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _count_per_channel(x: Tensor, kept: tuple[int, ...], mask: Tensor | None) -> int | Tensor:
    """Values per statistic: an int, or a tensor of per-channel counts with a mask."""
    if mask is None:
        kept_size = math.prod(stat_shape(x.shape, kept))
        return x.numel() // kept_size if kept_size else 0
    dims = reduced_axes(kept, x.dim())
    return _broadcast_mask(mask, x, kept).to(torch.float32).sum(dim=dims).reshape(
        stat_shape(x.shape, kept)
    )


def _broadcast_mask(mask: Tensor, x: Tensor, kept: tuple[int, ...]) -> Tensor:
    """Insert size-1 dims at the kept axes so a (x without channel) mask broadcasts."""
    for d in kept:
        mask = mask.unsqueeze(d)
    return mask.expand(x.shape).bool()


def check_arguments(
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
    """Raise a one-line error for arguments :func:`batch_norm` does not take (see there)."""
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input; got dtype {x.dtype}")
    expected = stat_shape(x.shape, kept)
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
