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

from bnlab.data import Dataset, load_dataset
from bnlab.lab.experiment import Experiment, Variant
from bnlab.lab.results import RunResult
from bnlab.lab.weights import save_weights, weights_file
from bnlab.models import build_model
from bnlab.train import fit

__all__ = ["RunSpec", "execute_run", "load_variant_data", "plan_runs"]


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


@lru_cache(maxsize=4)
def _dataset(data_json: str) -> Dataset:
    options = json.loads(data_json)
    return load_dataset(options.pop("name"), **options)


def load_variant_data(variant: Variant) -> Dataset:
    """The variant's dataset, loaded once per process for the same options."""
    return _dataset(json.dumps(variant.config()["data"], sort_keys=True))


def execute_run(spec: RunSpec) -> RunResult:
    """Do one run in this process; failures are returned as ``status="failed"`` with the traceback."""
    start = time.perf_counter()
    variant = spec.variant
    try:
        data = load_variant_data(variant)
        shape = variant.input_shape or data.input_shape
        model = build_model(variant.layers, shape, seed=spec.seed, where=f"variant {variant.name}")
        history = fit(model, data, variant.train_config(), seed=spec.seed, progress=False)
        if spec.out_dir is not None:
            save_weights(
                model,
                Path(spec.out_dir) / spec.weights,
                metadata={
                    "experiment": spec.experiment,
                    "variant": variant.name,
                    "seed": str(spec.seed),
                    "config_hash": variant.config_hash,
                    "input_shape": json.dumps(list(shape)),
                },
            )
        return RunResult(
            experiment=spec.experiment,
            variant=variant.base,
            seed=spec.seed,
            status="completed",
            history=history.to_dict(),
            seconds=time.perf_counter() - start,
            grid=dict(variant.grid),
        )
    except Exception:
        return RunResult(
            experiment=spec.experiment,
            variant=variant.base,
            seed=spec.seed,
            status="failed",
            history=None,
            seconds=time.perf_counter() - start,
            error=traceback.format_exc(),
            grid=dict(variant.grid),
        )
