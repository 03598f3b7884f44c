"""Where worker processes come from: the start method, and the fork server started early.

This module imports nothing heavy (no torch), so the command line can start the fork
server before it imports the lab itself: the server then imports torch and bnlab on
the other core while this process does the same, and the first worker of a study
forks from a ready server (on a 2-core machine, the circles study's workers used to
start 1.5 s after its checks because the server began importing only then).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

#: Executors that run in worker processes when given 2 or more workers.
WORKER_EXECUTORS = ("auto", "process", "vectorized")


def default_workers() -> int:
    """Workers when none are asked for: ``min(2, CPUs available to this process)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def worker_context() -> Any:
    """``forkserver`` where available (Linux, macOS), else ``spawn``.

    The fork server imports bnlab (torch, the data registry) once; each worker is then a
    fork of that clean, single-threaded process: no second import (seconds per worker)
    and none of fork's hazards (a parent's torch thread pools, locks held by other
    threads). The server lives as long as this process, so later studies start at once,
    and no longer (`bnlab.lab.forkserver_init`).
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["bnlab.lab.forkserver_init"])
        return ctx
    return mp.get_context("spawn")


def uses_worker_processes(executor: str, workers: int | None) -> bool:
    """Whether executor ``executor`` with ``workers`` workers (None: :func:`default_workers`)
    runs in worker processes: ``auto``, ``process`` or ``vectorized`` with 2 or more.

    False for a ``workers`` that is not a count (the executor itself reports that).
    """
    n = default_workers() if workers is None else workers
    return executor in WORKER_EXECUTORS and isinstance(n, int) and not isinstance(n, bool) and n >= 2


def start_worker_server(executor: str, workers: int | None) -> None:
    """Start the fork server now if the executor will run in worker processes
    (:func:`uses_worker_processes`); nothing where there is no fork server (``spawn``) or
    when it is already running."""
    if uses_worker_processes(executor, workers) and worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
