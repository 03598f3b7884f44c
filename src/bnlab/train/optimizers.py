"""Optimizers with Keras 3's names, defaults and update equations, as ``torch.optim`` optimizers.

PyTorch's built-in optimizers differ from Keras's in small ways that change results:

========  ==============================================  =====================================
name      Keras 3 update (what we implement)              ``torch.optim`` difference
========  ==============================================  =====================================
sgd       ``v = m*v - lr*g;  w += v``                     same when ``lr`` is constant
          nesterov: ``w += m*v - lr*g``                   (torch keeps ``v/(-lr)``)
adam      ``a = lr*sqrt(1-b2^t)/(1-b1^t)``                epsilon is added to
          ``w -= a*m / (sqrt(v) + eps)``                  ``sqrt(v)/sqrt(1-b2^t)``;
                                                          default eps 1e-8, not 1e-7
rmsprop   ``w -= lr*g / sqrt(v + eps)``                   epsilon *outside* the sqrt,
          (``v - mean_g^2 + eps`` when centered)          default rho 0.99 and eps 1e-8
========  ==============================================  =====================================

Every optimizer here reproduces ``keras.optimizers.<Name>`` step for step (tested against
Keras 3 on the torch backend). Only the arguments listed in each class are accepted;
Keras's generic ones (``weight_decay``, ``clipnorm``, EMA, ...) are not implemented.

Example::

    opt = get_optimizer("adam", model.parameters(), {"learning_rate": 1e-3})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "RMSprop",
    "get_optimizer",
    "list_optimizers",
    "validate_optimizer_args",
]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _check_number(
    opt: str, name: str, value: object, *, low: float, high: float | None, low_open: bool = False
) -> float:
    """Return ``value`` as float, or raise a one-line ValueError/TypeError naming the range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{opt}: {name} must be a number; got {value!r} of type {type(value).__name__}")
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = high is not None and v > high
    if not math.isfinite(v) or too_low or too_high:
        lo = "(" if low_open else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise ValueError(f"{opt}: {name} must be in {lo}{low}, {hi}; got {value!r}")
    return v


def _adam_step_size(lr: float, beta_1: float, beta_2: float, t: int, dtype: torch.dtype) -> float:
    """``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`` computed in ``dtype`` as Keras does.

    Keras casts the betas to the variable dtype before taking powers; in float32 0.999
    becomes 0.99900001, which moves ``1 - beta_2^t`` by ~1e-5 relative. Doing the same
    keeps our weights equal to Keras's to rounding. NumPy scalars do the float32/float64
    arithmetic without the cost of creating tensors every step.
    """
    np_dtype = _NUMPY_FLOATS.get(dtype)
    if np_dtype is None:  # float16/bfloat16: let torch round
        one = torch.ones((), dtype=dtype)
        step = torch.tensor(float(t), dtype=dtype)
        b1_t = torch.pow(torch.tensor(beta_1, dtype=dtype), step)
        b2_t = torch.pow(torch.tensor(beta_2, dtype=dtype), step)
        return (torch.tensor(lr, dtype=dtype) * torch.sqrt(one - b2_t) / (one - b1_t)).item()
    one, step = np_dtype(1.0), np_dtype(t)
    b1_t = np_dtype(beta_1) ** step
    b2_t = np_dtype(beta_2) ** step
    return float(np_dtype(lr) * np.sqrt(one - b2_t) / (one - b1_t))


_NUMPY_FLOATS: dict[torch.dtype, type[np.floating]] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
}


def _check_bool(opt: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{opt}: {name} must be true or false; got {value!r}")
    return value


def _torch_keys(args: dict[str, Any]) -> dict[str, Any]:
    """Keras argument names with ``learning_rate`` stored as PyTorch's ``lr``."""
    return {("lr" if k == "learning_rate" else k): v for k, v in args.items()}


class _KerasOptimizer(torch.optim.Optimizer):
    """Shared plumbing: parameter groups checked with the optimizer's own validator.

    Parameter groups take Keras's argument names, except that the learning rate is stored
    under PyTorch's key ``"lr"`` so that ``torch.optim.lr_scheduler`` schedulers work; a
    group given to the constructor may say ``learning_rate`` or ``lr``.

    ``add_param_group`` and ``zero_grad`` are our own (same behaviour as
    ``torch.optim.Optimizer``'s) because PyTorch's versions import ``torch._dynamo`` on
    first use, which costs seconds in every fresh process (each worker of a study).
    """

    _name: str

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"{self._name}: a parameter group must be a dict; got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError(f"{self._name}: parameters must be in an ordered collection (list), not a set")
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{self._name}: can only optimize tensors; got {type(p).__name__}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError(f"{self._name}: cannot optimize a non-leaf tensor; pass the model's parameters")
        seen = {id(q) for group in self.param_groups for q in group["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in seen for p in params):
            raise ValueError(f"{self._name}: a parameter appears more than once; pass each parameter once")
        options = {k: v for k, v in param_group.items() if k != "params"}
        if "lr" in options:
            if "learning_rate" in options:
                raise ValueError(f"{self._name}: a parameter group gives both lr and learning_rate; give one")
            options["learning_rate"] = options.pop("lr")
        defaults = {("learning_rate" if k == "lr" else k): v for k, v in self.defaults.items()}
        args = validate_optimizer_args(self._name, {**defaults, **options})
        self.param_groups.append({"params": params, "lr": args.pop("learning_rate"), **args})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()


class SGD(_KerasOptimizer):
    """Stochastic gradient descent with Keras's momentum convention.

    Equation (per parameter ``w`` with gradient ``g``, velocity ``v`` starting at 0)::

        momentum == 0:   w <- w - lr * g
        otherwise:       v <- momentum * v - lr * g
                         w <- w + v                       (nesterov=False)
                         w <- w + momentum * v - lr * g   (nesterov=True)

    Args:
        params: parameters or parameter groups, as for any ``torch.optim`` optimizer.
        learning_rate: step size ``lr`` > 0. Default 0.01 (Keras).
        momentum: velocity decay in [0, 1]. Default 0.0.
        nesterov: use Nesterov momentum. Default False.

    Raises:
        ValueError / TypeError: an argument outside its range or of the wrong type.
    """

    _name = "sgd"

    def __init__(
        self,
        params: Params,
        learning_rate: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = _validate_sgd(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
        super().__init__(params, _torch_keys(defaults))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            lr, momentum = group["lr"], group["momentum"]
            if momentum == 0.0:
                torch._foreach_add_(params, grads, alpha=-lr)
                continue
            bufs = []
            for p in params:
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                bufs.append(state["velocity"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=-lr)
            if group["nesterov"]:
                torch._foreach_add_(params, grads, alpha=-lr)
                torch._foreach_add_(params, bufs, alpha=momentum)
            else:
                torch._foreach_add_(params, bufs)
        return loss


class Adam(_KerasOptimizer):
    """Adam with Keras 3's epsilon placement.

    Equation (step ``t`` = 1, 2, ...; ``m``, ``v`` start at 0)::

        m <- beta_1 * m + (1 - beta_1) * g
        v <- beta_2 * v + (1 - beta_2) * g^2
        v_hat <- max(v_hat, v)  if amsgrad else v
        a = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        w <- w - a * m / (sqrt(v_hat) + epsilon)

    Unlike ``torch.optim.Adam``, epsilon is added to ``sqrt(v)`` *before* the bias
    correction of ``v`` (the "epsilon hat" of the Adam paper), so the two differ while
    ``sqrt(v)`` is of the order of epsilon.

    Args:
        params: parameters or parameter groups.
        learning_rate: ``lr`` > 0. Default 0.001.
        beta_1: decay of the first moment in [0, 1). Default 0.9.
        beta_2: decay of the second moment in [0, 1). Default 0.999.
        epsilon: > 0. Default 1e-7 (Keras; PyTorch uses 1e-8).
        amsgrad: use the running maximum of ``v``. Default False.

    Raises:
        ValueError / TypeError: an argument outside its range or of the wrong type.
    """

    _name = "adam"

    def __init__(
        self,
        params: Params,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
    ) -> None:
        defaults = _validate_adam(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
        )
        super().__init__(params, _torch_keys(defaults))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            b1, b2, eps = group["beta_1"], group["beta_2"], group["epsilon"]
            ms, vs, vhats = [], [], []
            for p in params:
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["v_hat"] = torch.zeros_like(p)
                state["step"] += 1
                ms.append(state["m"])
                vs.append(state["v"])
                if group["amsgrad"]:
                    vhats.append(state["v_hat"])
            # All parameters of a group step together, so they share t.
            t = self.state[params[0]]["step"]
            alpha = _adam_step_size(group["lr"], b1, b2, t, params[0].dtype)
            # Same operation order as Keras's torch backend, so results agree to rounding.
            torch._foreach_mul_(ms, b1)
            torch._foreach_add_(ms, grads, alpha=1.0 - b1)
            torch._foreach_mul_(vs, b2)
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - b2)
            if group["amsgrad"]:
                torch._foreach_maximum_(vhats, vs)
                vs = vhats
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, eps)
            torch._foreach_add_(params, torch._foreach_div(torch._foreach_mul(ms, alpha), denom), alpha=-1.0)
        return loss


class RMSprop(_KerasOptimizer):
    """RMSprop with Keras 3's epsilon placement (inside the square root).

    Equation (``v``, ``mean_g``, ``buf`` start at 0)::

        v <- rho * v + (1 - rho) * g^2
        mean_g <- rho * mean_g + (1 - rho) * g              (centered only)
        d = sqrt(v - mean_g^2 + epsilon)  if centered else sqrt(v + epsilon)
        momentum == 0:  w <- w - lr * g / d
        otherwise:      buf <- momentum * buf + lr * g / d;  w <- w - buf

    ``torch.optim.RMSprop`` computes ``sqrt(v) + eps`` instead and defaults to
    ``alpha=0.99, eps=1e-8``.

    Args:
        params: parameters or parameter groups.
        learning_rate: ``lr`` > 0. Default 0.001.
        rho: decay of the squared-gradient average in [0, 1). Default 0.9.
        momentum: in [0, 1]. Default 0.0.
        epsilon: > 0. Default 1e-7.
        centered: normalise by the gradient variance estimate. Default False.

    Raises:
        ValueError / TypeError: an argument outside its range or of the wrong type.
    """

    _name = "rmsprop"

    def __init__(
        self,
        params: Params,
        learning_rate: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
    ) -> None:
        defaults = _validate_rmsprop(
            learning_rate=learning_rate,
            rho=rho,
            momentum=momentum,
            epsilon=epsilon,
            centered=centered,
        )
        super().__init__(params, _torch_keys(defaults))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            rho, momentum = group["rho"], group["momentum"]
            vs, mean_gs, bufs = [], [], []
            for p in params:
                state = self.state[p]
                if "v" not in state:
                    state["v"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["mean_g"] = torch.zeros_like(p)
                    if momentum > 0.0:
                        state["momentum"] = torch.zeros_like(p)
                vs.append(state["v"])
                if group["centered"]:
                    mean_gs.append(state["mean_g"])
                if momentum > 0.0:
                    bufs.append(state["momentum"])
            torch._foreach_mul_(vs, rho)
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - rho)
            denom = torch._foreach_add(vs, group["epsilon"])
            if group["centered"]:
                torch._foreach_mul_(mean_gs, rho)
                torch._foreach_add_(mean_gs, grads, alpha=1.0 - rho)
                torch._foreach_addcmul_(denom, mean_gs, mean_gs, value=-1.0)
            torch._foreach_sqrt_(denom)
            increments = torch._foreach_div(torch._foreach_mul(grads, group["lr"]), denom)
            if momentum > 0.0:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, increments)
                torch._foreach_add_(params, bufs, alpha=-1.0)
            else:
                torch._foreach_add_(params, increments, alpha=-1.0)
        return loss


def _validate_sgd(*, learning_rate: object, momentum: object, nesterov: object) -> dict[str, Any]:
    return {
        "learning_rate": _check_number("sgd", "learning_rate", learning_rate, low=0.0, high=None, low_open=True),
        "momentum": _check_number("sgd", "momentum", momentum, low=0.0, high=1.0),
        "nesterov": _check_bool("sgd", "nesterov", nesterov),
    }


def _validate_adam(
    *, learning_rate: object, beta_1: object, beta_2: object, epsilon: object, amsgrad: object
) -> dict[str, Any]:
    out = {
        "learning_rate": _check_number("adam", "learning_rate", learning_rate, low=0.0, high=None, low_open=True),
        "beta_1": _check_number("adam", "beta_1", beta_1, low=0.0, high=1.0),
        "beta_2": _check_number("adam", "beta_2", beta_2, low=0.0, high=1.0),
        "epsilon": _check_number("adam", "epsilon", epsilon, low=0.0, high=None, low_open=True),
        "amsgrad": _check_bool("adam", "amsgrad", amsgrad),
    }
    for name in ("beta_1", "beta_2"):
        if out[name] == 1.0:
            raise ValueError(f"adam: {name} must be in [0, 1) (1 divides by zero in the bias correction); got {out[name]!r}")
    return out


def _validate_rmsprop(
    *, learning_rate: object, rho: object, momentum: object, epsilon: object, centered: object
) -> dict[str, Any]:
    return {
        "learning_rate": _check_number("rmsprop", "learning_rate", learning_rate, low=0.0, high=None, low_open=True),
        "rho": _check_number("rmsprop", "rho", rho, low=0.0, high=1.0),
        "momentum": _check_number("rmsprop", "momentum", momentum, low=0.0, high=1.0),
        "epsilon": _check_number("rmsprop", "epsilon", epsilon, low=0.0, high=None, low_open=True),
        "centered": _check_bool("rmsprop", "centered", centered),
    }


# One place that maps the lowercase names used in configs to classes, their defaults
# (Keras 3's) and their validators.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
}

_VALIDATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "sgd": _validate_sgd,
    "adam": _validate_adam,
    "rmsprop": _validate_rmsprop,
}


def list_optimizers() -> list[str]:
    """The registered optimizer names, sorted."""
    return sorted(OPTIMIZERS)


def validate_optimizer_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Check an optimizer name and its arguments; return the full argument dict with defaults.

    Raises:
        ValueError: unknown optimizer name (lists the valid ones), unknown argument (lists
            the allowed ones) or a value out of range.
        TypeError: a value of the wrong type.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from: {', '.join(list_optimizers())}")
    allowed = _DEFAULTS[name]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name}: unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    return _VALIDATORS[name](**{**allowed, **args})


def get_optimizer(
    name: str, params: Params, args: Mapping[str, Any] | None = None
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` over ``params``, Keras defaults for missing args.

    Example::

        opt = get_optimizer("sgd", model.parameters(), {"learning_rate": 0.1, "momentum": 0.9})
    """
    full = validate_optimizer_args(name, args or {})
    return OPTIMIZERS[name](params, **full)
