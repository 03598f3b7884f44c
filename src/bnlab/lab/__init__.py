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

from bnlab.lab.errors import LabError, Terminated
from bnlab.lab.executors import (
    EXECUTORS,
    ProcessExecutor,
    SequentialExecutor,
    default_workers,
    make_executor,
)
from bnlab.lab.experiment import (
    Experiment,
    ExperimentInfo,
    PublishedRun,
    ReportSettings,
    Variant,
    find_experiment,
    list_experiments,
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
