"""Argument schemas: what each layer argument accepts, and the one-line complaint if not.

A check takes the received value and returns the value to store (lists become
tuples so specs are immutable), or raises :class:`InvalidArgError` whose message says what
was expected and what was received. The caller prefixes the location.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bnlab.models.activations import ACTIVATIONS, list_activations

__all__ = [
    "REQUIRED",
    "Arg",
    "InvalidArgError",
    "activation",
    "anything",
    "boolean",
    "choice",
    "freeze",
    "initializer",
    "int_or_pair",
    "integer",
    "layer_name",
    "padding2d",
    "pair",
    "real",
    "received",
    "shape",
]

Check = Callable[[Any], Any]


class InvalidArgError(ValueError):
    """Raised by a check: the message says what was expected and what was received.

    ``key`` names the argument when a whole-layer validation finds the culprit.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Arg:
    """One allowed argument: its check and its default (``REQUIRED`` if none)."""

    check: Check
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def received(value: Any) -> str:
    """``'3' (str)``: the received value with its type, for messages."""
    return f"{value!r} ({type(value).__name__})"


def freeze(value: Any) -> Any:
    """Lists/tuples -> tuples and dicts -> plain dicts, recursively (TOML arrays become tuples)."""
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return {k: freeze(v) for k, v in value.items()}
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    return " and ".join(parts)


def integer(min: int | None = None, max: int | None = None) -> Check:
    """An int (not a bool) within ``[min, max]``."""
    bounds = _bounds(min, max, False, False)
    expected = f"an integer{' ' + bounds if bounds else ''}"

    def check(value: Any) -> int:
        if (
            not _is_int(value)
            or (min is not None and value < min)
            or (max is not None and value > max)
        ):
            raise InvalidArgError(f"expected {expected}; got {received(value)}")
        return int(value)

    return check


def real(
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
) -> Check:
    """A finite number (int or float, not bool) within the bounds; stored as float."""
    bounds = _bounds(min, max, min_open, max_open)
    expected = f"a number{' ' + bounds if bounds else ''}"

    def check(value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
        if ok and min is not None:
            ok = value > min if min_open else value >= min
        if ok and max is not None:
            ok = value < max if max_open else value <= max
        if not ok:
            raise InvalidArgError(f"expected {expected}; got {received(value)}")
        return float(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgError(f"expected true or false; got {received(value)}")
    return value


def choice(*options: str) -> Check:
    """One of ``options`` (case-insensitive); stored lowercase."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise InvalidArgError(
                f"expected one of: {', '.join(repr(o) for o in options)}; got {received(value)}"
            )
        return value.lower()

    return check


def anything(value: Any) -> Any:
    """No check here: the layer's constructor validates (see the BatchNormalization entry)."""
    return freeze(value)


def activation(value: Any) -> str | None:
    """A Keras activation name or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in ACTIVATIONS:
        raise InvalidArgError(
            f"expected an activation name, one of: {', '.join(list_activations())}; "
            f"got {received(value)}"
        )
    return value.lower()


def initializer(value: Any) -> Any:
    """Anything ``bnlab.nn.initializers.get`` accepts (name, "name(args)", dict, callable)."""
    from bnlab.nn import initializers

    try:
        initializers.get(value)
    except (ValueError, TypeError, KeyError) as error:
        message = str(error)
        if repr(value) not in message:
            message = f"expected an initializer; got {received(value)}: {message}"
        raise InvalidArgError(message) from None
    return freeze(value)


def int_or_pair(min: int = 1) -> Check:
    """An int >= ``min`` or a pair of them (Keras's ``kernel_size=3`` or ``(3, 3)``)."""
    expected = f"an integer >= {min} or a pair of them"

    def check(value: Any) -> int | tuple[int, int]:
        if _is_int(value) and value >= min:
            return int(value)
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(_is_int(v) and v >= min for v in value)
        ):
            return (int(value[0]), int(value[1]))
        raise InvalidArgError(f"expected {expected}; got {received(value)}")

    return check


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """Normalize a checked ``int_or_pair`` value to ``(height, width)``."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def padding2d(value: Any) -> Any:
    """Keras ZeroPadding2D: ``p``, ``(h, w)`` or ``((top, bottom), (left, right))``, all >= 0."""
    pad = integer(min=0)
    try:
        if _is_int(value):
            return pad(value)
        if isinstance(value, list | tuple) and len(value) == 2:
            if all(_is_int(v) for v in value):
                return tuple(pad(v) for v in value)
            if all(isinstance(v, list | tuple) and len(v) == 2 for v in value):
                return tuple(tuple(pad(w) for w in v) for v in value)
    except InvalidArgError:
        pass
    raise InvalidArgError(
        "expected an integer >= 0, a pair (height, width) or a pair of pairs "
        f"((top, bottom), (left, right)); got {received(value)}"
    )


def shape(value: Any) -> tuple[int, ...]:
    """A non-empty list of positive ints, without the batch dimension (Keras's ``shape``)."""
    if (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(_is_int(v) and v >= 1 for v in value)
    ):
        return tuple(int(v) for v in value)
    raise InvalidArgError(
        "expected a non-empty list of positive integers without the batch dimension, "
        f"e.g. [28, 28, 1]; got {received(value)}"
    )


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def layer_name(value: Any) -> str:
    """A layer name: letters, digits and underscores, not starting with a digit."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidArgError(
            "expected a name of letters, digits and underscores not starting with a digit, "
            f"e.g. 'bn_1'; got {received(value)}"
        )
    return value
