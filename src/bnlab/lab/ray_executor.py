"""Runs as Ray tasks, on one machine or a cluster (``pip install 'bnlab[ray]'``).

A Ray task of one CPU trains one run, or a group of up to ``seeds_per_task`` runs of
the same variant and grid point (runs that differ only in their seed) with a
`GroupTrainer`: by default `train_one_by_one`, one after the other; `train_stacked`
trains them as one stacked computation like the vectorized executor (``bnlab run
--executor ray --seeds-per-task K``). The driver (the
process running the study) keeps at most ``workers`` tasks in flight and is the only
process that writes to the output folder: a task trains in a temporary folder on
whichever machine Ray placed it, and returns each run's `RunResult` with the bytes of
its weights file; the driver writes the files and stores the results. So the output folder exists on the driver's machine only, while
every machine must reach the datasets by the same name or path (see the README's
"Scaling out").

Failures:

- an exception inside a run is a ``failed`` RunResult like everywhere else (Ray does
  not retry it: the same run would fail the same way);
- a Ray worker process that dies (killed, out of memory, its machine gone) makes Ray
  run the task again once (``retries``); if that attempt dies too, the run is stored as
  ``failed`` with Ray's error (every run of its group), and the study goes on.

Each task is named ``bnlab <variant> seed <k>`` (``seeds <k>,<j>`` for a group): ``ps``
on a worker machine shows ``ray::bnlab ...`` for the process training those runs.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bnlab.lab.errors import LabError
from bnlab.lab.executors import OnStart, _no_op, _set_threads
from bnlab.lab.results import RunResult, atomic_write_bytes
from bnlab.lab.runs import RunSpec, execute_run, failed_result

__all__ = [
    "INSTALL_HINT",
    "GroupTrainer",
    "RayExecutor",
    "group_runs",
    "require_ray",
    "train_one_by_one",
    "train_stacked",
]

INSTALL_HINT = "pip install 'bnlab[ray]'"

#: Trains runs of one variant and grid point in this process; a result per run, in order.
#: Never raises: a failing run is a ``failed`` RunResult. Must be picklable (a
#: module-level function), since it travels to the Ray workers.
GroupTrainer = Callable[[Sequence[RunSpec]], list[RunResult]]


def train_one_by_one(specs: Sequence[RunSpec]) -> list[RunResult]:
    """The default `GroupTrainer`: each run alone, one after the other (`execute_run`)."""
    return [execute_run(spec, "ray") for spec in specs]


def train_stacked(specs: Sequence[RunSpec], budget: int | None = None) -> list[RunResult]:
    """A `GroupTrainer` that stacks the seeds into one computation, as ``--executor
    vectorized`` does (`bnlab.lab.vectorized.plan_tasks`, policy ``always``).

    A model the stack cannot reproduce runs one run at a time; a stack larger than
    `budget` bytes (default: this machine's vectorized budget per CPU, since Ray may run
    a task on every CPU) is split.
    """
    from bnlab.lab.vectorized import default_memory_budget, plan_tasks

    if budget is None:
        budget = default_memory_budget() // (os.cpu_count() or 1)
    tasks = plan_tasks(specs, policy="always", budget=budget, single="ray")
    done = {id(s): r for t in tasks for s, r in zip(t.specs, t.run(), strict=True)}
    return [done[id(spec)] for spec in specs]


def group_runs(specs: Sequence[RunSpec], size: int) -> list[list[int]]:
    """Indices of `specs` in groups of at most `size` runs that differ only in their seed.

    Groups are in the order of their first run; within a group, runs keep their order.
    """
    groups: list[list[int]] = []
    open_group: dict[tuple[str, str], list[int]] = {}
    for i, spec in enumerate(specs):
        key = (spec.experiment, spec.variant.config_hash)
        group = open_group.get(key)
        if group is None or len(group) == size:
            group = open_group[key] = []
            groups.append(group)
        group.append(i)
    return groups


def require_ray() -> Any:
    """The ``ray`` module.

    Raises:
        LabError: Ray is not installed (names the install command).
    """
    try:
        import ray
    except ImportError:
        raise LabError(
            f"--executor ray: Ray is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return ray


def _task(
    specs: Sequence[RunSpec], train: GroupTrainer, threads: int
) -> list[tuple[RunResult, bytes | None]]:
    """Train `specs` in a temporary folder; each run's result and the bytes of its weights."""
    _set_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bnlab-run-") as tmp:
        local = [s if s.out_dir is None else dataclasses.replace(s, out_dir=tmp) for s in specs]
        out = []
        for spec, result in zip(specs, train(local), strict=True):
            saved = spec.out_dir is not None and result.status == "completed"
            out.append((result, (Path(tmp) / spec.weights).read_bytes() if saved else None))
    return out


def _task_name(specs: Sequence[RunSpec]) -> str:
    if len(specs) == 1:
        return f"bnlab {specs[0].label}"
    return f"bnlab {specs[0].variant.name} seeds {','.join(str(s.seed) for s in specs)}"


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast when nothing listens at a ``HOST:PORT`` address (Ray itself retries for minutes).

    Raises:
        LabError: the address has a port and a TCP connection to it fails.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", "ray://..." and the like: Ray resolves them
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise LabError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with "
            "`ray start --head` and give the address it prints"
        ) from None


class RayExecutor:
    """Runs as Ray tasks of one CPU each, at most `workers` tasks in flight.

    Args:
        workers: tasks in flight at once; None: the cluster's CPUs (all of them are used).
        address: a running cluster to join (``"HOST:PORT"`` printed by ``ray start
            --head``, or ``"auto"``); None starts a Ray instance inside this process
            with `workers` CPUs (default: this machine's).
        threads: torch threads per run.
        retries: times Ray runs a task again after its worker process died.
        seeds_per_task: runs of one variant and grid point per task (`group_runs`).
        train: the `GroupTrainer` a task uses.

    Raises:
        LabError: Ray is not installed, workers/retries/seeds_per_task out of range, or
            nothing answers at `address`.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        threads: int = 1,
        retries: int = 1,
        seeds_per_task: int = 1,
        train: GroupTrainer = train_one_by_one,
    ) -> None:
        require_ray()
        for name, value, low in (
            ("--workers", workers, 1),
            ("retries", retries, 0),
            ("seeds_per_task", seeds_per_task, 1),
        ):
            if value is not None and value < low:
                raise LabError(f"{name}: expected an integer >= {low}, got {value}")
        if address is not None:
            _check_reachable(address)
        self.workers = workers
        self.address = address
        self.threads = threads
        self.retries = retries
        self.seeds_per_task = seeds_per_task
        self.train = train

    def _connect(self) -> Any:
        ray = require_ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
            if self.address is None:
                options["num_cpus"] = self.workers
            else:
                options["address"] = self.address
            try:
                ray.init(**options)
            except ConnectionError as e:
                raise LabError(
                    f"--address {self.address}: cannot reach a Ray cluster there ({e}); "
                    "start one with `ray start --head` and give the address it prints"
                ) from None
        return ray

    def map(
        self, specs: Sequence[RunSpec], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]:
        """Results as runs finish; weights files are written before a result is yielded."""
        if not specs:
            return
        ray = self._connect()
        limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=self.retries)(_task)
        pending = deque(group_runs(specs, self.seeds_per_task))
        in_flight: dict[Any, list[RunSpec]] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    group = [specs[i] for i in pending.popleft()]
                    for spec in group:
                        on_start(spec)
                    ref = task.options(name=_task_name(group)).remote(
                        group, self.train, self.threads
                    )
                    in_flight[ref] = group
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    group = in_flight.pop(ref)
                    try:
                        outputs = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        for spec in group:
                            yield spec, self._failed(spec, e)
                        continue
                    for spec, (result, weights) in zip(group, outputs, strict=True):
                        if weights is not None and spec.out_dir is not None:
                            path = Path(spec.out_dir) / spec.weights
                            path.parent.mkdir(parents=True, exist_ok=True)
                            atomic_write_bytes(path, weights)
                        yield spec, result
        finally:
            for ref in in_flight:
                ray.cancel(ref, force=True)

    def _failed(self, spec: RunSpec, error: Exception) -> RunResult:
        """The stored record of a run whose task raised `error` (from Ray, not the run)."""
        first_line = (str(error).strip().splitlines() or [""])[0]
        if isinstance(error, require_ray().exceptions.RayTaskError):
            how = "the Ray task failed"
        else:
            tries = "once" if self.retries == 0 else f"{self.retries + 1} times"
            how = f"the Ray worker running this run died ({tries} tried)"
        return failed_result(spec, f"{how}: {type(error).__name__}: {first_line}", 0.0, "ray")
