"""Registry-driven conformance: every registered BN layer, in every listed configuration,
passes the same checks (PyTorch's ModuleInfo / timm's ``list_models`` idea).

A class added to ``bnlab.nn.registry`` fails ``test_every_registered_layer_is_covered``
until it gets configurations here; then it gets every test below for free:
forward/backward, state_dict round trip into a fresh (lazily built) layer, dtypes
(float64 in/out, float16 in/out), empty batch, batch of one, and inference being
deterministic, per-sample and free of state changes.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bnlab.nn import create_layer, list_layers

CHANNELS = 3
RENORM = {"renorm": True, "renorm_clipping": {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0},
          "renorm_momentum": 0.9}

# registry name -> [(id, constructor kwargs)]
CONFIGS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "batch_normalization": [
        ("plain", {}),
        ("channel_last", {"axis": -1}),
        ("no_affine", {"center": False, "scale": False}),
        ("cumulative", {"momentum": None}),
        ("composite", {"implementation": "composite"}),
        ("renorm", RENORM),
        ("ghost", {"virtual_batch_size": 2}),
    ],
    "batch_norm_act": [
        ("relu", {"activation": "relu"}),
        ("leaky_relu", {"activation": "leaky_relu", "activation_kwargs": {"negative_slope": 0.1}}),
        ("sigmoid", {"activation": "sigmoid"}),
        ("tanh", {"activation": "tanh"}),
        ("gelu", {"activation": "gelu"}),
        ("silu", {"activation": "silu"}),
        ("relu_renorm", {"activation": "relu", **RENORM}),
        ("silu_ghost", {"activation": "silu", "virtual_batch_size": 2}),
        ("tanh_channel_last", {"activation": "tanh", "axis": -1}),
    ],
}

CASES = [pytest.param(name, kwargs, id=f"{name}-{cid}")
         for name, configs in CONFIGS.items() for cid, kwargs in configs]


def make(name: str, kwargs: dict[str, Any], num_features: int | None = CHANNELS):
    # Random gamma/beta of a realistic size, so that state_dict round trips carry real
    # values and no channel is dead behind a relu; seeded, so every run is the same.
    extra = {}
    if kwargs.get("scale", True):
        extra["gamma_initializer"] = {"name": "random_uniform", "minval": 0.5, "maxval": 1.5}
    if kwargs.get("center", True):
        extra["beta_initializer"] = {"name": "random_normal", "stddev": 0.5}
    torch.manual_seed(0)
    return create_layer(name, num_features, **kwargs, **extra)


def batch(kwargs: dict[str, Any], n: int = 4, seed: int = 0, dtype=torch.float32):
    """(N, C, 2, 2) channel-first, or (N, 2, 2, C) for axis=-1; shifted and scaled."""
    shape = (n, 2, 2, CHANNELS) if kwargs.get("axis") == -1 else (n, CHANNELS, 2, 2)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 2.0 + 0.7).to(dtype)


def buffers(layer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in layer.state_dict().items()}


def test_every_registered_layer_is_covered():
    assert sorted(CONFIGS) == list_layers()


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_forward_backward(name, kwargs):
    layer = make(name, kwargs)
    before = buffers(layer)
    x = batch(kwargs).requires_grad_(True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    w = batch(kwargs, seed=1)
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(y, [x, *params], w)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert int(layer.num_batches_tracked) == 1
    changed = [k for k in before if not torch.equal(before[k], layer.state_dict()[k])]
    assert "moving_mean" in changed and "moving_variance" in changed
    # Same configuration, same weights, same input: same numbers.
    twin = make(name, kwargs)
    twin.load_state_dict(before)
    assert torch.equal(twin(x.detach()), y.detach())


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_state_dict_round_trip_into_a_fresh_lazy_layer(name, kwargs):
    layer = make(name, kwargs)
    for step in range(2):
        layer(batch(kwargs, seed=10 + step))
    fresh = make(name, kwargs, num_features=None)
    fresh.load_state_dict(layer.state_dict())
    assert list(fresh.state_dict()) == list(layer.state_dict())
    x = batch(kwargs, seed=20)
    assert torch.equal(fresh(x), layer(x))  # training: same output ...
    for key, value in layer.state_dict().items():  # ... and the same update
        assert torch.equal(fresh.state_dict()[key], value), key
    layer.eval()
    fresh.eval()
    assert torch.equal(fresh(x), layer(x))


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_float64_layer_gives_float64_and_agrees_with_float32(name, kwargs, assert_close):
    layer32 = make(name, kwargs)
    layer64 = make(name, kwargs).double()
    layer64.load_state_dict(layer32.state_dict())
    for training in (True, False):
        layer32.train(training)
        layer64.train(training)
        x = batch(kwargs, seed=30)
        y64 = layer64(x.double())
        assert y64.dtype == torch.float64
        assert_close(layer32(x), y64, dtype=torch.float32)
    for key, value in layer32.state_dict().items():
        assert_close(value, layer64.state_dict()[key], dtype=torch.float32, msg=key)


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_float16_input_gives_float16_output(name, kwargs, assert_close):
    layer = make(name, kwargs)
    twin = make(name, kwargs)
    twin.load_state_dict(layer.state_dict())
    x = batch(kwargs, seed=40, dtype=torch.float16)
    y = layer(x)
    assert y.dtype == torch.float16
    assert_close(y, twin(x.float()), dtype=torch.float16)
    assert layer.moving_mean.dtype == torch.float32


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_empty_batch_passes_and_changes_nothing(name, kwargs):
    layer = make(name, kwargs)
    before = buffers(layer)
    x = batch(kwargs, n=0).requires_grad_(True)
    y = layer(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_batch_of_one_raises_in_training_and_works_in_eval(name, kwargs, assert_close):
    layer = make(name, kwargs)
    # Dense (1, C) input: one value per channel (channel first and last alike).
    one = torch.randn(1, CHANNELS)
    with pytest.raises(ValueError, match=r"(eval\(\)|not a multiple of virtual_batch_size)"):
        layer(one)
    assert int(layer.num_batches_tracked) == 0
    layer.eval()
    x = batch(kwargs, seed=50)
    full = layer(x)
    assert_close(layer(x[:1]), full[:1])


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_eval_is_deterministic_per_sample_and_changes_no_buffer(name, kwargs, assert_close):
    layer = make(name, kwargs)
    layer(batch(kwargs, seed=60))  # move the statistics away from their initial values
    layer.eval()
    before = buffers(layer)
    x = batch(kwargs, n=5, seed=61)
    y = layer(x)
    assert torch.equal(layer(x), y)
    per_sample = torch.cat([layer(x[i:i + 1]) for i in range(5)])
    assert_close(per_sample, y)
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key
