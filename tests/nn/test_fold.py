"""fold: BN folded in place into the previous Linear/Conv gives the eval-mode outputs; the rest
is returned with the reason (and reported by fold_report, which changes nothing)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn.fold import _CHAINS as REGISTERED_CHAINS
from bnlab.nn.fold import fold, fold_report, register_chain, register_producer

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _randomize(model: nn.Module) -> nn.Module:
    """Non-trivial moving statistics, gamma and beta in every BN layer."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            for name in ("weight", "bias", "gamma", "beta") if _is_bn(module) else ():
                p = getattr(module, name, None)
                if p is not None:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name in ("weight", "gamma") else 0.0))
            for name in ("running_mean", "moving_mean"):
                b = getattr(module, name, None)
                if isinstance(b, torch.Tensor):
                    b.copy_(torch.randn(b.shape, generator=g))
            for name in ("running_var", "moving_variance"):
                b = getattr(module, name, None)
                if isinstance(b, torch.Tensor):
                    b.copy_(torch.rand(b.shape, generator=g) * 2 + 0.1)
    return model


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, bnlab.BatchNormalization | nn.modules.batchnorm._BatchNorm)


def _check(model: nn.Module, x: torch.Tensor, folded_names: list[str], **kwargs) -> nn.Module:
    """Fold ``model`` in place: it computes what it computed in eval mode before."""
    torch.manual_seed(0)
    model = _randomize(model).train()
    state = copy.deepcopy(model.state_dict())
    report = fold_report(model, **kwargs)
    assert model.training  # fold_report keeps the mode ...
    for key, value in model.state_dict().items():  # ... and the weights
        assert torch.equal(value, state[key]), key
    original = copy.deepcopy(model).eval()
    unfolded = fold(model, **kwargs)
    assert unfolded == list(report.unfolded)  # fold returns what fold_report predicts
    assert [bn for bn, _ in report.folded] == folded_names
    for name in folded_names:
        replacement = model.get_submodule(name)
        assert not _is_bn(replacement)
        assert isinstance(replacement, nn.Identity) or isinstance(original.get_submodule(name), bnlab.nn.BatchNormAct)
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), **TOL)
    return model


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_then_torch_bn(bias: bool) -> None:
    model = nn.Sequential(nn.Linear(6, 5, bias=bias), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    folded = _check(model, torch.randn(7, 6), ["1"])
    assert folded[0].bias is not None and folded[0].bias.requires_grad


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv2d_then_torch_bn(bias: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 2, 3, stride=2, groups=2, bias=bias), nn.BatchNorm2d(2))
    _check(model, torch.randn(2, 3, 9, 9), ["1", "4"])


@pytest.mark.parametrize(("center", "scale"), [(True, True), (False, True), (True, False), (False, False)],
                         ids=["affine", "no-center", "no-scale", "neither"])
def test_conv1d_then_bnlab_bn(center: bool, scale: bool) -> None:
    model = nn.Sequential(nn.Conv1d(3, 4, 3),
                          bnlab.BatchNormalization(4, center=center, scale=scale, epsilon=1e-3))
    _check(model, torch.randn(2, 3, 10), ["1"])


def test_fused_bn_activation_leaves_its_activation() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bnlab.nn.BatchNormAct(4, activation="leaky_relu"),
                          nn.Conv2d(4, 2, 1))
    folded = _check(model, torch.randn(2, 3, 6, 6), ["1"])
    assert isinstance(folded[1], nn.LeakyReLU) and folded[1].negative_slope == 0.2


def test_conv3d_and_identity_between() -> None:
    model = nn.Sequential(nn.Conv3d(2, 3, 2), nn.Identity(), nn.BatchNorm3d(3))
    _check(model, torch.randn(2, 2, 4, 4, 4), ["2"])


def test_channels_last_memory_format() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    _check(model, torch.randn(2, 3, 7, 7).to(memory_format=torch.channels_last), ["1"])


def test_linear_on_sequences_with_channel_last_bn() -> None:
    # (N, T, F) features last: bnlab's axis=-1 is Linear's output channel axis.
    model = nn.Sequential(nn.Linear(4, 5), bnlab.BatchNormalization(5, axis=-1), nn.Tanh())
    _check(model, torch.randn(3, 6, 4), ["1"], example_input=torch.randn(3, 6, 4))


def test_example_input_catches_bn_on_the_wrong_axis() -> None:
    # Linear on (N, 5, 4) -> (N, 5, 5); BatchNorm1d(5) normalizes axis 1 (the 5 time steps),
    # not Linear's features: only a real forward can tell.
    model = _randomize(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)))
    assert [bn for bn, _ in fold_report(model).folded] == ["1"]  # the (N, F) assumption
    report = fold_report(model, example_input=torch.randn(2, 5, 4))
    assert report.folded == ()
    assert report.unfolded == (("1", "on the example input it normalizes axis 1 of a 3D tensor, "
                                     "not 0's channel axis 2"),)


def test_nested_sequential_counts_as_its_last_layer() -> None:
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Identity()), nn.BatchNorm2d(4))
    assert fold_report(model).folded == (("1", "0.0"),)
    folded = _check(model, torch.randn(2, 3, 6, 6), ["1"])
    assert folded[0][0].bias is not None


def test_unfoldable_layers_are_left_and_listed() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + x

    shared = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(
        nn.BatchNorm2d(3),                                     # first of its container
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),      # after ReLU
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),
        nn.Conv2d(4, 4, 1), bnlab.BatchNormalization(4, axis=(1, 2)),
        shared, nn.BatchNorm2d(4), shared,                     # used twice
        nn.Conv2d(4, 4, 1), bnlab.BatchNormalization(4, axis=-1),
        Custom(),                                              # folds inside
        nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6),                 # folds
    )
    x = torch.randn(2, 3, 6, 6)
    # axis=(1, 2) and axis=-1 need H = W = 4 to run; build them for this input shape.
    model[7] = bnlab.BatchNormalization((4, 4), axis=(1, 2))
    model[12] = bnlab.BatchNormalization(4, axis=-1)
    report = fold_report(model)
    reasons = dict(report.unfolded)
    assert reasons["0"] == ("its input is the model's input 'input', not a Linear/Conv "
                            "layer's output")
    assert reasons["3"] == "it follows 2 (ReLU), not a Linear/Conv layer"
    assert "track_running_stats=False" in reasons["5"]
    assert reasons["7"] == "it keeps several axes (1, 2); only one channel axis can be folded"
    assert reasons["9"] == "8 or the BN layer is used more than once in the model"
    assert reasons["12"] == "it normalizes axis -1, not the channel axis 1 of 11's output"
    assert report.folded == (("13.bn", "13.conv"), ("15", "14"))  # inside Custom too
    assert "left 6" in str(report) and "3: not folded, it follows 2 (ReLU)" in str(report)
    assert str(report.unfolded[1]) == "3: not folded, it follows 2 (ReLU), not a Linear/Conv layer"
    with pytest.raises(ValueError, match=r"6 BN layer\(s\) cannot be folded \(0: its input is"):
        fold(model, strict=True)
    assert isinstance(model[15], nn.BatchNorm2d)  # strict: the model is not changed
    folded = _check(model, x, ["13.bn", "15"])  # fold returns the six with their reasons
    assert isinstance(folded[3], nn.BatchNorm2d)


def test_registered_producer_and_chain() -> None:
    class Affine(nn.Module):  # a producer with its own activation slot
        def __init__(self, activation: nn.Module) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 2))
            self.bias = None
            self.activation = activation

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.activation(nn.functional.linear(x, self.weight, self.bias))

    class Stack(nn.Module):  # a chain that keeps its layers in a ModuleDict
        def __init__(self, *layers: nn.Module) -> None:
            super().__init__()
            self.layers = nn.ModuleDict({f"l{i}": m for i, m in enumerate(layers)})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers.values():
                x = layer(x)
            return x

    register_producer(Affine, channel_axis=-1, check=lambda m: None if isinstance(
        m.activation, nn.Identity) else f"has activation {type(m.activation).__name__}")
    register_chain(Stack, lambda m: [[(f"layers.{n}", c) for n, c in m.layers.items()]])
    model = Stack(Affine(nn.Identity()), nn.BatchNorm1d(3), Affine(nn.ReLU()), bnlab.BatchNormalization(3))
    model.layers.l2.weight = nn.Parameter(torch.randn(3, 3))
    assert dict(fold_report(model).unfolded) == {
        "layers.l3": "its producer layers.l2 (Affine) has activation ReLU"}
    _check(model, torch.randn(4, 2), ["layers.l1"])


def _register_sequential_model() -> None:
    """Fallback until bnlab.models registers its SequentialModel, Dense and Conv2D itself."""
    from bnlab.models.layers import Conv2D, Dense
    from bnlab.models.sequential import SequentialModel

    if SequentialModel in REGISTERED_CHAINS:
        return

    def segments(model):
        segment = []
        for (name, layer), permute in zip(model.layers.items(), model.permutes, strict=True):
            if permute is not None and segment:  # a permute between two layers breaks the chain
                yield segment
                segment = []
            segment.append((f"layers.{name}", layer))
        yield segment

    def linear_activation(module):
        if isinstance(module.activation, nn.Identity):
            return None
        return f"applies activation {type(module.activation).__name__} after its affine map"

    register_chain(SequentialModel, segments)
    register_producer(Dense, channel_axis=-1, check=linear_activation)
    register_producer(Conv2D, channel_axis=1, output_rank=4, check=linear_activation)


def test_lab_sequential_model() -> None:
    from bnlab.models import build_model

    _register_sequential_model()
    model = build_model([
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "relu"},
        {"type": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "relu"},
        {"type": "BatchNormalization", "center": False},
        {"type": "Flatten"},
        {"type": "Dense", "units": 5},
        {"type": "BatchNormalization", "scale": False},
        {"type": "Dense", "units": 2, "activation": "softmax"},
    ], input_shape=(6, 6, 2), seed=0)
    try:
        copy.deepcopy(model)
    except TypeError as error:  # _check compares the folded model with a copy
        pytest.skip(f"SequentialModel cannot be deep-copied yet: {error}")
    report = fold_report(model)
    assert report.folded == (("layers.batch_normalization", "layers.conv2d"),
                             ("layers.batch_normalization_2", "layers.dense"))
    ((name, reason),) = report.unfolded
    assert name == "layers.batch_normalization_1"
    assert reason.startswith("its producer layers.conv2d_1 (Conv2D)") and "ReLU" in reason
    _check(model, torch.rand(3, 6, 6, 2), ["layers.batch_normalization", "layers.batch_normalization_2"])
