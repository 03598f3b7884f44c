"""The one error type of ``bnlab.models``."""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A model specification is invalid.

    The message is one line: where (file and key path, e.g.
    ``circles.toml: variants.bn_after.layers[1]``), what was wrong (with the
    received value) and what is allowed.
    """
