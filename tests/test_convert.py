"""Conversion between bnlab's Keras vocabulary and PyTorch's batch norm modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnlab import BatchNormalization
from bnlab.convert import keras_momentum, replace_batchnorm, torch_momentum


@pytest.mark.parametrize(("keras", "torch_"), [(0.99, 0.01), (0.9, 0.1), (0.0, 1.0), (1.0, 0.0),
                                               (None, None)])
def test_momentum_conversion(keras, torch_):
    if keras is None:
        assert torch_momentum(None) is None and keras_momentum(None) is None
        return
    assert torch_momentum(keras) == pytest.approx(torch_, abs=1e-15)
    assert keras_momentum(torch_) == pytest.approx(keras, abs=1e-15)
    assert keras_momentum(torch_momentum(keras)) == pytest.approx(keras, abs=1e-15)


def randomized(module: nn.modules.batchnorm._BatchNorm, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c = module.num_features
    with torch.no_grad():
        if module.affine:
            module.weight.copy_(0.5 + torch.rand(c, generator=g))
            module.bias.copy_(torch.randn(c, generator=g))
        module.running_mean.copy_(torch.randn(c, generator=g))
        module.running_var.copy_(0.5 + torch.rand(c, generator=g))
        module.num_batches_tracked.fill_(7)
    return module


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "mNone"])
@pytest.mark.parametrize(("cls", "dims"), [(nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2),
                                           (nn.BatchNorm3d, 3)], ids=["1d", "2d", "3d"])
def test_from_torch_to_torch_round_trip(cls, dims, momentum, affine):
    native = randomized(cls(5, eps=1e-4, momentum=momentum, affine=affine))
    native.eval()
    layer = BatchNormalization.from_torch(native)
    assert layer.momentum == keras_momentum(momentum)
    assert layer.epsilon == 1e-4 and layer.unbiased_moving_variance
    assert layer.center == layer.scale == affine and not layer.training
    assert torch.equal(layer.moving_mean, native.running_mean)
    assert torch.equal(layer.moving_variance, native.running_var)
    assert int(layer.num_batches_tracked) == 7
    if affine:
        assert torch.equal(layer.gamma, native.weight) and torch.equal(layer.beta, native.bias)
    back = layer.to_torch(dims)
    assert type(back) is cls and not back.training
    assert back.eps == native.eps and back.momentum == native.momentum
    assert back.affine == native.affine
    assert back.state_dict().keys() == native.state_dict().keys()
    for key, value in native.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_from_torch_copies_are_independent():
    native = randomized(nn.BatchNorm1d(3))
    layer = BatchNormalization.from_torch(native)
    layer(torch.randn(8, 3))
    assert not torch.equal(layer.moving_mean, native.running_mean)


def test_from_torch_errors():
    with pytest.raises(TypeError, match=r"got Linear"):
        BatchNormalization.from_torch(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"track_running_stats=False"):
        BatchNormalization.from_torch(nn.BatchNorm2d(3, track_running_stats=False))


def test_to_torch_errors():
    with pytest.raises(ValueError, match=r"needs a built layer"):
        BatchNormalization().to_torch()
    with pytest.raises(ValueError, match=r"needs axis=1 \(channel-first\); got axis=-1"):
        BatchNormalization(3, axis=-1).to_torch()
    with pytest.raises(ValueError, match=r"one affine flag; got center=False, scale=True"):
        BatchNormalization(3, center=False).to_torch()
    with pytest.raises(ValueError, match=r"dims must be 1, 2, 3 or None; got 4"):
        BatchNormalization(3).to_torch(4)
    with pytest.raises(ValueError, match=r"layer has seen no input; pass dims=1, 2 or 3"):
        BatchNormalization(3).to_torch()
    layer = BatchNormalization(3)
    layer(torch.randn(2, 3, 1, 1, 1, 2))
    with pytest.raises(ValueError, match=r"has seen rank-6 input, which no torch BatchNorm"):
        layer.to_torch()


@pytest.mark.parametrize(("shape", "cls"), [((4, 3), nn.BatchNorm1d), ((4, 3, 5), nn.BatchNorm1d),
                                            ((4, 3, 2, 2), nn.BatchNorm2d),
                                            ((4, 3, 2, 2, 2), nn.BatchNorm3d)],
                         ids=["N,C", "N,C,L", "N,C,H,W", "N,C,D,H,W"])
def test_to_torch_matches_the_input_rank_seen(shape, cls, assert_close):
    layer = BatchNormalization(3, momentum=0.9, epsilon=1e-5, unbiased_moving_variance=True)
    x = torch.randn(shape)
    layer(x)
    module = layer.to_torch()
    assert type(module) is cls
    module(x)  # takes the same input (a BatchNorm2d would reject (N, C))
    layer(x)
    assert_close(module.running_mean, layer.moving_mean)
    assert_close(module.running_var, layer.moving_variance)
    assert type(layer.to_torch(3)) is nn.BatchNorm3d  # explicit wins
    assert type(BatchNormalization.from_torch(cls(3)).to_torch()) is cls


class Net(nn.Module):
    """Every kind of torch BN, nested, with a cumulative-momentum one among them."""

    def __init__(self) -> None:
        super().__init__()
        self.volume = nn.Sequential(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3), nn.ReLU())
        self.image = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, momentum=None),
                                   nn.ReLU())
        self.head = nn.Sequential(nn.Linear(4 + 3, 6), nn.BatchNorm1d(6, eps=1e-3), nn.Tanh(),
                                  nn.Linear(6, 2))

    def forward(self, volume: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        a = self.volume(volume).mean(dim=(2, 3, 4))
        b = self.image(image).mean(dim=(2, 3))
        return self.head(torch.cat([a, b], dim=1))


def _trained_net(seed: int) -> Net:
    torch.manual_seed(seed)
    net = Net()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(6, 2, 3, 3, 3, generator=g), torch.randn(6, 2, 5, 5, generator=g))
    for p in net.parameters():
        p.data.add_(0.1)
    return net.eval()


def test_replaced_model_loads_and_saves_pytorch_checkpoints(tmp_path, assert_close):
    """A checkpoint saved from torch BatchNorm1d/2d/3d loads into the converted model (and a
    bnlab-named one too), and what the converted model saves loads into the torch model."""
    trained = _trained_net(seed=3)
    path = tmp_path / "native.pt"
    torch.save(trained.state_dict(), path)
    checkpoint = torch.load(path, weights_only=True)
    ours = replace_batchnorm(Net()).eval()
    assert ours.state_dict().keys() == checkpoint.keys()  # PyTorch's names after conversion
    ours.load_state_dict(checkpoint)  # strict: no missing or unexpected key
    volume, image = torch.randn(3, 2, 3, 3, 3), torch.randn(3, 2, 5, 5)
    assert_close(ours(volume, image), trained(volume, image))
    for name, value in checkpoint.items():
        assert torch.equal(ours.state_dict()[name], value), name
    back = Net().eval()
    back.load_state_dict(ours.state_dict())
    assert_close(back(volume, image), trained(volume, image))
    # The same checkpoint in bnlab's names loads too.
    keras_named = replace_batchnorm(Net()).eval()
    for module in keras_named.modules():
        if isinstance(module, BatchNormalization):
            module.state_dict_names = "keras"
    renamed = keras_named.state_dict()
    assert "head.1.moving_variance" in renamed and "head.1.running_var" not in renamed
    ours2 = replace_batchnorm(Net()).eval()
    ours2.load_state_dict({k: checkpoint[k.replace("moving_variance", "running_var")
                                         .replace("moving_mean", "running_mean")
                                         .replace("gamma", "weight").replace("beta", "bias")]
                           for k in renamed})
    assert_close(ours2(volume, image), trained(volume, image))


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d],
                         ids=["1d", "2d", "3d"])
def test_layer_loads_either_naming_and_saves_the_chosen_one(cls):
    native = randomized(cls(5))
    layer = BatchNormalization(5)
    layer.load_state_dict(native.state_dict())  # PyTorch's keys into a bnlab-named layer
    assert torch.equal(layer.moving_variance, native.running_var)
    assert torch.equal(layer.gamma, native.weight) and int(layer.num_batches_tracked) == 7
    assert list(layer.state_dict()) == ["gamma", "beta", "moving_mean", "moving_variance",
                                        "num_batches_tracked"]
    torch_named = BatchNormalization(5, state_dict_names="torch")
    torch_named.load_state_dict(layer.state_dict())  # bnlab's keys into a torch-named layer
    assert torch_named.state_dict().keys() == native.state_dict().keys()
    for key, value in native.state_dict().items():
        assert torch.equal(torch_named.state_dict()[key], value), key
    unbuilt = BatchNormalization()  # takes its size from a PyTorch checkpoint too
    unbuilt.load_state_dict(native.state_dict())
    assert unbuilt.features == (5,)
    incomplete = {k: v for k, v in native.state_dict().items() if k != "running_var"}
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "moving_variance"'):
        BatchNormalization(5).load_state_dict(incomplete)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "running_var"'):
        BatchNormalization(5, state_dict_names="torch").load_state_dict(incomplete)


def test_state_dict_names_error():
    with pytest.raises(ValueError, match=r"state_dict_names must be 'keras' or 'torch'; got 'tf'"):
        BatchNormalization(3, state_dict_names="tf")


def test_replace_batchnorm_trains_and_evaluates_identically(assert_close):
    torch.manual_seed(0)
    native = Net()
    ours = replace_batchnorm(copy.deepcopy(native))
    assert ours.__class__ is Net
    assert sum(isinstance(m, BatchNormalization) for m in ours.modules()) == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ours.modules())
    opt_n = torch.optim.SGD(native.parameters(), lr=0.1)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        volume = torch.randn(6, 2, 3, 3, 3, generator=g)
        image = torch.randn(6, 2, 5, 5, generator=g)
        outputs = []
        for model, opt in ((native, opt_n), (ours, opt_o)):
            opt.zero_grad()
            y = model(volume, image)
            y.square().mean().backward()
            opt.step()
            outputs.append(y.detach())
        assert_close(outputs[1], outputs[0])
    torch_bns = [m for m in native.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    our_bns = [m for m in ours.modules() if isinstance(m, BatchNormalization)]
    for t, o in zip(torch_bns, our_bns, strict=True):
        assert_close(o.moving_mean, t.running_mean)
        assert_close(o.moving_variance, t.running_var)
        assert_close(o.gamma, t.weight)
        assert_close(o.beta, t.bias)
        assert int(o.num_batches_tracked) == int(t.num_batches_tracked) == 4
    native.eval()
    ours.eval()
    volume, image = torch.randn(3, 2, 3, 3, 3), torch.randn(3, 2, 5, 5)
    assert_close(ours(volume, image), native(volume, image))


def test_replace_batchnorm_on_a_bare_module():
    native = randomized(nn.BatchNorm2d(3))
    replaced = replace_batchnorm(native)
    assert isinstance(replaced, BatchNormalization)
    assert torch.equal(replaced.moving_mean, native.running_mean)
