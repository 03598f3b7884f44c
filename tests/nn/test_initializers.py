"""Keras initializers on PyTorch weight layouts: fans, bounds and spreads vs the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from bnlab.nn import initializers
from bnlab.nn.initializers import fans

# PyTorch layouts and the equivalent Keras kernel shapes (Dense (in, out), Conv (*k, in, out)).
LAYOUTS = {
    "linear": ((300, 200), (200, 300)),
    "conv2d": ((64, 32, 3, 3), (3, 3, 32, 64)),
    "conv1d": ((48, 16, 5), (5, 16, 48)),
}
TRUNCATED_STD = 0.87962566103423978  # std of a unit normal cut at +-2


@pytest.mark.parametrize(("torch_shape", "keras_shape"), LAYOUTS.values(), ids=LAYOUTS.keys())
def test_fans_equal_keras_kernel_fans(torch_shape, keras_shape):
    from keras.src.initializers.random_initializers import compute_fans

    assert fans(torch_shape) == tuple(int(f) for f in compute_fans(keras_shape))


def test_fans_of_vectors_and_scalars():
    assert fans((7,)) == (7, 7)
    assert fans(()) == (1, 1)


def expected(name: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """(distribution, scale s) with variance s: Keras's variance scaling table."""
    table = {
        "glorot_uniform": ("uniform", 1.0 / ((fan_in + fan_out) / 2)),
        "glorot_normal": ("truncated", 1.0 / ((fan_in + fan_out) / 2)),
        "he_uniform": ("uniform", 2.0 / fan_in),
        "he_normal": ("truncated", 2.0 / fan_in),
        "lecun_uniform": ("uniform", 1.0 / fan_in),
        "lecun_normal": ("truncated", 1.0 / fan_in),
    }
    return table[name]


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
                                  "lecun_uniform", "lecun_normal"])
@pytest.mark.parametrize(("shape", "_keras"), LAYOUTS.values(), ids=LAYOUTS.keys())
def test_variance_scaling_draws(name, shape, _keras):
    torch.manual_seed(0)
    w = torch.empty(shape)
    initializers.get(name)(w)
    fan_in, fan_out = fans(shape)
    distribution, s = expected(name, fan_in, fan_out)
    if distribution == "uniform":
        limit = math.sqrt(3 * s)  # Keras: sqrt(3 * scale / n)
        assert w.abs().max() <= limit
        assert w.abs().max() > 0.99 * limit  # the whole range is used
    else:
        cut = 2 * math.sqrt(s) / TRUNCATED_STD  # Keras truncates at two (corrected) stds
        assert w.abs().max() <= cut
        assert w.abs().max() > 0.95 * cut
    # The sample std (>= 15k draws: ~0.6% relative noise) vs sqrt(s).
    assert abs(w.std().item() / math.sqrt(s) - 1) < 0.03
    assert abs(w.mean().item()) < 4 * math.sqrt(s / w.numel())


@pytest.mark.parametrize(("name", "mean", "std", "bound"), [
    ("random_normal", 0.0, 0.05, None),
    ("random_uniform", 0.0, 0.1 / math.sqrt(12), 0.05),
    ("truncated_normal", 0.0, 0.05 * TRUNCATED_STD, 0.1),
])
def test_random_defaults_are_keras(name, mean, std, bound):
    torch.manual_seed(1)
    w = torch.empty(200, 100)
    initializers.get(name)(w)
    assert abs(w.std().item() / std - 1) < 0.03
    assert abs(w.mean().item() - mean) < 4 * std / math.sqrt(w.numel())
    if bound is not None:
        assert w.abs().max() <= bound


def test_orthogonal():
    torch.manual_seed(2)
    w = torch.empty(64, 128)
    initializers.get("orthogonal(gain=2.0)")(w)
    torch.testing.assert_close(w @ w.T, 4 * torch.eye(64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("spec", ["constant(0.5)", "constant(value=0.5)", " Constant(0.5) ",
                                  {"name": "constant", "value": 0.5}])
def test_constant_spec_forms(spec):
    w = torch.zeros(3, 2)
    initializers.get(spec)(w)
    assert torch.equal(w, torch.full((3, 2), 0.5))


def test_zeros_ones_and_callables():
    w = torch.full((4,), 7.0)
    initializers.get("zeros")(w)
    assert torch.equal(w, torch.zeros(4))
    initializers.get("ones")(w)
    assert torch.equal(w, torch.ones(4))

    def mine(t):
        t.fill_(3.0)

    assert initializers.get(mine) is mine


def test_variance_scaling_by_table(assert_close):
    torch.manual_seed(3)
    w = torch.empty(400, 100)
    initializers.get({"name": "variance_scaling", "scale": 3.0, "mode": "fan_out",
                      "distribution": "uniform"})(w)
    limit = math.sqrt(3 * 3.0 / 400)
    assert w.abs().max() <= limit and w.abs().max() > 0.99 * limit


def test_unknown_name_lists_every_valid_one():
    with pytest.raises(ValueError) as e:
        initializers.get("glorot")
    message = str(e.value)
    assert message.startswith("unknown initializer 'glorot'; choose from: ")
    for name in initializers.REGISTRY:
        assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(("spec", "pattern"), [
    ("constant(0.5", r"cannot read the initializer 'constant\(0\.5'"),
    ("constant(x)", r"cannot read the initializer 'constant\(x\)'"),
    ("constant(1, 2, 3)", r"bad arguments for initializer 'constant' in 'constant\(1, 2, 3\)'"),
    ({"value": 1.0}, r"needs a 'name' key; got keys \['value'\]"),
    ({"name": "variance_scaling", "mode": "fan_sum"}, r"fan_in, fan_out or fan_avg; got "
                                                     r"'fan_sum'"),
    (None, r"an initializer is required; choose from: .*zeros"),
])
def test_bad_specs(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        initializers.get(spec)


def test_non_spec_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"got 3 of type int"):
        initializers.get(3)


def test_keras_serialized_initializers_draw_like_their_names():
    from bnlab.nn.keras_objects import snake_case

    assert snake_case("GlorotUniform") == "glorot_uniform" and snake_case("L1L2") == "l1_l2"
    keras3 = {"module": "keras.initializers", "class_name": "GlorotUniform",
              "config": {"seed": None, "input_axes": None, "output_axes": None},
              "registered_name": None}
    for spec, name in [(keras3, "glorot_uniform"),
                       ({"class_name": "HeNormal", "config": {"seed": 3}}, "he_normal"),
                       ({"class_name": "VarianceScaling", "config": {
                           "scale": 2.0, "mode": "fan_in", "distribution": "normal"}},
                        "he_normal")]:
        a, b = torch.empty(64, 32), torch.empty(64, 32)
        torch.manual_seed(0)
        initializers.get(spec)(a)
        torch.manual_seed(0)
        initializers.get(name)(b)
        assert torch.equal(a, b)
    c = torch.empty(3)
    initializers.get({"class_name": "Constant", "config": {"value": 0.5}})(c)
    assert torch.equal(c, torch.full((3,), 0.5))
    eye = torch.empty(3, 3)
    initializers.get({"class_name": "Identity", "config": {"gain": 2.0}})(eye)
    assert torch.equal(eye, 2 * torch.eye(3))
