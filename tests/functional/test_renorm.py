"""Batch renormalization against Keras 3 (torch backend) and a float64 formula.

Same computation two ways over several training steps: outputs, gradients
(input, gamma, beta) and all five statistics must agree to float32's tolerance.
The data drift in mean and scale from step to step, with small momenta, so the
corrections ``r``/``d`` are far from 1/0 and the clipping is active.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import reference
from bnlab.functional import NonFiniteStatisticsWarning
from bnlab.functional.renorm import (
    BatchRenormResult,
    batch_renorm,
    check_renorm_clipping,
    renorm_correction,
)

F64 = torch.float64


def drifting_batches(shape, steps, seed, dtype=torch.float32, kept=(1,)):
    """Batches whose per-channel mean and scale change every step."""
    g = torch.Generator().manual_seed(seed)
    stat = reference.stat_shape(shape, kept)
    bshape = [n if d in kept else 1 for d, n in enumerate(shape)]
    out = []
    for t in range(steps):
        x = torch.randn(shape, generator=g, dtype=F64)
        shift = (2.0 * torch.randn(stat, generator=g, dtype=F64) + t).reshape(bshape)
        scale = (0.3 + 3.0 * torch.rand(stat, generator=g, dtype=F64)).reshape(bshape)
        out.append((x * scale + shift).to(dtype))
    return out


def initial_state(stat, dtype=torch.float32):
    """Keras's initial renorm state: zeros / ones everywhere (variance init "ones")."""
    ones, zeros = torch.ones(stat, dtype=dtype), torch.zeros(stat, dtype=dtype)
    return {"moving_mean": zeros, "moving_variance": ones, "moving_stddev": ones,
            "renorm_mean": zeros.clone(), "renorm_stddev": ones.clone()}


def reference_step(x, gamma, beta, state, *, axis, momentum, renorm_momentum, clipping,
                   epsilon, mask=None):
    """One training step of batch renorm in float64, straight from the equations."""
    mean, var = reference.moments(x, axis, mask)
    std = torch.sqrt(var + epsilon)
    s = torch.clamp_min(state["renorm_stddev"].to(F64), epsilon ** 0.5)
    r = std / s
    d = (mean - state["renorm_mean"].to(F64)) / s
    if "rmin" in clipping:
        r = r.clamp_min(clipping["rmin"])
    if "rmax" in clipping:
        r = r.clamp_max(clipping["rmax"])
    if "dmax" in clipping:
        d = d.clamp(-clipping["dmax"], clipping["dmax"])
    r, d = r.detach(), d.detach()
    g64 = torch.ones_like(mean) if gamma is None else gamma.to(F64)
    b64 = torch.zeros_like(mean) if beta is None else beta.to(F64)
    y = reference.normalize(x, mean, var, g64 * r, g64 * d + b64, axis, epsilon)
    ema = lambda old, new, m: m * old.to(F64) + (1 - m) * new.detach()  # noqa: E731
    moving_stddev = ema(state["moving_stddev"], std, momentum)
    new_state = {
        "moving_mean": ema(state["moving_mean"], mean, momentum),
        "moving_stddev": moving_stddev,
        "moving_variance": torch.relu(moving_stddev ** 2 - epsilon),
        "renorm_mean": ema(state["renorm_mean"], mean, renorm_momentum),
        "renorm_stddev": ema(state["renorm_stddev"], std, renorm_momentum),
    }
    return y, new_state


def run_bnlab(x, gamma, beta, state, **kwargs):
    result = batch_renorm(x, gamma, beta, state["moving_mean"], state["moving_variance"],
                          state["moving_stddev"], state["renorm_mean"], state["renorm_stddev"],
                          training=True, **kwargs)
    return result.output, dict(zip(result._fields[1:], result[1:], strict=True))


CLIPPINGS = {
    "unclipped": {},
    "paper_final": {"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0},
    "tight": {"rmax": 1.2, "rmin": 0.9, "dmax": 0.3},
    "rmax_only": {"rmax": 1.5},
    "plain_bn": {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0},
}


# ------------------------------------------------------------------ float64 formula
@pytest.mark.parametrize("clipping", CLIPPINGS.values(), ids=CLIPPINGS.keys())
@pytest.mark.parametrize("implementation", ["auto", "composite", "reference"])
def test_matches_float64_formula_over_steps(clipping, implementation, assert_close):
    batches = drifting_batches((6, 3, 4, 5), steps=4, seed=0, dtype=F64)
    g = torch.Generator().manual_seed(1)
    gamma = (0.5 + torch.rand(3, generator=g, dtype=F64)).requires_grad_(True)
    beta = torch.randn(3, generator=g, dtype=F64).requires_grad_(True)
    state = initial_state(3, F64)
    ref_state = dict(state)
    kwargs = {"momentum": 0.7, "renorm_momentum": 0.5, "epsilon": 1e-3}
    for x in batches:
        x = x.requires_grad_(True)
        y, state = run_bnlab(x, gamma, beta, state, renorm_clipping=clipping,
                             implementation=implementation, **kwargs)
        y_ref, ref_state = reference_step(x, gamma, beta, ref_state, axis=1,
                                          clipping=clipping, **kwargs)
        assert_close(y, y_ref)
        w = torch.randn(y.shape, generator=g, dtype=F64)
        assert_close(torch.autograd.grad(y, (x, gamma, beta), w),
                     torch.autograd.grad(y_ref, (x, gamma, beta), w))
        for key in ref_state:
            assert_close(state[key], ref_state[key], msg=key)


def test_unit_corrections_equal_plain_batch_norm(assert_close):
    """rmax = rmin = 1 and dmax = 0 make r = 1, d = 0: the output is batch normalization."""
    x = drifting_batches((8, 4, 3), steps=1, seed=2, dtype=F64)[0]
    gamma, beta = torch.rand(4, dtype=F64) + 0.5, torch.randn(4, dtype=F64)
    y, _ = run_bnlab(x, gamma, beta, initial_state(4, F64),
                     renorm_clipping=CLIPPINGS["plain_bn"])
    assert_close(y, reference.training_output(x, gamma, beta, 1, 1e-3))


def test_corrections_are_constants_in_the_backward_pass():
    """r and d carry no gradient: they come back detached even from inputs that need one."""
    mean = torch.randn(3, requires_grad=True)
    std = (torch.rand(3) + 0.5).requires_grad_(True)
    r, d = renorm_correction(mean, std, torch.zeros(3), torch.ones(3), epsilon=1e-3)
    assert not r.requires_grad and not d.requires_grad
    torch.testing.assert_close(r, std.detach())
    torch.testing.assert_close(d, mean.detach())


def test_renorm_stddev_floor_is_sqrt_epsilon():
    """A renorm_stddev below sqrt(epsilon) is replaced by sqrt(epsilon) (Keras)."""
    r, d = renorm_correction(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.0]),
                             torch.tensor([1e-6]), epsilon=1e-2)
    torch.testing.assert_close(r, torch.tensor([0.5 / 0.1]))
    torch.testing.assert_close(d, torch.tensor([1.0 / 0.1]))


# --------------------------------------------------------------------------- Keras 3
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras is imported with a backend other than torch")
    return keras


KERAS_CASES = {
    "paper_final": ({"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0}, 0.9, 0.6, True, True),
    "tight": ({"rmax": 1.2, "rmin": 0.9, "dmax": 0.3}, 0.8, 0.5, True, True),
    "unclipped_no_affine": (None, 0.9, 0.7, False, False),
    "dmax_only_no_scale": ({"dmax": 0.5}, 0.95, 0.3, True, False),
}


@pytest.mark.parametrize(("clipping", "momentum", "renorm_momentum", "center", "scale"),
                         KERAS_CASES.values(), ids=KERAS_CASES.keys())
def test_matches_keras(keras, clipping, momentum, renorm_momentum, center, scale, assert_close):
    """Outputs, gradients and all statistics after each of 4 steps vs Keras, channel-first."""
    shape, channels = (8, 3, 4, 4), 3
    layer = keras.layers.BatchNormalization(
        axis=1, momentum=momentum, epsilon=1e-3, center=center, scale=scale, renorm=True,
        renorm_clipping=clipping, renorm_momentum=renorm_momentum,
    )
    layer.build(shape)
    g = torch.Generator().manual_seed(3)
    gamma = (0.5 + torch.rand(channels, generator=g)).requires_grad_(True) if scale else None
    beta = torch.randn(channels, generator=g).requires_grad_(True) if center else None
    with torch.no_grad():
        if scale:
            layer.gamma.assign(gamma.detach())
        if center:
            layer.beta.assign(beta.detach())
    state = initial_state(channels)
    for x in drifting_batches(shape, steps=4, seed=4):
        x_ours = x.clone().requires_grad_(True)
        x_keras = x.clone().requires_grad_(True)
        y, state = run_bnlab(x_ours, gamma, beta, state, momentum=momentum,
                             renorm_momentum=renorm_momentum, renorm_clipping=clipping)
        y_keras = layer(x_keras, training=True)
        assert_close(y, y_keras)
        w = torch.randn(shape, generator=g)
        ours = [x_ours] + [p for p in (gamma, beta) if p is not None]
        theirs = [x_keras] + [v.value for v in (layer.gamma, layer.beta) if v is not None]
        assert_close(torch.autograd.grad(y, ours, w), torch.autograd.grad(y_keras, theirs, w))
        for key in state:
            assert_close(state[key], getattr(layer, key).value, msg=key)
    x = drifting_batches(shape, steps=1, seed=5)[0]
    y_eval = batch_renorm(x, gamma, beta, *state.values(), training=False).output
    assert_close(y_eval, layer(x, training=False))


def test_masked_matches_keras(keras, assert_close):
    """Channel-last sequences with a mask: padded steps are left out of the statistics."""
    shape = (4, 6, 3)
    clipping = {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}
    layer = keras.layers.BatchNormalization(axis=-1, momentum=0.8, renorm=True,
                                            renorm_clipping=clipping, renorm_momentum=0.5)
    layer.build(shape)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    state = initial_state(3)
    for x in drifting_batches(shape, steps=3, seed=6, kept=(2,)):
        x_ours = x.clone().requires_grad_(True)
        x_keras = x.clone().requires_grad_(True)
        y, state = run_bnlab(x_ours, None, None, state, axis=-1, momentum=0.8,
                             renorm_momentum=0.5, renorm_clipping=clipping, mask=mask)
        y_keras = layer(x_keras, training=True, mask=mask)
        assert_close(y, y_keras)
        w = torch.randn(shape)
        assert_close(torch.autograd.grad(y, x_ours, w), torch.autograd.grad(y_keras, x_keras, w))
        for key in state:
            assert_close(state[key], getattr(layer, key).value, msg=key)


# ---------------------------------------------------------------- edges and errors
def test_inference_is_plain_batch_norm_and_changes_nothing(assert_close):
    x = drifting_batches((5, 3, 2), steps=1, seed=7)[0]
    state = initial_state(3)
    state["moving_mean"] = torch.tensor([0.5, -1.0, 2.0])
    state["moving_variance"] = torch.tensor([2.0, 0.5, 1.5])
    result = batch_renorm(x, None, None, *state.values(), training=False)
    assert_close(result.output, reference.inference_output(
        x, state["moving_mean"], state["moving_variance"], None, None, 1, 1e-3))
    for key, value in state.items():
        assert getattr(result, key) is value


def test_empty_batch_keeps_every_statistic():
    state = initial_state(3)
    result = batch_renorm(torch.zeros(0, 3, 4), None, None, *state.values(), training=True)
    assert result.output.shape == (0, 3, 4)
    for key, value in state.items():
        assert getattr(result, key) is value


def test_single_value_per_channel_raises_with_remedy():
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\).*eval\(\)"):
        batch_renorm(torch.randn(1, 3), None, None, *initial_state(3).values(), training=True)


def test_non_finite_batch_keeps_every_statistic():
    x = torch.randn(4, 3)
    x[0, 1] = float("nan")
    state = initial_state(3)
    with pytest.warns(NonFiniteStatisticsWarning, match="not finite"):
        result = batch_renorm(x, None, None, *state.values(), training=True)
    for key, value in state.items():
        torch.testing.assert_close(getattr(result, key), value, msg=key)


def test_non_finite_batch_raises_when_asked():
    x = torch.full((4, 3), float("inf"))
    with warnings.catch_warnings(), pytest.raises(FloatingPointError, match="not finite"):
        batch_renorm(x, None, None, *initial_state(3).values(), training=True,
                     on_nonfinite="raise")


def test_half_input_gives_half_output_and_float32_statistics(assert_close):
    x = drifting_batches((8, 3, 4), steps=1, seed=8)[0]
    state = initial_state(3)
    kwargs = {"renorm_clipping": {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}}
    half = batch_renorm(x.half(), None, None, *state.values(), training=True, **kwargs)
    full = batch_renorm(x.half().float(), None, None, *state.values(), training=True, **kwargs)
    assert half.output.dtype == torch.float16
    assert half.renorm_stddev.dtype == torch.float32
    assert_close(half.output, full.output)
    for key in state:
        assert_close(getattr(half, key), getattr(full, key))


def test_result_fields_are_the_buffer_names():
    assert BatchRenormResult._fields == ("output", "moving_mean", "moving_variance",
                                         "moving_stddev", "renorm_mean", "renorm_stddev")


BAD_CLIPPINGS = {
    "unknown_key": ({"rmax": 2.0, "r_max": 3.0}, r"unknown renorm_clipping key\(s\) \['r_max'\]"),
    "rmax_below_rmin": ({"rmax": 0.5, "rmin": 2.0}, r"rmax >= rmin; got rmax=0.5, rmin=2.0"),
    "negative_dmax": ({"dmax": -1.0}, r"dmax must be >= 0; got dmax=-1.0"),
    "negative_rmin": ({"rmin": -0.5}, r"rmin must be >= 0; got rmin=-0.5"),
    "string_value": ({"rmax": "3"}, r"renorm_clipping\['rmax'\] must be a number; got '3'"),
}


@pytest.mark.parametrize(("clipping", "message"), BAD_CLIPPINGS.values(),
                         ids=BAD_CLIPPINGS.keys())
def test_bad_clipping_names_the_value(clipping, message):
    with pytest.raises(ValueError, match=message):
        check_renorm_clipping(clipping, name="bn")


def test_clipping_must_be_a_mapping():
    with pytest.raises(TypeError, match=r"renorm_clipping must be a dict.*got list"):
        check_renorm_clipping([3.0, 0.3, 5.0])


@pytest.mark.parametrize("value", [1.5, -0.1, True])
def test_bad_renorm_momentum(value):
    with pytest.raises(ValueError, match=rf"renorm_momentum must be a number in \[0, 1\].*{value}"):
        batch_renorm(torch.randn(4, 3), None, None, *initial_state(3).values(), training=True,
                     renorm_momentum=value)


def test_state_shape_mismatch_names_the_buffer():
    state = initial_state(3)
    state["renorm_stddev"] = torch.ones(4)
    with pytest.raises(ValueError, match=r"renorm_stddev has shape \(4,\) but moving_mean has \(3,\)"):
        batch_renorm(torch.randn(4, 3), None, None, *state.values(), training=True)


@pytest.mark.parametrize("implementation", ["auto", "composite", "reference"])
def test_gradcheck_with_pinned_corrections(implementation):
    """rmin = rmax = 1.5 and dmax = 0 pin r and d, so numerical differentiation (which
    would otherwise move r and d) agrees with the stop-gradient backward, float64."""
    x = drifting_batches((6, 3, 2), steps=1, seed=9, dtype=F64)[0].requires_grad_(True)
    gamma = (torch.rand(3, dtype=F64) + 0.5).requires_grad_(True)
    beta = torch.randn(3, dtype=F64).requires_grad_(True)
    state = initial_state(3, F64)

    def fn(x, gamma, beta):
        return batch_renorm(x, gamma, beta, *state.values(), training=True,
                            renorm_clipping={"rmin": 1.5, "rmax": 1.5, "dmax": 0.0},
                            implementation=implementation).output

    assert torch.autograd.gradcheck(fn, (x, gamma, beta))
