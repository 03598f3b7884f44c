"""Declared options of a registered dataset: name, default, what values are allowed.

The registry validates ``load_dataset(name, **options)`` and a TOML ``[data]`` table
with these declarations, so every loader sees clean, converted values and every bad
value gets the same one-line message: the option, the value received, what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Check",
    "DatasetParam",
    "boolean",
    "choice",
    "integer",
    "number",
    "number_pair",
    "optional",
    "path",
    "size_pair",
    "string_list",
]


class InvalidOptionError(Exception):
    """Raised by a `Check` for a value it does not accept (turned into a DatasetError)."""


@dataclass(frozen=True)
class Check:
    """Converts an option value to its canonical form or raises `InvalidOptionError`.

    Attributes:
        allowed: what is allowed, phrased to follow "expected": ``"an integer >= 1"``.
        convert: ``value -> canonical value``; raises `InvalidOptionError` when not allowed.
    """

    allowed: str
    convert: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        return self.convert(value)


@dataclass(frozen=True)
class DatasetParam:
    """One option of a registered dataset.

    Attributes:
        name: keyword name, as in ``load_dataset("circles", noise=0.2)`` or TOML.
        default: value used when the option is not given (already canonical).
        check: validates and converts given values; ``check.allowed`` describes them.
        doc: one-line meaning of the option.
    """

    name: str
    default: Any
    check: Check
    doc: str

    @property
    def allowed(self) -> str:
        """What values are allowed, e.g. ``"a number >= 0"``."""
        return self.check.allowed


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(min: int | None = None, max: int | None = None) -> Check:
    """An int (not a bool) within ``[min, max]``."""
    bounds = []
    if min is not None:
        bounds.append(f">= {min}")
    if max is not None:
        bounds.append(f"<= {max}")
    allowed = "an integer" + (" " + " and ".join(bounds) if bounds else "")

    def convert(value: Any) -> int:
        if not _is_int(value):
            raise InvalidOptionError
        if (min is not None and value < min) or (max is not None and value > max):
            raise InvalidOptionError
        return int(value)

    return Check(allowed, convert)


def number(
    min: float | None = None,
    max: float | None = None,
    *,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
) -> Check:
    """A finite int or float (not a bool) within the bounds; returned as float."""
    bounds = []
    if min is not None:
        bounds.append(f"{'>' if min_exclusive else '>='} {min}")
    if max is not None:
        bounds.append(f"{'<' if max_exclusive else '<='} {max}")
    allowed = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def convert(value: Any) -> float:
        if not _is_number(value) or not math.isfinite(value):
            raise InvalidOptionError
        v = float(value)
        if min is not None and (v <= min if min_exclusive else v < min):
            raise InvalidOptionError
        if max is not None and (v >= max if max_exclusive else v > max):
            raise InvalidOptionError
        return v

    return Check(allowed, convert)


def boolean() -> Check:
    """``True`` or ``False`` (not 0/1)."""

    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise InvalidOptionError
        return value

    return Check("true or false", convert)


def choice(*values: str) -> Check:
    """One of the given strings (case-sensitive)."""

    def convert(value: Any) -> str:
        if value not in values:
            raise InvalidOptionError
        return str(value)

    return Check("one of " + ", ".join(repr(v) for v in values), convert)


def path() -> Check:
    """A non-empty file-system path (str or os.PathLike); ``~`` is expanded; returned as str."""

    def convert(value: Any) -> str:
        if not isinstance(value, str | os.PathLike):
            raise InvalidOptionError
        text = os.fspath(value)
        if not isinstance(text, str) or not text:
            raise InvalidOptionError
        return os.path.expanduser(text)

    return Check("a file-system path (string)", convert)


def size_pair(largest: int = 4096) -> Check:
    """``[height, width]`` of ints in ``[1, largest]``, or one int for a square; a tuple."""

    def convert(value: Any) -> tuple[int, int]:
        if _is_int(value):
            value = (value, value)
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise InvalidOptionError
        if not all(_is_int(v) and 1 <= v <= largest for v in value):
            raise InvalidOptionError
        return (int(value[0]), int(value[1]))

    return Check(f"[height, width] with integers 1..{largest} (or one integer)", convert)


def number_pair() -> Check:
    """``[low, high]`` finite numbers with ``low < high``; returned as a tuple of floats."""

    def convert(value: Any) -> tuple[float, float]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise InvalidOptionError
        if not all(_is_number(v) and math.isfinite(v) for v in value):
            raise InvalidOptionError
        low, high = float(value[0]), float(value[1])
        if not low < high:
            raise InvalidOptionError
        return (low, high)

    return Check("[low, high] with numbers low < high", convert)


def string_list() -> Check:
    """A non-empty list of distinct non-empty strings; returned as a tuple."""

    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not value:
            raise InvalidOptionError
        if not all(isinstance(v, str) and v for v in value) or len(set(value)) != len(value):
            raise InvalidOptionError
        return tuple(value)

    return Check("a list of distinct non-empty strings", convert)


def optional(check: Check) -> Check:
    """``None`` (leave the option out) or a value accepted by `check`."""

    def convert(value: Any) -> Any:
        return None if value is None else check(value)

    return Check(f"{check.allowed} (or leave it out)", convert)
