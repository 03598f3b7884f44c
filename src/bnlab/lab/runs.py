"""Runs: the lab's unit of work, (experiment, variant, seed) -> `RunResult`.

`plan_runs` lists the runs of an experiment; `execute_run` does one of them in the
current process: load the data, build the model with the run's seed, train it, save
the final weights, and return the result. An exception inside a run becomes a
``failed`` RunResult holding the traceback; it never escapes to stop a study.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from bnlab.data import Dataset, load_dataset
from bnlab.lab.experiment import Experiment, Variant
from bnlab.lab.file_weights import start_from_file
from bnlab.lab.results import RunResult
from bnlab.lab.weights import save_weights, weights_file
from bnlab.models import GraphModel, SequentialModel
from bnlab.train import fit

__all__ = [
    "RunSpec",
    "SingleRun",
    "Task",
    "build_run_model",
    "completed_result",
    "execute_run",
    "failed_result",
    "load_variant_data",
    "plan_runs",
    "save_run_weights",
]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """One run to do; picklable, so executors hand it to worker processes as it is.

    Attributes:
        experiment: experiment name.
        variant: the resolved variant.
        seed: seeds the model's initial weights and the data order.
        out_dir: folder whose ``weights/`` receives the final weights (None: not saved).
    """

    experiment: str
    variant: Variant
    seed: int
    out_dir: str | None = None

    @property
    def key(self) -> tuple[str, str, int, str]:
        """Store key: (experiment, base variant name, seed, config hash)."""
        return (self.experiment, self.variant.base, self.seed, self.variant.config_hash)

    @property
    def label(self) -> str:
        """``variant seed k`` for progress lines."""
        return f"{self.variant.name} seed {self.seed}"

    @property
    def weights(self) -> str:
        """Weights file path relative to the output folder."""
        return weights_file(self.variant.name, self.seed, self.variant.config_hash)


def plan_runs(experiment: Experiment, *, out_dir: str | Path | None = None) -> list[RunSpec]:
    """Every (variant, seed) run, seed by seed, so a stopped study has all variants at low seeds."""
    out = str(out_dir) if out_dir is not None else None
    return [
        RunSpec(experiment.name, variant, seed, out)
        for seed in experiment.seeds
        for variant in experiment.variants
    ]


class Task(Protocol):
    """What an executor hands to a worker: runs done together, a result for each.

    ``run()`` never raises: a failure is a ``failed`` RunResult per run.
    """

    @property
    def specs(self) -> tuple[RunSpec, ...]: ...

    def run(self) -> list[RunResult]: ...


@dataclass(frozen=True, eq=False)
class SingleRun:
    """A task of one run, trained alone with :func:`execute_run` (``executor`` recorded)."""

    spec: RunSpec
    executor: str

    @property
    def specs(self) -> tuple[RunSpec, ...]:
        return (self.spec,)

    def run(self) -> list[RunResult]:
        return [execute_run(self.spec, self.executor)]


@lru_cache(maxsize=4)
def _dataset(data_json: str) -> Dataset:
    options = json.loads(data_json)
    return load_dataset(options.pop("name"), **options)


def load_variant_data(variant: Variant) -> Dataset:
    """The variant's dataset, loaded once per process for the same options."""
    return _dataset(json.dumps(variant.config()["data"], sort_keys=True))


def execute_run(spec: RunSpec, executor: str | None = None) -> RunResult:
    """Do one run in this process; failures are returned as ``status="failed"`` with the traceback.

    ``executor`` is recorded in the result (the executor's name).
    """
    start = time.perf_counter()
    variant = spec.variant
    try:
        data = load_variant_data(variant)
        model = build_run_model(spec, data)
        history = fit(model, data, variant.train_config(), seed=spec.seed, progress=False)
        save_run_weights(spec, model, data)
        return completed_result(spec, history.to_dict(), time.perf_counter() - start, executor)
    except Exception:
        return failed_result(spec, traceback.format_exc(), time.perf_counter() - start, executor)


def build_run_model(spec: RunSpec, data: Dataset) -> SequentialModel | GraphModel:
    """The run's model, its initial weights from the run's seed alone, or from the Keras
    file the variant starts from where its layers match the file's (the rest from the seed)."""
    variant = spec.variant
    model = variant.build(variant.input_shape or data.input_shape, seed=spec.seed)
    if variant.file_weights is not None:
        start_from_file(model, variant.file_weights)
    return model


def save_run_weights(spec: RunSpec, model: SequentialModel | GraphModel, data: Dataset) -> None:
    """Save the trained weights under ``spec.out_dir`` (nothing when it is None)."""
    if spec.out_dir is None:
        return
    variant = spec.variant
    save_weights(
        model,
        Path(spec.out_dir) / spec.weights,
        metadata={
            "experiment": spec.experiment,
            "variant": variant.name,
            "seed": str(spec.seed),
            "config_hash": variant.config_hash,
            "input_shape": json.dumps(list(variant.input_shape or data.input_shape)),
        },
    )


def completed_result(
    spec: RunSpec, history: dict[str, Any], seconds: float, executor: str | None
) -> RunResult:
    """The ``completed`` RunResult of ``spec`` with its History dict."""
    return RunResult(
        experiment=spec.experiment,
        variant=spec.variant.base,
        seed=spec.seed,
        status="completed",
        history=history,
        seconds=seconds,
        grid=dict(spec.variant.grid),
        executor=executor,
    )


def failed_result(spec: RunSpec, error: str, seconds: float, executor: str | None) -> RunResult:
    """The ``failed`` RunResult of ``spec`` with the error (a traceback or a sentence)."""
    return RunResult(
        experiment=spec.experiment,
        variant=spec.variant.base,
        seed=spec.seed,
        status="failed",
        history=None,
        seconds=seconds,
        error=error,
        grid=dict(spec.variant.grid),
        executor=executor,
    )
