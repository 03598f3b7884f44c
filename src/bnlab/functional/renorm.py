r"""Batch renormalization (Ioffe, 2017) as a pure function, with Keras 3's semantics.

Plain batch normalization trains with the batch's statistics and infers with
the moving ones; when batches are small or not i.i.d. the two disagree.
Batch renormalization corrects the training output towards the moving
statistics by an affine transform that is a *constant* for the backward pass:

.. math::
    \sigma_B = \sqrt{\sigma^2_B + \epsilon},\qquad
    s = \max(\text{renorm\_stddev}, \sqrt{\epsilon}),\qquad
    r = \operatorname{clip}_{[r_{min}, r_{max}]}\Big(\frac{\sigma_B}{s}\Big),\qquad
    d = \operatorname{clip}_{[-d_{max}, d_{max}]}\Big(\frac{\mu_B - \text{renorm\_mean}}{s}\Big)

.. math::
    y = \gamma \Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta
      = \frac{x - \mu_B}{\sigma_B}\,(r\gamma) + (d\gamma + \beta)

with ``r`` and ``d`` under stop-gradient (gradients still flow through
:math:`\mu_B, \sigma_B` as in plain batch normalization). With ``r = 1, d = 0``
(e.g. ``rmax = rmin = 1, dmax = 0``) it *is* batch normalization.

State, all per channel, updated once per training step (Keras 3):

- ``renorm_mean``, ``renorm_stddev``: what ``r`` and ``d`` are measured against,
  ``v <- renorm_momentum * v + (1 - renorm_momentum) * batch``;
- ``moving_mean``, ``moving_stddev``: inference statistics, updated with ``momentum``
  (or the cumulative average when ``momentum`` is None);
- ``moving_variance = max(moving_stddev**2 - epsilon, 0)``: derived, so inference
  (which is plain batch normalization with ``moving_mean``/``moving_variance``)
  divides by exactly ``moving_stddev``.

The corrections ``r``, ``d`` use the *old* renorm statistics (before this step's
update), as Keras does. Inference is identical to plain batch normalization.

Reference: S. Ioffe, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models", NeurIPS 2017.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from bnlab.functional.axes import AxisArg, kept_axes, reduced_axes
from bnlab.functional.batch_norm import (
    Implementation,
    NonFinitePolicy,
    NonFiniteStatisticsWarning,
    batch_moments,
    batch_norm,
    trace_time_check,
    update_moving_statistics,
)

__all__ = [
    "RENORM_CLIPPING_KEYS",
    "BatchRenormResult",
    "batch_renorm",
    "check_renorm_clipping",
    "renorm_correction",
]

RENORM_CLIPPING_KEYS = ("rmax", "rmin", "dmax")
_HALF_DTYPES = (torch.float16, torch.bfloat16)


class BatchRenormResult(NamedTuple):
    """What :func:`batch_renorm` returns: the output and every *new* statistic.

    Field names equal the buffer names of a renorm layer, so a module can store
    ``result[1:]`` by name.
    """

    output: Tensor
    moving_mean: Tensor
    moving_variance: Tensor
    moving_stddev: Tensor
    renorm_mean: Tensor
    renorm_stddev: Tensor


def check_renorm_clipping(
    renorm_clipping: Mapping[str, float | None] | None, *, name: str = "batch_norm"
) -> dict[str, float]:
    """Validate Keras's ``renorm_clipping`` and return it as a plain dict without None values.

    Keys: ``"rmax"``, ``"rmin"``, ``"dmax"``, each optional; a missing key means no
    clipping on that side (Keras: rmax = inf, rmin = 0, dmax = inf).

    Raises:
        ValueError: unknown key, non-numeric or NaN value, ``rmax < rmin``, ``rmin < 0``
            or ``dmax < 0``.
        TypeError: ``renorm_clipping`` is not a mapping.
    """
    if renorm_clipping is None:
        return {}
    if not isinstance(renorm_clipping, Mapping):
        raise TypeError(
            f"{name}: renorm_clipping must be a dict with keys among {RENORM_CLIPPING_KEYS} "
            f"or None; got {type(renorm_clipping).__name__} {renorm_clipping!r}"
        )
    unknown = sorted(set(renorm_clipping) - set(RENORM_CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"{name}: unknown renorm_clipping key(s) {unknown} in {dict(renorm_clipping)!r}; "
            f"allowed keys: {', '.join(RENORM_CLIPPING_KEYS)}"
        )
    clipping: dict[str, float] = {}
    for key in RENORM_CLIPPING_KEYS:
        value = renorm_clipping.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(
                f"{name}: renorm_clipping[{key!r}] must be a number; got {value!r}"
            )
        clipping[key] = float(value)
    rmin, rmax, dmax = clipping.get("rmin"), clipping.get("rmax"), clipping.get("dmax")
    if rmin is not None and rmin < 0:
        raise ValueError(f"{name}: renorm_clipping rmin must be >= 0; got rmin={rmin}")
    if rmin is not None and rmax is not None and rmax < rmin:
        raise ValueError(
            f"{name}: renorm_clipping needs rmax >= rmin; got rmax={rmax}, rmin={rmin}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(f"{name}: renorm_clipping dmax must be >= 0; got dmax={dmax}")
    return clipping


def renorm_correction(
    batch_mean: Tensor,
    batch_stddev: Tensor,
    renorm_mean: Tensor,
    renorm_stddev: Tensor,
    *,
    epsilon: float,
    renorm_clipping: Mapping[str, float | None] | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The clipped corrections ``(r, d)``, detached from the graph.

    ``s = max(renorm_stddev, sqrt(epsilon))`` (keeps ``r`` finite early in training),
    ``r = clip(batch_stddev / s, rmin, rmax)``,
    ``d = clip((batch_mean - renorm_mean) / s, -dmax, dmax)``.
    ``batch_stddev`` is :math:`\sqrt{\sigma_B^2 + \epsilon}`. All tensors share one shape.
    """
    clipping = check_renorm_clipping(renorm_clipping)
    floor = torch.as_tensor(math.sqrt(epsilon), dtype=renorm_stddev.dtype,
                            device=renorm_stddev.device)
    denominator = torch.maximum(renorm_stddev, floor)
    r = batch_stddev.detach() / denominator
    d = (batch_mean.detach() - renorm_mean) / denominator
    if "rmin" in clipping:
        r = r.clamp_min(clipping["rmin"])
    if "rmax" in clipping:
        r = r.clamp_max(clipping["rmax"])
    if "dmax" in clipping:
        d = d.clamp(-clipping["dmax"], clipping["dmax"])
    return r.detach(), d.detach()


def batch_renorm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    moving_stddev: Tensor,
    renorm_mean: Tensor,
    renorm_stddev: Tensor,
    *,
    training: bool,
    axis: AxisArg = 1,
    momentum: float | None = 0.99,
    renorm_momentum: float = 0.99,
    renorm_clipping: Mapping[str, float | None] | None = None,
    epsilon: float = 1e-3,
    num_batches_tracked: int | Tensor = 0,
    mask: Tensor | None = None,
    on_nonfinite: NonFinitePolicy = "skip",
    implementation: Implementation = "auto",
    name: str = "batch_norm",
) -> BatchRenormResult:
    r"""Batch renormalization: output and the new statistics; the inputs are not modified.

    See the module docstring for the equations. Training normalizes with the batch
    statistics, corrected by ``r`` and ``d`` (constants in the backward pass), and
    updates all five statistics; inference is plain batch normalization with
    ``moving_mean`` and ``moving_variance`` and returns the statistics unchanged. An
    empty training batch is passed through the inference transform and changes
    nothing; a batch whose statistics are NaN/inf changes nothing (and warns, or
    raises with ``on_nonfinite="raise"``).

    Args:
        x: input, any rank >= 2; float16/bfloat16 are computed in float32.
        gamma, beta: scale and offset per kept index, or None (1 and 0).
        moving_mean, moving_variance: inference statistics, shape of the kept axes.
        moving_stddev: :math:`\sqrt{\text{moving\_variance} + \epsilon}` tracked directly
            (Keras initializes it to ``sqrt(moving_variance)``).
        renorm_mean, renorm_stddev: the statistics ``r`` and ``d`` are measured against.
        training: batch statistics with correction and update (True) or inference.
        axis: kept axis or axes (Keras semantics); default 1 (channel-first).
        momentum: weight of the *old* value for ``moving_mean``/``moving_stddev``
            (Keras convention, 0.99 = PyTorch's 0.01), or None for the cumulative average.
        renorm_momentum: weight of the old value for ``renorm_mean``/``renorm_stddev``, in
            [0, 1]. Unlike ``momentum`` it changes training: too small is noisy, too
            large is stale. Default 0.99 (Keras).
        renorm_clipping: ``{"rmax": ..., "rmin": ..., "dmax": ...}``, each key optional
            (missing = unclipped), or None. The paper's schedule relaxes rmax from 1 to 3
            and dmax from 0 to 5 (see :func:`bnlab.nn.renorm_clipping_schedule`).
        epsilon: added to the variance, > 0; default 1e-3.
        num_batches_tracked: batches already seen; used only when ``momentum`` is None.
        mask: the input's shape without the kept axes; False positions are left out of
            the batch statistics (Keras's ``mask``).
        on_nonfinite: ``"skip"`` or ``"raise"`` for a batch with NaN/inf statistics.
        implementation: how the normalization itself is computed (see
            :func:`bnlab.functional.batch_norm`).
        name: layer name used in error messages.

    Shape:
        - x: ``(N, C, *)`` for ``axis=1``; output has the shape and dtype of ``x``.
        - every statistic, gamma, beta: the sizes of the kept axes, ``(C,)``.

    Raises:
        ValueError: bad shapes/arguments, or training with one value per channel.

    Example:
        >>> C = 3
        >>> stats = [torch.zeros(C), torch.ones(C), torch.ones(C), torch.zeros(C), torch.ones(C)]
        >>> out = batch_renorm(torch.randn(8, C, 4, 4), None, None, *stats, training=True,
        ...                    renorm_clipping={"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0})
        >>> out.output.shape, out.renorm_mean.shape
        (torch.Size([8, 3, 4, 4]), torch.Size([3]))

    Reference: Ioffe, NeurIPS 2017, Algorithm 1; Keras 3 ``BatchNormalization(renorm=True)``.
    """
    kept = kept_axes(axis, x.dim())
    clipping = check_renorm_clipping(renorm_clipping, name=name)
    trace_time_check(_check_renorm_state, moving_mean, moving_stddev, renorm_mean,
                     renorm_stddev, renorm_momentum, name)
    if not training or x.numel() == 0:
        # Inference (and an empty batch, which has no statistics) is plain batch norm.
        y, new_mean, new_var = batch_norm(
            x, gamma, beta, moving_mean, moving_variance, training=training, axis=kept,
            momentum=momentum, epsilon=epsilon, num_batches_tracked=num_batches_tracked,
            mask=mask, on_nonfinite=on_nonfinite, implementation=implementation, name=name,
        )
        return BatchRenormResult(y, new_mean, new_var, moving_stddev, renorm_mean, renorm_stddev)

    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    scratch = torch.zeros(tuple(x.shape[d] for d in kept), dtype=compute, device=x.device)
    core = {"training": True, "axis": kept, "momentum": 0.0, "epsilon": epsilon, "mask": mask,
            "implementation": implementation, "name": name}
    # Pass 1, statistics: with momentum=0.0 the core's "new moving statistics" are exactly
    # the batch's mean and biased variance. The core also checks the batch (one value per
    # channel raises) and warns, or raises, once on non-finite statistics.
    with torch.no_grad():
        _, mean, variance = batch_norm(x.detach(), None, None, scratch, scratch,
                                       on_nonfinite=on_nonfinite, **core)
    skipped = mean is scratch
    if skipped:  # non-finite statistics: still correct the finite channels' output
        mean, variance = _detached_moments(x.detach().to(compute), kept, mask)
    stddev = torch.sqrt(variance + epsilon)
    r, d = renorm_correction(mean, stddev, renorm_mean.to(compute), renorm_stddev.to(compute),
                             epsilon=epsilon, renorm_clipping=clipping)
    # Pass 2, output: (x_hat * r + d) * gamma + beta == x_hat * (r * gamma) + (d * gamma +
    # beta), so the correction folds into the affine parameters of an ordinary batch-norm
    # call: the native kernel and its backward do the work, r and d are constants.
    scale = r if gamma is None else r * gamma
    offset = d if gamma is None else d * gamma
    if beta is not None:
        offset = offset + beta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteStatisticsWarning)  # reported in pass 1
        y, _, _ = batch_norm(x, scale, offset, scratch, scratch, on_nonfinite="skip", **core)
    if skipped:
        return BatchRenormResult(y, moving_mean, moving_variance, moving_stddev, renorm_mean,
                                 renorm_stddev)
    count = 1  # only used for the unbiased correction, which renorm does not apply
    new_mean, new_stddev = update_moving_statistics(
        moving_mean, moving_stddev, mean, stddev, count=count, momentum=momentum,
        num_batches_tracked=num_batches_tracked, check=False,
    )
    new_renorm_mean, new_renorm_stddev = update_moving_statistics(
        renorm_mean, renorm_stddev, mean, stddev, count=count, momentum=renorm_momentum,
        check=False,
    )
    finite = torch.isfinite(mean).all() & torch.isfinite(stddev).all()
    # Keras derives the variance from the stddev; relu guards against rounding below 0.
    derived = torch.relu(new_stddev * new_stddev - epsilon).to(moving_variance.dtype)
    new_var = torch.where(finite, derived, moving_variance)
    return BatchRenormResult(y, new_mean, new_var, new_stddev, new_renorm_mean, new_renorm_stddev)


def _check_renorm_state(
    moving_mean: Tensor, moving_stddev: Tensor, renorm_mean: Tensor, renorm_stddev: Tensor,
    renorm_momentum: float, name: str,
) -> None:
    if isinstance(renorm_momentum, bool) or not (
        isinstance(renorm_momentum, int | float) and 0.0 <= renorm_momentum <= 1.0
    ):
        raise ValueError(
            f"{name}: renorm_momentum must be a number in [0, 1] (weight of the old value); "
            f"got {renorm_momentum!r}"
        )
    for label, t in (("moving_stddev", moving_stddev), ("renorm_mean", renorm_mean),
                     ("renorm_stddev", renorm_stddev)):
        if t.shape != moving_mean.shape:
            raise ValueError(
                f"{name}: {label} has shape {tuple(t.shape)} but moving_mean has "
                f"{tuple(moving_mean.shape)}; every renorm statistic has the kept axes' shape"
            )


def _detached_moments(
    x: Tensor, kept: tuple[int, ...], mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Batch mean and biased variance shaped like the kept axes, without a graph."""
    stat_shape = tuple(x.shape[d] for d in kept)
    if mask is None:
        variance, mean = torch.var_mean(x, dim=reduced_axes(kept, x.dim()), correction=0)
    else:
        _, mean, variance = batch_moments(x, kept, mask)
    return mean.reshape(stat_shape), variance.reshape(stat_shape)
