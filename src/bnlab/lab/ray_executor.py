"""Runs as Ray tasks, on one machine or a cluster (``pip install 'bnlab[ray]'``).

One run is one Ray task of one CPU. The driver (the process running the study) keeps at
most ``workers`` tasks in flight and is the only process that writes to the output
folder: a task trains in a temporary folder on whichever machine Ray placed it, and
returns the `RunResult` with the bytes of its weights file; the driver writes the file
and stores the result. So the output folder exists on the driver's machine only, while
every machine must reach the datasets by the same name or path (see the README's
"Scaling out").

Failures:

- an exception inside a run is a ``failed`` RunResult like everywhere else (Ray does
  not retry it: the same run would fail the same way);
- a Ray worker process that dies (killed, out of memory, its machine gone) makes Ray
  run the task again once (``retries``); if that attempt dies too, the run is stored as
  ``failed`` with Ray's error, and the study goes on.

Each task is named ``bnlab <variant> seed <k>``: ``ps`` on a worker machine shows
``ray::bnlab ...`` for the process training that run.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bnlab.lab.errors import LabError
from bnlab.lab.executors import OnStart, _no_op, _set_threads
from bnlab.lab.results import RunResult, atomic_write_bytes
from bnlab.lab.runs import RunSpec, execute_run

__all__ = ["INSTALL_HINT", "RayExecutor", "require_ray"]

INSTALL_HINT = "pip install 'bnlab[ray]'"


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


def _task(spec: RunSpec, threads: int) -> tuple[RunResult, bytes | None]:
    """Do `spec` in a temporary folder; its result and the bytes of its weights file."""
    _set_threads(threads)
    if spec.out_dir is None:
        return execute_run(spec), None
    with tempfile.TemporaryDirectory(prefix="bnlab-run-") as tmp:
        result = execute_run(dataclasses.replace(spec, out_dir=tmp))
        weights = Path(tmp) / spec.weights
        data = weights.read_bytes() if result.status == "completed" else None
    return result, data


class RayExecutor:
    """Runs as Ray tasks of one CPU each, at most `workers` in flight.

    Args:
        workers: runs in flight at once; None: the cluster's CPUs (all of them are used).
        address: a running cluster to join (``"HOST:PORT"`` printed by ``ray start
            --head``, or ``"auto"``); None starts a Ray instance inside this process
            with `workers` CPUs (default: this machine's).
        threads: torch threads per run.
        retries: times Ray runs a task again after its worker process died.

    Raises:
        LabError: Ray is not installed, or workers/retries out of range.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        threads: int = 1,
        retries: int = 1,
    ) -> None:
        require_ray()
        if workers is not None and workers < 1:
            raise LabError(f"--workers: expected an integer >= 1, got {workers}")
        if retries < 0:
            raise LabError(f"retries: expected an integer >= 0, got {retries}")
        self.workers = workers
        self.address = address
        self.threads = threads
        self.retries = retries

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
        pending = deque(range(len(specs)))
        in_flight: dict[Any, int] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < limit:
                    index = pending.popleft()
                    spec = specs[index]
                    on_start(spec)
                    ref = task.options(name=f"bnlab {spec.label}").remote(spec, self.threads)
                    in_flight[ref] = index
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    spec = specs[in_flight.pop(ref)]
                    try:
                        result, weights = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        yield spec, self._failed(spec, e)
                        continue
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
        return RunResult(
            experiment=spec.experiment,
            variant=spec.variant.base,
            seed=spec.seed,
            status="failed",
            history=None,
            seconds=0.0,
            error=f"{how}: {type(error).__name__}: {first_line}",
            grid=dict(spec.variant.grid),
        )
