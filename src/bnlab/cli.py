"""The ``bnlab`` command: parse arguments, call the lab, print where the results went.

::

    bnlab list                                   # bundled experiments
    bnlab show EXPERIMENT                        # settings and each variant's summary()
    bnlab run EXPERIMENT [--seeds N] [--epochs N] [--out DIR] [--workers N] [--threads N]
                         [--executor auto|vectorized|sequential|process|ray]
                         [--memory-budget SIZE] [--address HOST:PORT] [--seeds-per-task K]
                         [--set KEY=VALUE ...] [--no-report] [--force] [--quiet] [--debug]
    bnlab report DIR                             # rebuild results.json and the report from the store
    bnlab doctor DIR [--variant V] [--seed S] [--fix recalibrate] [--json]
                                                 # diagnose a trained run's BN layers
    bnlab doctor DIR --all [--json]              # measure every run's BN layers; the report
                                                 # gains a "BN statistics" section
    bnlab doctor MODEL.keras --data DATA [--image-size H W] [--validation-split F]
                 [--split-seed S] [--pixel-scale auto|255|1] [--batch-size N]
                 [--fix recalibrate [--save FIXED.keras [--overwrite]]] [--json]
                                                 # the same for a Keras model file
    bnlab export DIR [--tensorboard LOGDIR] [--mlflow URI] [--csv FILE] [--parquet FILE]
                                                 # a run folder to tracking tools and tables
    bnlab export DIR --to MODEL.keras [--variant V] [--grid AXIS=VALUE ...] [--seed S]
                                                 # one run's model as a Keras file

Exit status: 0 success; 1 some runs failed; 2 bad input (one line on stderr, no
traceback unless --debug); 130 interrupted by Ctrl-C, 143 by SIGTERM (129 SIGHUP):
finished runs are kept, results.json is written, the same command resumes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import textwrap
import threading
import time
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _memory_budget(text: str) -> int:
    from bnlab.lab.errors import LabError
    from bnlab.lab.vectorized import parse_memory_budget

    try:
        return parse_memory_budget(text)
    except LabError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--memory-budget: ")) from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def _assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE like train.batch_size=64, got {text!r}"
        )
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: take it as a string
    return key.strip(), value


def _formats(text: str) -> tuple[str, ...]:
    from bnlab.lab.plots import parse_formats

    try:
        return parse_formats(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _FixHelp(str):
    """The --fix help, listing the doctor's fixes only when argparse formats it.

    Listing them imports the doctor (and torch); every other command, ``bnlab --help``
    included, starts without that.
    """

    def __mod__(self, params: Any) -> str:
        from bnlab.doctor.fix import list_fixes

        return f"{self}; one of: {', '.join(list_fixes())}" % params


def _version() -> str:
    import bnlab

    return bnlab.__version__


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog="bnlab",
        description="Batch normalization lab: run declarative studies over many seeds.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"bnlab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser(
        "init", parents=[common], help="write a starting experiment file NAME.toml with comments"
    )
    init.add_argument("name", help="experiment name (letters, digits, _ . -); writes NAME.toml")
    init.add_argument(
        "--from",
        dest="source",
        metavar="EXPERIMENT",
        help="start from a bundled experiment (see `bnlab list`) instead of the template",
    )
    init.add_argument("--model", type=Path, metavar="FILE",
                      help="start from your Keras model file (.keras or .h5): its BN questions")
    init.add_argument("--data", metavar="DATA",
                      help="with --model: a dataset name, an image folder, an .npz file or a "
                      "TOML table, as for bnlab doctor")
    init.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                      help="with --model and an image folder: resize to H x W (default: the "
                      "model's input size)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    completion = sub.add_parser(
        "completion", parents=[common], help="print a shell completion script (bash, zsh, tcsh)"
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])

    sub.add_parser("list", parents=[common], help="list the bundled experiments")

    show = sub.add_parser(
        "show", parents=[common], help="an experiment's settings and each variant's summary()"
    )
    show.add_argument("experiment", help="bundled experiment name or path to a .toml file")

    run = sub.add_parser("run", parents=[common], help="run (or resume) a study")
    run.add_argument("experiment", help="bundled experiment name or path to a .toml file")
    run.add_argument("--seeds", type=_positive_int, help="number of seeds (0..N-1)")
    run.add_argument("--epochs", type=_positive_int, help="epochs for every variant")
    run.add_argument("--out", type=Path, help="output folder (default: runs/<experiment>)")
    run.add_argument(
        "--workers",
        type=_positive_int,
        help="parallel runs (default: min(2, CPUs); with --executor ray: the cluster's CPUs)",
    )
    run.add_argument(
        "--threads", type=_positive_int, default=1, help="torch threads per run (default 1)"
    )
    run.add_argument(
        "--executor",
        default="auto",
        choices=["auto", "vectorized", "sequential", "process", "ray"],
        help="where runs execute (default auto: the seeds of a variant stacked into one "
        "computation where that pays, one run per worker elsewhere; processes when "
        "--workers > 1; vectorized: stack every variant that can be)",
    )
    run.add_argument(
        "--memory-budget",
        type=_memory_budget,
        metavar="SIZE",
        help="memory for stacked seeds, e.g. 2G or 512M (default: a quarter of the RAM); "
        "larger groups of seeds are split",
    )
    run.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the Ray cluster to run on, as printed by `ray start --head` (--executor ray; "
        "default: a Ray instance inside this process)",
    )
    run.add_argument(
        "--seeds-per-task",
        type=_positive_int,
        default=1,
        metavar="K",
        help="--executor ray: each Ray task trains K seeds of a variant, stacked into one "
        "computation where the model allows (default 1)",
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_assignment,
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the file, e.g. --set train.batch_size=64 (TOML value)",
    )
    run.add_argument("--no-report", action="store_true", help="skip the plots and report.html")
    run.add_argument(
        "--force",
        action="store_true",
        help="run into an --out folder that holds another experiment",
    )
    run.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=("png",),
        metavar="FMT[,FMT]",
        help="figure file formats: png, svg, pdf, comma-separated (default png; with svg the "
        "report embeds the SVG)",
    )
    run.add_argument(
        "--quiet", action="store_true", help="print only where the results went (no progress)"
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="print summary.json (statistics per variant, comparisons) instead of the tables",
    )

    report = sub.add_parser(
        "report", parents=[common], help="rebuild results.json and the report from a run folder"
    )
    report.add_argument("dir", type=Path, help="the --out folder of a `bnlab run`")
    report.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=("png",),
        metavar="FMT[,FMT]",
        help="figure file formats: png, svg, pdf, comma-separated (default png)",
    )
    report.add_argument(
        "--json",
        action="store_true",
        help="print summary.json (statistics per variant, comparisons) instead of the tables",
    )

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="diagnose (and fix) the BN layers of a trained run or a Keras model file",
    )
    doctor.add_argument(
        "target", type=Path, metavar="RUN_DIR|MODEL",
        help="the --out folder of a `bnlab run`, or a Keras model file (.keras, .h5)",
    )
    doctor.add_argument("--variant", help="run folders: variant name (needed when there are several)")
    doctor.add_argument(
        "--grid",
        action="append",
        type=_assignment,
        metavar="AXIS=VALUE",
        help="run folders: the variant's grid point, one axis each: --grid learning_rate=0.001 "
        "--grid activation=relu",
    )
    doctor.add_argument("--seed", type=int, help="run folders: run seed (default: the first completed)")
    doctor.add_argument(
        "--all", action="store_true",
        help="run folders: measure every completed run, write bn_statistics.json and rebuild "
        "the report with its 'BN statistics after training' section",
    )
    doctor.add_argument(
        "--data",
        metavar="DATA",
        help="model files: the training data: a dataset name (fashion6), a TOML table "
        "('{ name = \"fashion6\", train_per_class = 100 }'), an .npz, or an image folder",
    )
    doctor.add_argument(
        "--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
        help="image folders: resize to H x W (default: the model's input size)",
    )
    doctor.add_argument(
        "--validation-split", type=_fraction, metavar="F",
        help="image folders: evaluate on Keras's subset='validation' of this fraction "
        "(default: all images for both evaluation and statistics)",
    )
    doctor.add_argument(
        "--split-seed", type=int, metavar="S",
        help="image folders: the seed= given to image_dataset_from_directory (default 1337)",
    )
    doctor.add_argument(
        "--pixel-scale", choices=["auto", "255", "1"], default="auto",
        help="image pixels fed as 0..255 or 0..1 (default auto: 0..255 when the model has a "
        "Rescaling layer, else 0..1)",
    )
    doctor.add_argument(
        "--batch-size", type=_positive_int, metavar="N",
        help="model files: the batch size the model was trained with (default 32)",
    )
    doctor.add_argument(
        "--fix",
        metavar="FIX",
        help=_FixHelp("apply a fix to the loaded model and measure again"),
    )
    doctor.add_argument(
        "--save", type=Path, metavar="FIXED.keras",
        help="write the fixed model as a new Keras file (needs --fix)",
    )
    doctor.add_argument("--overwrite", action="store_true", help="let --save replace a file")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of tables")

    export = sub.add_parser(
        "export",
        parents=[common],
        help="export a run folder: TensorBoard, MLflow, CSV or Parquet tables, or a run's "
        "model as a Keras file",
    )
    export.add_argument("dir", type=Path, help="the --out folder of a `bnlab run`")
    export.add_argument(
        "--tensorboard",
        type=Path,
        metavar="LOGDIR",
        help="write TensorBoard event files, one sub-folder per run (extra: tensorboard)",
    )
    export.add_argument(
        "--mlflow",
        metavar="URI",
        help="log one MLflow run per run to this tracking URI, e.g. file:./mlruns (extra: mlflow)",
    )
    export.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="one row per run to FILE, the curves in long form to FILE_curves.csv",
    )
    export.add_argument(
        "--parquet",
        type=Path,
        metavar="FILE",
        help="the same two tables as Parquet (needs pandas and pyarrow)",
    )
    export.add_argument(
        "--to", type=Path, metavar="MODEL.keras",
        help="write one run's final model as a Keras 3 file (keras.saving.load_model opens it)",
    )
    export.add_argument("--variant", help="with --to: variant name (needed when there are several)")
    export.add_argument(
        "--grid", action="append", type=_assignment, default=[], metavar="AXIS=VALUE",
        help="with --to: the variant's grid point, e.g. --grid learning_rate=0.01 (one per axis)",
    )
    export.add_argument("--seed", type=int, help="with --to: run seed (default: the first completed)")
    export.add_argument("--overwrite", action="store_true", help="with --to: replace an existing file")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from bnlab.data import DatasetError
    from bnlab.keras_io import KerasFileError
    from bnlab.lab import LabError
    from bnlab.models import SpecError

    return (LabError, SpecError, DatasetError, KerasFileError)


_TERMINATING = ("SIGTERM", "SIGHUP")


def _terminate(signum: int, frame: Any) -> None:
    """Signal handler: SIGTERM/SIGHUP take Ctrl-C's path (see `bnlab.lab.Terminated`)."""
    from bnlab.lab import Terminated

    signal.signal(signum, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated(signum)


def _interrupted_status(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, ``128 + signum`` for a termination signal (143 for SIGTERM)."""
    from bnlab.lab import Terminated

    return 128 + interrupt.signum if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnlab`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in _TERMINATING:
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), _terminate)
    try:
        command = {
            "list": _list,
            "show": _show,
            "run": _run,
            "report": _report,
            "doctor": _doctor,
            "export": _export,
            "init": _init,
            "completion": _completion,
        }[args.command]
        return command(args, argv)
    except KeyboardInterrupt as e:
        print(f"bnlab: {str(e) or 'interrupted'}", file=sys.stderr)
        return _interrupted_status(e)
    except BrokenPipeError:
        # `bnlab ... | head` closed the pipe: stop quietly, like other command-line tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except _user_errors() as e:
        if args.debug:
            raise
        message = " ".join(str(e).split("\n"))
        print(f"bnlab: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


# --------------------------------------------------------------------------- list / show


def _list(args: argparse.Namespace, argv: list[str]) -> int:
    from bnlab.lab import list_experiments

    infos = list_experiments()
    width = max((len(i.name) for i in infos), default=0)
    for info in infos:
        print(f"{info.name:<{width}}  — {info.description}")
    return EXIT_OK


def _show(args: argparse.Namespace, argv: list[str]) -> int:
    import json

    from bnlab.lab import load_experiment
    from bnlab.lab.file_weights import start_from_file
    from bnlab.lab.runs import load_variant_data
    from bnlab.models import summary

    exp = load_experiment(args.experiment)
    print(f"{exp.name} — {exp.description}")
    print(f"source: {exp.source}")
    print(f"seeds: {len(exp.seeds)} ({_seed_range(exp.seeds)})")
    if exp.grid:
        print("grid: " + ", ".join(f"{a} = {list(v)}" for a, v in exp.grid.items()))
    r = exp.report
    print(f"threshold: {r.threshold_metric} >= {r.threshold:g}; reference: {r.reference}")
    first = exp.variants[0].config()
    print(f"data: {json.dumps(first['data'])}")
    print(f"train: {json.dumps(first['train'])}")
    for v in exp.variants:
        cfg = v.config()
        print()
        print(f"== variant {v.name}" + (f" — {v.description}" if v.description else ""))
        for key in ("data", "train"):  # only where the variant differs from the first
            if cfg[key] != first[key]:
                print(f"{key}: {json.dumps(cfg[key])}")
        shape = v.input_shape or load_variant_data(v).input_shape
        model = v.build(shape, seed=0)
        if v.file_weights is not None:
            start = start_from_file(model, v.file_weights)
            fresh = f"; from the seed: {', '.join(start.fresh)}" if start.fresh else ""
            print(f"starting weights: {v.file_weights.path} for {len(start.taken)} of "
                  f"{len(start.taken) + len(start.fresh)} layers with weights{fresh}")
        print(summary(model))
    return EXIT_OK


def _seed_range(seeds: Sequence[int]) -> str:
    if list(seeds) == list(range(len(seeds))):
        return f"0..{len(seeds) - 1}"
    return ", ".join(map(str, seeds))


# --------------------------------------------------------------------------- run


def _plan(experiment: Any) -> str:
    """``"2 variants × 4 grid points × 5 seeds = 40 runs"``."""
    from bnlab.lab.stats import plan_words

    return plan_words([(v.base, v.grid) for v in experiment.variants], len(experiment.seeds))


class _Progress:
    """Rich progress bar over runs on a terminal; off one (a pipe, a log file), one line per
    finished run; nothing with --quiet."""

    def __init__(self, enabled: bool, stream: TextIO, *, quiet: bool = False) -> None:
        from bnlab.lab import Observer

        self.enabled = enabled
        self.quiet = quiet
        self.stream = stream
        self.started = 0
        self.finished = 0
        self.failed: list[str] = []
        self._bar: Any = None
        self._task: Any = None
        self._todo = 0
        outer = self

        class _Observer(Observer):
            def data_loaded(self, datasets: Any) -> None:
                if not outer.quiet:
                    for data in datasets:
                        print(f"data: {data.describe()}", file=outer.stream)

            def planned(self, experiment: Any, total: int, reused: int) -> None:
                outer._planned(experiment, total, reused)

            def started(self, spec: Any) -> None:
                outer.started += 1

            def finished(self, spec: Any, result: Any) -> None:
                outer._finished(spec, result)

        self.observer = _Observer()

    def _planned(self, experiment: Any, total: int, reused: int) -> None:
        todo = self._todo = total - reused
        reused_text = f", {reused} reused from the store" if reused else ""
        if not self.quiet:
            print(f"{experiment.name}: {_plan(experiment)}{reused_text}", file=self.stream)
        if self.enabled and todo:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("runs", total=todo)

    def _finished(self, spec: Any, result: Any) -> None:
        self.finished += 1
        if result.status == "failed":
            last = (result.error or "").strip().splitlines()[-1:] or ["(no message)"]
            self.failed.append(f"{spec.label}: {last[0]}")
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"runs (last: {spec.label})")
        elif not self.quiet:
            status = "failed" if result.status == "failed" else f"{result.seconds:.1f} s"
            print(f"run {self.finished}/{self._todo}: {spec.label} {status}", file=self.stream,
                  flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from dataclasses import replace

    from bnlab.lab.worker_server import start_worker_server

    # First: the workers' server imports torch on another core while this process does.
    start_worker_server(args.executor, args.workers)
    from bnlab.lab import load_experiment
    from bnlab.lab import run as run_study

    exp = load_experiment(args.experiment, overrides=dict(args.overrides))
    out = args.out if args.out is not None else Path("runs") / exp.name
    progress = _Progress(
        enabled=not args.quiet and sys.stderr.isatty(), stream=sys.stderr, quiet=args.quiet
    )
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            doctor = exp.report.doctor
            outcome = run_study(
                exp,
                out,
                seeds=args.seeds,
                epochs=args.epochs,
                workers=args.workers,
                threads=args.threads,
                executor=args.executor,
                memory_budget=args.memory_budget,
                address=args.address,
                seeds_per_task=args.seeds_per_task,
                observer=progress.observer,
                report=not args.no_report and not doctor,
                force=args.force,
                formats=args.formats,
            )
            if doctor and outcome.completed + outcome.reused:
                _measure_runs(outcome.out_dir, quiet=args.quiet)
            if doctor and not args.no_report:
                from bnlab.lab.report import write_report

                start = time.perf_counter()
                path = write_report(outcome.out_dir, formats=args.formats)
                outcome = replace(outcome, report_path=path,
                                  report_seconds=time.perf_counter() - start)
    except KeyboardInterrupt as e:
        progress.stop()
        resume = list(argv)
        if args.out is None:
            resume += ["--out", str(out)]
        stopped = progress.started - progress.finished
        in_flight = f"; {stopped} runs in flight were stopped and will run again" if stopped else ""
        print(
            f"bnlab: {str(e) or 'interrupted'}; {progress.finished} runs finished in this session are "
            f"kept in {out} (runs.sqlite, results.json){in_flight}. "
            f"Resume with: bnlab {shlex.join(resume)}",
            file=sys.stderr,
        )
        return _interrupted_status(e)
    finally:
        progress.stop()

    counts = (
        f"{outcome.total} runs ({outcome.reused} reused, {outcome.completed} completed, "
        f"{outcome.failed} failed) in {outcome.seconds:.1f} s{_executors(outcome.results)}"
        f"{_time_split(outcome)}"
    )
    if args.json:
        _print_summary_json(outcome.results)
        print(counts, file=sys.stderr)
        _print_paths(outcome.out_dir, outcome.report_path, file=sys.stderr)
    elif args.quiet:
        _print_paths(outcome.out_dir, outcome.report_path)
    else:
        print_table(outcome.results)
        print_statistics(outcome.results, outcome.out_dir)
        print(f"\n{counts}")
        _print_paths(outcome.out_dir, outcome.report_path)
    if progress.failed:
        print(f"bnlab: {len(progress.failed)} runs failed:", file=sys.stderr)
        for line in progress.failed[:10]:
            print(f"  {line}", file=sys.stderr)
        print("  (full tracebacks under 'error' in results.json)", file=sys.stderr)
        return EXIT_FAILED_RUNS
    return EXIT_OK


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    print(f"bnlab: note: {message}", file=sys.stderr)


def _time_split(outcome: Any) -> str:
    """A second line, ``"of which training 9.8 s, report 3.1 s"``, when something trained."""
    if not outcome.completed + outcome.failed:
        return ""
    report = f", report {outcome.report_seconds:.1f} s" if outcome.report_path else ""
    return f"\nof which training {outcome.training_seconds:.1f} s{report}"


def _executors(results: dict[str, Any]) -> str:
    """``"; executor: vectorized 60"`` from the run records (empty when none recorded)."""
    counts: dict[str, int] = {}
    for record in results.get("runs", []):
        if record.get("executor"):
            counts[record["executor"]] = counts.get(record["executor"], 0) + 1
    if not counts:
        return ""
    return "; executor: " + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def _print_paths(out: Path, report_path: Path | None, file: TextIO | None = None) -> None:
    from bnlab.lab import RESOLVED_FILE, RESULTS_FILE, STORE_FILE
    from bnlab.lab.results import SUMMARY_CSV_FILE, SUMMARY_FILE

    file = file or sys.stdout
    print(f"results: {out / RESULTS_FILE}", file=file)
    print(f"summary: {out / SUMMARY_FILE}, {out / SUMMARY_CSV_FILE}", file=file)
    if report_path is not None:
        print(f"report:  {report_path}", file=file)
    print(f"store:   {out / STORE_FILE} (resolved experiment: {out / RESOLVED_FILE})", file=file)


def _print_summary_json(results: dict[str, Any]) -> None:
    from bnlab.lab.results import dumps
    from bnlab.lab.summary import summary_dict

    sys.stdout.write(dumps(summary_dict(results)))


def print_table(results: dict[str, Any], file: TextIO | None = None) -> None:
    """The summary table(s), the comparisons in words and the published single runs.

    Tables come from ``bnlab.lab.table`` (the same model as report.html) and fit 80 columns;
    a grid study first gets its pivot (variant × grid value). On a terminal, sentences wrap at
    its width; into a file or a pipe each is one line.
    """
    import shutil

    from bnlab.lab import stats
    from bnlab.lab import table as tables
    from bnlab.lab.published import compare_published, settings_note

    out = file or sys.stdout
    tty = out.isatty()
    width = shutil.get_terminal_size((80, 24)).columns if tty else 80
    summaries = stats.summarize(results)
    title = f"{results['experiment']['name']}: {len(results['seeds'])} seeds"
    pivot = tables.pivot_table(summaries, f"{title}, mean final test accuracy")
    if pivot is not None:
        print(tables.to_text(pivot, width) + "\n", file=out)
    print(tables.to_text(tables.summary_table(summaries, title), width), file=out)
    if len(summaries) > 1:
        print(file=out)
        for line in stats.comparison_lines(stats.report_comparisons(results, summaries)):
            text = f"• {line}"
            print(textwrap.fill(text, width, subsequent_indent="  ") if tty else text, file=out)
    published = compare_published(results, summaries)
    if published:
        print("\n" + tables.to_text(tables.published_table(published), width), file=out)
    note = settings_note(results)
    if note:
        print("\n" + (textwrap.fill(note, width) if tty else note), file=out)


def print_statistics(results: dict[str, Any], out: Path, file: TextIO | None = None) -> None:
    """The doctor's per-layer table (``bnlab.lab.table.statistics_table``) when ``out`` holds
    measurements of the runs in ``results``; nothing otherwise."""
    import shutil

    from bnlab.lab import table as tables
    from bnlab.lab.results import current_statistics, read_statistics

    stream = file or sys.stdout
    table = None
    statistics = current_statistics(read_statistics(out), results)
    if statistics is not None:
        table = tables.statistics_table(statistics, "BN statistics after training (bnlab doctor)")
    if table is None:
        return
    width = shutil.get_terminal_size((80, 24)).columns if stream.isatty() else 80
    print("\n" + tables.to_text(table, width), file=stream)


# --------------------------------------------------------------------------- report


def _report(args: argparse.Namespace, argv: list[str]) -> int:
    from bnlab.lab import read_results, write_results
    from bnlab.lab.report import write_report

    write_results(args.dir)
    report_path = write_report(args.dir, formats=args.formats)
    if args.json:
        _print_summary_json(read_results(args.dir))
        _print_paths(args.dir, report_path, file=sys.stderr)
    else:
        results = read_results(args.dir)
        print_table(results)
        print_statistics(results, args.dir)
        _print_paths(args.dir, report_path)
    return EXIT_OK


# --------------------------------------------------------------------------- init / completion


def _init(args: argparse.Namespace, argv: list[str]) -> int:
    from bnlab.lab.starter import write_starter

    image_size = (args.image_size[0], args.image_size[1]) if args.image_size else None
    path = write_starter(args.name, source=args.source, model=args.model, data=args.data,
                         image_size=image_size, force=args.force)
    print(f"wrote {path}; run it with: bnlab run {path}")
    return EXIT_OK


def _completion(args: argparse.Namespace, argv: list[str]) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


# --------------------------------------------------------------------------- doctor


_RUN_ONLY = ("variant", "grid", "seed")
_FILE_ONLY = ("data", "image_size", "validation_split", "split_seed", "batch_size")


def _doctor(args: argparse.Namespace, argv: list[str]) -> int:
    from bnlab.doctor import DoctorError, examine_model_file, examine_run, render, to_json

    def refuse(names: Sequence[str], what: str) -> None:
        for name in names:
            if getattr(args, name) is not None:
                flag = "--" + name.replace("_", "-")
                raise DoctorError(f"{flag} applies to {what}; {args.target} is not one")

    if args.all:
        if not args.target.is_dir():
            raise DoctorError(f"--all measures the runs of a `bnlab run` folder; {args.target} "
                              "is not a folder")
        for flag, value in (("--variant", args.variant), ("--grid", args.grid),
                            ("--seed", args.seed), ("--fix", args.fix), ("--save", args.save)):
            if value is not None:
                raise DoctorError(f"--all measures every run; leave out {flag}")
        refuse(_FILE_ONLY, "a Keras model file")
        return _measure_study(args.target, quiet=args.json, json_out=args.json)
    if args.target.is_dir():
        refuse(_FILE_ONLY, "a Keras model file")
        if args.pixel_scale != "auto":
            refuse(["pixel_scale"], "a Keras model file")
        result = examine_run(args.target, variant=args.variant, grid=dict(args.grid or {}) or None,
                             seed=args.seed, fix=args.fix, save=args.save,
                             overwrite=args.overwrite)
    else:
        refuse(_RUN_ONLY, "a `bnlab run` folder")
        if not args.target.is_file():
            raise DoctorError(f"{args.target}: no such file or folder; give a `bnlab run` output "
                              "folder or a Keras model file (.keras, .h5)")
        if args.data is None:
            raise DoctorError(f"{args.target}: give --data with the data the model was trained "
                              "on (a dataset name, an .npz or an image folder)")
        result = examine_model_file(
            args.target, args.data, image_size=args.image_size,
            validation_split=args.validation_split, split_seed=args.split_seed,
            pixel_scale=args.pixel_scale, train_batch_size=args.batch_size, fix=args.fix,
            save=args.save, overwrite=args.overwrite,
        )
    if args.json:
        print(to_json(result))
    else:
        render(result)
    return EXIT_OK


def _measure_study(out: Path, *, quiet: bool, json_out: bool) -> int:
    """``bnlab doctor DIR --all``: bn_statistics.json, the report rebuilt, the table printed."""
    from bnlab.lab import read_results
    from bnlab.lab.report import write_report
    from bnlab.lab.results import STATISTICS_FILE, dumps, read_statistics

    path = _measure_runs(out, quiet=quiet)
    report_path = write_report(out)
    if json_out:
        sys.stdout.write(dumps(read_statistics(out)))
        print(f"statistics: {path}\nreport:  {report_path}", file=sys.stderr)
        return EXIT_OK
    print_statistics(read_results(out), out)
    print(f"\nstatistics: {out / STATISTICS_FILE}\nreport:  {report_path}")
    return EXIT_OK


def _measure_runs(out: Path, *, quiet: bool) -> Path:
    """``bnlab.doctor.study.measure_study`` with a progress line on a terminal."""
    from bnlab.doctor.study import measure_study

    live = not quiet and sys.stderr.isatty()

    def on_run(done: int, total: int, label: str) -> None:
        if live:
            end = "\n" if done == total else ""
            print(f"\rbnlab doctor: measured {done}/{total} runs ({label})\x1b[K", end=end,
                  file=sys.stderr, flush=True)

    return measure_study(out, on_run=on_run)


# --------------------------------------------------------------------------- export


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    from bnlab.lab import LabError, export

    if args.to is None:
        for flag, value in (("--variant", args.variant), ("--seed", args.seed),
                            ("--grid", args.grid or None)):
            if value is not None:
                raise LabError(f"bnlab export: {flag} selects the run whose model --to "
                               "MODEL.keras writes; give --to too")
    if not any(x is not None for x in (args.tensorboard, args.mlflow, args.csv, args.parquet,
                                       args.to)):
        raise LabError(
            "bnlab export: choose where to: --tensorboard LOGDIR, --mlflow URI, --csv FILE, "
            "--parquet FILE or --to MODEL.keras"
        )
    if args.to is not None:
        from bnlab.lab.keras_export import export_run

        selected, written = export_run(args.dir, args.to, variant=args.variant,
                                       grid=dict(args.grid) or None, seed=args.seed,
                                       overwrite=args.overwrite)
        print(f"keras: {written} (variant {selected.variant['name']}, seed {selected.seed}; open it "
              "with keras.saving.load_model)")
    for fmt, path in (("csv", args.csv), ("parquet", args.parquet)):
        if path is not None:
            runs_file, curves_file = export.export_tables(args.dir, path, format=fmt)
            print(f"{fmt}: runs {runs_file}, curves {curves_file}")
    if args.tensorboard is not None:
        folders = export.export_tensorboard(args.dir, args.tensorboard)
        print(
            f"tensorboard: {len(folders)} runs in {args.tensorboard} "
            f"(view: tensorboard --logdir {args.tensorboard})"
        )
    if args.mlflow is not None:
        ids = export.export_mlflow(args.dir, args.mlflow)
        print(f"mlflow: {len(ids)} runs at {args.mlflow}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
