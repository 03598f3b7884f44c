"""Registry-driven conformance: every registered layer type, built alone in a model, gets
forward/backward, declared-vs-actual shape, state_dict round trip, float64, batch of one
and empty batch in inference."""

from __future__ import annotations

import pytest
import torch

from bnlab.models import build_model, list_layer_types

# One example per layer type: (spec, Keras input shape). Adding a type to the registry
# without an example here fails test_every_type_has_an_example.
EXAMPLES = {
    "Activation": ({"type": "Activation", "activation": "gelu"}, (3, 4, 2)),
    "BatchNormalization": ({"type": "BatchNormalization", "momentum": 0.5}, (3, 4, 2)),
    "BatchNormAct": ({"type": "BatchNormAct", "activation": "tanh"}, (3, 4, 2)),
    "Conv2D": (
        {"type": "Conv2D", "filters": 3, "kernel_size": 2, "strides": 2, "padding": "same"},
        (5, 4, 2),
    ),
    "Dense": ({"type": "Dense", "units": 3, "activation": "relu"}, (5, 2)),
    "Dropout": ({"type": "Dropout", "rate": 0.5}, (6,)),
    "Flatten": ({"type": "Flatten"}, (3, 4, 2)),
    "LSTM": ({"type": "LSTM", "units": 3, "return_sequences": True}, (4, 2)),
    "MaxPooling2D": ({"type": "MaxPooling2D", "pool_size": 2, "padding": "same"}, (5, 3, 2)),
    "ZeroPadding2D": ({"type": "ZeroPadding2D", "padding": [[1, 0], [0, 2]]}, (3, 4, 2)),
}
TYPES = sorted(EXAMPLES)


def test_every_type_has_an_example():
    assert set(list_layer_types()) - {"Input"} == set(EXAMPLES)


def make(kind, seed=0):
    spec, shape = EXAMPLES[kind]
    return build_model([spec], shape, seed=seed), shape


@pytest.mark.parametrize("kind", TYPES)
def test_forward_backward_and_declared_shape(kind):
    model, shape = make(kind)
    model.train()
    x = torch.randn(4, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (4, *model.output_shape)
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", TYPES)
def test_state_dict_round_trip(kind):
    a, shape = make(kind, seed=0)
    b, _ = make(kind, seed=1)
    x = torch.randn(4, *shape)
    a.train()
    a(x)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", TYPES)
def test_float64(kind):
    model, shape = make(kind)
    model.double().eval()
    x = torch.randn(2, *shape, dtype=torch.float64)
    out = model(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), model.float()(x.float()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", TYPES)
def test_inference_treats_samples_independently_batch_of_one_and_empty(kind):
    model, shape = make(kind)
    model.eval()
    x = torch.randn(3, *shape)
    full = model(x)
    torch.testing.assert_close(model(x[1:2]), full[1:2], atol=1e-6, rtol=1e-6)
    empty = model(x[:0])
    assert empty.shape == (0, *model.output_shape)
