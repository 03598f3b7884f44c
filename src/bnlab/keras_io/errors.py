"""The one error type of ``bnlab.keras_io``."""

from __future__ import annotations

__all__ = ["KerasFileError"]


class KerasFileError(ValueError):
    """A Keras file cannot be read or written.

    The message is one line: the file, what is wrong with it (with the received
    value: the entry, layer, weight name or shape) and what is expected. The command
    line prints it and exits with status 2. Unsupported layers and arguments come
    from :mod:`bnlab.models` (a :class:`bnlab.models.SpecError`) prefixed with the file.
    """
