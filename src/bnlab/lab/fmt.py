"""The one number formatter of bnlab's tables, sentences, reports and doctor output.

* ``accuracy(x)``: a fraction with 3 decimals, ``0.845``; ``—`` for a missing value (None, NaN).
* ``number(x)``: a short human number with 3 significant digits — ``12``, ``12.5``,
  ``0.0123``, ``1234`` — and ``never`` for +inf (a threshold never reached).
* ``fixed(x, digits)``: fixed decimals, ``—`` when missing or non-finite.
* ``p_value(p)``: ``p<0.001`` or ``p=0.0123``.
* ``interval(low, high)``: ``0.842–0.848`` (one value when both print the same).
"""

from __future__ import annotations

import math

__all__ = ["MISSING", "accuracy", "fixed", "interval", "number", "p_value", "percent"]

MISSING = "—"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def accuracy(x: float | None) -> str:
    """``0.845``; ``—`` when missing."""
    return fixed(x, 3)


def fixed(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; ``—`` when missing or non-finite."""
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{x:.{digits}f}"


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.123`` -> ``12.3%``; ``—`` when missing."""
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{100 * x:.{digits}f}%"


def number(x: float | None, digits: int = 3) -> str:
    """A short human number: ``12``, ``12.5``, ``0.0123``, ``1234``, ``never`` for +inf."""
    if _missing(x):
        return "n/a"
    assert x is not None
    if math.isinf(x):
        return "never" if x > 0 else "-never"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits:
        return f"{x:.0f}"
    text = f"{x:.{digits}g}"
    if "e" in text:  # tiny numbers: fixed point with enough decimals
        decimals = digits - 1 - math.floor(math.log10(abs(x)))
        text = f"{x:.{decimals}f}"
    return text


def p_value(p: float) -> str:
    """``p<0.001`` or ``p=0.0123`` (three significant digits)."""
    if math.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


def interval(low: float, high: float, digits: int = 3) -> str:
    """``0.842–0.848``; a single value when both ends print the same."""
    a, b = fixed(low, digits), fixed(high, digits)
    return a if a == b else f"{a}–{b}"
