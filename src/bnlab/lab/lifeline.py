"""Child processes that die with their parent: no worker outlives the study that started it.

A study's worker processes hold pipes to the fork server and the resource tracker,
and those two live as long as any worker does; so one orphaned worker keeps the
whole family running (and writing weights no store records) after the main process
was killed. Each child of the lab therefore ties its life to its parent's:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the child the
  moment its parent exits, even on ``kill -9`` (set through ``ctypes``; note that
  the kernel ties it to the parent *thread* that started the child);
- in workers everywhere, a watchdog thread that polls the main process's pid and
  ends the worker within ``poll`` seconds of its end (a portable fallback, and the
  only tie where a fork server stands between a worker and the main process on
  systems without ``prctl``). The fork server itself gets no thread (it forks, so it
  stays single-threaded): it exits when the main process and the workers are gone.

When the workers are gone, the fork server and the resource tracker read end-of-file
on their pipes and exit by themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "process_alive"]

_PR_SET_PDEATHSIG = 1


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: os.kill's answer stands
    return state not in (b"Z", b"X")


def _parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(pid: int, poll: float) -> None:
    while process_alive(pid):
        time.sleep(poll)
    os._exit(1)


def die_with_parent(follow: int | None = None, *, poll: float = 1.0, watchdog: bool = True) -> None:
    """End this process when its parent (and the process `follow`, if given) ends.

    Call first thing in a child process. Sets the parent-death signal (Linux) and,
    with `watchdog`, starts a daemon thread that polls `follow`. If the parent is
    already gone (it died before this call), exits at once.

    Args:
        follow: pid to outlive no longer than `poll` seconds, e.g. the main process
            when the parent is a fork server; default ``os.getppid()``.
        poll: watchdog period in seconds.
        watchdog: start the watchdog thread; False for a process that must stay
            single-threaded because it forks (the fork server, which exits by itself
            once the main process and its workers are gone).
    """
    parent = os.getppid()
    _parent_death_signal()
    if os.getppid() != parent or not process_alive(parent):  # died before prctl took hold
        os._exit(1)
    target = parent if follow is None else follow
    if not process_alive(target):
        os._exit(1)
    if watchdog:
        threading.Thread(
            target=_watch, args=(target, poll), name="bnlab-lifeline", daemon=True
        ).start()
