"""The lab's error for bad input: one line naming the file/key, what was wrong and what is allowed."""

from __future__ import annotations

__all__ = ["LabError", "Terminated"]


class LabError(ValueError):
    """Bad input to the lab (experiment file, option, output folder, store or weights file).

    The message is one line: where (file and key path, or the argument), what was
    received, and what is allowed or how to fix it. The command line prints it and
    exits with status 2.
    """


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) arrived: the study stops as on Ctrl-C.

    Raised by the command line's signal handler in the main thread. Being a
    `KeyboardInterrupt`, it takes Ctrl-C's path: finished runs stay stored, runs in
    flight are dropped from the store (they run again on resume), workers are
    stopped, and results.json is written before it propagates. The command exits
    with ``128 + signum`` (143 for SIGTERM).

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
