"""Small data and models for the doctor's tests, in which each pitfall is planted on purpose.

The data is far from standardized (features with mean 4 and standard deviation 2),
so moving statistics still close to their initial values (mean 0, variance 1) are
visibly wrong, as in the 6-class CNN study.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnlab.nn import BatchNormalization

FEATURES = 6


def make_data(n: int = 1024, *, seed: int = 0, offset: float = 4.0,
              scale: float = 2.0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: (n, 6) float32 features and 0/1 labels of a linear rule on the centred x."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, FEATURES, generator=g)
    w = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0, -0.5])
    y = (z @ w > 0).long()
    return z * scale + offset, y


def mlp(
    *,
    kind: str = "bnlab",
    momentum: float | None = 0.9,
    bias: bool = False,
    dropout: float = 0.0,
    seed: int = 0,
) -> nn.Sequential:
    """Linear(6, 16) -> BN -> ReLU -> Linear(16, 2) (logits); optional dropout in front."""
    torch.manual_seed(seed)
    if kind == "bnlab":
        bn: nn.Module = BatchNormalization(16, momentum=momentum)
    else:
        torch_momentum = None if momentum is None else 1.0 - momentum
        bn = nn.BatchNorm1d(16, momentum=torch_momentum)
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    layers += [nn.Linear(FEATURES, 16, bias=bias), bn, nn.ReLU(), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


def train(model: nn.Module, x: Tensor, y: Tensor, *, steps: int, batch_size: int = 32,
          lr: float = 0.02, seed: int = 0) -> nn.Module:
    """``steps`` Adam steps on random batches; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
