"""Run a whole study into an output folder, resuming what is already there.

``run(experiment, out_dir)``:

1. writes ``experiment.resolved.json`` (the experiment after grid and edit expansion)
   and records it in the store (``runs.sqlite``);
2. plans every (variant, seed) run and reuses each completed run of the same
   config (its weights file present); the rest go to the executor;
3. stores each run the moment it finishes (a failure is stored with its traceback);
4. writes ``results.json`` from the store, then the report (``curves.png``,
   ``report.html``) — on Ctrl-C the finished runs are kept and results.json is
   written for them before the interrupt propagates.

Only one study may write to a folder at a time (an advisory lock file).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnlab.lab.errors import LabError
from bnlab.lab.executors import make_executor
from bnlab.lab.experiment import MAX_RUNS_ENV, Experiment, load_experiment, max_runs
from bnlab.lab.preflight import check_experiment
from bnlab.lab.results import RunResult, atomic_write_text, dumps, versions, write_results
from bnlab.lab.runs import RunSpec, plan_runs
from bnlab.lab.store import STORE_FILE, Store
from bnlab.lab.worker_server import default_workers, start_worker_server

if TYPE_CHECKING:
    from bnlab.data import Dataset

__all__ = ["RESOLVED_FILE", "Observer", "StudyOutcome", "run"]

RESOLVED_FILE = "experiment.resolved.json"
LOCK_FILE = ".bnlab.lock"


class Observer:
    """Hooks for progress display; the default does nothing. Subclass what you need."""

    def data_loaded(self, datasets: list[Dataset]) -> None:
        """Before anything is created: each distinct dataset the study trains on."""

    def planned(self, experiment: Experiment, total: int, reused: int) -> None:
        """Before running: `total` runs, of which `reused` are already in the store."""

    def started(self, spec: RunSpec) -> None:
        """A run was handed to a worker."""

    def finished(self, spec: RunSpec, result: RunResult) -> None:
        """A run finished and is stored."""


@dataclass(frozen=True)
class StudyOutcome:
    """What `run` did.

    Attributes:
        out_dir: the output folder.
        results_path: its results.json.
        report_path: report.html, or None when no report was written.
        total: runs in the study; reused: taken from the store;
        completed / failed: runs done now, by status.
        seconds: wall-clock time of this call.
        training_seconds: of which the runs themselves took (from handing the first run
            to the executor until the last result came back; 0 when nothing ran).
        report_seconds: of which writing the report took (0 without one).
        results: the results.json document.
    """

    out_dir: Path
    results_path: Path
    report_path: Path | None
    total: int
    reused: int
    completed: int
    failed: int
    seconds: float
    results: dict[str, Any]
    training_seconds: float = 0.0
    report_seconds: float = 0.0


@contextlib.contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks here: trust the user
        yield
        return
    with open(out_dir / LOCK_FILE, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(
                f"{out_dir}: another bnlab study is writing to this folder; wait for it or use "
                "another --out folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_same_experiment(out: Path, name: str, force: bool) -> None:
    """Refuse to mix another experiment into `out` (it would replace its results.json)."""
    if force or not (out / STORE_FILE).is_file():
        return
    with Store.in_folder(out, create=False) as store:
        there = store.latest_experiment()
    if there is not None and there["name"] != name:
        raise LabError(
            f"--out {out}: the folder holds experiment {there['name']!r}; running {name!r} "
            "there would replace its results.json and report; choose another --out folder, "
            "or add --force to add this experiment's runs to it"
        )


def _reusable(
    store: Store, specs: Sequence[RunSpec], out_dir: Path
) -> set[tuple[str, str, int, str]]:
    keys = {spec.key for spec in specs}
    reuse = set()
    for row in store.runs(status="completed"):
        key = (row.experiment, row.variant, row.seed, row.config_hash)
        if key in keys and (row.weights is None or (out_dir / row.weights).is_file()):
            reuse.add(key)
    return reuse


def run(
    experiment: Experiment | str | Path,
    out_dir: str | Path,
    *,
    seeds: int | Sequence[int] | None = None,
    epochs: int | None = None,
    workers: int | None = None,
    threads: int = 1,
    executor: str = "auto",
    address: str | None = None,
    memory_budget: int | None = None,
    seeds_per_task: int = 1,
    observer: Observer | None = None,
    report: bool = True,
    formats: Sequence[str] = ("png",),
    force: bool = False,
) -> StudyOutcome:
    """Run (or resume) a study into `out_dir` and write its results and report.

    Args:
        experiment: an `Experiment`, a bundled experiment name or a ``.toml`` path.
        out_dir: output folder (created).
        seeds: number of seeds (0..N-1) or the seeds; default the experiment's.
        epochs: train every variant for this many epochs instead (e.g. a short check).
        workers: parallel runs; default `default_workers()` (Ray: the cluster's CPUs).
        threads: torch threads per run (default 1: parallelism is across runs).
        executor: "auto" (stacks the seeds of a variant where that pays, see
            `bnlab.lab.vectorized`; processes when workers > 1), "vectorized" (stacks
            every variant it can), "sequential", "process" or "ray".
        memory_budget: bytes the vectorized executor's stacks may take (default a
            quarter of the RAM); larger groups of seeds are split.
        address: the Ray cluster to run on (``executor="ray"``; None: a local Ray).
        seeds_per_task: with Ray, tasks of this many seeds of a variant, stacked where
            the model allows (`bnlab.lab.ray_executor.train_stacked`).
        observer: progress hooks.
        report: also write the plots and report.html (``bnlab.lab.report``).
        formats: the plots' file formats, any of png, svg, pdf (``bnlab.lab.plots.FORMATS``).
        force: run into a folder that holds another experiment (its runs stay in the
            store; results.json and the report then show this experiment).

    Raises:
        LabError (and SpecError/DatasetError from reading an experiment or checking it
            against its data, `bnlab.lab.preflight`): bad input, found before the
            output folder is created; StoreError: a damaged store or a full disk.
        KeyboardInterrupt: after storing the finished runs and writing results.json.
    """
    start = time.perf_counter()
    if report:  # a bad format fails before any run
        from bnlab.lab.plots import parse_formats

        try:
            formats = parse_formats(formats)
        except ValueError as e:
            raise LabError(f"--format: {e}") from None
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if seeds is not None:
        exp = exp.with_seeds(seeds)
    if epochs is not None:
        exp = exp.with_epochs(epochs)
    observer = observer or Observer()
    # bad options fail before any writing
    make_executor(
        executor,
        workers,
        threads=threads,
        address=address,
        memory_budget=memory_budget,
        seeds_per_task=seeds_per_task,
    )
    runs = len(exp.variants) * len(exp.seeds)
    if runs > max_runs():
        raise LabError(
            f"{exp.name}: {len(exp.variants)} variants x {len(exp.seeds)} seeds = {runs} runs "
            f"exceed the limit of {max_runs()}; raise it with {MAX_RUNS_ENV}={runs}"
        )
    start_worker_server(executor, workers)  # imports in the background during the checks below
    # the data and every model, once: bad input creates nothing
    observer.data_loaded(check_experiment(exp))
    out = Path(out_dir)
    _check_same_experiment(out, exp.name, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabError(f"--out {out}: cannot create the folder: {e.strerror}") from None
    if not os.access(out, os.W_OK):
        raise LabError(f"--out {out}: the folder is not writable; choose another --out folder")

    with _folder_lock(out), Store.in_folder(out) as store:
        resolved = exp.to_dict()
        atomic_write_text(out / RESOLVED_FILE, dumps(resolved))
        store.add_experiment(resolved)
        specs = plan_runs(exp, out_dir=out)
        reuse = _reusable(store, specs, out)
        todo = [s for s in specs if s.key not in reuse]
        observer.planned(exp, len(specs), len(specs) - len(todo))
        counts = {"completed": 0, "failed": 0}
        vers = versions()

        def started(spec: RunSpec) -> None:
            store.mark_running(spec.key, spec.variant.name, vers)
            observer.started(spec)

        training_start = training_end = time.perf_counter()
        try:
            if todo:
                n = workers
                if executor == "auto":
                    n = min(default_workers() if workers is None else workers, len(todo))
                runner = make_executor(
                    executor,
                    n,
                    threads=threads,
                    address=address,
                    memory_budget=memory_budget,
                    seeds_per_task=seeds_per_task,
                )
                for spec, result in runner.map(todo, on_start=started):
                    weights = spec.weights if result.status == "completed" else None
                    store.record(
                        spec.key, spec.variant.name, result, weights=weights, versions=vers
                    )
                    counts[result.status] += 1
                    observer.finished(spec, result)
                training_end = time.perf_counter()
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or failed (disk full): keep what finished and
            # write results.json for it if the disk still allows; the first error stands.
            with contextlib.suppress(LabError):
                store.drop_running()
                write_results(out)
            raise
        store.drop_running()
        results_path = write_results(out)

    from bnlab.lab.results import read_results

    results = read_results(out)
    report_start = time.perf_counter()
    report_path = _write_report(out, formats) if report else None
    report_seconds = time.perf_counter() - report_start if report else 0.0
    return StudyOutcome(
        out_dir=out,
        results_path=results_path,
        report_path=report_path,
        total=len(specs),
        reused=len(specs) - len(todo),
        completed=counts["completed"],
        failed=counts["failed"],
        seconds=time.perf_counter() - start,
        results=results,
        training_seconds=training_end - training_start,
        report_seconds=report_seconds,
    )


def _write_report(out: Path, formats: Sequence[str]) -> Path | None:
    """``bnlab.lab.report.write_report(out, formats=formats)`` (plots, report.html)."""
    from bnlab.lab import report

    return report.write_report(out, formats=formats)
