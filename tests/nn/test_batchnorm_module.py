"""``BatchNormalization`` as a module: PyTorch parity, modes, lazy build, state, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reference
from bnlab import BatchNormalization
from bnlab.convert import torch_momentum
from bnlab.functional import batch_norm

DTYPES = {"f32": torch.float32, "f64": torch.float64}
TORCH_CLASSES = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
SHAPES = {"rank2": (12, 3), "rank3": (4, 3, 5), "rank4": (3, 3, 4, 2), "rank5": (2, 3, 2, 2, 3)}
MOMENTA = {"m0.0": 0.0, "m0.5": 0.5, "m0.99": 0.99, "mNone": None}


def batch(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(shape[1], generator=g, dtype=torch.float64)
    x = 2 * torch.randn(shape, generator=g, dtype=torch.float64)
    return (x + shift.reshape(1, -1, *[1] * (len(shape) - 2))).to(dtype)


def torch_pair(shape, dtype, momentum, affine=True):
    """A torch BatchNormNd with random state and a bnlab layer with PyTorch semantics."""
    channels = shape[1]
    native = TORCH_CLASSES[len(shape)](channels, eps=1e-5, momentum=torch_momentum(momentum),
                                       affine=affine, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if affine:
            native.weight.copy_(0.5 + torch.rand(channels, generator=g))
            native.bias.copy_(torch.randn(channels, generator=g))
        native.running_mean.copy_(torch.randn(channels, generator=g))
        native.running_var.copy_(0.5 + torch.rand(channels, generator=g))
    ours = BatchNormalization(channels, momentum=momentum, epsilon=1e-5, center=affine,
                              scale=affine, unbiased_moving_variance=True, dtype=dtype)
    ours.load_state_dict({"gamma": native.weight, "beta": native.bias,
                          "moving_mean": native.running_mean,
                          "moving_variance": native.running_var,
                          "num_batches_tracked": native.num_batches_tracked}
                         if affine else
                         {"moving_mean": native.running_mean,
                          "moving_variance": native.running_var,
                          "num_batches_tracked": native.num_batches_tracked})
    return native, ours


def run(layer, x, upstream):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    params = [p for p in layer.parameters() if p.requires_grad]
    return y.detach(), torch.autograd.grad(y, [x, *params], upstream)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("momentum", MOMENTA.values(), ids=MOMENTA.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_matches_torch_batchnorm_over_steps(shape, momentum, affine, dtype, assert_close):
    """Train 3 steps (outputs, gradients, running statistics), then eval; momentum None is
    PyTorch's cumulative average."""
    native, ours = torch_pair(shape, dtype, momentum, affine)
    for step in range(3):
        x, up = batch(shape, dtype, 10 + step), batch(shape, dtype, 20 + step)
        y_n, grads_n = run(native, x, up)
        y, grads = run(ours, x, up)
        assert_close(y, y_n)
        assert_close(grads, grads_n)
        assert_close(ours.moving_mean, native.running_mean)
        assert_close(ours.moving_variance, native.running_var)
        assert int(ours.num_batches_tracked) == int(native.num_batches_tracked) == step + 1
    native.eval()
    ours.eval()
    x, up = batch(shape, dtype, 30), batch(shape, dtype, 31)
    y_n, grads_n = run(native, x, up)
    y, grads = run(ours, x, up)
    assert_close(y, y_n)
    assert_close(grads, grads_n)


def test_cumulative_momentum_is_the_plain_average(assert_close):
    """momentum=None: after k batches the moving statistics are the mean of the k batch
    statistics (the initial values get weight 0)."""
    layer = BatchNormalization(3, momentum=None, dtype=torch.float64)
    batches = [batch((8, 3, 4), torch.float64, s) for s in range(4)]
    for x in batches:
        layer(x)
    means, variances = zip(*(reference.moments(x, 1) for x in batches), strict=True)
    assert_close(layer.moving_mean, torch.stack(means).mean(0))
    assert_close(layer.moving_variance, torch.stack(variances).mean(0))


LAYER_OPTIONS = {
    "keras": {},
    "unbiased": {"unbiased_moving_variance": True},
    "cumulative": {"momentum": None},
    "channel-last": {"axis": -1},
    "composite": {"implementation": "composite"},
}


@pytest.mark.parametrize("options", LAYER_OPTIONS.values(), ids=LAYER_OPTIONS.keys())
def test_training_step_is_the_functional_batch_norm(options):
    """Regression guard for the in-place buffer update: outputs and buffers after each
    step are *identical* to bnlab.functional.batch_norm fed its own statistics."""
    options = {"momentum": 0.9, **options}
    layer = BatchNormalization(4, epsilon=1e-3, **options)
    gamma, beta = layer.gamma.detach(), layer.beta.detach()
    mean, var = layer.moving_mean.clone(), layer.moving_variance.clone()
    for step in range(3):
        x = batch((6, 4, 5), torch.float32, step)
        if options.get("axis") == -1:
            x = x.movedim(1, -1).contiguous()
        y, mean, var = batch_norm(x, gamma, beta, mean, var, training=True,
                                  num_batches_tracked=step, **options)
        assert torch.equal(layer(x), y)
        assert torch.equal(layer.moving_mean, mean) and torch.equal(layer.moving_variance, var)
        assert int(layer.num_batches_tracked) == step + 1


def test_default_is_keras(assert_close):
    """Defaults: momentum 0.99, epsilon 1e-3, biased variance update, axis 1."""
    layer = BatchNormalization(3, dtype=torch.float64)
    x = batch((8, 3, 4), torch.float64, 0)
    y = layer(x)
    assert_close(y, reference.training_output(x, None, None, 1, 1e-3))
    mean, var = reference.moments(x, 1)
    assert_close(layer.moving_mean, 0.01 * mean)
    assert_close(layer.moving_variance, 0.99 + 0.01 * var)


# ---------------------------------------------------------------------- modes
def test_eval_changes_nothing_and_is_per_sample(assert_close):
    layer = BatchNormalization(3, momentum=0.5)
    layer(batch((8, 3, 4), torch.float32, 0))
    layer.eval()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = batch((6, 3, 4), torch.float32, 1)
    y = layer(x)
    assert_close(layer(x[2:3]), y[2:3])
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_freeze_is_inference_in_train_mode_and_stops_gradients(assert_close):
    layer = BatchNormalization(3, momentum=0.5)
    layer(batch((8, 3, 4), torch.float32, 0))
    assert layer.freeze() is layer
    assert not layer.trainable and not layer.gamma.requires_grad and not layer.beta.requires_grad
    layer.train()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = batch((6, 3, 4), torch.float32, 1)
    y = layer(x)
    expected = reference.inference_output(x, state["moving_mean"], state["moving_variance"],
                                          state["gamma"], state["beta"], 1, 1e-3)
    assert_close(y, expected)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert layer.unfreeze() is layer and layer.trainable and layer.gamma.requires_grad
    layer(x)
    assert int(layer.num_batches_tracked) == 2


def test_trainable_false_at_construction():
    layer = BatchNormalization(3, trainable=False)
    assert not layer.gamma.requires_grad and not layer.uses_batch_statistics
    assert "trainable=False" in repr(layer)


# ------------------------------------------------------------------ lazy build and state
def test_lazy_build_from_first_forward():
    layer = BatchNormalization(axis=-1)
    assert not layer.built and layer.gamma is None
    assert "unbuilt" in repr(layer)
    layer(torch.randn(4, 5, 7))
    assert layer.built and layer.features == (7,)
    assert layer.gamma.shape == layer.moving_mean.shape == (7,)
    assert int(layer.num_batches_tracked) == 1


def test_lazy_build_with_tuple_axis():
    layer = BatchNormalization(axis=(1, -1))
    layer(torch.randn(4, 3, 5, 2))
    assert layer.features == (3, 2) and layer.gamma.shape == (3, 2)


def test_state_dict_loads_into_unbuilt_layer(assert_close):
    trained = BatchNormalization(4, momentum=0.5)
    for s in range(3):
        trained(batch((8, 4, 3), torch.float32, s))
    trained.eval()
    fresh = BatchNormalization(momentum=0.5)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.built and fresh.features == (4,)
    assert int(fresh.num_batches_tracked) == 3
    fresh.eval()
    x = batch((5, 4, 3), torch.float32, 9)
    assert_close(fresh(x), trained(x))
    assert set(fresh.state_dict()) == {"gamma", "beta", "moving_mean", "moving_variance",
                                       "num_batches_tracked"}


def test_state_dict_without_center_scale():
    layer = BatchNormalization(4, center=False, scale=False)
    assert layer.gamma is None and layer.beta is None
    assert set(layer.state_dict()) == {"moving_mean", "moving_variance", "num_batches_tracked"}
    assert list(layer.parameters()) == []


def test_initializers_and_reset():
    layer = BatchNormalization(3, gamma_initializer="constant(2.0)", beta_initializer="ones",
                               moving_mean_initializer={"name": "constant", "value": 0.5},
                               moving_variance_initializer="constant(4)")
    assert torch.equal(layer.gamma, torch.full((3,), 2.0))
    assert torch.equal(layer.beta, torch.ones(3))
    layer(torch.randn(8, 3))
    layer.reset_moving_statistics()
    assert torch.equal(layer.moving_mean, torch.full((3,), 0.5))
    assert torch.equal(layer.moving_variance, torch.full((3,), 4.0))
    assert int(layer.num_batches_tracked) == 0


def test_regularization_loss_and_constraints(assert_close):
    layer = BatchNormalization(3, gamma_regularizer="l2(0.1)", beta_regularizer="l1(0.5)",
                               gamma_constraint="non_neg", beta_constraint="max_norm(1.0)")
    with torch.no_grad():
        layer.gamma.copy_(torch.tensor([1.0, -2.0, 3.0]))
        layer.beta.copy_(torch.tensor([3.0, 0.0, -4.0]))
    assert_close(layer.regularization_loss(), torch.tensor(0.1 * 14 + 0.5 * 7))
    layer.apply_constraints()
    assert_close(layer.gamma, torch.tensor([1.0, 0.0, 3.0]))
    assert_close(layer.beta, torch.tensor([0.6, 0.0, -0.8]), atol=1e-6, rtol=1e-6)
    assert_close(BatchNormalization(3).regularization_loss(), torch.tensor(0.0))


# ---------------------------------------------------------------------- errors
def test_feature_count_mismatch_names_both():
    layer = BatchNormalization(4)
    with pytest.raises(ValueError, match=r"expected 4 features along axis 1.*\(2, 5, 3\)") as e:
        layer(torch.randn(2, 5, 3))
    assert "5 features" in str(e.value) and "\n" not in str(e.value)


def test_axis_out_of_range_names_axis_and_rank():
    with pytest.raises(ValueError, match=r"axis 3 is out of range for a 3D input") as e:
        BatchNormalization(axis=3)(torch.randn(2, 4, 3))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("shape", [(5,), ()], ids=["1d", "0d"])
def test_rank_below_two(shape):
    with pytest.raises(ValueError, match=rf"at least 2D input.*got a {len(shape)}D") as e:
        BatchNormalization(5)(torch.randn(shape))
    assert "\n" not in str(e.value)


def test_single_value_per_channel_names_layer_shape_and_remedy():
    layer = BatchNormalization(4, name="bn_block3")
    with pytest.raises(ValueError) as e:
        layer(torch.randn(1, 4))
    message = str(e.value)
    assert "bn_block3" in message and "(1, 4)" in message
    assert "drop_last=True" in message and "eval()" in message and "\n" not in message
    layer.eval()
    assert layer(torch.randn(1, 4)).shape == (1, 4)  # inference is fine with one sample


def test_single_sample_with_spatial_dims_is_fine():
    layer = BatchNormalization(4)
    assert layer(torch.randn(1, 4, 3, 3)).shape == (1, 4, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"momentum": 1.5}, r"momentum must be in \[0, 1\].*1\.5"),
     ({"momentum": -0.1}, r"-0\.1"),
     ({"epsilon": 0.0}, r"epsilon must be a number > 0; got 0\.0"),
     ({"on_nonfinite": "ignore"}, r"'ignore'"),
     ({"gamma_initializer": "glorot"}, r"unknown initializer 'glorot'; choose from: .*he_normal"),
     ({"gamma_regularizer": "l3"}, r"unknown regularizer 'l3'; choose from: l1, l1_l2, l2"),
     ({"beta_constraint": "positive"}, r"unknown constraint 'positive'; choose from: .*non_neg")],
    ids=["momentum>1", "momentum<0", "epsilon0", "on_nonfinite", "initializer", "regularizer",
         "constraint"],
)
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        BatchNormalization(3, **kwargs)


@pytest.mark.parametrize(
    ("setting", "value", "pattern"),
    [("momentum", 1.5, r"layer_a: momentum must be in \[0, 1\].*1\.5"),
     ("momentum", True, r"momentum must be in \[0, 1\].*True"),
     ("epsilon", -1e-3, r"layer_a: epsilon must be a number > 0; got -0\.001"),
     ("on_nonfinite", "ignore", r"on_nonfinite must be 'skip' or 'raise'; got 'ignore'"),
     ("implementation", "cuda", r"unknown implementation 'cuda'; choose from auto, native")],
    ids=["momentum", "momentum-bool", "epsilon", "on_nonfinite", "implementation"],
)
def test_settings_are_validated_when_assigned_later(setting, value, pattern):
    # A training step trusts these settings, so an assignment is checked like the constructor.
    layer = BatchNormalization(3, name="layer_a")
    before = getattr(layer, setting)
    with pytest.raises(ValueError, match=pattern):
        setattr(layer, setting, value)
    assert getattr(layer, setting) == before
    layer.momentum, layer.epsilon = None, 1e-5  # valid values take effect
    layer(torch.randn(4, 3))
    assert layer.momentum is None and layer.epsilon == 1e-5


CHANGES = {
    "momentum": {"momentum": 0.5},
    "cumulative": {"momentum": None},
    "epsilon": {"epsilon": 0.25},
    "unbiased": {"unbiased_moving_variance": True},
    "composite": {"implementation": "composite"},
    "reference": {"implementation": "reference"},
    "axis": {"axis": 0},
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_a_setting_changed_between_steps_applies_to_the_next_step(change, assert_close):
    # The layer keeps the fused kernel's plan for a batch like the last one; a change of
    # settings must not reuse it. Reference: the pure function with the new settings.
    layer = BatchNormalization(4, momentum=0.9)
    for seed in (1, 2):
        layer(batch((4, 4), torch.float32, seed))
    for name, value in change.items():
        setattr(layer, name, value)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = batch((4, 4), torch.float32, 3)
    y = layer(x)
    expected = batch_norm(
        x, state["gamma"], state["beta"], state["moving_mean"], state["moving_variance"],
        training=True, axis=layer.axis, momentum=layer.momentum, epsilon=layer.epsilon,
        num_batches_tracked=state["num_batches_tracked"],
        unbiased_moving_variance=layer.unbiased_moving_variance,
        implementation=layer.implementation,
    )
    assert_close(y, expected.output)
    assert_close(layer.moving_mean, expected.moving_mean)
    assert_close(layer.moving_variance, expected.moving_variance)
    assert int(layer.num_batches_tracked) == 3


def test_dtype_change_and_new_batch_size_between_steps(assert_close):
    layer = BatchNormalization(3, momentum=0.5)
    layer(batch((8, 3), torch.float32, 1))
    layer.double()
    x = batch((8, 3), torch.float64, 2)
    assert layer(x).dtype == torch.float64
    x5 = batch((5, 3), torch.float64, 3)  # another batch size: another values-per-channel
    before = layer.moving_variance.clone()
    layer(x5)
    assert_close(layer.moving_variance, 0.5 * before + 0.5 * x5.var(0, unbiased=False))


def test_state_dict_assigned_with_another_dtype_between_steps(assert_close):
    layer = BatchNormalization(3, momentum=0.5)
    x = batch((8, 3), torch.float32, 1)
    layer(x)
    state = {k: v.double() if v.is_floating_point() else v for k, v in layer.state_dict().items()}
    layer.load_state_dict(state, assign=True)  # parameters and statistics now float64
    before = state["moving_mean"].clone()  # assigned: the layer updates this very tensor
    y = layer(x)  # the same float32 batch: its parameters now need a cast
    assert y.dtype == torch.float32 and layer.moving_mean.dtype == torch.float64
    assert_close(y, reference.training_output(x.double(), state["gamma"], state["beta"], 1,
                                              1e-3).float())
    # The batch statistics come from float32 arithmetic: compare at float32 tolerance.
    assert_close(layer.moving_mean.float(), (0.5 * before + 0.5 * x.double().mean(0)).float())


def test_training_step_under_inference_mode_after_a_planned_step():
    layer = BatchNormalization(3, momentum=0.5)
    layer(batch((8, 3), torch.float32, 1))
    with torch.inference_mode():
        layer(batch((8, 3), torch.float32, 2))
    assert int(layer.num_batches_tracked) == 2


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_integer_input_is_a_type_error_naming_the_dtype(training):
    layer = BatchNormalization(3, name="bn_in").train(training)
    with pytest.raises(TypeError, match=r"bn_in: expected a floating-point input; got dtype torch.int64"):
        layer(torch.ones(4, 3, dtype=torch.long))


def test_axis_of_wrong_type():
    with pytest.raises(TypeError, match=r"axis must be an int or a sequence of ints.*got 1\.0"):
        BatchNormalization(axis=1.0)


def test_unbuilt_layer_refuses_keras_weights():
    with pytest.raises(RuntimeError, match="num_features"):
        BatchNormalization().get_keras_weights()


# ---------------------------------------------------------------------- empty batch and dtype
def test_empty_batch_passes_through_without_update():
    layer = BatchNormalization(3, momentum=0.5)
    x = torch.randn(0, 3, 4, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 4)
    assert torch.equal(layer.moving_mean, torch.zeros(3))
    assert int(layer.num_batches_tracked) == 0


def test_two_forwards_then_one_backward_match_torch(assert_close):
    # Gradient accumulation through one layer: the first graph must survive the second step.
    native, ours = torch_pair((6, 3), torch.float64, 0.9)
    x1, x2 = batch((6, 3), torch.float64, 4), batch((6, 3), torch.float64, 5)
    grads = []
    for layer in (native, ours):
        a, b = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
        (layer(a).pow(3).sum() + layer(b).pow(2).sum()).backward()
        grads.append((a.grad, b.grad))
    assert_close(grads[1][0], grads[0][0])
    assert_close(grads[1][1], grads[0][1])
    assert_close(ours.moving_mean, native.running_mean)


def test_training_step_inside_and_after_inference_mode(assert_close):
    layer = BatchNormalization(3, momentum=0.5)
    with torch.inference_mode():
        layer(batch((8, 3), torch.float32, 6))
    x = batch((8, 3), torch.float32, 7).requires_grad_(True)
    layer(x).pow(2).sum().backward()
    assert int(layer.num_batches_tracked) == 2
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_float64_layer_and_input(assert_close):
    layer = BatchNormalization(3, dtype=torch.float64)
    x = batch((8, 3), torch.float64, 3)
    y = layer(x)
    assert y.dtype == torch.float64 and layer.moving_mean.dtype == torch.float64
    assert_close(y, reference.training_output(x, None, None, 1, 1e-3))


def test_wrong_rank_error_names_the_layer_and_the_shape():
    layer = BatchNormalization(4, name="bn_block3")
    with pytest.raises(ValueError, match=r"bn_block3: .*at least 2D.*input shape \(4,\)"):
        layer(torch.randn(4))
    with pytest.raises(ValueError, match=r"bn_block3: axis 5 is out of range.*input shape \(2, 4\)"):
        BatchNormalization(axis=5, name="bn_block3")(torch.randn(2, 4))
