"""bnlab.lab: declarative experiments, run over many seeds, stored, summarized, reported.

Experiment TOML -> `Experiment` (validated, grid- and edit-expanded) -> runs
(variant, seed) -> `RunResult` -> SQLite store in the output folder -> results.json
(+ curves.png and report.html from ``bnlab.lab.report``).

Example::

    from bnlab import lab

    exp = lab.load_experiment("circles")            # bundled name or a .toml path
    outcome = lab.run(exp, "runs/circles", seeds=3, epochs=5, workers=2)
    outcome.results["runs"][0]["history"]["final"]["test_accuracy"]
    model = lab.load_run_model("runs/circles", "bn_after", seed=0)

Statistics (``bnlab.lab.stats``), the report (``bnlab.lab.report``) and the exports
(``bnlab.lab.export``: TensorBoard, MLflow, CSV, Parquet) read results.json / the
store; import them directly. ``bnlab.lab.ray_executor`` runs studies on Ray clusters.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnlab.lab.catalog import ExperimentInfo, find_experiment, list_experiments
    from bnlab.lab.errors import LabError, Terminated
    from bnlab.lab.executors import (
        EXECUTORS,
        ProcessExecutor,
        SequentialExecutor,
        make_executor,
    )
    from bnlab.lab.experiment import (
        Experiment,
        PublishedRun,
        ReportSettings,
        Variant,
        load_experiment,
        parse_experiment,
    )
    from bnlab.lab.ray_executor import RayExecutor
    from bnlab.lab.results import (
        RESULTS_FILE,
        SCHEMA_VERSION,
        RunResult,
        build_results,
        load_schema,
        read_results,
        write_results,
    )
    from bnlab.lab.runs import RunSpec, execute_run, plan_runs
    from bnlab.lab.store import STORE_FILE, Store, StoredRun
    from bnlab.lab.study import RESOLVED_FILE, Observer, StudyOutcome, run
    from bnlab.lab.weights import load_run_model, load_weights, save_weights
    from bnlab.lab.worker_server import default_workers

#: Public name -> the module that defines it. Imported on first use (PEP 562), so that
#: ``bnlab list`` reads the bundled files without importing torch.
_LAZY: dict[str, str] = {
    "EXECUTORS": "bnlab.lab.executors",
    "Experiment": "bnlab.lab.experiment",
    "ExperimentInfo": "bnlab.lab.catalog",
    "LabError": "bnlab.lab.errors",
    "Observer": "bnlab.lab.study",
    "ProcessExecutor": "bnlab.lab.executors",
    "PublishedRun": "bnlab.lab.experiment",
    "RESOLVED_FILE": "bnlab.lab.study",
    "RESULTS_FILE": "bnlab.lab.results",
    "RayExecutor": "bnlab.lab.ray_executor",
    "ReportSettings": "bnlab.lab.experiment",
    "RunResult": "bnlab.lab.results",
    "RunSpec": "bnlab.lab.runs",
    "SCHEMA_VERSION": "bnlab.lab.results",
    "STORE_FILE": "bnlab.lab.store",
    "SequentialExecutor": "bnlab.lab.executors",
    "Store": "bnlab.lab.store",
    "StoredRun": "bnlab.lab.store",
    "StudyOutcome": "bnlab.lab.study",
    "Terminated": "bnlab.lab.errors",
    "Variant": "bnlab.lab.experiment",
    "build_results": "bnlab.lab.results",
    "default_workers": "bnlab.lab.worker_server",
    "execute_run": "bnlab.lab.runs",
    "find_experiment": "bnlab.lab.catalog",
    "list_experiments": "bnlab.lab.catalog",
    "load_experiment": "bnlab.lab.experiment",
    "load_run_model": "bnlab.lab.weights",
    "load_schema": "bnlab.lab.results",
    "load_weights": "bnlab.lab.weights",
    "make_executor": "bnlab.lab.executors",
    "parse_experiment": "bnlab.lab.experiment",
    "plan_runs": "bnlab.lab.runs",
    "read_results": "bnlab.lab.results",
    "run": "bnlab.lab.study",
    "save_weights": "bnlab.lab.weights",
    "write_results": "bnlab.lab.results",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bnlab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "EXECUTORS",
    "RESOLVED_FILE",
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "STORE_FILE",
    "Experiment",
    "ExperimentInfo",
    "LabError",
    "Observer",
    "ProcessExecutor",
    "PublishedRun",
    "RayExecutor",
    "ReportSettings",
    "RunResult",
    "RunSpec",
    "SequentialExecutor",
    "Store",
    "StoredRun",
    "StudyOutcome",
    "Terminated",
    "Variant",
    "build_results",
    "default_workers",
    "execute_run",
    "find_experiment",
    "list_experiments",
    "load_experiment",
    "load_run_model",
    "load_schema",
    "load_weights",
    "make_executor",
    "parse_experiment",
    "plan_runs",
    "read_results",
    "run",
    "save_weights",
    "write_results",
]
