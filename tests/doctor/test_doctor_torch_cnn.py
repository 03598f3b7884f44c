"""The doctor on a plain PyTorch model: a CNN written with ``torch.nn.BatchNorm2d``.

Nothing in the model comes from bnlab: the doctor reads PyTorch's BN layers as they
are (momentum 0.01 = Keras's 0.99, unbiased running variance), names the stale
running statistics and ``treat(..., "recalibrate")`` repairs them in place. The data
come as PyTorch users hold them: channel-first tensors in DataLoaders.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bnlab.doctor import examine, treat

CLASSES = 4


class SmallCNN(nn.Module):
    """Conv -> BatchNorm2d -> ReLU -> pool, twice, then a linear head (logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, momentum=0.01),
            nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16, momentum=0.01),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def images(n: int, seed: int) -> TensorDataset:
    """(n, 3, 12, 12) images in 0..255 whose class sets which quadrant is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = 100 + 30 * torch.randn(n, 3, 12, 12, generator=g)
    for k in range(CLASSES):
        rows, cols = slice(6 * (k // 2), 6 * (k // 2) + 6), slice(6 * (k % 2), 6 * (k % 2) + 6)
        x[y == k, :, rows, cols] += 60
    return TensorDataset(x, y)


@pytest.fixture(scope="module")
def trained() -> tuple[SmallCNN, DataLoader, DataLoader]:
    torch.manual_seed(0)
    model = SmallCNN()
    train_loader = DataLoader(images(640, seed=1), batch_size=32, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
    val_loader = DataLoader(images(320, seed=2), batch_size=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):  # 60 steps: 0.99 ** 60 = 55% of the initial statistics remain
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval(), train_loader, val_loader


def test_doctor_names_stale_running_statistics_of_batchnorm2d(trained) -> None:
    model, train_loader, val_loader = trained
    diagnosis = examine(model, val_loader, calibration=train_loader, train_batch_size=32)
    stale = diagnosis.finding("stale_statistics")
    assert stale is not None and stale.severity == "serious"
    assert set(stale.layers) == {"features.1", "features.5"}
    m = diagnosis.measurements
    assert [layer.kind for layer in m.layers] == ["torch.BatchNorm2d"] * 2
    assert [layer.momentum for layer in m.layers] == pytest.approx([0.99, 0.99])
    assert [layer.steps_seen for layer in m.layers] == [60, 60]
    assert m.train_mode.accuracy - m.inference.accuracy >= 0.1
    assert "60 updates at momentum 0.99" in stale.summary


def test_recalibrate_fixes_the_torch_model_in_place(trained) -> None:
    model, train_loader, val_loader = trained
    model = _copy(model)
    treatment = treat(model, val_loader, "recalibrate", calibration=train_loader,
                      train_batch_size=32)
    before, after = treatment.before.measurements, treatment.after.measurements
    assert treatment.gap_closed >= 0.9
    assert treatment.after.finding("stale_statistics") is None
    # The model itself changed: its running statistics are the training data's own.
    x = torch.cat([x for x, _ in train_loader])
    bn = model.features[1]
    with torch.no_grad():
        h = model.features[0](x)  # the first BN's input, (N, 8, 12, 12)
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=True),
                               rtol=1e-4, atol=1e-3)
    assert isinstance(bn, nn.BatchNorm2d) and not model.training
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in val_loader)
    assert correct / 320 == pytest.approx(after.inference.accuracy)
    assert after.inference.accuracy > before.inference.accuracy


def _copy(model: SmallCNN) -> SmallCNN:
    twin = SmallCNN()
    twin.load_state_dict(model.state_dict())
    return twin.eval()
