"""Teach :func:`bnlab.nn.fold.fold` the layers of ``bnlab.models``.

- :class:`SequentialModel` is a chain container: each layer feeds the next, except
  where the model permutes the tensor between two layers (a new segment starts
  there; folding never crosses a permute). :class:`GraphModel` too: its chains are the
  runs of nodes whose output feeds only the next node (:meth:`GraphModel.chains`).
- :class:`~bnlab.models.layers.Dense` (features last) and the convolutions
  (:class:`~bnlab.models.layers.Conv1D`, ``Conv2D``, ``Conv3D``, ``DepthwiseConv2D``; channel-first)
  are producers when their activation is linear: ``Dense(use_bias=False) -> BatchNormalization -> Activation``
  folds, ``Dense(activation="relu") -> BatchNormalization`` does not (the BN sees
  the activation's output, not the affine map's).

Imported by ``bnlab.models``; nothing to call.
"""

from __future__ import annotations

from torch import nn

from bnlab.models.graph import GraphModel
from bnlab.models.layers import Conv1D, Conv2D, Conv3D, Dense, DepthwiseConv2D
from bnlab.models.sequential import SequentialModel
from bnlab.nn.fold import register_chain, register_producer

__all__: list[str] = []


def _linear_activation(module: nn.Module) -> str | None:
    activation = module.activation
    if isinstance(activation, nn.Identity):
        return None
    return f"applies {type(activation).__name__} after its affine map (use activation 'linear')"


def _segments(model: SequentialModel) -> list[list[tuple[str, nn.Module]]]:
    segments: list[list[tuple[str, nn.Module]]] = [[]]
    for (name, module), permute in zip(model.layers.items(), model.permutes, strict=True):
        if permute is not None and segments[-1]:
            segments.append([])
        segments[-1].append((f"layers.{name}", module))
    return segments


register_producer(Dense, channel_axis=-1, check=_linear_activation)
register_producer(Conv2D, channel_axis=1, output_rank=4, check=_linear_activation)
register_producer(DepthwiseConv2D, channel_axis=1, output_rank=4, check=_linear_activation)
register_producer(Conv1D, channel_axis=1, output_rank=3, check=_linear_activation)
register_producer(Conv3D, channel_axis=1, output_rank=5, check=_linear_activation)
register_chain(SequentialModel, _segments)
register_chain(GraphModel, GraphModel.chains)
