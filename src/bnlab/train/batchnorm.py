"""What the trainer needs to know about the BN layers inside a model.

A BN layer is a :class:`bnlab.nn.BatchNormalization` or any PyTorch ``BatchNorm1d/2d/3d``
(``SyncBatchNorm`` and the lazy variants included). The trainer uses this module to

- add the BN layers' regularization losses to the training loss and apply their
  constraints after each optimizer step (Keras's ``gamma_regularizer``/``gamma_constraint``);
- measure accuracy with batch statistics without touching the model
  (:func:`batch_statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from bnlab.nn import BatchNormalization
from bnlab.nn.views import batch_norm_layers, preserved

__all__ = [
    "apply_constraints",
    "batch_norm_layers",
    "batch_statistics",
    "regularization_loss",
]


def regularization_loss(modules: Iterable[nn.Module]) -> torch.Tensor | None:
    """Sum of ``regularization_loss()`` over the bnlab BN layers among ``modules``.

    Pass ``model.modules()``, or a list of them computed once when called every step.
    Returns None (not a zero tensor) when there is no bnlab BN layer, so that a training
    loop can skip the addition.
    """
    terms = [m.regularization_loss() for m in modules if isinstance(m, BatchNormalization)]
    if not terms:
        return None
    return torch.stack(terms).sum() if len(terms) > 1 else terms[0]


@torch.no_grad()
def apply_constraints(modules: Iterable[nn.Module]) -> None:
    """Call ``apply_constraints()`` on every bnlab BN layer among ``modules`` (after a step).

    Pass ``model.modules()``, or a list of them computed once when called every step.
    """
    for m in modules:
        if isinstance(m, BatchNormalization):
            m.apply_constraints()


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with BN layers normalising by batch statistics, changing nothing.

    Inside the block every BN layer is in training mode (normalises each batch with its own
    mean and variance) and every other module is in eval mode (no dropout). On exit, the
    BN layers' buffers (moving mean/variance, batch counters, ...) are restored to their
    values on entry and every module gets its previous ``training`` flag back, so the
    model is exactly as before even if the block raised. (State a layer keeps outside
    its buffers is not restored; bnlab's and PyTorch's BN layers keep none.) Run the block under
    ``torch.no_grad()``.

    Example::

        with torch.no_grad(), batch_statistics(model):
            probs = model(x_batch)
    """
    with preserved(model):
        model.eval()
        for _, layer in batch_norm_layers(model):
            layer.train()
        yield
