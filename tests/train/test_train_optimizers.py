"""Our optimizers against Keras 3's (torch backend): same start, same gradients function,
same number of steps -> the same weights. Plus the registry and argument validation."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import numpy as np
import pytest
import torch

from bnlab.train import SGD, Adam, RMSprop, get_optimizer, list_optimizers, validate_optimizer_args

assert keras.backend.backend() == "torch"

KERAS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}

CASES = [
    ("sgd", {}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": 0.05, "momentum": 0.5, "nesterov": True}),
    ("adam", {}),
    ("adam", {"learning_rate": 0.1}),
    ("adam", {"learning_rate": 0.01, "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3, "amsgrad": True}),
    ("rmsprop", {}),
    ("rmsprop", {"learning_rate": 0.01, "rho": 0.5, "momentum": 0.9}),
    ("rmsprop", {"learning_rate": 0.01, "centered": True, "epsilon": 1e-4}),
]


def _problem(dtype: torch.dtype):
    """A tiny two-layer regression: initial weights and a loss of a list of weights."""
    g = torch.Generator().manual_seed(0)
    w0 = [
        torch.randn(4, 3, generator=g, dtype=dtype),
        torch.randn(3, generator=g, dtype=dtype),
        torch.randn(3, 1, generator=g, dtype=dtype),
    ]
    x = torch.randn(16, 4, generator=g, dtype=dtype)
    y = torch.randn(16, 1, generator=g, dtype=dtype)

    def loss(ws):
        return ((torch.tanh(x @ ws[0] + ws[1]) @ ws[2] - y) ** 2).mean()

    return w0, loss


def _ours(name, args, steps, dtype):
    w0, loss = _problem(dtype)
    params = [torch.nn.Parameter(w.clone()) for w in w0]
    opt = get_optimizer(name, params, args)
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
    return [p.detach() for p in params]


def _keras(name, args, steps, dtype):
    w0, loss = _problem(dtype)
    variables = [keras.Variable(w.numpy(), dtype=str(dtype).removeprefix("torch.")) for w in w0]
    opt = KERAS[name](**args)
    for _ in range(steps):
        ws = [v.value.detach().requires_grad_(True) for v in variables]
        grads = torch.autograd.grad(loss(ws), ws)
        opt.apply_gradients(zip(grads, variables, strict=True))
    return [v.value.detach().clone() for v in variables]


@pytest.mark.parametrize(("name", "args"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_five_steps_match_keras(name, args):
    for ours, theirs in zip(_ours(name, args, 5, torch.float32), _keras(name, args, 5, torch.float32), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_fifty_steps_match_keras_with_defaults(name):
    # Guards the float32 bias correction of Adam (betas rounded like Keras's) over many t.
    for ours, theirs in zip(_ours(name, {}, 50, torch.float32), _keras(name, {}, 50, torch.float32), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


# Keras keeps the learning rate in a float32 variable even for float64 weights, so these
# rates are exactly representable in float32.
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("sgd", {"learning_rate": 0.125, "momentum": 0.9}),
        ("adam", {"learning_rate": 0.0625}),
        ("rmsprop", {"learning_rate": 0.0078125, "centered": True, "momentum": 0.5}),
    ],
    ids=["sgd", "adam", "rmsprop"],
)
def test_float64_matches_keras(name, args):
    for ours, theirs in zip(_ours(name, args, 5, torch.float64), _keras(name, args, 5, torch.float64), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_adam_differs_from_torch_adam_where_epsilon_matters():
    # Keras adds epsilon to sqrt(v) before bias correction; torch after. With a large
    # epsilon the first step differs visibly; ours follows the Keras formula.
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    q = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    ours = Adam([p], learning_rate=0.1, epsilon=0.1)
    theirs = torch.optim.Adam([q], lr=0.1, eps=0.1)
    for param, opt in ((p, ours), (q, theirs)):
        param.grad = torch.tensor([0.5], dtype=torch.float64)
        opt.step()
    g, b1, b2, lr, eps = 0.5, 0.9, 0.999, 0.1, 0.1
    m, v = (1 - b1) * g, (1 - b2) * g * g
    expected = 1.0 - lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
    assert p.item() == pytest.approx(expected, rel=1e-12)
    assert abs(p.item() - q.item()) > 1e-3


def test_rmsprop_puts_epsilon_inside_the_square_root():
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = RMSprop([p], learning_rate=0.1, epsilon=0.01)
    p.grad = torch.tensor([0.2], dtype=torch.float64)
    opt.step()
    v = 0.1 * 0.2**2
    assert p.item() == pytest.approx(1.0 - 0.1 * 0.2 / np.sqrt(v + 0.01), rel=1e-12)


def test_sgd_momentum_is_keras_velocity():
    p = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    opt = SGD([p], learning_rate=0.1, momentum=0.9)
    velocity = 0.0
    expected = 0.0
    for g in (1.0, -2.0, 0.5):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        velocity = 0.9 * velocity - 0.1 * g
        expected += velocity
        assert p.item() == pytest.approx(expected, rel=1e-12)


def test_defaults_are_keras_defaults():
    assert validate_optimizer_args("sgd", {}) == {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert validate_optimizer_args("adam", {}) == {
        "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False,
    }
    assert validate_optimizer_args("rmsprop", {}) == {
        "learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False,
    }
    for name in ("sgd", "adam", "rmsprop"):
        k = KERAS[name]()
        for arg, value in validate_optimizer_args(name, {}).items():
            expected = k.learning_rate.value.item() if arg == "learning_rate" else getattr(k, arg)
            assert float(expected) == pytest.approx(float(value), rel=1e-6), (name, arg)


def test_registry_lists_names():
    assert list_optimizers() == ["adam", "rmsprop", "sgd"]
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamw'; choose from: adam, rmsprop, sgd"):
        get_optimizer("adamw", [torch.nn.Parameter(torch.zeros(1))])


def test_unknown_argument_lists_allowed_ones():
    with pytest.raises(ValueError, match=r"sgd: unknown argument\(s\) 'lr'; allowed: learning_rate, momentum, nesterov"):
        validate_optimizer_args("sgd", {"lr": 0.1})


@pytest.mark.parametrize(
    ("name", "args", "error", "pattern"),
    [
        ("sgd", {"learning_rate": 0.0}, ValueError, r"learning_rate must be in \(0.0, inf\); got 0.0"),
        ("sgd", {"momentum": 1.5}, ValueError, r"momentum must be in \[0.0, 1.0\]; got 1.5"),
        ("sgd", {"nesterov": "yes"}, TypeError, r"nesterov must be true or false; got 'yes'"),
        ("adam", {"beta_2": 1.0}, ValueError, r"beta_2 must be in \[0, 1\).*got 1.0"),
        ("adam", {"epsilon": -1e-7}, ValueError, r"epsilon must be in \(0.0, inf\); got -1e-07"),
        ("rmsprop", {"rho": "0.9"}, TypeError, r"rho must be a number; got '0.9'"),
        ("rmsprop", {"learning_rate": float("nan")}, ValueError, r"learning_rate .* got nan"),
    ],
    ids=["lr-zero", "momentum-high", "nesterov-str", "beta2-one", "eps-negative", "rho-str", "lr-nan"],
)
def test_bad_values_are_named_with_the_value(name, args, error, pattern):
    with pytest.raises(error, match=pattern):
        validate_optimizer_args(name, args)


def test_parameter_groups_take_keras_names_and_are_validated():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = get_optimizer("sgd", [{"params": [a], "learning_rate": 0.5}, {"params": [b], "lr": 0.25}], {"momentum": 0.5})
    assert [(g["lr"], g["momentum"]) for g in opt.param_groups] == [(0.5, 0.5), (0.25, 0.5)]
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    assert a.tolist() == [0.5, 0.5] and b.tolist() == [0.75, 0.75]
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    with pytest.raises(ValueError, match=r"sgd: unknown argument\(s\) 'beta_1'; allowed: "):
        SGD([{"params": [a], "beta_1": 0.9}])
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\]; got 2"):
        SGD([{"params": [a], "momentum": 2}])
    with pytest.raises(ValueError, match=r"a parameter appears more than once"):
        SGD([{"params": [a]}, {"params": [a]}])


def test_works_with_torch_learning_rate_schedulers():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = SGD([p], learning_rate=1.0)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        schedule.step()
    assert p.item() == pytest.approx(-(1.0 + 0.5 + 0.25))
