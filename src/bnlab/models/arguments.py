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
    "Check",
    "InvalidArgError",
    "activation",
    "anything",
    "batch_shape",
    "boolean",
    "choice",
    "constraint",
    "data_format",
    "dtype_policy",
    "false_only",
    "freeze",
    "initializer",
    "int_tuple",
    "integer",
    "keras_axes",
    "layer_name",
    "none_only",
    "ntuple",
    "optional",
    "padding_pairs",
    "real",
    "received",
    "regularizer",
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


def _keras_object(family: str, value: Any) -> Any:
    """A spec that ``bnlab.nn.<family>s.get`` resolves (name, "name(args)", table, Keras dict)."""
    from bnlab.nn import constraints, initializers, regularizers

    get = {"initializer": initializers.get, "regularizer": regularizers.get,
           "constraint": constraints.get}[family]
    try:
        get(value)
    except (ValueError, TypeError, KeyError) as error:
        message = str(error)
        if repr(value) not in message:
            message = f"expected a {family}; got {received(value)}: {message}"
        raise InvalidArgError(message) from None
    return freeze(value)


def initializer(value: Any) -> Any:
    """Anything ``bnlab.nn.initializers.get`` accepts (name, "name(args)", table, Keras dict)."""
    return _keras_object("initializer", value)


def regularizer(value: Any) -> Any:
    """None or a regularizer spec (``"l2"``, ``"l2(1e-4)"``, Keras's ``{"class_name": "L2", ...}``)."""
    return _keras_object("regularizer", value)


def constraint(value: Any) -> Any:
    """None or a constraint spec (``"max_norm(2)"``, Keras's ``{"class_name": "MaxNorm", ...}``)."""
    return _keras_object("constraint", value)


def false_only(what: str) -> Check:
    """Only false (Keras's default): a Keras switch bnlab cannot honour; ``what`` says why."""

    def check(value: Any) -> bool:
        if boolean(value):
            raise InvalidArgError(f"expected false; {what}; got {received(value)}")
        return False

    return check


def optional(check: Check) -> Check:
    """None or a value ``check`` accepts."""
    return lambda value: None if value is None else check(value)


def none_only(what: str) -> Check:
    """Only None (Keras's default): a Keras option bnlab cannot honour; ``what`` says why."""

    def check(value: Any) -> None:
        if value is not None:
            raise InvalidArgError(f"expected null (None); {what}; got {received(value)}")
        return None

    return check


def data_format(value: Any) -> str:
    """Keras's ``data_format``: only "channels_last" (Keras's default) is supported."""
    if value is None or value == "channels_last":
        return "channels_last"
    raise InvalidArgError(
        "expected 'channels_last' (channel-first Keras layers are not supported; the model "
        f"moves channels first inside by itself); got {received(value)}"
    )


def dtype_policy(value: Any) -> Any:
    """Keras's ``dtype``: None, "float32" or a DTypePolicy dict naming float32."""
    name = value
    if isinstance(value, Mapping):
        config = value.get("config")
        name = config.get("name") if isinstance(config, Mapping) else None
        if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy"):  # 3.x names
            name = None
    if value is None or name == "float32":
        return freeze(value)
    raise InvalidArgError(
        "expected the float32 dtype policy (bnlab builds float32 layers; convert the whole "
        f"model with model.to(dtype) after building); got {received(value)}"
    )


def int_tuple(n: int, min: int = 1) -> Check:
    """An int >= ``min`` or a list of ``n`` of them (stored as given; see :func:`ntuple`)."""
    expected = f"an integer >= {min} or a list of {n} of them"

    def check(value: Any) -> int | tuple[int, ...]:
        if _is_int(value) and value >= min:
            return int(value)
        if (isinstance(value, list | tuple) and len(value) == n
                and all(_is_int(v) and v >= min for v in value)):
            return tuple(int(v) for v in value)
        raise InvalidArgError(f"expected {expected}; got {received(value)}")

    return check


def ntuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    """A checked :func:`int_tuple` value as ``n`` ints: ``3 -> (3, 3)``."""
    return (value,) * n if isinstance(value, int) else tuple(value)


def keras_axes(value: Any) -> int | tuple[int, ...]:
    """An axis (int) or a non-empty list of distinct axes, as Keras's ``axis`` arguments."""
    if _is_int(value):
        return int(value)
    if (isinstance(value, list | tuple) and value and all(_is_int(v) for v in value)
            and len(set(value)) == len(value)):
        return tuple(int(v) for v in value)
    raise InvalidArgError(f"expected an axis or a list of distinct axes; got {received(value)}")


def padding_pairs(axes: int) -> Check:
    """Keras ZeroPadding2D/3D and Cropping2D/3D: ``p``, one ``p`` per axis (``(h, w)``),
    or one ``(before, after)`` pair per axis (``((top, bottom), (left, right))``), all >= 0."""
    pad = integer(min=0)
    names = "(height, width)" if axes == 2 else "(depth, height, width)"
    pairs = ("((top, bottom), (left, right))" if axes == 2
             else "((front, back), (top, bottom), (left, right))")

    def check(value: Any) -> Any:
        try:
            if _is_int(value):
                return pad(value)
            if isinstance(value, list | tuple) and len(value) == axes:
                if all(_is_int(v) for v in value):
                    return tuple(pad(v) for v in value)
                if all(isinstance(v, list | tuple) and len(v) == 2 for v in value):
                    return tuple(tuple(pad(w) for w in v) for v in value)
        except InvalidArgError:
            pass
        raise InvalidArgError(
            f"expected an integer >= 0, {axes} of them {names} or {axes} pairs {pairs}; "
            f"got {received(value)}"
        )

    return check


def shape(value: Any) -> tuple[int | None, ...]:
    """A non-empty list of positive ints (or None for an unknown size), without the batch
    dimension (Keras's ``shape``)."""
    if (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(v is None or (_is_int(v) and v >= 1) for v in value)
    ):
        return tuple(None if v is None else int(v) for v in value)
    raise InvalidArgError(
        "expected a non-empty list of positive integers (or null for an unknown size) "
        f"without the batch dimension, e.g. [28, 28, 1]; got {received(value)}"
    )


def batch_shape(value: Any) -> tuple[int | None, ...]:
    """Keras's ``batch_shape``: the batch size (or None) followed by a :func:`shape`."""
    if isinstance(value, list | tuple) and len(value) > 1 and (
        value[0] is None or (_is_int(value[0]) and value[0] >= 1)
    ):
        return (value[0], *shape(value[1:]))
    raise InvalidArgError(
        "expected [batch, *shape] with batch null or a positive integer, e.g. "
        f"[null, 28, 28, 1]; got {received(value)}"
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
