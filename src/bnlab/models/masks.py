"""Keras masks through a model: who makes them, who reads them, where they end.

A mask ``(N, T)`` marks the real steps of padded sequences. ``Masking`` and
``Embedding(mask_zero=True)`` make one; it travels with the tensor through layers
that keep it (Dense, activations, Dropout, normalizations, TimeDistributed, merges:
the masks of a merge's inputs are combined with AND); recurrent layers,
BatchNormalization (training statistics over the real steps only) and
GlobalAveragePooling1D read it; a recurrent layer returning sequences passes it on,
one returning its last output ends it. A layer that does not support masks
(convolutions, pooling, Flatten, Reshape) ends it, and the model builder warns, as
Keras does. See :data:`bnlab.models.layer_type.MaskRule`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnlab.models.layer_type import MaskRule

__all__ = ["call_with_mask", "combine_masks", "warn_dropped_mask"]


def call_with_mask(module: nn.Module, rule: MaskRule, x: object, mask: Tensor | None,
                   ) -> tuple[Tensor, Tensor | None]:
    """Run ``module`` on ``x`` under ``rule``; return the output and its mask."""
    if rule == "produce":
        y, made = module(x)
        return y, made
    if mask is None or rule in ("keep", "drop"):
        return module(x), (mask if rule == "keep" else None)
    y = module(x, mask)
    return y, (mask if rule == "use" else None)


def combine_masks(masks: Sequence[Tensor | None]) -> Tensor | None:
    """AND of the masks that exist (Keras's merge layers); None if there are none."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = torch.logical_and(out, m)
    return out


def warn_dropped_mask(where: str, layer_type: str) -> None:
    """Keras's warning when a layer that does not support masks receives one."""
    warnings.warn(
        f"{where}: {layer_type} does not support masking; the mask of its input ends here "
        "and later layers see every step (as in Keras). Put Masking after it, or use "
        "layers that support masks",
        UserWarning,
        stacklevel=3,
    )
