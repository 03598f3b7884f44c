"""Axis bookkeeping shared by every normalization path.

Keras describes batch normalization by the axis (or axes) that is *kept*: one
statistic per index along it. Every other axis is reduced. This module turns
a user's ``axis`` into validated, non-negative kept axes and the reduced axes.
"""

from __future__ import annotations

from collections.abc import Sequence

AxisArg = int | Sequence[int]


def kept_axes(axis: AxisArg, ndim: int) -> tuple[int, ...]:
    """Normalize ``axis`` (int or sequence, negatives allowed) for a tensor of rank ``ndim``.

    Returns the sorted, non-negative axes that are *not* reduced.

    Raises:
        ValueError: rank below 2, an axis out of range, a repeated axis, or no axis
            left to reduce.
        TypeError: ``axis`` is neither an int nor a sequence of ints.
    """
    # The common cases, met on every forward: one int axis, or one already kept.
    if type(axis) is tuple and len(axis) == 1:
        axis = axis[0]
    if type(axis) is int and ndim >= 2 and -ndim <= axis < ndim:
        return (axis % ndim,)
    if ndim < 2:
        raise ValueError(
            f"batch normalization expects at least 2D input (N, C, ...); got a {ndim}D tensor"
        )
    if isinstance(axis, int):
        axes: tuple[int, ...] = (axis,)
    elif isinstance(axis, Sequence) and not isinstance(axis, str):
        axes = tuple(axis)
    else:
        raise TypeError(
            f"axis must be an int or a sequence of ints such as (1, 2); got {axis!r} "
            f"of type {type(axis).__name__}"
        )
    if not axes:
        raise ValueError("axis must name at least one axis to keep; got an empty sequence")
    normalized = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"axis entries must be int; got {a!r} of type {type(a).__name__}")
        if not -ndim <= a < ndim:
            raise ValueError(
                f"axis {a} is out of range for a {ndim}D input; allowed: {-ndim}..{ndim - 1}"
            )
        normalized.append(a % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"axis {tuple(axes)} repeats an axis for a {ndim}D input")
    if len(normalized) == ndim:
        raise ValueError(
            f"axis {tuple(axes)} keeps every axis of a {ndim}D input; nothing is left to reduce"
        )
    return tuple(sorted(normalized))


def reduced_axes(kept: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """The axes a statistic is taken over: every axis not in ``kept``."""
    return tuple(d for d in range(ndim) if d not in kept)


def stat_shape(shape: Sequence[int], kept: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one statistic: the sizes of the kept axes, e.g. ``(C,)``."""
    if len(kept) == 1:
        return (shape[kept[0]],)
    return tuple(shape[d] for d in kept)


def broadcast_shape(shape: Sequence[int], kept: tuple[int, ...]) -> tuple[int, ...]:
    """Shape that broadcasts a statistic against the input: 1 on reduced axes."""
    return tuple(n if d in kept else 1 for d, n in enumerate(shape))
