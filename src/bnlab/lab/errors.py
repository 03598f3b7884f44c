"""The lab's error for bad input: one line naming the file/key, what was wrong and what is allowed."""

from __future__ import annotations

__all__ = ["LabError"]


class LabError(ValueError):
    """Bad input to the lab (experiment file, option, output folder, store or weights file).

    The message is one line: where (file and key path, or the argument), what was
    received, and what is allowed or how to fix it. The command line prints it and
    exits with status 2.
    """
