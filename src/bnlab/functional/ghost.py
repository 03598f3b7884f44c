r"""Ghost batch normalization (Hoffer et al., 2017) as a pure function.

In training the batch of ``N`` samples is split into ``G = N / k`` *ghost
batches* of ``k = virtual_batch_size`` consecutive samples (``x[0:k]``,
``x[k:2k]``, ...), and each is normalized with its own statistics:

.. math::
    y_{n} = \gamma \, \frac{x_{n} - \mu_{g(n)}}{\sqrt{\sigma^2_{g(n)} + \epsilon}} + \beta,
    \qquad g(n) = \lfloor n / k \rfloor

where :math:`\mu_g, \sigma^2_g` are the mean and biased variance of ghost batch
``g`` over every reduced axis. Large-batch training thereby keeps the noise (and
regularization) of small-batch statistics. Inference is plain batch normalization
with the moving statistics; there ghost batches play no role and any batch size works.

**Moving statistics: one update per step with the averages** of the ghost
batches' statistics (tf.keras 2's choice):

.. math::
    m \leftarrow \text{momentum}\cdot m + (1-\text{momentum})\,\tfrac1G\textstyle\sum_g \mu_g,\qquad
    v \leftarrow \text{momentum}\cdot v + (1-\text{momentum})\,\tfrac1G\textstyle\sum_g \sigma^2_g

The mean of the ghost means is the batch mean. The mean of the ghost variances is
the *within*-ghost-batch variance: it leaves out the spread between the ghost
means, i.e. it is the scale each sample was actually normalized with in training,
so inference sees activations of the same size as training did (about
``(M_g - 1) / M_g`` of the full-batch variance for i.i.d. data, ``M_g`` values per
ghost batch and channel). Updating sequentially once per ghost batch, as some
implementations do, would be ``G`` moving-average steps per training step,
i.e. a different effective momentum. With ``unbiased_moving_variance=True`` each
ghost variance is scaled by ``M_g / (M_g - 1)`` before averaging.

Differences from tf.keras 2: tf.keras 2 reshaped the batch to ``(k, N/k, ...)``,
so its ghost batch ``g`` held the *strided* samples ``g, g + G, g + 2G, ...``;
bnlab uses consecutive samples like the paper's reference code. For shuffled data
the two are statistically the same; per sample the outputs differ.

Reference: E. Hoffer, I. Hubara, D. Soudry, "Train longer, generalize better:
closing the generalization gap in large batch training of neural networks",
NeurIPS 2017, Section 4.
"""

from __future__ import annotations

from torch import Tensor

from bnlab.functional.axes import AxisArg, kept_axes
from bnlab.functional.batch_norm import (
    BatchNormResult,
    Implementation,
    NonFinitePolicy,
    batch_norm,
)

__all__ = ["check_virtual_batch_size", "ghost_batch_norm"]


def check_virtual_batch_size(virtual_batch_size: int | None, *, name: str = "batch_norm") -> None:
    """Raise unless ``virtual_batch_size`` is None or a positive int."""
    if virtual_batch_size is None:
        return
    if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) \
            or virtual_batch_size < 1:
        raise ValueError(
            f"{name}: virtual_batch_size must be a positive int (samples per ghost batch) "
            f"or None; got {virtual_batch_size!r}"
        )


def ghost_batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    *,
    virtual_batch_size: int,
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
    r"""Normalize each ghost batch of ``virtual_batch_size`` consecutive samples by itself.

    See the module docstring for the equations and the moving-statistics rule. The
    batch axis is axis 0. ``virtual_batch_size == N`` is exactly
    :func:`bnlab.functional.batch_norm`; so is inference and an empty batch.

    Args:
        x: input ``(N, ...)``, any rank >= 2, batch axis first.
        gamma, beta: scale and offset per kept index, or None.
        moving_mean, moving_variance: moving statistics, shape of the kept axes.
        virtual_batch_size: samples per ghost batch ``k`` (>= 1); in training ``N`` must
            be a multiple of it.
        training: ghost-batch statistics and an update (True) or moving statistics.
        axis: kept axis or axes; must not include the batch axis 0. Default 1.
        momentum: weight of the *old* moving value (Keras convention; 0.99 equals
            PyTorch's 0.01), or None for the cumulative average.
        epsilon: added to the variance, > 0.
        num_batches_tracked: steps already folded in; only used when ``momentum`` is None.
        unbiased_moving_variance: fold in ``M_g/(M_g-1)`` times each ghost variance.
        mask: only where no split happens (inference, or a single ghost batch); a mask
            together with several ghost batches raises.
        on_nonfinite: ``"skip"`` or ``"raise"`` for NaN/inf statistics in any ghost batch.
        implementation: see :func:`bnlab.functional.batch_norm`.
        name: layer name used in error messages.

    Shape:
        - x: ``(N, C, *)`` for ``axis=1``, with ``N = G * virtual_batch_size`` in training.
        - statistics, gamma, beta: the sizes of the kept axes.
        - output: shape and dtype of ``x``.

    Raises:
        ValueError: ``N`` not a multiple of ``virtual_batch_size`` (training), the batch
            axis kept, a ghost batch with one value per channel, a mask with several
            ghost batches, or the core's errors.

    Example:
        >>> x = torch.randn(32, 8, 5, 5)
        >>> y, mm, mv = ghost_batch_norm(x, None, None, torch.zeros(8), torch.ones(8),
        ...                              virtual_batch_size=8, training=True)
        >>> bool(y[:8].mean().abs() < 1e-5)    # each ghost batch is centered by itself
        True
    """
    check_virtual_batch_size(virtual_batch_size, name=name)
    if virtual_batch_size is None:
        raise ValueError(f"{name}: ghost_batch_norm needs a virtual_batch_size; got None")
    kept = kept_axes(axis, x.dim())
    if 0 in kept:
        raise ValueError(
            f"{name}: virtual_batch_size splits the batch axis 0, so axis must not keep it; "
            f"got axis={axis}"
        )
    common = {"axis": kept, "momentum": momentum, "epsilon": epsilon,
              "num_batches_tracked": num_batches_tracked,
              "unbiased_moving_variance": unbiased_moving_variance,
              "on_nonfinite": on_nonfinite, "implementation": implementation, "name": name}
    n = x.shape[0]
    if not training or n == 0 or n == virtual_batch_size:
        # Inference, an empty batch and a single ghost batch are plain batch norm.
        return batch_norm(x, gamma, beta, moving_mean, moving_variance, training=training,
                          mask=mask, **common)
    if n % virtual_batch_size:
        raise ValueError(
            f"{name}: the batch size {n} is not a multiple of virtual_batch_size="
            f"{virtual_batch_size}; use batches of a multiple of {virtual_batch_size} "
            "samples (e.g. drop_last=True) or change virtual_batch_size"
        )
    if mask is not None:
        raise ValueError(
            f"{name}: a mask cannot be combined with virtual_batch_size={virtual_batch_size} "
            f"on a batch of {n} ({n // virtual_batch_size} ghost batches); pass mask=None "
            "or drop virtual_batch_size"
        )
    per_ghost = virtual_batch_size * _numel(
        x.shape[d] for d in range(1, x.dim()) if d not in kept
    )
    if per_ghost <= 1:
        raise ValueError(
            f"{name}: virtual_batch_size={virtual_batch_size} leaves 1 value per channel in "
            f"each ghost batch of input shape {tuple(x.shape)}; use virtual_batch_size >= 2"
        )
    ghosts = n // virtual_batch_size
    if len(kept) == 1:
        return _single_axis(x, gamma, beta, moving_mean, moving_variance, ghosts,
                            virtual_batch_size, kept[0], common)
    return _many_axes(x, gamma, beta, moving_mean, moving_variance, ghosts,
                      virtual_batch_size, kept, common)


def _single_axis(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, moving_mean: Tensor,
    moving_variance: Tensor, ghosts: int, k: int, channel: int, common: dict,
) -> BatchNormResult:
    """Fold the ghost index into the channel axis, ``(G*C)`` channels, one kernel call.

    ``(N, ..., C, ...)`` -> ``(G, k, ..., C, ...)`` -> ``(k, ..., G, C, ...)`` ->
    ``(k, ..., G*C, ...)``: every (ghost batch, channel) pair is one channel of an
    ordinary batch norm, so the native kernel does the work.
    """
    grouped = x.reshape(ghosts, k, *x.shape[1:])            # (G, k, ...)
    moved = grouped.movedim(0, channel)                     # (k, ..., G, C, ...)
    merged_shape = (*moved.shape[:channel], -1, *moved.shape[channel + 2:])
    merged = moved.reshape(merged_shape)                    # (k, ..., G*C, ...)
    tiled = (moving_mean.repeat(ghosts), moving_variance.repeat(ghosts))
    result = batch_norm(merged, _tile(gamma, ghosts), _tile(beta, ghosts), *tiled,
                        training=True, **{**common, "axis": channel})
    y = result.output.reshape(moved.shape).movedim(channel, 0).reshape(x.shape)
    return _averaged(result, y, tiled, moving_mean, moving_variance)


def _many_axes(
    x: Tensor, gamma: Tensor | None, beta: Tensor | None, moving_mean: Tensor,
    moving_variance: Tensor, ghosts: int, k: int, kept: tuple[int, ...], common: dict,
) -> BatchNormResult:
    """Several kept axes: keep the ghost axis too, statistics of shape ``(G, *features)``."""
    grouped = x.reshape(ghosts, k, *x.shape[1:])            # (G, k, ...)
    stat = (ghosts, *moving_mean.shape)
    tiled = (moving_mean.expand(stat), moving_variance.expand(stat))
    result = batch_norm(grouped, _expand(gamma, stat), _expand(beta, stat), *tiled,
                        training=True, **{**common, "axis": (0, *(d + 1 for d in kept))})
    return _averaged(result, result.output.reshape(x.shape), tiled, moving_mean,
                     moving_variance)


def _averaged(
    result: BatchNormResult, y: Tensor, tiled: tuple[Tensor, Tensor], moving_mean: Tensor,
    moving_variance: Tensor,
) -> BatchNormResult:
    """One statistic per channel from the per-ghost updates.

    The update is linear in the batch statistics, so the average of the ``G`` updated
    copies is the update with the averaged ghost statistics. A skipped (non-finite)
    update returns the caller's own tensors, as :func:`batch_norm` does.
    """
    if result.moving_mean is tiled[0]:
        return BatchNormResult(y, moving_mean, moving_variance)
    ghost_shape = (-1, *moving_mean.shape)
    new_mean = result.moving_mean.reshape(ghost_shape).mean(dim=0)
    new_var = result.moving_variance.reshape(ghost_shape).mean(dim=0)
    return BatchNormResult(y, new_mean, new_var)


def _tile(t: Tensor | None, ghosts: int) -> Tensor | None:
    return None if t is None else t.repeat(ghosts)


def _expand(t: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
    return None if t is None else t.expand(shape)


def _numel(sizes) -> int:
    total = 1
    for s in sizes:
        total *= s
    return total
