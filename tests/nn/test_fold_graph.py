"""fold on whole networks, found on the torch.fx graph: a ResNet-18 and a MobileNet-style net.

Both are written here (no torchvision): ResNet-18's BasicBlocks with their 1x1 downsample
shortcuts and functional relu / residual additions; MobileNetV2-style inverted residual
blocks (expand 1x1, depthwise 3x3, linear 1x1 projection) with ReLU6, BatchNormAct,
a two-branch block joined by ``torch.cat`` and a Linear -> BatchNorm1d head. Every BN
is calibrated on one batch (moving statistics = that batch's), so the eval-mode network
normalizes like a trained one; the folded network must give the same outputs to 1e-5,
and export (torch.export, ONNX run in onnxruntime).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnlab.convert import replace_batchnorm
from bnlab.nn import BatchNormAct, BatchNormalization
from bnlab.nn.fold import fold, fold_report

TOL = {"rtol": 1e-5, "atol": 1e-5}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return torch.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) at reduced width: 20 BatchNorm2d layers."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2**i
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
        self.expand_bn = BatchNormAct(hidden, activation="relu")  # conv -> BN + ReLU
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.depthwise_bn = BatchNormalization(hidden, momentum=0.0, epsilon=1e-5)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand_bn(self.expand(x))
        y = F.relu6(self.depthwise_bn(self.depthwise(y)))
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y


class TwoBranch(nn.Module):
    """Two convolutions joined by torch.cat, then a BN on the concatenation (not foldable),
    and a convolution whose output also feeds a skip connection (not foldable either)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.left = nn.Conv2d(channels, channels, 1)
        self.left_bn = nn.BatchNorm2d(channels)
        self.right = nn.Conv2d(channels, channels, 3, padding=1)
        self.right_bn = nn.BatchNorm2d(channels)
        self.joined_bn = nn.BatchNorm2d(2 * channels)
        self.mix = nn.Conv2d(2 * channels, channels, 1)
        self.mix_bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        joined = torch.cat([self.left_bn(self.left(x)), F.relu(self.right_bn(self.right(x)))], 1)
        mixed = self.mix(F.relu(self.joined_bn(joined)))
        return self.mix_bn(mixed) + mixed


class MobileNetish(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 12, 2, 4),
                                    InvertedResidual(12, 12, 1, 6), TwoBranch(12),
                                    InvertedResidual(12, 16, 2, 6))
        self.head = nn.Linear(16, 24)
        self.head_bn = nn.BatchNorm1d(24)
        self.classifier = nn.Linear(24, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)
        return self.classifier(F.relu(self.head_bn(self.head(x))))


def _calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine BN parameters; moving statistics set to one batch's (eval-ready)."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 1.0  # PyTorch: the new batch's weight
        elif isinstance(module, BatchNormalization):
            module.momentum = 0.0  # Keras: the old value's weight
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("bn" in name or "gamma" in name or "beta" in name):
                p.copy_(torch.rand_like(p) * 0.5 + 0.75 if name.endswith(("weight", "gamma"))
                        else torch.randn_like(p) * 0.2)
        model.train()(torch.randn(16, 3, 32, 32))
    return model.eval()


def _assert_folds_to_the_same_function(model: nn.Module, x: Tensor) -> nn.Module:
    """Fold a copy of ``model`` (in eval mode); it returns what fold_report predicts."""
    folded = copy.deepcopy(model)
    assert fold(folded, x) == list(fold_report(model, x).unfolded)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), **TOL)
    return folded


@pytest.mark.parametrize("bn", ["torch", "bnlab"])
def test_resnet18_folds_every_bn(bn):
    model = ResNet18()
    if bn == "bnlab":
        replace_batchnorm(model)
    model = _calibrated(model)
    x = torch.randn(4, 3, 32, 32)
    report = fold_report(model, x)
    assert len(report.folded) == 20 and report.unfolded == ()
    assert ("layer2.0.downsample.1", "layer2.0.downsample.0") in report.folded
    assert ("layer3.1.bn2", "layer3.1.conv2") in report.folded  # before the residual add
    folded = _assert_folds_to_the_same_function(model, x)
    leftover = [n for n, m in folded.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm | BatchNormalization)]
    assert leftover == []
    assert folded.layer1[0].conv1.bias is not None  # created by the fold


def test_mobilenet_style_folds_what_it_can_and_says_why_not_the_rest():
    model = _calibrated(MobileNetish())
    x = torch.randn(3, 3, 32, 32)
    report = fold_report(model, x)
    reasons = dict(report.unfolded)
    assert reasons == {
        "blocks.3.joined_bn": "its input is the function cat, not a Linear/Conv layer's output",
        "blocks.3.mix_bn": "blocks.3.mix's output is also used by the function add",
    }
    folded_bns = {bn for bn, _ in report.folded}
    assert len(folded_bns) == 1 + 4 * 3 + 2 + 1  # stem, 4 blocks x 3, two branches, head
    assert ("head_bn", "head") in report.folded  # Linear -> BatchNorm1d
    assert ("blocks.0.depthwise_bn", "blocks.0.depthwise") in report.folded  # groups=C
    folded = _assert_folds_to_the_same_function(model, x)
    assert isinstance(folded.blocks[0].expand_bn, nn.ReLU)  # BatchNormAct leaves its activation
    assert isinstance(folded.blocks[3].joined_bn, nn.BatchNorm2d)  # left in place


@pytest.fixture(scope="module")
def folded_mobilenet() -> tuple[nn.Module, nn.Module]:
    """(original, folded) MobileNet-style networks in eval mode."""
    model = _calibrated(MobileNetish(), seed=1)
    folded = copy.deepcopy(model)
    fold(folded, torch.randn(2, 3, 32, 32))
    return model, folded


def test_folded_network_exports(folded_mobilenet):
    model, folded = folded_mobilenet
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(folded, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    x5 = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x5), model(x5), **TOL)


def test_folded_network_exports_to_onnx(folded_mobilenet, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model, folded = folded_mobilenet
    path = tmp_path / "folded.onnx"
    with warnings.catch_warnings():  # the exporter's own deprecation and progress notes
        warnings.simplefilter("ignore")
        torch.onnx.export(folded, (torch.randn(2, 3, 32, 32),), str(path), dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                          verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), **TOL)


def test_untraceable_model_falls_back_to_chain_containers():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x: Tensor) -> Tensor:
            return self.body(x) if x.sum() > -1e9 else x  # control flow on a value

    model = _calibrated(DataDependent())
    x = torch.randn(2, 3, 8, 8)
    assert fold_report(model, x).folded == (("body.1", "body.0"),)
    _assert_folds_to_the_same_function(model, x)
