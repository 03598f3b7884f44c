"""Executors map runs to results: in this process, in worker processes, or on Ray.

Every executor has the same shape::

    for spec, result in executor.map(specs, on_start=callback):
        ...   # results arrive as runs finish (any order); on_start(spec) fires at hand-off

and keeps at most ``workers`` runs in flight, so a stopped study loses only those.
A failing run comes back as a ``failed`` RunResult; it never stops the others.

- `SequentialExecutor`: one run after the other in this process.
- `ProcessExecutor`: N worker processes (1 torch thread each by default).
  A worker that dies (killed, out of memory) fails its run and is replaced. Workers
  keep the memory they free (`bnlab.lab.allocator`): no page faults at every step.
  Ctrl-C (or SIGTERM, handled the same way by the command) in the parent terminates
  the workers at once; a parent killed outright (``kill -9``) takes its workers, the
  fork server and the resource tracker with it (`bnlab.lab.lifeline`).
- `RayExecutor` (``bnlab.lab.ray_executor``): Ray tasks, on a machine or a cluster.
- `bnlab.lab.vectorized.VectorizedExecutor`: the seeds of a variant trained as one
  stacked computation, in this process or in the process executor's workers; with the
  ``auto`` policy only where that pays, one run per worker elsewhere.

Every run record names the executor that trained it (``RunResult.executor``).
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bnlab.lab.allocator import keep_freed_memory
from bnlab.lab.errors import LabError
from bnlab.lab.lifeline import die_with_parent
from bnlab.lab.results import RunResult
from bnlab.lab.runs import RunSpec, SingleRun, Task, execute_run, failed_result
from bnlab.lab.worker_server import default_workers, worker_context

__all__ = [
    "EXECUTORS",
    "Executor",
    "ProcessExecutor",
    "SequentialExecutor",
    "make_executor",
]

ExecutorName = Literal["auto", "sequential", "process", "ray", "vectorized"]
EXECUTORS: tuple[str, ...] = ("auto", "sequential", "process", "ray", "vectorized")
OnStart = Callable[[RunSpec], None]


def _no_op(spec: RunSpec) -> None:
    pass


class Executor(Protocol):
    """Maps runs to results as they finish (see the module docstring)."""

    workers: int

    def map(
        self, specs: Sequence[RunSpec], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]: ...


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


class SequentialExecutor:
    """Runs one after the other in this process.

    Args:
        threads: torch intra-op threads while running, restored afterwards
            (None: leave torch's setting).
    """

    workers = 1

    def __init__(self, *, threads: int | None = 1) -> None:
        self.threads = threads

    def map(
        self, specs: Sequence[RunSpec], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]:
        import torch

        before = torch.get_num_threads()
        _set_threads(self.threads)
        try:
            for spec in specs:
                on_start(spec)
                yield spec, execute_run(spec, "sequential")
        finally:
            torch.set_num_threads(before)


def _worker_main(tasks: Any, results: Any, threads: int, main_pid: int) -> None:
    """Worker loop: run `Task`s from `tasks`, put ``(index, [RunResult])`` on `results`.

    The worker dies with its parent and with the main process `main_pid`
    (`bnlab.lab.lifeline`): killing the study, even with ``kill -9``, leaves no worker.
    """
    die_with_parent(main_pid)
    # Ctrl-C reaches the whole process group; the parent alone decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    _set_threads(threads)
    while True:
        item = tasks.get()
        if item is None:
            return
        index, task = item
        results.put((index, task.run()))


@dataclass
class _Worker:
    process: Any
    tasks: Any
    busy: int | None = None


class ProcessExecutor:
    """Runs in `workers` spawned processes, each with `threads` torch threads.

    Workers come from a fork server that imported bnlab once (``spawn`` where there
    is no fork server); each worker then runs many runs.
    """

    def __init__(self, workers: int, *, threads: int = 1) -> None:
        if workers < 1:
            raise LabError(f"--workers: expected an integer >= 1, got {workers}")
        self.workers = workers
        self.threads = threads
        self._ctx = worker_context()

    def _start(self, results: Any) -> _Worker:
        tasks = self._ctx.SimpleQueue()
        process = self._ctx.Process(
            target=_worker_main, args=(tasks, results, self.threads, os.getpid()), daemon=True
        )
        process.start()
        return _Worker(process, tasks)

    def map(
        self, specs: Sequence[RunSpec], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]:
        return self.map_tasks([SingleRun(spec, "process") for spec in specs], on_start)

    def map_tasks(
        self, tasks: Sequence[Task], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]:
        """Run `Task`s (a run, or a group of runs trained together) in the workers.

        ``on_start`` fires for each run of a task when the task is handed off; its
        results arrive together when it finishes. A dead worker fails all its task's runs.
        """
        if not tasks:
            return
        results = self._ctx.Queue()
        pending = deque(range(len(tasks)))
        workers = [self._start(results) for _ in range(min(self.workers, len(tasks)))]

        def hand_out() -> None:
            """Give every idle worker its next task (before the caller stores results,
            which would otherwise keep a finished worker waiting)."""
            for w in workers:
                if w.busy is None and pending:
                    w.busy = pending.popleft()
                    w.tasks.put((w.busy, tasks[w.busy]))
                    for spec in tasks[w.busy].specs:
                        on_start(spec)

        finished = False
        try:
            while pending or any(w.busy is not None for w in workers):
                hand_out()
                try:
                    index, task_results = results.get(timeout=0.5)
                except queue.Empty:
                    died = []
                    for i, w in enumerate(workers):
                        if w.busy is not None and not w.process.is_alive():
                            died += [(spec, _died(spec, w.process.exitcode)) for spec in tasks[w.busy].specs]
                            workers[i] = self._start(results)
                    hand_out()
                    yield from died
                    continue
                for w in workers:
                    if w.busy == index:
                        w.busy = None
                hand_out()
                yield from zip(tasks[index].specs, task_results, strict=True)
            finished = True
        finally:
            for w in workers:
                if finished and w.process.is_alive():
                    w.tasks.put(None)
                else:
                    w.process.terminate()
            deadline = time.monotonic() + 5.0
            for w in workers:
                w.process.join(timeout=max(0.0, deadline - time.monotonic()))
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join()
            results.cancel_join_thread()
            results.close()


def _died(spec: RunSpec, exitcode: int | None) -> RunResult:
    how = (
        f"was killed by signal {-exitcode}"
        if exitcode and exitcode < 0
        else f"exited with code {exitcode}"
    )
    return failed_result(
        spec, f"the worker process running this run {how} (out of memory?)", 0.0, "process"
    )


def make_executor(
    name: ExecutorName | str = "auto",
    workers: int | None = None,
    *,
    threads: int = 1,
    address: str | None = None,
    memory_budget: int | None = None,
    seeds_per_task: int = 1,
) -> Executor:
    """The executor called `name` with `workers` workers of `threads` torch threads each.

    ``auto``: the vectorized executor with its ``auto`` policy (stacks the seeds of a
    variant where that pays, one run per worker elsewhere; see `bnlab.lab.vectorized`),
    in this process for 1 worker, else in worker processes. ``vectorized``: stacks every
    group it can. `workers` defaults to `default_workers()` (``sequential`` always uses
    1; ``ray`` uses the cluster's CPUs). `address` is the Ray cluster to join (``ray``
    only). One thread per run is the default everywhere: the lab's parallelism is across
    runs, small models run fastest on one thread, and intra-op threads on a busy machine
    mostly wait for each other (the circles study ran 3-5x slower in-process with torch's
    default 2 threads). `memory_budget` (bytes) bounds the vectorized executor's stacks.
    `seeds_per_task` > 1 (``ray`` only): Ray tasks of that many seeds of a variant,
    trained stacked where the model allows (`bnlab.lab.ray_executor.train_stacked`).

    Raises:
        LabError: unknown name (lists them), workers or threads < 1, or Ray missing.
    """
    if name not in EXECUTORS:
        raise LabError(
            f"--executor: unknown executor {name!r}; choose from: {', '.join(EXECUTORS)}"
        )
    for option, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise LabError(f"{option}: expected an integer >= 1, got {value!r}")
    if address is not None and name != "ray":
        raise LabError(f"--address {address}: a Ray cluster address needs --executor ray")
    if seeds_per_task != 1 and name != "ray":
        raise LabError(
            f"--seeds-per-task {seeds_per_task}: groups of seeds per task need --executor ray "
            "(the vectorized executors group seeds by themselves)"
        )
    if name == "ray":
        from functools import partial

        from bnlab.lab.ray_executor import RayExecutor, train_one_by_one, train_stacked

        train = train_one_by_one if seeds_per_task == 1 else partial(train_stacked, budget=memory_budget)
        return RayExecutor(
            workers, address=address, threads=threads, seeds_per_task=seeds_per_task, train=train
        )
    n = default_workers() if workers is None else workers
    if name == "sequential":
        return SequentialExecutor(threads=threads)
    if name == "process":
        return ProcessExecutor(n, threads=threads)
    from bnlab.lab.vectorized import VectorizedExecutor

    policy = "auto" if name == "auto" else "always"
    return VectorizedExecutor(n, threads=threads, memory_budget=memory_budget, policy=policy)
