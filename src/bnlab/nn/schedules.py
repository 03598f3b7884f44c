"""Warm-up of batch renormalization's clipping, as in the paper.

Ioffe (2017), Section 4: "we used rmax = 1, dmax = 0 (i.e. simply batchnorm) for
the first 5000 training steps, after which these were gradually relaxed to reach
rmax = 3 at 40k steps, and dmax = 5 at 25k steps." Early on the moving
statistics are poor estimates, so the corrections are held at r = 1, d = 0;
later they are allowed to pull the training output towards the moving statistics.

:func:`renorm_clipping_schedule` gives the clipping for one step (linear
relaxation, ``rmin = 1 / rmax``); :func:`set_renorm_clipping` writes a clipping
into every renorm layer of a model; :class:`RenormClippingScheduler` does both
once per optimizer step, like a learning-rate scheduler.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8),
    ...                             BatchNormalization(8, renorm=True))
    >>> scheduler = RenormClippingScheduler(model)     # paper's defaults
    >>> for step in range(3):
    ...     loss = model(torch.randn(16, 4)).square().mean()
    ...     loss.backward()                            # optimizer.step() here
    ...     clipping = scheduler.step()
    >>> renorm_clipping_schedule(22_500)
    {'rmax': 2.0, 'rmin': 0.5, 'dmax': 4.375}
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["RenormClippingScheduler", "renorm_clipping_schedule", "renorm_layers",
           "set_renorm_clipping"]


def renorm_clipping_schedule(
    step: int,
    *,
    warmup_steps: int = 5000,
    rmax: float = 3.0,
    dmax: float = 5.0,
    rmax_steps: int = 40_000,
    dmax_steps: int = 25_000,
) -> dict[str, float]:
    r"""The renorm clipping for training step ``step`` (0-based), the paper's warm-up.

    .. math::
        r_{max}(t) = 1 + (r_{max} - 1)\,\operatorname{clip}\Big(\frac{t - t_w}{T_r - t_w}, 0, 1\Big),
        \quad r_{min} = 1 / r_{max}(t),\quad
        d_{max}(t) = d_{max}\,\operatorname{clip}\Big(\frac{t - t_w}{T_d - t_w}, 0, 1\Big)

    Plain batch normalization (r = 1, d = 0) for the first ``warmup_steps`` steps, then
    linear relaxation reaching ``rmax`` at step ``rmax_steps`` and ``dmax`` at
    ``dmax_steps``.

    Args:
        step: optimizer steps taken so far, >= 0.
        warmup_steps: steps held at r = 1, d = 0; default 5000 (paper).
        rmax: final rmax, >= 1; default 3 (paper).
        dmax: final dmax, >= 0; default 5 (paper).
        rmax_steps: step at which ``rmax`` is reached, >= warmup_steps; default 40 000.
        dmax_steps: step at which ``dmax`` is reached, >= warmup_steps; default 25 000.

    Returns:
        ``{"rmax": .., "rmin": .., "dmax": ..}``, ready for ``renorm_clipping``.

    Raises:
        ValueError: a negative step, rmax < 1, dmax < 0, or an end step before the warm-up.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"renorm_clipping_schedule: step must be an int >= 0; got {step!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"renorm_clipping_schedule: warmup_steps must be an int >= 0; got {warmup_steps!r}")
    if not (isinstance(rmax, int | float) and math.isfinite(rmax) and rmax >= 1):
        raise ValueError(f"renorm_clipping_schedule: rmax must be a finite number >= 1; got {rmax!r}")
    if not (isinstance(dmax, int | float) and math.isfinite(dmax) and dmax >= 0):
        raise ValueError(f"renorm_clipping_schedule: dmax must be a finite number >= 0; got {dmax!r}")
    for label, end in (("rmax_steps", rmax_steps), ("dmax_steps", dmax_steps)):
        if not isinstance(end, int) or end < warmup_steps:
            raise ValueError(
                f"renorm_clipping_schedule: {label} must be an int >= warmup_steps="
                f"{warmup_steps}; got {end!r}"
            )
    r = 1.0 + (float(rmax) - 1.0) * _progress(step, warmup_steps, rmax_steps)
    d = float(dmax) * _progress(step, warmup_steps, dmax_steps)
    return {"rmax": r, "rmin": 1.0 / r, "dmax": d}


def _progress(step: int, start: int, end: int) -> float:
    """0 before ``start``, 1 from ``end`` on, linear in between."""
    if step <= start:
        return 0.0
    if step >= end:
        return 1.0
    return (step - start) / (end - start)


def renorm_layers(model: nn.Module) -> list[BatchNormalization]:
    """Every bnlab layer in ``model`` (itself included) with ``renorm=True``."""
    return [m for m in model.modules() if isinstance(m, BatchNormalization) and m.renorm]


def set_renorm_clipping(model: nn.Module, clipping: dict[str, float] | None) -> int:
    """Write ``clipping`` into every renorm layer of ``model``; returns how many."""
    layers = renorm_layers(model)
    for layer in layers:
        layer.renorm_clipping = clipping
    return len(layers)


class RenormClippingScheduler:
    """Set the paper's renorm clipping on a model's renorm layers, once per step.

    Call :meth:`step` after each ``optimizer.step()``. Construction applies the clipping
    for step ``last_step + 1`` (0 for a fresh run), so the first training step already
    runs with rmax = 1, dmax = 0. ``state_dict``/``load_state_dict`` resume the count.

    Args:
        model: the model whose renorm layers are scheduled (at least one required).
        last_step: index of the last step taken; -1 (default) for a fresh run.
        **schedule: keyword arguments of :func:`renorm_clipping_schedule`
            (``warmup_steps``, ``rmax``, ``dmax``, ``rmax_steps``, ``dmax_steps``).

    Raises:
        ValueError: the model has no layer with ``renorm=True``, or a bad schedule.
    """

    def __init__(self, model: nn.Module, *, last_step: int = -1, **schedule: Any) -> None:
        if not renorm_layers(model):
            raise ValueError(
                "RenormClippingScheduler: the model has no BatchNormalization with "
                "renorm=True; build its BN layers with renorm=True or drop the scheduler"
            )
        renorm_clipping_schedule(0, **schedule)  # validate the schedule now
        self.model = model
        self.schedule = dict(schedule)
        self.last_step = last_step
        self._apply()

    @property
    def clipping(self) -> dict[str, float]:
        """The clipping for the next training step."""
        return renorm_clipping_schedule(self.last_step + 1, **self.schedule)

    def step(self) -> dict[str, float]:
        """Advance one step and apply the new clipping; returns it."""
        self.last_step += 1
        return self._apply()

    def _apply(self) -> dict[str, float]:
        clipping = self.clipping
        set_renorm_clipping(self.model, clipping)
        return clipping

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "schedule": dict(self.schedule)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"])
        self.schedule = dict(state["schedule"])
        self._apply()
