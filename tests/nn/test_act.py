"""``BatchNormAct`` / ``batch_norm_act``: BN + activation in one step.

Reference: the same BN followed by the ``torch.nn.functional`` activation, out of
place — outputs, gradients and moving statistics must be identical. The in-place
path is checked to really be taken (and to be refused where the backward needs the
pre-activation), checkpoints move between ``BatchNormAct`` and
``BatchNormalization`` both ways, and ``torch.nn.BatchNorm2d`` + activation is
matched as PyTorch users write it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reference
from bnlab.convert import torch_momentum
from bnlab.functional import batch_norm
from bnlab.functional.act import activate, batch_norm_act, check_activation, list_activations
from bnlab.nn import BatchNormAct, BatchNormalization

F64 = torch.float64

# name -> (activation_kwargs, the torch function it must equal)
ACTS = {
    "relu": ({}, F.relu),
    "leaky_relu": ({"negative_slope": 0.1}, lambda y: F.leaky_relu(y, 0.1)),
    "leaky_relu_keras_default": ({}, lambda y: F.leaky_relu(y, 0.2)),
    "leaky_relu_negative_slope": ({"negative_slope": -0.5}, lambda y: F.leaky_relu(y, -0.5)),
    "sigmoid": ({}, torch.sigmoid),
    "tanh": ({}, torch.tanh),
    "gelu": ({}, F.gelu),
    "gelu_tanh": ({"approximate": "tanh"}, lambda y: F.gelu(y, approximate="tanh")),
    "silu": ({}, F.silu),
}


def act_name(case: str) -> str:
    return "leaky_relu" if case.startswith("leaky_relu") else case.split("_tanh")[0]


def sample(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * 2 + 0.5).to(dtype)


VARIANTS = {
    # name: (layer kwargs, input shape)
    "native_nchw": ({}, (6, 4, 3, 3)),
    "channel_last": ({"axis": -1}, (6, 5, 4)),
    "composite": ({"implementation": "composite"}, (6, 4, 3)),
    "reference": ({"implementation": "reference"}, (6, 4)),
    "renorm": ({"renorm": True, "renorm_clipping": {"rmax": 1.5, "rmin": 0.7, "dmax": 0.5},
                "renorm_momentum": 0.5}, (6, 4, 3)),
    "ghost": ({"virtual_batch_size": 3}, (6, 4, 3)),
}


@pytest.mark.parametrize("case", ACTS, ids=ACTS.keys())
@pytest.mark.parametrize(("variant", "shape"), [(v, s) for v, (_, s) in VARIANTS.items()],
                         ids=VARIANTS.keys())
def test_equals_batch_norm_then_activation(case, variant, shape):
    """Two steps of training and one of inference: identical outputs, gradients, buffers."""
    kwargs, fn = ACTS[case]
    layer_kwargs = VARIANTS[variant][0]
    channels = shape[-1] if layer_kwargs.get("axis") == -1 else shape[1]
    fused = BatchNormAct(channels, activation=act_name(case), activation_kwargs=kwargs,
                         momentum=0.8, gamma_initializer="random_uniform",
                         beta_initializer="random_normal", **layer_kwargs)
    plain = BatchNormalization(channels, momentum=0.8, **layer_kwargs)
    plain.load_state_dict(fused.state_dict())
    for step in range(3):
        if step == 2:
            fused.eval()
            plain.eval()
        x1 = sample(shape, seed=step).requires_grad_(True)
        x2 = x1.detach().clone().requires_grad_(True)
        y1, y2 = fused(x1), fn(plain(x2))
        assert torch.equal(y1, y2)
        w = sample(shape, seed=10 + step)
        g1 = torch.autograd.grad(y1, [x1, fused.gamma, fused.beta], w)
        g2 = torch.autograd.grad(y2, [x2, plain.gamma, plain.beta], w)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        for key, value in plain.state_dict().items():
            assert torch.equal(fused.state_dict()[key], value), key


@pytest.mark.parametrize("case", ACTS, ids=ACTS.keys())
def test_gradcheck_float64(case):
    """Analytic vs numerical gradients through the in-place activation, float64."""
    kwargs, _ = ACTS[case]
    x = sample((5, 3, 2), seed=1, dtype=F64).requires_grad_(True)
    gamma = (torch.rand(3, dtype=F64) + 0.5).requires_grad_(True)
    beta = torch.randn(3, dtype=F64).requires_grad_(True)
    state = (torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))

    def fn(x, gamma, beta):
        return batch_norm_act(x, gamma, beta, *state, training=True, activation=act_name(case),
                              activation_kwargs=kwargs).output

    assert torch.autograd.gradcheck(fn, (x, gamma, beta))


@pytest.mark.parametrize("case", ACTS, ids=ACTS.keys())
def test_functional_matches_float64_reference(case, assert_close):
    kwargs, fn = ACTS[case]
    x = sample((8, 3, 4), seed=2)
    gamma, beta = torch.rand(3) + 0.5, torch.randn(3)
    y, mean, var = batch_norm_act(x, gamma, beta, torch.zeros(3), torch.ones(3), training=True,
                                  momentum=0.9, activation=act_name(case),
                                  activation_kwargs=kwargs)
    assert_close(y, fn(reference.training_output(x, gamma, beta, 1, 1e-3)))
    batch_mean, batch_var = reference.moments(x, 1)
    assert_close(mean, 0.1 * batch_mean)
    assert_close(var, 0.9 + 0.1 * batch_var)


IN_PLACE = {"relu": True, "leaky_relu": True, "sigmoid": True, "tanh": True,
            "gelu": False, "silu": False}


@pytest.mark.parametrize(("name", "in_place"), IN_PLACE.items(), ids=IN_PLACE.keys())
def test_in_place_only_where_the_backward_allows(name, in_place):
    """Recording gradients: relu/leaky_relu/sigmoid/tanh overwrite the BN output;
    gelu/silu (backward needs the pre-activation) allocate a new tensor."""
    x = sample((6, 3), seed=3).requires_grad_(True)
    y = batch_norm(x, None, None, torch.zeros(3), torch.ones(3), training=True).output
    out = activate(y, name, inplace=True)
    assert (out is y) == in_place
    out.sum().backward()  # autograd accepts the graph
    assert x.grad is not None


def test_negative_leaky_slope_is_not_in_place():
    y = sample((6, 3), seed=4).requires_grad_(True) * 1.0
    assert activate(y, "leaky_relu", {"negative_slope": -0.1}, inplace=True) is not y


@pytest.mark.parametrize("name", ["gelu", "silu", "relu"])
def test_without_gradients_silu_and_relu_run_in_place(name):
    y = sample((6, 3), seed=5)
    with torch.no_grad():
        out = activate(y, name, inplace=True)
    assert (out is y) == (name != "gelu")  # PyTorch has no in-place gelu


def test_batch_norm_act_does_not_touch_its_input():
    x = sample((6, 3), seed=6)
    before = x.clone()
    batch_norm_act(x, None, None, torch.zeros(3), torch.ones(3), training=True)
    batch_norm_act(x, None, None, torch.zeros(3), torch.ones(3), training=False)
    assert torch.equal(x, before)


# -------------------------------------------------------------------- checkpoints
def trained(layer, steps=2):
    for step in range(steps):
        layer(sample((8, 4, 3, 3), seed=20 + step))
    return layer


@pytest.mark.parametrize("options", [{}, {"renorm": True}, {"center": False}],
                         ids=["plain", "renorm", "no_center"])
def test_checkpoint_from_batch_norm_act_into_batch_normalization(options):
    fused = trained(BatchNormAct(4, activation="tanh", gamma_initializer="random_uniform",
                                 **options))
    plain = BatchNormalization(4, **options)
    assert list(plain.state_dict()) == list(fused.state_dict())
    plain.load_state_dict(fused.state_dict())  # strict: no missing or extra key
    fused.eval()
    plain.eval()
    x = sample((3, 4, 3, 3), seed=30)
    assert torch.equal(fused(x), torch.tanh(plain(x)))


@pytest.mark.parametrize("options", [{}, {"renorm": True}], ids=["plain", "renorm"])
def test_checkpoint_from_batch_normalization_into_batch_norm_act(options):
    plain = trained(BatchNormalization(4, gamma_initializer="random_uniform", **options))
    fused = BatchNormAct(activation="relu", **options)  # unbuilt: takes the checkpoint's shape
    fused.load_state_dict(plain.state_dict())
    fused.eval()
    plain.eval()
    x = sample((3, 4, 3, 3), seed=31)
    assert torch.equal(fused(x), torch.relu(plain(x)))


# ----------------------------------------------------------------- vs torch.nn
@pytest.mark.parametrize(("name", "module"), [("relu", nn.ReLU()), ("silu", nn.SiLU()),
                                              ("leaky_relu", nn.LeakyReLU(0.2))],
                         ids=["relu", "silu", "leaky_relu"])
def test_matches_torch_batchnorm2d_then_activation(name, module, assert_close):
    torch_bn = nn.BatchNorm2d(4, momentum=0.1)
    fused = BatchNormAct(4, activation=name, momentum=0.9, epsilon=torch_bn.eps,
                         unbiased_moving_variance=True)
    assert torch_momentum(0.9) == pytest.approx(0.1)
    for step in range(3):
        x = sample((5, 4, 3, 3), seed=40 + step)
        assert_close(fused(x), module(torch_bn(x)))
    assert_close(fused.moving_mean, torch_bn.running_mean)
    assert_close(fused.moving_variance, torch_bn.running_var)


# ---------------------------------------------------------------------- errors
def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown activation 'relu6'; choose from: gelu, "
                                         r"leaky_relu, relu, sigmoid, silu, tanh"):
        BatchNormAct(4, activation="relu6")


def test_unknown_option_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'leaky_relu' takes no option\(s\) \['alpha'\]; "
                                         r"allowed: negative_slope"):
        BatchNormAct(4, activation="leaky_relu", activation_kwargs={"alpha": 0.3})
    with pytest.raises(ValueError, match=r"'relu' takes no option\(s\) \['negative_slope'\]; "
                                         r"allowed: none"):
        check_activation("relu", {"negative_slope": 0.1})


def test_gelu_approximate_accepts_keras_bool_and_rejects_others():
    assert check_activation("gelu", {"approximate": True}) == {"approximate": "tanh"}
    assert check_activation("gelu", {"approximate": False}) == {"approximate": "none"}
    with pytest.raises(ValueError, match=r"approximate must be 'none', 'tanh' or a bool; got 'erf'"):
        check_activation("gelu", {"approximate": "erf"})


def test_activation_module_and_repr():
    layer = BatchNormAct(4, activation="leaky_relu", activation_kwargs={"negative_slope": 0.3})
    module = layer.activation_module()
    assert isinstance(module, nn.LeakyReLU) and module.negative_slope == 0.3
    assert "activation='leaky_relu', negative_slope=0.3" in repr(layer)
    assert list_activations() == ["gelu", "leaky_relu", "relu", "sigmoid", "silu", "tanh"]


def test_is_a_batch_normalization_for_model_wide_utilities():
    layer = BatchNormAct(4)
    assert isinstance(layer, BatchNormalization)
    assert layer.name == "batch_norm_act"
