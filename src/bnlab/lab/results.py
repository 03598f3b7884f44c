"""Run records and ``results.json``: the documented, versioned output of a study.

``results.json`` (schema: ``results.schema.json`` beside this file, ``SCHEMA_VERSION``)::

    {"schema_version": 1,
     "experiment": {resolved experiment: name, description, source, seeds, grid,
                    report (threshold, comparisons, published single runs),
                    variants: [{name, base, description, grid, data, input_shape, layers,
                                train, config_hash}]},
     "variants": [base variant names, file order],
     "seeds": [int],
     "runs": [RunResult],          # completed and failed runs of the current config
     "outcomes": [per variant and grid point: runs, completed, diverged, non_finite,
                  did_not_learn, unknown, diverged_seeds, did_not_learn_seeds],
     "versions": {"bnlab", "torch", "numpy", "python"},
     "created": "2025-01-01T12:00:00+00:00"}

A RunResult is ``{"experiment", "variant" (base name), "seed", "status"
("completed"|"failed"), "history" (History dict | null), "seconds", "error"
(traceback | null), "grid" ({axis: value}, {} without a grid), "executor" (what trained
it: "sequential", "process", "ray" or "vectorized"; absent in records written before it
existed)}``. ``outcomes`` counts the
runs that diverged (non-finite loss, or a loss that blew up) and that did not learn (final
test accuracy no better than chance), by the rules of :mod:`bnlab.lab.outcomes`; files
written before it existed lack it. Non-finite numbers are written as null. The file is rebuilt from the store (`bnlab report DIR` does it
too), written to a temporary file and renamed into place, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from bnlab.lab.errors import StoreError
from bnlab.lab.outcomes import outcome_table

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLD_METRIC",
    "REPORT_FILE",
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "STATISTICS_FILE",
    "STATISTICS_SCHEMA",
    "SUMMARY_CSV_FILE",
    "SUMMARY_FILE",
    "RunResult",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_results",
    "current_statistics",
    "dumps",
    "json_ready",
    "load_schema",
    "now_iso",
    "read_results",
    "read_statistics",
    "run_key",
    "versions",
    "write_results",
]

# The one home of the results format's constants (file names, schema version, the default
# threshold of "epochs to reach"); the history's metric names live in bnlab.train.history.
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
SUMMARY_CSV_FILE = "summary.csv"
REPORT_FILE = "report.html"
#: Per-run BN measurements of ``bnlab.doctor.study`` (studies with ``[report] doctor = true``).
STATISTICS_FILE = "bn_statistics.json"
STATISTICS_SCHEMA = "bnlab.bn_statistics/1"
DEFAULT_THRESHOLD_METRIC = "val_accuracy"
DEFAULT_THRESHOLD = 0.80
Status = Literal["completed", "failed"]


@dataclass(frozen=True)
class RunResult:
    """What one run (experiment, variant, seed) produced.

    Attributes:
        experiment: experiment name.
        variant: base variant name (as under ``[variants.NAME]``).
        seed: the run's seed.
        status: "completed" or "failed".
        history: ``History.to_dict()`` for completed runs, None for failed ones.
        seconds: wall-clock time of the run (data, model, training, saving).
        error: the traceback of a failed run, else None.
        grid: the grid values of the run's variant (``{}`` without a grid).
        executor: the executor that trained it (``"vectorized"``: stacked with the other
            seeds of its variant, ``seconds`` then being its share of the group's time),
            None when unknown.
    """

    experiment: str
    variant: str
    seed: int
    status: Status
    history: Mapping[str, Any] | None
    seconds: float
    error: str | None = None
    grid: Mapping[str, Any] = field(default_factory=dict)
    executor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record (non-finite numbers as null)."""
        return json_ready(
            {
                "experiment": self.experiment,
                "variant": self.variant,
                "seed": self.seed,
                "status": self.status,
                "history": self.history,
                "seconds": self.seconds,
                "error": self.error,
                "grid": dict(self.grid),
                **({} if self.executor is None else {"executor": self.executor}),
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunResult:
        return cls(
            experiment=d["experiment"],
            variant=d["variant"],
            seed=int(d["seed"]),
            status=d["status"],
            history=d.get("history"),
            seconds=float(d.get("seconds") or 0.0),
            error=d.get("error"),
            grid=dict(d.get("grid") or {}),
            executor=d.get("executor"),
        )


def json_ready(obj: Any) -> Any:
    """A copy with tuples as lists and non-finite floats as None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def versions() -> dict[str, str]:
    """Versions of bnlab, torch, numpy and Python, recorded with every run."""
    import numpy
    import torch

    import bnlab

    return {
        "bnlab": bnlab.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def now_iso() -> str:
    """Current UTC time, ISO 8601 with offset, seconds precision."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync, then rename.

    A reader sees the old file or the new one, never a partial one. The file gets the
    usual permissions (0o666 minus the umask), not mkstemp's private 0o600.

    Raises:
        StoreError: the write failed (disk full, folder not writable); one line.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise StoreError.from_os(path, f"writing {path.name}", e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StoreError.from_os(path, f"writing {path.name}", e) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps(obj: Any) -> str:
    """Strict JSON (no NaN/Infinity), indented, UTF-8 text with a final newline."""
    return json.dumps(json_ready(obj), indent=1, allow_nan=False, ensure_ascii=False) + "\n"


def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json shipped with the package."""
    text = resources.files("bnlab.lab").joinpath("results.schema.json").read_text("utf-8")
    return json.loads(text)


def read_results(out_dir: str | Path) -> dict[str, Any]:
    """``results.json`` of a run folder as a dict.

    Raises:
        LabError: no results.json there, or it is not valid JSON.
    """
    from bnlab.lab.errors import LabError

    path = Path(out_dir) / RESULTS_FILE
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise LabError(
            f"{path}: no results file; run `bnlab run EXPERIMENT --out {out_dir}` first"
        ) from None
    except json.JSONDecodeError as e:
        raise LabError(
            f"{path}: not valid JSON ({e}); rebuild it with `bnlab report {out_dir}`"
        ) from None


def run_key(variant: Any, grid: Mapping[str, Any] | None, seed: Any) -> tuple[Any, str, Any]:
    """A run's identity across results.json and bn_statistics.json: (base variant, grid
    point as hashable text, seed)."""
    return (variant, repr(sorted((grid or {}).items())), seed)


def read_statistics(out_dir: str | Path) -> dict[str, Any] | None:
    """``bn_statistics.json`` of a run folder (see ``bnlab.doctor.study``), or None when the
    study measured none.

    Raises:
        LabError: the file is not valid JSON or not of ``STATISTICS_SCHEMA``.
    """
    from bnlab.lab.errors import LabError

    path = Path(out_dir) / STATISTICS_FILE
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise LabError(f"{path}: not valid JSON ({e}); delete it or measure again with "
                       f"`bnlab doctor {out_dir} --all`") from None
    if not isinstance(doc, dict) or doc.get("schema") != STATISTICS_SCHEMA or not isinstance(
            doc.get("runs"), list):
        raise LabError(f"{path}: expected a JSON object with schema {STATISTICS_SCHEMA!r} and a "
                       f"list of runs; delete it or measure again with `bnlab doctor {out_dir} --all`")
    return doc


def current_statistics(
    statistics: Mapping[str, Any] | None, results: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """``statistics`` (a ``bn_statistics.json`` document) keeping only the measurements of
    runs that are in ``results`` (same resolved variant and seed): a folder rerun with other
    settings does not show measurements of models it no longer holds."""
    if statistics is None:
        return None
    experiment = results.get("experiment") or {}
    hashes = {v.get("name"): v.get("config_hash") for v in experiment.get("variants") or []}
    done = {run_key(r.get("variant"), r.get("grid"), r.get("seed"))
            for r in results.get("runs") or [] if r.get("status") == "completed"}
    runs = [r for r in statistics.get("runs") or []
            if hashes.get(r.get("name")) == r.get("config_hash")
            and run_key(r.get("variant"), r.get("grid"), r.get("seed")) in done]
    return {**statistics, "runs": runs}


def build_results(out_dir: str | Path) -> dict[str, Any]:
    """The results.json document for the latest experiment in `out_dir`'s store.

    Holds the completed and failed runs whose (variant, seed, config hash) belong to that
    resolved experiment, ordered by variant then seed; runs of other settings stay in the
    store but are not part of this experiment's results.

    Raises:
        LabError: no store in `out_dir`, or the store holds no experiment.
    """
    from bnlab.lab.errors import LabError
    from bnlab.lab.store import Store

    with Store.in_folder(out_dir, create=False) as store:
        resolved = store.latest_experiment()
        if resolved is None:
            raise LabError(
                f"{out_dir}: the store holds no experiment; run one with --out {out_dir}"
            )
        rows = {
            (r.experiment, r.variant, r.seed, r.config_hash): r
            for r in store.runs()
            if r.status in ("completed", "failed") and r.result is not None
        }
    runs = []
    for variant in resolved["variants"]:
        for seed in resolved["seeds"]:
            row = rows.get((resolved["name"], variant["base"], seed, variant["config_hash"]))
            if row is not None and row.result is not None:
                runs.append(row.result.to_dict())
    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": resolved,
        "variants": list(dict.fromkeys(v["base"] for v in resolved["variants"])),
        "seeds": list(resolved["seeds"]),
        "runs": runs,
        "outcomes": outcome_table(runs),
        "versions": versions(),
        "created": now_iso(),
    }


def write_results(out_dir: str | Path) -> Path:
    """Rebuild ``results.json`` in `out_dir` from its store, atomically; returns its path.

    Writes ``summary.json`` and ``summary.csv`` beside it (``bnlab.lab.summary``).
    """
    from bnlab.lab.summary import summary_csv, summary_dict

    out = Path(out_dir)
    results = build_results(out)
    path = out / RESULTS_FILE
    atomic_write_text(path, dumps(results))
    summary = summary_dict(results)
    atomic_write_text(out / SUMMARY_FILE, dumps(summary))
    atomic_write_text(out / SUMMARY_CSV_FILE, summary_csv(summary))
    return path
