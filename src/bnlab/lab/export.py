"""Export a run folder to the tools people already use: TensorBoard, MLflow, CSV, Parquet.

Everything is read from the folder's store (`bnlab.lab.results.build_results`: the
latest experiment's completed and failed runs), never from live training, so an export
can be made, remade or moved to another machine at any time.

Every run becomes the same series of ``(tag, step, value)`` points (`run_series`); the
step is the optimizer step, so epoch-end and mid-epoch numbers share one axis:

==================================  ====================================================
tag                                 points
==================================  ====================================================
``loss``, ``accuracy``              training loss / accuracy averaged over each epoch
                                    (training mode), at the epoch's last step
``val_loss``, ``val_accuracy``      test set in inference mode at each evaluation
                                    (every ``eval_every_steps`` steps and each epoch end)
``val_accuracy_train_mode``         test accuracy with BN in training mode (batch
                                    statistics) at each evaluation; models with BN only
``probe/<layer>.<where>/p<q>``      percentile ``q`` of the probed tensor at each probe step
``final/<metric>``                  train/test loss and accuracy after training, in
                                    inference mode, at the last step
==================================  ====================================================

Non-finite numbers (stored as null) have no point. A failed run has no series; it still
gets its row, its MLflow run (status FAILED, its error as an artifact).

- `export_tensorboard`: event files written by TensorBoard's own writer, one sub-folder
  per run, ``<variant label>/seed_<k>`` (the label carries the grid point, e.g.
  ``bn[learning_rate=0.01]``); exporting again replaces a run's earlier event files.
- `export_mlflow`: one MLflow run per bnlab run in the MLflow experiment named after the
  bnlab experiment: params (experiment, variant, label, seed, grid axes, config hash,
  flattened data and train settings), the series as metrics with steps, and artifacts
  ``summary.json`` (the run's record: status, final metrics, error, seconds, settings)
  and the study's ``report.html``. A run exported before (same tag ``bnlab.run``) is
  replaced.
- `export_tables` (CSV, or Parquet with pandas and pyarrow): a runs table (one row per
  run: identity, status, settings, final metrics) and a curves table in long form (one
  row per point of every series).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bnlab.lab.errors import LabError
from bnlab.lab.results import REPORT_FILE, atomic_write_text, build_results, dumps

__all__ = [
    "ExportedRun",
    "Point",
    "Tables",
    "curves_path",
    "export_mlflow",
    "export_tables",
    "export_tensorboard",
    "exported_runs",
    "run_series",
    "tables",
]

_EPOCH_TAGS = ("loss", "accuracy")
_EVAL_TAGS = ("val_loss", "val_accuracy", "val_accuracy_train_mode")
_UNSAFE_IN_FOLDER = re.compile(r"[^A-Za-z0-9_.,=\[\]+-]")


def _missing(option: str, package: str, extra: str) -> LabError:
    return LabError(
        f"{option}: the {package} package is not installed; "
        f"install it with: pip install 'bnlab[{extra}]'"
    )


@dataclass(frozen=True)
class Point:
    """One point of a series: ``tag`` at optimizer step ``step`` (epoch ``epoch``, fractional)."""

    tag: str
    step: int
    epoch: float
    value: float


@dataclass(frozen=True)
class ExportedRun:
    """A stored run with the settings of its resolved variant.

    Attributes:
        experiment, variant (base name), label (name with the grid point), seed, grid,
        config_hash: the run's identity.
        record: its RunResult dict (history None for a failed run).
        settings: the variant's resolved ``data`` and ``train`` tables.
    """

    experiment: str
    variant: str
    label: str
    seed: int
    grid: Mapping[str, Any]
    config_hash: str
    record: Mapping[str, Any]
    settings: Mapping[str, Any]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def folder(self) -> str:
        """``<label>/seed_<k>`` with characters unsafe in a file name replaced by ``_``."""
        return f"{_UNSAFE_IN_FOLDER.sub('_', self.label)}/seed_{self.seed}"

    @property
    def key(self) -> str:
        """``experiment/label/seed/config hash``: one bnlab run, whatever the export."""
        return f"{self.experiment}/{self.label}/{self.seed}/{self.config_hash}"


def exported_runs(run_dir: str | Path) -> tuple[dict[str, Any], list[ExportedRun]]:
    """The results document of `run_dir`'s store and its runs, variant by variant, seed by seed.

    Raises:
        LabError: no store in `run_dir`, or it holds no experiment.
    """
    results = build_results(run_dir)
    variants = {
        (v["base"], json.dumps(v["grid"], sort_keys=True)): v
        for v in results["experiment"]["variants"]
    }
    runs = []
    for record in results["runs"]:
        v = variants[record["variant"], json.dumps(record["grid"], sort_keys=True)]
        runs.append(
            ExportedRun(
                experiment=record["experiment"],
                variant=record["variant"],
                label=v["name"],
                seed=record["seed"],
                grid=dict(record["grid"]),
                config_hash=v["config_hash"],
                record=record,
                settings={"data": v["data"], "train": v["train"]},
            )
        )
    return results, runs


def run_series(run: ExportedRun) -> list[Point]:
    """Every point of `run`'s series (see the module docstring), by tag then step."""
    history = run.record.get("history")
    if not history:
        return []
    per_epoch = history["steps_per_epoch"]
    points: list[Point] = []

    def add(tag: str, step: int, epoch: float, value: Any) -> None:
        if value is not None and math.isfinite(value):
            points.append(Point(tag, int(step), float(epoch), float(value)))

    for tag in _EPOCH_TAGS:
        for i, value in enumerate(history["epochs"][tag]):
            add(tag, (i + 1) * per_epoch, i + 1, value)
    for tag in _EVAL_TAGS:
        for e in history["evals"]:
            add(tag, e["step"], e["epoch"], e[tag])
    for name, trace in history["probes"].items():
        for j, q in enumerate(trace["percentiles"]):
            for step, row in zip(trace["steps"], trace["values"], strict=True):
                add(f"probe/{name}/p{q:g}", step, step / per_epoch, row[j])
    last = len(history["epochs"]["loss"])
    for metric, value in history["final"].items():
        add(f"final/{metric}", last * per_epoch, last, value)
    return points


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``("train.optimizer.learning_rate", 0.01)``...; lists as JSON text."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, list | tuple):
        yield prefix, json.dumps(value)
    else:
        yield prefix, value


# --------------------------------------------------------------------------- TensorBoard


def export_tensorboard(run_dir: str | Path, log_dir: str | Path) -> list[Path]:
    """Write each run's series as TensorBoard scalars under ``log_dir/<label>/seed_<k>``.

    Returns the run folders written (completed runs only: a failed run has no series).

    Raises:
        LabError: tensorboard is not installed, or `run_dir` holds no study.
    """
    try:
        from tensorboard.summary import Writer
    except ImportError:
        raise _missing("--tensorboard", "tensorboard", "tensorboard") from None
    _, runs = exported_runs(run_dir)
    written = []
    for run in runs:
        points = run_series(run)
        if not points:
            continue
        folder = Path(log_dir) / run.folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = Writer(str(folder))
        try:
            for p in sorted(points, key=lambda p: (p.step, p.tag)):
                writer.add_scalar(p.tag, p.value, p.step)
        finally:
            writer.close()
        written.append(folder)
    return written


# --------------------------------------------------------------------------- MLflow


def export_mlflow(
    run_dir: str | Path, tracking_uri: str, *, experiment: str | None = None
) -> list[str]:
    """Log each run as an MLflow run at `tracking_uri` (e.g. ``file:/path/mlruns``).

    Args:
        run_dir: a `bnlab run` output folder.
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment name (default: the bnlab experiment's name).

    Returns:
        The MLflow run ids, in the order of the runs.

    Raises:
        LabError: mlflow is not installed, `run_dir` holds no study, or the tracking
            server refuses the experiment.
    """
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag
    except ImportError:
        raise _missing("--mlflow", "mlflow", "mlflow") from None
    results, runs = exported_runs(run_dir)
    name = experiment or results["experiment"]["name"]
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else client.create_experiment(name)
    except Exception as e:  # what fails depends on the URI's store; say which and why
        message = " ".join(str(e).split())
        raise LabError(
            f"--mlflow {tracking_uri}: cannot log to experiment {name!r} there: {message}"
        ) from None
    report = Path(run_dir) / REPORT_FILE
    ids = []
    with tempfile.TemporaryDirectory(prefix="bnlab-mlflow-") as tmp:
        for run in runs:
            for old in client.search_runs(
                [experiment_id], filter_string=f"tags.`bnlab.run` = '{run.key}'"
            ):
                client.delete_run(old.info.run_id)
            created = client.create_run(
                experiment_id,
                run_name=f"{run.label} seed {run.seed}",
                tags={"bnlab.run": run.key, "bnlab.experiment": run.experiment},
            )
            run_id = created.info.run_id
            params = {
                "experiment": run.experiment,
                "variant": run.variant,
                "label": run.label,
                "seed": run.seed,
                "config_hash": run.config_hash,
                **{f"grid.{axis}": value for axis, value in run.grid.items()},
                **dict(_flatten("", run.settings)),
            }
            metrics = [
                Metric(p.tag, p.value, created.info.start_time, p.step) for p in run_series(run)
            ]
            client.log_batch(
                run_id,
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag("bnlab.status", run.status)],
            )
            for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 per batch
                client.log_batch(run_id, metrics=metrics[i : i + 1000])
            summary = Path(tmp) / run_id / "summary.json"
            summary.parent.mkdir()
            atomic_write_text(summary, dumps(_summary(run)))
            client.log_artifact(run_id, str(summary))
            if report.is_file():
                client.log_artifact(run_id, str(report))
            client.set_terminated(run_id, "FINISHED" if run.status == "completed" else "FAILED")
            ids.append(run_id)
    return ids


def _summary(run: ExportedRun) -> dict[str, Any]:
    history = run.record.get("history") or {}
    return {
        "experiment": run.experiment,
        "variant": run.variant,
        "label": run.label,
        "seed": run.seed,
        "grid": dict(run.grid),
        "config_hash": run.config_hash,
        "status": run.status,
        "seconds": run.record.get("seconds"),
        "final": history.get("final"),
        "diverged": history.get("diverged"),
        "error": run.record.get("error"),
        "settings": dict(run.settings),
    }


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Tables:
    """The runs table and the curves table of a run folder, as rows and column names.

    Runs columns: experiment, variant, label, seed, the grid axes, status, config_hash,
    seconds, epochs, steps_per_epoch, diverged, final_train_loss, final_train_accuracy,
    final_test_loss, final_test_accuracy, then the flattened settings (``data.name``,
    ``train.optimizer.learning_rate``, ...; lists as JSON); empty for what a run lacks.
    Curves columns: experiment, variant, label, seed, the grid axes, tag, step, epoch, value.
    """

    runs: list[dict[str, Any]]
    run_columns: list[str]
    curves: list[dict[str, Any]]
    curve_columns: list[str]


def tables(run_dir: str | Path) -> Tables:
    """The `Tables` of `run_dir`'s store."""
    _, runs = exported_runs(run_dir)
    axes = list(dict.fromkeys(axis for run in runs for axis in run.grid))
    ident_columns = ["experiment", "variant", "label", "seed", *axes]
    run_rows, curve_rows = [], []
    for run in runs:
        ident = {
            "experiment": run.experiment,
            "variant": run.variant,
            "label": run.label,
            "seed": run.seed,
            **{axis: run.grid.get(axis) for axis in axes},
        }
        history = run.record.get("history") or {}
        final = history.get("final") or {}
        run_rows.append(
            {
                **ident,
                "status": run.status,
                "config_hash": run.config_hash,
                "seconds": run.record.get("seconds"),
                "epochs": len(history["epochs"]["loss"]) if history else None,
                "steps_per_epoch": history.get("steps_per_epoch"),
                "diverged": history.get("diverged"),
                **{f"final_{m}": final.get(m) for m in _FINAL},
                **dict(_flatten("", run.settings)),
            }
        )
        for p in run_series(run):
            curve_rows.append(
                {**ident, "tag": p.tag, "step": p.step, "epoch": p.epoch, "value": p.value}
            )
    return Tables(
        runs=run_rows,
        run_columns=list(dict.fromkeys([*ident_columns, *(k for r in run_rows for k in r)])),
        curves=curve_rows,
        curve_columns=[*ident_columns, "tag", "step", "epoch", "value"],
    )


_FINAL = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def curves_path(path: str | Path) -> Path:
    """The curves table beside the runs table: ``study.csv`` -> ``study_curves.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_curves{path.suffix}")


def export_tables(
    run_dir: str | Path, path: str | Path, *, format: Literal["csv", "parquet"] = "csv"
) -> tuple[Path, Path]:
    """Write the runs table to `path` and the curves table beside it (`curves_path`).

    Returns:
        (runs table, curves table) paths.

    Raises:
        LabError: Parquet without pandas and pyarrow, a missing folder, or `run_dir`
            holds no study.
    """
    runs_file, curves_file = Path(path), curves_path(path)
    option = f"--{format}"
    if not runs_file.parent.is_dir():
        raise LabError(f"{option} {runs_file}: the folder {runs_file.parent} does not exist")
    if format == "parquet":
        try:
            import pandas as pd
            import pyarrow  # noqa: F401
        except ImportError:
            raise LabError(
                f"{option}: Parquet needs pandas and pyarrow; install them with: "
                "pip install 'bnlab[parquet]'"
            ) from None
    t = tables(run_dir)
    for file, rows, columns in (
        (runs_file, t.runs, t.run_columns),
        (curves_file, t.curves, t.curve_columns),
    ):
        if format == "parquet":
            pd.DataFrame(rows, columns=columns).to_parquet(file, index=False)
        else:
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: "" if r.get(k) is None else r[k] for k in columns} for r in rows)
            atomic_write_text(file, text.getvalue())
    return runs_file, curves_file
