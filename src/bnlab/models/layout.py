"""Where the channels are: Keras's channel-last tensors vs the channel-first ones inside.

Keras tensors are channel-last ``(N, *spatial, C)``. Inside a bnlab model, tensors of
rank >= 3 may travel channel-first ``(N, C, *spatial)`` (PyTorch's native layout for
convolution, pooling and :class:`bnlab.nn.BatchNormalization` with ``axis=1``). Each
layer type declares the layout it needs (:data:`Layout`); the model builders permute
a tensor only where a layer needs the other layout, and back to channel-last at the
outputs. A tensor's layout after a layer: channel-first if the layer received it
channel-first and kept its rank, channel-last otherwise (:func:`layout_after`).

Vectors ``(N, F)`` have one layout; they are always called channel-last.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "Layout",
    "internal_axis",
    "layout_after",
    "plan_permute",
    "to_first",
    "to_last",
]

#: The layout a layer type needs: "channels_first", "channels_last" or "any" (either).
Layout = Literal["any", "channels_first", "channels_last"]


def to_first(rank: int) -> tuple[int, ...]:
    """The permutation ``(N, *spatial, C) -> (N, C, *spatial)``; e.g. ``(0, 3, 1, 2)``."""
    return (0, rank - 1, *range(1, rank - 1))


def to_last(rank: int) -> tuple[int, ...]:
    """The permutation ``(N, C, *spatial) -> (N, *spatial, C)``; e.g. ``(0, 2, 3, 1)``."""
    return (0, *range(2, rank), 1)


def plan_permute(
    need: Layout, rank: int, channels_first: bool
) -> tuple[tuple[int, ...] | None, bool]:
    """The permutation a layer needing ``need`` applies first (or None), and the new layout.

    ``rank`` counts the batch axis; tensors of rank < 3 are never permuted.
    """
    if rank < 3:
        return None, False
    if need == "channels_first" and not channels_first:
        return to_first(rank), True
    if need == "channels_last" and channels_first:
        return to_last(rank), False
    return None, channels_first


def layout_after(channels_first: bool, rank_in: int, rank_out: int) -> bool:
    """Is a layer's output channel-first? Yes iff its input was and the rank is unchanged."""
    return channels_first and rank_in == rank_out and rank_out >= 3


def internal_axis(axis: int, rank: int, channels_first: bool) -> int:
    """Keras's ``axis`` of a channel-last tensor of ``rank`` -> the axis inside (>= 0).

    Raises:
        ValueError: ``axis`` out of range for the rank.
    """
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for a tensor of rank {rank}")
    axis %= rank
    if not channels_first or axis == 0:
        return axis
    return 1 if axis == rank - 1 else axis + 1
