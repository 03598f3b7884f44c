"""Bad batches, half precision, ill-conditioned data and bad arguments."""

from __future__ import annotations

import pytest
import torch

import reference
from bnlab import BatchNormalization
from bnlab.functional import NonFiniteStatisticsWarning, batch_norm

IMPLEMENTATIONS = ("auto", "native", "composite", "reference")


def ones_zeros(c, dtype=torch.float32):
    return torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)


# ------------------------------------------------------------------ non-finite batches
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_nonfinite_batch_keeps_moving_statistics_and_warns(bad, implementation):
    x = torch.randn(8, 3, 4)
    x[2, 1, 3] = bad
    mean, var = torch.full((3,), 0.25), torch.full((3,), 2.0)
    with pytest.warns(NonFiniteStatisticsWarning, match=r"my_bn: the batch statistics are not"):
        y, new_mean, new_var = batch_norm(x, None, None, mean, var, training=True, momentum=0.5,
                                          implementation=implementation, name="my_bn")
    assert torch.equal(new_mean, mean) and torch.equal(new_var, var)
    assert torch.isfinite(y[:, [0, 2]]).all()  # the healthy channels are still normalized


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_nonfinite_batch_raises_on_request(implementation):
    x = torch.randn(8, 3)
    x[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"not finite.*on_nonfinite='skip'"):
        batch_norm(x, None, None, *ones_zeros(3), training=True, on_nonfinite="raise",
                   implementation=implementation)


def test_module_skips_nonfinite_batch():
    layer = BatchNormalization(3, momentum=0.5, name="bn7")
    layer(torch.randn(8, 3))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(8, 3)
    x[4, 2] = float("inf")
    with pytest.warns(NonFiniteStatisticsWarning, match="bn7"):
        layer(x)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k  # statistics and the batch count
    layer(torch.randn(8, 3))
    assert torch.isfinite(layer.moving_mean).all() and int(layer.num_batches_tracked) == 2


@pytest.mark.parametrize("caller", ["model", "layer", "function"])
def test_nonfinite_warning_points_at_the_callers_line(caller):
    # Not at bnlab's internals nor at torch.nn.Module.__call__: at the line that ran the step.
    layer = BatchNormalization(3, momentum=0.5)
    model = torch.nn.Sequential(torch.nn.Identity(), layer)
    x = torch.randn(8, 3)
    x[0, 0] = float("nan")
    calls = {"model": lambda: model(x), "layer": lambda: layer(x),
             "function": lambda: batch_norm(x, None, None, *ones_zeros(3), training=True)}
    with pytest.warns(NonFiniteStatisticsWarning) as record:
        calls[caller]()
    assert record[0].filename == __file__


def test_module_raise_leaves_state_untouched():
    layer = BatchNormalization(3, on_nonfinite="raise")
    x = torch.randn(8, 3)
    x[1, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="batch_normalization"):
        layer(x)
    assert torch.equal(layer.moving_mean, torch.zeros(3))
    assert torch.equal(layer.moving_variance, torch.ones(3))
    assert int(layer.num_batches_tracked) == 0


def test_overflowing_variance_is_nonfinite():
    """Finite inputs whose variance overflows float32 are caught too."""
    x = torch.tensor([[3e38], [-3e38]])
    with pytest.warns(NonFiniteStatisticsWarning):
        _, m, v = batch_norm(x, None, None, *ones_zeros(1), training=True)
    assert torch.equal(m, torch.zeros(1)) and torch.equal(v, torch.ones(1))


# ------------------------------------------------------------------ one value per channel
@pytest.mark.parametrize("shape", [(1, 5), (1, 5, 1), (1, 5, 1, 1)], ids=["2d", "3d", "4d"])
def test_single_value_per_channel(shape):
    with pytest.raises(ValueError) as e:
        batch_norm(torch.randn(shape), None, None, *ones_zeros(5), training=True, name="bn_head")
    message = str(e.value)
    assert "bn_head" in message and str(shape) in message
    assert "drop_last=True" in message and "model.eval()" in message and "\n" not in message


def test_single_value_is_fine_in_inference(assert_close):
    x = torch.randn(1, 5)
    mean, var = ones_zeros(5)
    y, _, _ = batch_norm(x, None, None, mean, var, training=False)
    assert_close(y, x / (1 + 1e-3) ** 0.5)


# ------------------------------------------------------------------ half precision
HALVES = {"f16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype", HALVES.values(), ids=HALVES.keys())
def test_half_input_statistics_in_float32(dtype, implementation, assert_close):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(16, 4, 6, generator=g) + 20).to(dtype).requires_grad_(True)
    gamma = (0.5 + torch.rand(4, generator=g)).requires_grad_(True)
    beta = torch.randn(4, generator=g)
    mean, var = ones_zeros(4)
    y, new_mean, new_var = batch_norm(x, gamma, beta, mean, var, training=True, momentum=0.0,
                                      implementation=implementation)
    assert y.dtype == dtype
    assert new_mean.dtype == new_var.dtype == torch.float32
    # Statistics of the half values computed in float32: float32 accuracy, not half's.
    ref_mean, ref_var = reference.moments(x.detach(), 1)
    assert_close(new_mean, ref_mean)
    assert_close(new_var, ref_var)
    # The output is the float32 result rounded once to the half type.
    expected = reference.training_output(x.detach(), gamma.detach(), beta, 1, 1e-3)
    assert_close(y, expected)
    y32, _, _ = batch_norm(x.detach().float(), gamma, beta, mean, var, training=True)
    assert_close(y, y32, dtype=dtype)
    y.float().square().sum().backward()
    assert x.grad.dtype == dtype and gamma.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", HALVES.values(), ids=HALVES.keys())
def test_half_input_through_module(dtype, assert_close):
    layer = BatchNormalization(4, momentum=0.5)
    x = (torch.randn(32, 4) * 50 + 100).to(dtype)  # float16 squares overflow above ~256
    y = layer(x)
    assert y.dtype == dtype and layer.moving_mean.dtype == torch.float32
    ref_mean, ref_var = reference.moments(x, 1)
    assert_close(layer.moving_mean, 0.5 * ref_mean)
    assert_close(layer.moving_variance, 0.5 + 0.5 * ref_var)
    layer.eval()
    y = layer(x)
    assert y.dtype == dtype
    expected = reference.inference_output(x, layer.moving_mean, layer.moving_variance,
                                          layer.gamma, layer.beta, 1, 1e-3)
    assert_close(y, expected)


# ------------------------------------------------------------------ numerical stability
def ill_conditioned(shape=(64, 6, 5), seed=0):
    """float32 data with mean 1e4 and std 1e-2 per channel (|mean|/std = 1e6)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0]).reshape(1, 6, 1)
    return (signs * 1e4 + 1e-2 * torch.randn(shape, generator=g, dtype=torch.float64)).float()


# Not "reference": the paper's Algorithm 1 is kept plain (a float32 mean cannot even
# represent 1e4 to the 1e-2 * 1e-3 this needs); it is the yardstick for normal data.
@pytest.mark.parametrize("implementation", ["auto", "composite"])
def test_ill_conditioned_training_matches_float64(implementation):
    x = ill_conditioned()
    mean, var = ones_zeros(6)
    y, new_mean, new_var = batch_norm(x, None, None, mean, var, training=True, momentum=0.0,
                                      epsilon=1e-6, implementation=implementation)
    expected = reference.training_output(x, None, None, 1, 1e-6)  # same float32 values
    assert (y.double() - expected).abs().max() < 1e-3
    ref_mean, ref_var = reference.moments(x, 1)
    torch.testing.assert_close(new_mean.double(), ref_mean, rtol=1e-7, atol=0)
    torch.testing.assert_close(new_var.double(), ref_var, rtol=1e-3, atol=0)


def test_ill_conditioned_native_kernel_alone_is_not_accurate():
    """Why 'auto' leaves the fused kernel for such channels (guards the detection)."""
    x = ill_conditioned()
    y, _, _ = batch_norm(x, None, None, *ones_zeros(6), training=True, epsilon=1e-6,
                         implementation="native")
    expected = reference.training_output(x, None, None, 1, 1e-6)
    assert (y.double() - expected).abs().max() > 1e-3


def test_ill_conditioned_mixed_channels_and_channel_last():
    x = ill_conditioned().movedim(1, -1).contiguous()  # (N, L, C)
    x[..., 2] = torch.randn(64, 5)  # one well-conditioned channel among them
    y, _, _ = batch_norm(x, None, None, *ones_zeros(6), training=True, axis=-1, epsilon=1e-6)
    expected = reference.training_output(x, None, None, -1, 1e-6)
    assert (y.double() - expected).abs().max() < 1e-3


def test_ill_conditioned_inference_matches_float64():
    """Moving statistics with |mean|/std = 1e6 (learned on such data) at inference."""
    x = ill_conditioned()
    layer = BatchNormalization(6, momentum=0.0, epsilon=1e-6)
    layer(x)
    layer.eval()
    x_new = ill_conditioned(seed=1)
    y = layer(x_new)
    expected = reference.inference_output(x_new, layer.moving_mean, layer.moving_variance,
                                          None, None, 1, 1e-6)
    assert (y.double() - expected).abs().max() < 1e-3
    # And the learned statistics are the float64 ones (mean 1e4, std 1e-2, not noise).
    _, ref_var = reference.moments(x, 1)
    torch.testing.assert_close(layer.moving_variance.double(), ref_var, rtol=1e-3, atol=0)


def test_ill_conditioned_inference_over_several_axes_matches_float64():
    """Several kept axes: the fused one-pass form is left for the shifted one too."""
    x = ill_conditioned()  # (64, 6, 5): keep axes 1 and 2, 30 ill-conditioned channels
    mean, var = (t.float() for t in reference.moments(x, (1, 2)))
    x_new = ill_conditioned(seed=1)
    y, _, _ = batch_norm(x_new, None, None, mean, var, training=False, axis=(1, 2), epsilon=1e-6)
    expected = reference.inference_output(x_new, mean, var, None, None, (1, 2), 1e-6)
    assert (y.double() - expected).abs().max() < 1e-3


def test_huge_finite_statistics_are_not_mistaken_for_nonfinite(assert_close):
    """Regression: the fused step's probe (var - mean^2 / 1e6) overflows for |mean| ~ 1e23
    in float32 although mean and variance are finite; such a batch is ill-conditioned,
    not non-finite: it is normalized on the shifted path and updates the statistics."""
    g = torch.Generator().manual_seed(3)
    x = (1e23 + 1e17 * torch.randn(32, 2, generator=g, dtype=torch.float64)).float()
    y, new_mean, new_var = batch_norm(x, None, None, *ones_zeros(2), training=True,
                                      momentum=0.0)  # no NonFiniteStatisticsWarning (error)
    assert (y.double() - reference.training_output(x, None, None, 1, 1e-3)).abs().max() < 1e-3
    ref_mean, ref_var = reference.moments(x, 1)
    torch.testing.assert_close(new_mean.double(), ref_mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(new_var.double(), ref_var, rtol=1e-3, atol=0)


def test_inference_notices_statistics_changed_in_place():
    """Whether the moving statistics are ill-conditioned is read on every call: after an
    in-place change (copy_, load_state_dict) the next call takes the shifted path."""
    layer = BatchNormalization(6, epsilon=1e-6).eval()
    x = ill_conditioned()
    layer(torch.randn(4, 6, 5))  # well-conditioned statistics: the fused kernel
    mean, var = reference.moments(x, 1)
    with torch.no_grad():
        layer.moving_mean.copy_(mean)
        layer.moving_variance.copy_(var)
    expected = reference.inference_output(x, layer.moving_mean, layer.moving_variance,
                                          layer.gamma, layer.beta, 1, 1e-6)
    assert (layer(x).double() - expected).abs().max() < 1e-3
    fresh = BatchNormalization(6, epsilon=1e-6).eval()
    fresh(x)
    fresh.load_state_dict(layer.state_dict())
    assert (fresh(x).double() - expected).abs().max() < 1e-3


def test_inference_mode_tensors(assert_close):
    """Statistics created under torch.inference_mode have no version counter; the
    memoized conditioning check must not need one."""
    with torch.inference_mode():
        x = torch.randn(5, 3, 2)
        mean, var = torch.randn(3), torch.rand(3) + 0.5
        y, _, _ = batch_norm(x, None, None, mean, var, training=False)
    assert_close(y, reference.inference_output(x, mean, var, None, None, 1, 1e-3))


# ------------------------------------------------------------------ empty batch
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_empty_batch(implementation):
    x = torch.randn(0, 3, 2, requires_grad=True)
    mean, var = ones_zeros(3)
    y, m, v = batch_norm(x, torch.ones(3), torch.zeros(3), mean, var, training=True,
                         implementation=implementation)
    assert y.shape == (0, 3, 2) and m is mean and v is var
    y.sum().backward()
    assert x.grad.shape == x.shape


# ------------------------------------------------------------------ bad arguments
BAD = {
    "rank1": (dict(x=torch.randn(5)), ValueError, r"at least 2D input.*got a 1D tensor"),
    "axis-out-of-range": (dict(axis=4), ValueError, r"axis 4 is out of range for a 3D input; "
                                                    r"allowed: -3\.\.2"),
    "axis-negative-out": (dict(axis=-4), ValueError, r"axis -4 is out of range"),
    "axis-repeated": (dict(axis=(1, -2)), ValueError, r"axis \(1, -2\) repeats an axis"),
    "axis-all": (dict(axis=(0, 1, 2)), ValueError, r"keeps every axis of a 3D input"),
    "axis-empty": (dict(axis=()), ValueError, r"at least one axis"),
    "axis-float": (dict(axis=1.0), TypeError, r"axis must be an int or a sequence of ints "
                                              r".*; got 1\.0 of type float"),
    "axis-entry": (dict(axis=(1, "2")), TypeError, r"axis entries must be int; got '2'"),
    "int-input": (dict(x=torch.ones(4, 3, 2, dtype=torch.long)), TypeError, r"torch\.int64"),
    "gamma-shape": (dict(gamma=torch.ones(4)), ValueError,
                    r"gamma has shape \(4,\) but the input \(4, 3, 2\) with axis=\(1,\) needs "
                    r"\(3,\)"),
    "moving-shape": (dict(moving_mean=torch.ones(3, 1)), ValueError,
                     r"moving_mean has shape \(3, 1\)"),
    "momentum": (dict(momentum=2.0), ValueError, r"momentum must be in \[0, 1\] or None; got 2\.0"),
    "epsilon": (dict(epsilon=-1.0), ValueError, r"epsilon must be > 0; got -1\.0"),
    "implementation": (dict(implementation="fast"), ValueError,
                       r"unknown implementation 'fast'; choose from auto, native, composite, "
                       r"reference"),
    "on_nonfinite": (dict(on_nonfinite="warn"), ValueError, r"'skip' or 'raise'; got 'warn'"),
    "native-tuple": (dict(implementation="native", axis=(1, 2), gamma=None, beta=None,
                          moving_mean=torch.zeros(3, 2), moving_variance=torch.ones(3, 2)),
                     ValueError, r"native implementation needs exactly one kept axis"),
    "mask-shape": (dict(mask=torch.ones(4, 3, dtype=torch.bool)), ValueError,
                   r"mask must have the input's shape without the kept axis \(1,\), i\.e\. "
                   r"\(4, 2\); got \(4, 3\)"),
}


@pytest.mark.parametrize(("override", "error", "pattern"), BAD.values(), ids=BAD.keys())
def test_bad_arguments_are_one_line_errors(override, error, pattern):
    arguments = dict(x=torch.randn(4, 3, 2), gamma=torch.ones(3), beta=torch.zeros(3),
                     moving_mean=torch.zeros(3), moving_variance=torch.ones(3))
    arguments.update(override)
    x = arguments.pop("x")
    gamma, beta = arguments.pop("gamma"), arguments.pop("beta")
    mean, var = arguments.pop("moving_mean"), arguments.pop("moving_variance")
    with pytest.raises(error, match=pattern) as e:
        batch_norm(x, gamma, beta, mean, var, training=True, **arguments)
    assert "\n" not in str(e.value)
