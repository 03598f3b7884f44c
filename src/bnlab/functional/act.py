r"""Batch normalization followed by an activation, in one call.

``batch_norm_act`` = :func:`bnlab.functional.batch_norm`, then the activation
applied **in place on the fresh normalized output** whenever that is safe:

- the activation's backward needs only its *output* — relu, leaky_relu with
  ``negative_slope >= 0``, sigmoid, tanh — and
- the normalization's backward does not need its output (true for every path of
  the core: the native kernel saves the input and the per-channel statistics;
  autograd's version counters would raise otherwise, never silently mis-compute).

gelu and silu need their input in the backward, so they run out of place while
gradients are being recorded (silu in place otherwise, e.g. under
``torch.no_grad()``; PyTorch has no in-place gelu). In place saves one activation-sized tensor per layer and
one pass over memory; it is what makes BN + ReLU as cheap as BN alone. Under
``torch.jit.trace`` every activation runs out of place, so that the recorded graph
does not depend on whether gradients were being recorded (the trace's check runs the
model again without them).

Activations (lowercase names, Keras defaults where Keras and PyTorch differ):

=============  ==========================================  ==========================
name           :math:`f(y)`                                ``activation_kwargs``
=============  ==========================================  ==========================
relu           :math:`\max(y, 0)`                          —
leaky_relu     :math:`y` if :math:`y>0` else :math:`a y`   ``negative_slope`` (0.2)
sigmoid        :math:`1/(1+e^{-y})`                        —
tanh           :math:`\tanh y`                             —
gelu           :math:`y\,\Phi(y)`                          ``approximate`` ("none")
silu           :math:`y/(1+e^{-y})`                        —
=============  ==========================================  ==========================

``leaky_relu``'s default slope 0.2 is Keras's (PyTorch's is 0.01); ``gelu`` is
the exact erf form unless ``approximate="tanh"`` (Keras's ``approximate=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnlab.functional.batch_norm import BatchNormResult, batch_norm

__all__ = ["ACTIVATIONS", "ActivationName", "activate", "activation_module",
           "batch_norm_act", "check_activation", "list_activations"]

ActivationName = Literal["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]


@dataclass(frozen=True)
class _Activation:
    """One activation: how to apply it out of place / in place, and its options."""

    apply: Callable[..., Tensor]
    apply_: Callable[..., Tensor] | None  # None: PyTorch has no in-place form
    module: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    # Whether the in-place form has a backward that needs only the output.
    result_backward: Callable[[dict[str, Any]], bool] = lambda kwargs: True


ACTIVATIONS: dict[str, _Activation] = {
    "relu": _Activation(torch.relu, torch.relu_, lambda: nn.ReLU()),
    "leaky_relu": _Activation(
        lambda y, negative_slope: F.leaky_relu(y, negative_slope),
        lambda y, negative_slope: F.leaky_relu_(y, negative_slope),
        lambda negative_slope: nn.LeakyReLU(negative_slope),
        {"negative_slope": 0.2},
        # PyTorch's in-place leaky_relu backward rejects negative slopes.
        lambda kwargs: kwargs["negative_slope"] >= 0,
    ),
    "sigmoid": _Activation(torch.sigmoid, torch.sigmoid_, lambda: nn.Sigmoid()),
    "tanh": _Activation(torch.tanh, torch.tanh_, lambda: nn.Tanh()),
    "gelu": _Activation(
        lambda y, approximate: F.gelu(y, approximate=approximate),
        None,
        lambda approximate: nn.GELU(approximate=approximate),
        {"approximate": "none"},
        lambda kwargs: False,
    ),
    "silu": _Activation(F.silu, lambda y: F.silu(y, inplace=True), lambda: nn.SiLU(),
                        result_backward=lambda kwargs: False),
}


def list_activations() -> list[str]:
    """Names accepted by :func:`activate` and :class:`bnlab.nn.BatchNormAct`, sorted."""
    return sorted(ACTIVATIONS)


def check_activation(
    activation: str, activation_kwargs: Mapping[str, Any] | None = None, *,
    name: str = "batch_norm_act",
) -> dict[str, Any]:
    """Validate an activation name and its options; returns the options with defaults.

    Raises:
        ValueError: unknown name (lists the valid ones), unknown option (lists the
            allowed ones) or a bad option value.
    """
    if not isinstance(activation, str) or activation.lower() not in ACTIVATIONS:
        raise ValueError(
            f"{name}: unknown activation {activation!r}; choose from: "
            f"{', '.join(list_activations())}"
        )
    spec = ACTIVATIONS[activation.lower()]
    given = dict(activation_kwargs or {})
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise ValueError(
            f"{name}: activation {activation!r} takes no option(s) {unknown}; allowed: {allowed}"
        )
    kwargs = {**spec.defaults, **given}
    if "negative_slope" in kwargs:
        slope = kwargs["negative_slope"]
        if isinstance(slope, bool) or not isinstance(slope, int | float):
            raise ValueError(f"{name}: negative_slope must be a number; got {slope!r}")
        kwargs["negative_slope"] = float(slope)
    if "approximate" in kwargs:
        # Keras spells it as a bool, PyTorch as a string.
        approximate = {True: "tanh", False: "none"}.get(kwargs["approximate"],
                                                         kwargs["approximate"])
        if approximate not in ("none", "tanh"):
            raise ValueError(
                f"{name}: gelu approximate must be 'none', 'tanh' or a bool; "
                f"got {kwargs['approximate']!r}"
            )
        kwargs["approximate"] = approximate
    return kwargs


def activate(
    y: Tensor, activation: str, activation_kwargs: Mapping[str, Any] | None = None, *,
    inplace: bool = False,
) -> Tensor:
    """Apply ``activation`` to ``y``; with ``inplace=True``, overwrite ``y`` where safe.

    ``inplace=True`` is a promise by the caller that nothing else reads ``y`` (a fresh
    output); it is honoured only when the backward pass does not need ``y``'s old
    values (see the module docstring), else the activation runs out of place.
    """
    kwargs = check_activation(activation, activation_kwargs)
    spec = ACTIVATIONS[activation.lower()]
    recording = torch.is_grad_enabled() and y.requires_grad
    if (
        inplace
        and spec.apply_ is not None
        and (not recording or spec.result_backward(kwargs))
        and not torch.jit.is_tracing()
    ):
        return spec.apply_(y, **kwargs)
    return spec.apply(y, **kwargs)


def activation_module(
    activation: str, activation_kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """The ``torch.nn`` module computing the same activation (e.g. for folding BN away)."""
    kwargs = check_activation(activation, activation_kwargs)
    return ACTIVATIONS[activation.lower()].module(**kwargs)


def batch_norm_act(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    moving_mean: Tensor,
    moving_variance: Tensor,
    *,
    activation: ActivationName | str = "relu",
    activation_kwargs: Mapping[str, Any] | None = None,
    **batch_norm_kwargs: Any,
) -> BatchNormResult:
    r"""``f(batch_norm(x, ...))`` with the activation applied in place where safe.

    .. math::
        y = f\Big(\gamma \, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta\Big)

    Every keyword of :func:`bnlab.functional.batch_norm` (``training``, ``axis``,
    ``momentum``, ``epsilon``, ``mask``, ...) is passed through unchanged; the moving
    statistics are those of the normalization (the activation does not affect them).

    Args:
        activation: one of :func:`list_activations`; default ``"relu"``.
        activation_kwargs: ``{"negative_slope": a}`` for leaky_relu (default 0.2),
            ``{"approximate": "tanh"}`` for gelu (default ``"none"``); else empty.

    Returns:
        ``BatchNormResult(output, moving_mean, moving_variance)``.

    Example:
        >>> x = torch.randn(8, 3, 4, 4)
        >>> y, mm, mv = batch_norm_act(x, None, None, torch.zeros(3), torch.ones(3),
        ...                            training=True, activation="relu")
        >>> bool((y >= 0).all())
        True
    """
    kwargs = check_activation(activation, activation_kwargs)
    result = batch_norm(x, gamma, beta, moving_mean, moving_variance, **batch_norm_kwargs)
    return result._replace(output=activate(result.output, activation, kwargs, inplace=True))
