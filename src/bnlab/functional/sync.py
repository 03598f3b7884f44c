r"""Synchronized batch normalization: batch statistics over every rank of a process group.

With data parallelism each process (rank) sees only its share of the batch.
:func:`sync_batch_norm` normalizes with the statistics of the *whole* batch, the
concatenation of every rank's share, and gives the gradients of that
computation:

1. each rank computes its count :math:`n_r`, mean :math:`\bar x_r` and centred sum
   of squares :math:`M_{2,r}` per channel (float64, two passes);
2. one ``all_gather`` exchanges them; every rank merges them with Chan's formula
   (:func:`bnlab.functional.moments.stack_merge`), in the same order, so the
   mean, variance and new moving statistics are bitwise identical on all ranks;
3. the output is :math:`y = \gamma \hat x + \beta`, :math:`\hat x = (x - \mu)/\sqrt{\sigma^2+\epsilon}`;
4. backward exchanges :math:`\sum g` and :math:`\sum g \hat x` per channel and forms

   .. math::
       \frac{\partial L}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma^2+\epsilon}}
       \Big(g_i - \frac{w_i}{N}\sum_j g_j - \frac{w_i \hat x_i}{N}\sum_j g_j \hat x_j\Big)

   with sums over all ranks, :math:`N = \sum_r n_r` and :math:`w_i` the mask (1
   without one). ``gamma``/``beta`` get this rank's share of their gradient (like
   ``torch.nn.SyncBatchNorm``); data-parallel training sums or averages them
   across ranks as it does for every other parameter.

A rank with an empty batch takes part with count 0. Every rank must call the
layer (forward, and backward when the input needs a gradient) the same number of
times in the same order; a rank that does not leaves the others waiting, which
is why each exchange waits at most ``timeout`` seconds and then raises
:class:`SynchronizationError` naming the layer. Each exchange also carries a tag
derived from the layer's name, so two ranks running *different* layers of the
same width are caught instead of mixing their statistics.

Outside an initialized process group, or in a group of one, and in inference,
:func:`sync_batch_norm` is exactly :func:`bnlab.functional.batch_norm`.
"""

from __future__ import annotations

import datetime
import zlib
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from bnlab.functional.axes import AxisArg, broadcast_shape, kept_axes, reduced_axes, stat_shape
from bnlab.functional.batch_norm import (
    BatchNormResult,
    NonFinitePolicy,
    batch_norm,
    check_arguments,
    update_moving_statistics,
)
from bnlab.functional.moments import moments_of, stack_merge

__all__ = ["SynchronizationError", "sync_batch_norm", "world_size"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class SynchronizationError(RuntimeError):
    """A synchronized layer did not get every rank's contribution (timeout, mismatch)."""


def world_size(group: Any = None) -> int:
    """Ranks in ``group`` (default: the world); 1 when no process group is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def sync_batch_norm(
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
    group: Any = None,
    timeout: float | None = None,
    name: str = "batch_norm",
) -> BatchNormResult:
    r"""Batch normalization whose training statistics cover every rank of ``group``.

    .. math::
        y = \gamma \, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    In training, :math:`\mu` and the *biased* :math:`\sigma^2` are taken over the
    reduced axes of the concatenation of every rank's ``x`` (ranks weighted by
    their number of values, an empty rank counting 0). The moving statistics
    update is :func:`bnlab.functional.batch_norm`'s (Keras momentum: weight of the
    *old* value), fed with those global statistics; the unbiased variant uses the
    global count. In inference, or when there is no process group or only one
    rank, this *is* :func:`bnlab.functional.batch_norm`.

    Args:
        x, gamma, beta, moving_mean, moving_variance, training, axis, momentum,
            epsilon, num_batches_tracked, unbiased_moving_variance, mask,
            on_nonfinite, name: as in :func:`bnlab.functional.batch_norm`.
        group: the ``torch.distributed`` process group; None is the world.
        timeout: seconds to wait for the other ranks in each exchange (forward
            and backward); None waits as long as the process group's own timeout
            (30 minutes by default). Must be > 0.

    Shape: as :func:`bnlab.functional.batch_norm`; ranks may have different batch
    sizes (including 0) but the same sizes on the kept axes.

    Raises:
        SynchronizationError: a rank did not take part within ``timeout`` or ran a
            different synchronized layer; the process group is unusable after it.
        ValueError: as :func:`bnlab.functional.batch_norm`; the "one value per
            channel" check counts the values of all ranks together.

    Example (run on every rank after ``dist.init_process_group``)::

        y, mm, mv = sync_batch_norm(x, gamma, beta, mm, mv, training=True, timeout=60)

    Reference: Peng et al., "MegDet: A Large Mini-Batch Object Detector" (CVPR 2018),
    cross-GPU batch normalization.
    """
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"{name}: timeout must be a number of seconds > 0 or None; got {timeout!r}")
    if not training or world_size(group) <= 1:
        return batch_norm(
            x, gamma, beta, moving_mean, moving_variance, training=training, axis=axis,
            momentum=momentum, epsilon=epsilon, num_batches_tracked=num_batches_tracked,
            unbiased_moving_variance=unbiased_moving_variance, mask=mask,
            on_nonfinite=on_nonfinite, name=name,
        )
    kept = kept_axes(axis, x.dim())
    check_arguments(x, gamma, beta, moving_mean, moving_variance, kept, momentum, epsilon,
                     mask, "auto", on_nonfinite, name)
    return _synchronized_training(
        x, gamma, beta, moving_mean, moving_variance, kept=kept, momentum=momentum,
        epsilon=epsilon, num_batches_tracked=num_batches_tracked,
        unbiased_moving_variance=unbiased_moving_variance, mask=mask, on_nonfinite=on_nonfinite,
        link=_Link(group, timeout, name),
    )


def _synchronized_training(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    *,
    kept: tuple[int, ...],
    momentum: float | None,
    epsilon: float,
    num_batches_tracked: int | Tensor,
    unbiased_moving_variance: bool,
    mask: Tensor | None,
    on_nonfinite: NonFinitePolicy,
    link: _Link,
) -> BatchNormResult:
    """The training path with collectives (also in a group of one, for gradcheck)."""
    name = link.name
    compute = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
    stat = stat_shape(x.shape, kept)
    local = moments_of(x, kept, mask)
    # One exchange: [tag, count, mean (C), M2 (C)] per rank, float64.
    payload = torch.cat([link.tag(x.device), local.count.reshape(1),
                         local.mean.reshape(-1), local.m2.reshape(-1)])
    gathered = link.all_gather(payload, "batch statistics")  # (world, 2 + 2C)
    channels = local.mean.numel()
    means = gathered[:, 2:2 + channels].reshape(-1, *stat)
    m2s = gathered[:, 2 + channels:].reshape(-1, *stat)
    total = stack_merge(gathered[:, 1], means, m2s)
    count = int(total.count.item())
    if count == 0:
        # No rank has data: like an empty batch, pass through the inference transform.
        return batch_norm(x, gamma, beta, moving_mean, moving_variance, training=False,
                          axis=kept, epsilon=epsilon, name=name)
    if mask is None and count <= 1:
        raise ValueError(
            f"{name}: training needs more than 1 value per channel to compute batch "
            f"statistics; all {world_size(link.group)} ranks together gave {count} (this rank: input "
            f"shape {tuple(x.shape)} with axis={kept}). Use larger batches (e.g. "
            "drop_last=True in the DataLoader) or call model.eval() to normalize with the "
            "moving statistics."
        )
    variance = total.variance()
    inv_std = torch.rsqrt(variance + epsilon)
    weight = None if mask is None else _broadcast_mask(mask, x, kept).to(compute)
    y = _SyncNormalize.apply(
        x.to(compute),
        None if gamma is None else gamma.to(compute),
        None if beta is None else beta.to(compute),
        total.mean.to(compute), inv_std.to(compute), weight, total.count, kept, link,
    )
    new_mean, new_var = update_moving_statistics(
        moving_mean, moving_variance, total.mean, variance, count=total.count,
        momentum=momentum, num_batches_tracked=num_batches_tracked,
        unbiased=unbiased_moving_variance, on_nonfinite=on_nonfinite, name=name,
    )
    return BatchNormResult(y.to(x.dtype), new_mean, new_var)


class _Link:
    """One layer's connection to the group: collectives with a timeout and a tag check."""

    def __init__(self, group: Any, timeout: float | None, name: str) -> None:
        self.group = group
        self.timeout = timeout
        self.name = name
        # float64 holds integers below 2**53 exactly; crc32 is below 2**32.
        self._tag = float(zlib.crc32(name.encode("utf-8")))

    def tag(self, device: torch.device) -> Tensor:
        return torch.tensor([self._tag], dtype=torch.float64, device=device)

    def all_gather(self, payload: Tensor, what: str) -> Tensor:
        """Every rank's ``payload`` stacked in rank order, ``(world, len)``."""
        world = dist.get_world_size(self.group)
        rank = dist.get_rank(self.group)
        out = [torch.empty_like(payload) for _ in range(world)]
        work = dist.all_gather(out, payload, group=self.group, async_op=True)
        try:
            if self.timeout is None:
                work.wait()
            else:
                work.wait(timeout=datetime.timedelta(seconds=self.timeout))
        except RuntimeError as error:
            within = ("within the process group's timeout" if self.timeout is None
                      else f"within sync_timeout={self.timeout:g} s")
            raise SynchronizationError(
                f"{self.name}: synchronized batch normalization (rank {rank} of {world}) did "
                f"not receive every rank's {what} {within} ({_first_line(error)}). Every rank "
                "must run every synchronized layer, forward and backward, the same number of "
                "times in the same order; a rank that skips it, takes another branch or has "
                "stopped leaves the others waiting. Fix the control flow, or freeze the layer "
                "(eval mode) where ranks differ; this process group is unusable from now on."
            ) from error
        gathered = torch.stack(out)
        tags = gathered[:, 0]
        if not bool((tags == self._tag).all()):
            others = [r for r in range(world) if float(tags[r]) != self._tag]
            raise SynchronizationError(
                f"{self.name}: rank {rank} exchanged {what} with rank(s) {others}, which ran a "
                "different synchronized layer at that point; every rank must run the same "
                "synchronized layers in the same order (and give distinct layers distinct names)"
            )
        return gathered


class _SyncNormalize(torch.autograd.Function):
    """``y = gamma * (x - mean) * inv_std + beta`` with the global-statistics backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        gamma: Tensor | None,
        beta: Tensor | None,
        mean: Tensor,
        inv_std: Tensor,
        weight: Tensor | None,
        count: Tensor,
        kept: tuple[int, ...],
        link: _Link,
    ) -> Tensor:
        shape = broadcast_shape(x.shape, kept)
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        y = x_hat
        if gamma is not None:
            y = y * gamma.reshape(shape)
        if beta is not None:
            y = y + beta.reshape(shape)
        ctx.save_for_backward(x, gamma, mean, inv_std, weight)
        ctx.count = float(count)
        ctx.kept = kept
        ctx.link = link
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, gamma, mean, inv_std, weight = ctx.saved_tensors
        kept: tuple[int, ...] = ctx.kept
        shape = broadcast_shape(x.shape, kept)
        dims = reduced_axes(kept, x.dim())
        x_hat = (x - mean.reshape(shape)) * inv_std.reshape(shape)
        sum_g = grad_y.sum(dim=dims)                    # this rank's dL/dbeta
        sum_g_xhat = (grad_y * x_hat).sum(dim=dims)     # this rank's dL/dgamma
        need_x, need_gamma, need_beta = ctx.needs_input_grad[:3]
        grad_x = None
        if need_x:
            link: _Link = ctx.link
            payload = torch.cat([link.tag(x.device), sum_g.reshape(-1).to(torch.float64),
                                 sum_g_xhat.reshape(-1).to(torch.float64)])
            gathered = link.all_gather(payload, "gradient sums")
            channels = sum_g.numel()
            total_g = gathered[:, 1:1 + channels].sum(dim=0).reshape(sum_g.shape)
            total_g_xhat = gathered[:, 1 + channels:].sum(dim=0).reshape(sum_g.shape)
            n = ctx.count
            mean_g = (total_g / n).to(x.dtype).reshape(shape)
            mean_g_xhat = (total_g_xhat / n).to(x.dtype).reshape(shape)
            correction = mean_g + x_hat * mean_g_xhat
            if weight is not None:
                correction = correction * weight
            scale = inv_std if gamma is None else gamma * inv_std
            grad_x = scale.reshape(shape) * (grad_y - correction)
        grad_gamma = sum_g_xhat if need_gamma and gamma is not None else None
        grad_beta = sum_g if need_beta else None
        return grad_x, grad_gamma, grad_beta, None, None, None, None, None, None


def _broadcast_mask(mask: Tensor, x: Tensor, kept: tuple[int, ...]) -> Tensor:
    for d in kept:
        mask = mask.unsqueeze(d)
    return mask.expand(x.shape).bool()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
