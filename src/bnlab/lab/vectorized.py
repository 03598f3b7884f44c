"""The vectorized executor: the seeds of a variant trained as one stacked computation.

Runs that share a resolved variant (same layers, data and training settings: the same
``config_hash``) differ only in their seed, so :func:`bnlab.train.vectorized.fit_replicas`
can train them as one stack; each run's result is the one it would have had alone. Runs
of variants that differ only in a plain BN layer's momentum, center or scale share a
stack too (:func:`stack_key`): each replica folds its batches in with its own momentum,
and one without BN's offset or scale keeps a constant 0 or 1 in its place.

Planning (:func:`plan_tasks`), per group of runs of one variant:

1. a model the stack cannot reproduce exactly (``vectorization_blocker``) runs one run
   at a time, and a :class:`VectorizationFallbackWarning` says why;
2. with the ``auto`` policy, a group stacks only when stacking pays: at least
   :data:`MIN_REPLICAS` runs and at most :data:`MAX_MULTIPLY_ADDS` multiply-adds per
   training batch (:func:`pays_to_stack`); other groups run one run at a time, which is
   what the process executor does;
3. a stacked group larger than the memory budget (:func:`stack_bytes`, per worker) is
   split into stacks that fit;
4. the tasks are handed out longest first (more runs, then more layers).

:class:`VectorizedExecutor` runs the tasks in this process (1 worker) or in the process
executor's workers. A stack is one task: its runs start together and are stored
together when it finishes, so a study stopped (Ctrl-C, ``kill -9``) loses the stacks in
flight as a whole and reruns them on resume. Each run's ``seconds`` is its share of its
stack's wall time.

The auto rule, measured with ``benchmarks/bench_study.py`` on a 2-core machine: the
circles MLP (about 4,800 multiply-adds per batch of 32) trains 6-10x more models per
second stacked; the MNIST CNN (about 90 million per batch) is no faster stacked, since
a convolution over 32 images already keeps a core busy.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from bnlab.lab.errors import LabError
from bnlab.lab.executors import OnStart, ProcessExecutor, _no_op, _set_threads
from bnlab.lab.experiment import Variant
from bnlab.lab.results import RunResult
from bnlab.lab.runs import (
    RunSpec,
    SingleRun,
    Task,
    build_run_model,
    completed_result,
    failed_result,
    load_variant_data,
    save_run_weights,
)

__all__ = [
    "MAX_MULTIPLY_ADDS",
    "MIN_REPLICAS",
    "RunGroup",
    "VectorizationFallbackWarning",
    "VectorizedExecutor",
    "default_memory_budget",
    "parse_memory_budget",
    "pays_to_stack",
    "plan_tasks",
    "stack_key",
]

Policy = Literal["auto", "always"]

#: ``auto`` stacks a group of at least this many runs.
MIN_REPLICAS = 2
#: ``auto`` stacks a model of at most this many multiply-adds per training batch (one
#: replica): the step of such a model is mostly per-operation overhead, which stacking
#: pays once for all replicas.
MAX_MULTIPLY_ADDS = 2_000_000
#: Default memory budget: this fraction of the machine's RAM, shared by the workers.
DEFAULT_BUDGET_FRACTION = 0.25

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


class VectorizationFallbackWarning(UserWarning):
    """A group of runs could not be stacked exactly and runs one run at a time."""


def parse_memory_budget(text: str | int) -> int:
    """Bytes from ``"4G"``, ``"512M"``, ``"1.5GB"``, ``"2GiB"`` or a plain number of bytes.

    Raises:
        LabError: not a positive size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", str(text).lower())
        if match is None:
            raise LabError(
                f"--memory-budget: expected a size such as 4G, 512M or 1.5GB; got {text!r}"
            )
        value = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if not math.isfinite(value) or value < 1:
        raise LabError(f"--memory-budget: expected a size of at least 1 byte; got {text!r}")
    return int(value)


def default_memory_budget() -> int:
    """:data:`DEFAULT_BUDGET_FRACTION` of the machine's physical memory (1 GiB if unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 4 * 2**30
    return int(total * DEFAULT_BUDGET_FRACTION)


def pays_to_stack(multiply_adds_per_sample: int, batch_size: int, replicas: int) -> bool:
    """The ``auto`` rule: stack ``replicas`` runs of a model of that size?"""
    return replicas >= MIN_REPLICAS and multiply_adds_per_sample * batch_size <= MAX_MULTIPLY_ADDS


@dataclass(frozen=True, eq=False)
class RunGroup:
    """A task: runs of one :func:`stack_key` (seeds of a variant, or of variants that
    differ only in BN momentum, center or scale) trained as one stack."""

    specs: tuple[RunSpec, ...]

    def run(self) -> list[RunResult]:
        """Train the stack; every run fails with the traceback if anything raises."""
        from bnlab.train.vectorized import fit_replicas

        start = time.perf_counter()
        variant = self.specs[0].variant
        try:
            data = load_variant_data(variant)
            models = [build_run_model(spec, data) for spec in self.specs]
            histories = fit_replicas(
                models, data, variant.train_config(), seeds=[s.seed for s in self.specs]
            )
            for spec, model in zip(self.specs, models, strict=True):
                save_run_weights(spec, model, data)
        except Exception:
            share = (time.perf_counter() - start) / len(self.specs)
            error = traceback.format_exc()
            return [failed_result(spec, error, share, "vectorized") for spec in self.specs]
        share = (time.perf_counter() - start) / len(self.specs)
        return [
            completed_result(spec, history.to_dict(), share, "vectorized")
            for spec, history in zip(self.specs, histories, strict=True)
        ]


def stack_key(variant: Variant) -> str:
    """What runs of one stack share: the variant's configuration except the momentum,
    center and scale of plain BN layers (no renorm, no ghost batches, a numeric
    momentum), which each replica keeps
    (:func:`bnlab.train.vectorized.varies_per_replica`)."""
    config = variant.config()
    for spec, layer in zip(variant.layers, config["layers"], strict=True):
        if spec.type != "BatchNormalization":
            continue
        args = spec.resolved_args()
        if args["momentum"] is not None and not args["renorm"] and args["virtual_batch_size"] is None:
            layer.update(dict.fromkeys(("momentum", "center", "scale"), "per replica"))
    return json.dumps(config, sort_keys=True)


def _groups(specs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """Runs that can share a stack (same experiment and :func:`stack_key`), in order of
    first appearance."""
    groups: dict[tuple[str, str], list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.experiment, stack_key(spec.variant)), []).append(spec)
    return list(groups.values())


def plan_tasks(
    specs: Sequence[RunSpec],
    *,
    policy: Policy,
    budget: int,
    single: str,
) -> list[Task]:
    """The tasks for ``specs`` (see the module docstring); ``single`` names the executor
    recorded for runs done one at a time.

    A variant whose model cannot be built (bad layers, missing data) becomes single runs,
    which fail with their own message.
    """
    from bnlab.train.vectorized import multiply_adds, stack_bytes, vectorization_blocker

    tasks: list[Task] = []
    for group in _groups(specs):
        variant = group[0].variant
        try:
            data = load_variant_data(variant)
            model = build_run_model(group[0], data)
            config = variant.train_config()
        except Exception:
            tasks.extend(SingleRun(spec, single) for spec in group)
            continue
        reason = vectorization_blocker(model, config)
        if reason is not None:
            warnings.warn(
                f"variant {variant.name}: its runs are trained one at a time, not stacked: {reason}",
                VectorizationFallbackWarning,
                stacklevel=2,
            )
            tasks.extend(SingleRun(spec, single) for spec in group)
            continue
        if policy == "auto" and not pays_to_stack(multiply_adds(model), config.batch_size, len(group)):
            tasks.extend(SingleRun(spec, single) for spec in group)
            continue
        size = len(group)
        while size > 1 and stack_bytes(model, config, size) > budget:
            size -= 1
        count = math.ceil(len(group) / size)
        size = math.ceil(len(group) / count)  # even stacks: 10 runs in 4+3+3, not 4+4+2
        tasks.extend(RunGroup(tuple(group[i : i + size])) for i in range(0, len(group), size))
    # The longest tasks first, so that no long one starts last while the other workers
    # idle: a step's cost grows with the layers and, more slowly, with the replicas.
    return sorted(tasks, key=lambda t: (-len(t.specs), -len(t.specs[0].variant.layers)))


class VectorizedExecutor:
    """Stacks the seeds of each variant (see the module docstring).

    Args:
        workers: processes; 1 trains in this process, more hand tasks to the
            :class:`~bnlab.lab.executors.ProcessExecutor`'s workers.
        threads: torch threads per worker.
        memory_budget: bytes for all stacks in flight (split evenly between workers);
            default :func:`default_memory_budget`.
        policy: ``"always"`` stacks every group it can; ``"auto"`` only where it pays.

    Raises:
        LabError: workers, threads or memory_budget < 1.
    """

    def __init__(
        self,
        workers: int = 1,
        *,
        threads: int = 1,
        memory_budget: int | None = None,
        policy: Policy = "always",
    ) -> None:
        if workers < 1:
            raise LabError(f"--workers: expected an integer >= 1, got {workers}")
        if memory_budget is not None and memory_budget < 1:
            raise LabError(f"--memory-budget: expected a size of at least 1 byte; got {memory_budget}")
        self.workers = workers
        self.threads = threads
        self.memory_budget = memory_budget if memory_budget is not None else default_memory_budget()
        self.policy: Policy = policy

    def map(
        self, specs: Sequence[RunSpec], on_start: OnStart = _no_op
    ) -> Iterator[tuple[RunSpec, RunResult]]:
        start = on_start
        if self.workers > 1:
            tasks = plan_tasks(
                specs, policy=self.policy, budget=self.memory_budget // self.workers, single="process"
            )
            pool = ProcessExecutor(self.workers, threads=self.threads)
            yield from pool.map_tasks(tasks, start)
            return
        import torch

        before = torch.get_num_threads()
        _set_threads(self.threads)
        try:
            tasks = plan_tasks(specs, policy=self.policy, budget=self.memory_budget, single="sequential")
            for task in tasks:
                for spec in task.specs:
                    start(spec)
                yield from zip(task.specs, task.run(), strict=True)
        finally:
            torch.set_num_threads(before)
