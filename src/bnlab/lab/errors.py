"""The lab's error for bad input: one line naming the file/key, what was wrong and what is allowed."""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["LabError", "StoreError", "Terminated"]


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


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)


class StoreError(LabError):
    """The output folder's store or disk failed: corrupted, full, or not writable.

    One line saying what happened and what to do; on a full disk it says that the runs
    finished so far are kept (each is stored the moment it finishes). The command
    exits with status 2.
    """

    @classmethod
    def from_sqlite(cls, path: Path, doing: str, error: Exception) -> StoreError:
        """From an ``sqlite3.DatabaseError`` raised while `doing` something with `path`."""
        text = str(error)
        if "full" in text:
            return cls.disk_full(path, doing)
        if "malformed" in text or "not a database" in text or "no runs and" in text:
            return cls(
                f"{path}: not a readable bnlab store, the file is corrupted ({text}; found "
                f"while {doing}); the weights in weights/ are intact; restore runs.sqlite "
                "from a backup or run the study into another --out folder"
            )
        if "locked" in text or "busy" in text:
            return cls(
                f"{path}: the store is locked by another process while {doing}; wait for "
                "it to finish or use another --out folder"
            )
        return cls(
            f"{path}: cannot use the store while {doing} ({text}); check that the folder "
            "is writable and the disk has free space"
        )

    @classmethod
    def from_os(cls, path: Path, doing: str, error: OSError) -> StoreError:
        """From an ``OSError`` (e.g. ENOSPC) raised while `doing` something with `path`."""
        if error.errno in _NO_SPACE:
            return cls.disk_full(path, doing)
        return cls(f"{path}: {error.strerror or error} while {doing}; check the folder")

    @classmethod
    def disk_full(cls, path: Path, doing: str) -> StoreError:
        """The disk (or quota) is full."""
        return cls(
            f"{path}: the disk is full (while {doing}); the runs finished so far are kept "
            "in runs.sqlite; free some space and run the same command again to resume"
        )
