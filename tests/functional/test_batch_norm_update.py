"""``batch_norm_update_``: the layer's in-place training step equals ``batch_norm``.

Same computation two ways: the pure function with its new statistics fed back, and the
in-place update of the statistics tensors. Outputs, gradients, moving statistics and the
batch count must be *identical* (``torch.equal``), on every path the pure function takes.
"""

from __future__ import annotations

import pytest
import torch

from bnlab.functional import NonFiniteStatisticsWarning, batch_norm, batch_norm_update_

CASES = {
    "rank2": {},
    "rank4": {"shape": (4, 3, 3, 5)},
    "channel-last": {"shape": (4, 5, 3), "axis": -1},
    "unbiased": {"unbiased_moving_variance": True},
    "momentum0": {"momentum": 0.0},
    "momentum1": {"momentum": 1.0},
    "cumulative": {"momentum": None},
    "native": {"implementation": "native"},
    "composite": {"implementation": "composite"},
    "reference": {"implementation": "reference"},
    "axis-tuple": {"shape": (4, 3, 3, 5), "axis": (1, 3)},
    "mask": {"shape": (6, 3, 4), "masked": True},
    "float16": {"dtype": torch.float16},
    "bfloat16": {"dtype": torch.bfloat16},
    "float64": {"dtype": torch.float64, "stat_dtype": torch.float64},
}


def make_state(stat_shape, dtype):
    g = torch.Generator().manual_seed(0)
    gamma = (0.5 + torch.rand(stat_shape, generator=g)).to(dtype)
    beta = torch.randn(stat_shape, generator=g).to(dtype)
    mean = torch.randn(stat_shape, generator=g).to(dtype)
    var = (0.5 + torch.rand(stat_shape, generator=g)).to(dtype)
    return gamma, beta, mean, var


def make_batch(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=g) + 1).to(dtype)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_in_place_step_equals_pure_function(case):
    """Three steps: identical outputs, gradients, statistics; the count tracks updates."""
    case = dict(case)
    shape = case.pop("shape", (16, 3))
    axis = case.pop("axis", 1)
    dtype = case.pop("dtype", torch.float32)
    stat_dtype = case.pop("stat_dtype", torch.float32)
    masked = case.pop("masked", False)
    kept = (axis,) if isinstance(axis, int) else axis
    stat_shape = tuple(shape[a] for a in kept)
    gamma, beta, mean, var = make_state(stat_shape, stat_dtype)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)
    moving_mean, moving_var = mean.clone(), var.clone()
    tracked = torch.zeros((), dtype=torch.long)
    mask = None
    if masked:  # the input's shape without the kept axis 1
        mask = torch.rand(shape[:1] + shape[2:], generator=torch.Generator().manual_seed(9)) > 0.3
    options = dict(axis=axis, epsilon=1e-3, mask=mask, **case)
    for step in range(3):
        x = make_batch(shape, dtype, seed=step).requires_grad_(True)
        y, mean, var = batch_norm(x, gamma, beta, mean, var, training=True,
                                  num_batches_tracked=step, **options)
        x_before, gamma_before = x.detach().clone(), gamma.detach().clone()
        y_in_place = batch_norm_update_(x, gamma, beta, moving_mean, moving_var, tracked,
                                        **options)
        assert torch.equal(x, x_before) and torch.equal(gamma, gamma_before)
        assert torch.equal(y_in_place, y)
        upstream = make_batch(shape, dtype, seed=50 + step)
        grads = torch.autograd.grad(y, (x, gamma, beta), upstream)
        grads_in_place = torch.autograd.grad(y_in_place, (x, gamma, beta), upstream)
        assert all(torch.equal(a, b) for a, b in zip(grads_in_place, grads, strict=True))
        assert torch.equal(moving_mean, mean) and torch.equal(moving_var, var)
        assert moving_mean.dtype == stat_dtype
        assert int(tracked) == step + 1


def test_ill_conditioned_batch_takes_the_shifted_path_in_place_too():
    """|mean| / std = 1e6: 'auto' leaves the fused kernel; same numbers as batch_norm."""
    g = torch.Generator().manual_seed(0)
    x = (1e4 + 1e-2 * torch.randn(64, 4, generator=g, dtype=torch.float64)).float()
    mean, var = torch.zeros(4), torch.ones(4)
    y, new_mean, new_var = batch_norm(x, None, None, mean, var, training=True, momentum=0.5,
                                      epsilon=1e-6)
    tracked = torch.zeros((), dtype=torch.long)
    y_in_place = batch_norm_update_(x, None, None, mean, var, tracked, momentum=0.5,
                                    epsilon=1e-6)
    assert torch.equal(y_in_place, y)
    assert torch.equal(mean, new_mean) and torch.equal(var, new_var) and int(tracked) == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 3e38],
                         ids=["nan", "inf", "overflowing-variance"])
def test_nonfinite_batch_leaves_statistics_and_count(bad):
    x = torch.randn(8, 3)
    x[2, 1] = bad
    x[3, 1] = -bad if bad == 3e38 else bad
    mean, var = torch.full((3,), 0.25), torch.full((3,), 2.0)
    tracked = torch.full((), 5, dtype=torch.long)
    with pytest.warns(NonFiniteStatisticsWarning, match=r"bn_x: the batch statistics are not"):
        batch_norm_update_(x, None, None, mean, var, tracked, momentum=0.5, name="bn_x")
    assert torch.equal(mean, torch.full((3,), 0.25)) and torch.equal(var, torch.full((3,), 2.0))
    assert int(tracked) == 5


def test_nonfinite_batch_raises_on_request_and_modifies_nothing():
    x = torch.randn(8, 3)
    x[0, 0] = float("nan")
    mean, var = torch.zeros(3), torch.ones(3)
    tracked = torch.zeros((), dtype=torch.long)
    with pytest.raises(FloatingPointError, match=r"not finite.*on_nonfinite='skip'"):
        batch_norm_update_(x, None, None, mean, var, tracked, on_nonfinite="raise")
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(var, torch.ones(3))
    assert int(tracked) == 0


def test_empty_batch_is_not_counted():
    mean, var = torch.zeros(3), torch.ones(3)
    tracked = torch.zeros((), dtype=torch.long)
    y = batch_norm_update_(torch.randn(0, 3), None, None, mean, var, tracked)
    assert y.shape == (0, 3)
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(var, torch.ones(3))
    assert int(tracked) == 0


@pytest.mark.parametrize(
    ("options", "pattern"),
    [({"momentum": 1.5}, r"momentum must be in \[0, 1\] or None; got 1.5"),
     ({"epsilon": 0.0}, r"epsilon must be > 0; got 0.0"),
     ({"on_nonfinite": "warn"}, r"'skip' or 'raise'; got 'warn'")],
    ids=["momentum", "epsilon", "on_nonfinite"],
)
def test_bad_options_raise_like_batch_norm_and_modify_nothing(options, pattern):
    mean, var = torch.zeros(3), torch.ones(3)
    tracked = torch.zeros((), dtype=torch.long)
    with pytest.raises(ValueError, match=pattern):
        batch_norm_update_(torch.randn(8, 3), None, None, mean, var, tracked, **options)
    assert torch.equal(mean, torch.zeros(3)) and int(tracked) == 0


def test_integer_input_raises_the_type_error():
    mean, var = torch.zeros(3), torch.ones(3)
    tracked = torch.zeros((), dtype=torch.long)
    with pytest.raises(TypeError, match=r"floating-point input; got dtype torch\.int64"):
        batch_norm_update_(torch.ones(8, 3, dtype=torch.long), None, None, mean, var, tracked)
