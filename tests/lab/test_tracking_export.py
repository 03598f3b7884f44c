"""``bnlab export``: TensorBoard, MLflow, CSV and Parquet, read back with each tool's own reader.

One small study (a grid of two learning rates, two variants, two seeds, mid-epoch
evaluations, a probe, and a variant whose runs fail) is exported once per format; the
numbers read back are compared with results.json, read here without bnlab's export code.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab import lab
from bnlab.cli import main
from bnlab.lab import export
from failing import MESSAGE, failing_runs

STUDY = """
name = "tiny_grid"
description = "a learning-rate grid on 200 circles points"
seeds = 2

[grid]
learning_rate = [0.05, 0.2]

[data]
name = "circles"
n_samples = 200
train_size = 100

[model]
layers = [
  { type = "Dense", units = 8, activation = "relu" },
  { type = "Dense", units = 1, activation = "sigmoid" },
]

[train]
optimizer = { name = "sgd", learning_rate = "$learning_rate", momentum = 0.9 }
loss = "binary_crossentropy"
epochs = 3
batch_size = 32
eval_every_steps = 2
probes = [ { layer = "dense", where = "output", percentiles = [10, 90], every_steps = 3 } ]

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]
[variants.broken]
train = { batch_size = 17 }  # fails in training (failing.failing_runs)
"""

RUNS = 12  # 3 variants x 2 grid points x 2 seeds; the 4 "broken" ones fail


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    path = root / "study.toml"
    path.write_text(STUDY)
    out = root / "out"
    with failing_runs():
        outcome = lab.run(path, out, executor="sequential")
    assert (outcome.completed, outcome.failed) == (8, 4)
    assert (out / "report.html").is_file()
    return out


def _results(study: Path) -> dict[str, Any]:
    return json.loads((study / "results.json").read_text())


def _label(run: dict[str, Any]) -> str:
    return f"{run['variant']}[learning_rate={run['grid']['learning_rate']:g}]"


def expected_series(run: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(optimizer step, value)] straight from a results.json run record."""
    h = run["history"]
    spe = h["steps_per_epoch"]
    out: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, step: int, value: float | None) -> None:
        if value is not None:
            out.setdefault(tag, []).append((step, value))

    for tag in ("loss", "accuracy"):
        for i, v in enumerate(h["epochs"][tag]):
            add(tag, (i + 1) * spe, v)
    for e in h["evals"]:
        for tag in ("val_loss", "val_accuracy", "val_accuracy_train_mode"):
            add(tag, e["step"], e[tag])
    for name, trace in h["probes"].items():
        for j, q in enumerate(trace["percentiles"]):
            for step, row in zip(trace["steps"], trace["values"], strict=True):
                add(f"probe/{name}/p{q:g}", step, row[j])
    for metric, v in h["final"].items():
        add(f"final/{metric}", len(h["epochs"]["loss"]) * spe, v)
    return out


def test_the_study_has_what_the_exports_must_carry(study: Path) -> None:
    runs = [r for r in _results(study)["runs"] if r["status"] == "completed"]
    bn = next(r for r in runs if r["variant"] == "bn")
    series = expected_series(bn)
    # 4 steps per epoch, evaluated every 2 steps: 6 points over 3 epochs
    assert [s for s, _ in series["val_accuracy"]] == [2, 4, 6, 8, 10, 12]
    assert len(series["val_accuracy_train_mode"]) == 6
    # probes are taken before the step: after 0, 3, 6 and 9 updates
    assert [s for s, _ in series["probe/dense.output/p90"]] == [0, 3, 6, 9]
    assert "val_accuracy_train_mode" not in expected_series(
        next(r for r in runs if r["variant"] == "base")
    )


def test_tensorboard_event_files_read_back_equal_results_json(
    study: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    logdir = tmp_path / "tb"
    assert main(["export", str(study), "--tensorboard", str(logdir)]) == 0
    completed = [r for r in _results(study)["runs"] if r["status"] == "completed"]
    folders = sorted(p.relative_to(logdir).as_posix() for p in logdir.glob("*/seed_*"))
    assert folders == sorted(f"{_label(r)}/seed_{r['seed']}" for r in completed)
    for run in completed:
        acc = EventAccumulator(str(logdir / _label(run) / f"seed_{run['seed']}"))
        acc.Reload()
        expected = expected_series(run)
        assert sorted(acc.Tags()["tensors"]) == sorted(expected)
        for tag, points in expected.items():
            got = [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
            # TensorBoard keeps scalars as float32
            assert got == [(s, float(np.float32(v))) for s, v in points], tag
    # exporting again replaces each run's event files instead of adding to them
    assert main(["export", str(study), "--tensorboard", str(logdir)]) == 0
    assert all(len(list(p.iterdir())) == 1 for p in logdir.glob("*/seed_*"))


def test_mlflow_file_store_read_back_through_the_client(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'bnlab[mlflow]'")
    from mlflow import MlflowClient

    # MLflow keeps its file store for existing users behind this switch
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["export", str(study), "--mlflow", uri]) == 0
    assert main(["export", str(study), "--mlflow", uri]) == 0  # again: replaces, no duplicates
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny_grid")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    assert len(found) == RUNS
    by_key = {(r.data.params["label"], int(r.data.params["seed"])): r for r in found}
    resolved = {v["name"]: v for v in _results(study)["experiment"]["variants"]}
    for run in _results(study)["runs"]:
        mlrun = by_key[_label(run), run["seed"]]
        params = mlrun.data.params
        assert params["variant"] == run["variant"]
        assert params["grid.learning_rate"] == str(run["grid"]["learning_rate"])
        assert params["config_hash"] == resolved[_label(run)]["config_hash"]
        assert params["train.optimizer.learning_rate"] == str(run["grid"]["learning_rate"])
        artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
        assert artifacts == {"summary.json", "report.html"}
        summary = json.loads(
            Path(client.download_artifacts(mlrun.info.run_id, "summary.json", str(tmp_path))).read_text()
        )
        assert summary["status"] == run["status"] and summary["seed"] == run["seed"]
        if run["status"] == "failed":
            assert mlrun.info.status == "FAILED"
            assert MESSAGE in summary["error"]
            assert mlrun.data.metrics == {}
            continue
        assert mlrun.info.status == "FINISHED"
        assert summary["final"] == run["history"]["final"]
        for tag, points in expected_series(run).items():
            history = client.get_metric_history(mlrun.info.run_id, tag)
            assert sorted((m.step, m.value) for m in history) == points, tag


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_runs_and_long_curves(study: Path, tmp_path: Path) -> None:
    path = tmp_path / "study.csv"
    assert main(["export", str(study), "--csv", str(path)]) == 0
    rows = _read_csv(path)
    results = _results(study)
    assert len(rows) == RUNS
    assert list(rows[0])[:5] == ["experiment", "variant", "label", "seed", "learning_rate"]
    for row, run in zip(rows, results["runs"], strict=True):
        assert (row["variant"], int(row["seed"]), row["status"]) == (
            run["variant"], run["seed"], run["status"],
        )  # fmt: skip
        assert float(row["learning_rate"]) == run["grid"]["learning_rate"]
        assert float(row["train.optimizer.learning_rate"]) == run["grid"]["learning_rate"]
        assert row["data.name"] == "circles"
        assert int(row["train.batch_size"]) == (17 if run["variant"] == "broken" else 32)
        if run["status"] == "failed":
            assert row["final_test_accuracy"] == "" and row["epochs"] == ""
        else:
            for metric, value in run["history"]["final"].items():
                assert float(row[f"final_{metric}"]) == value  # repr round-trips exactly
    curves = _read_csv(tmp_path / "study_curves.csv")
    expected = [
        (_label(run), run["seed"], tag, step, value)
        for run in results["runs"]
        if run["status"] == "completed"
        for tag, points in expected_series(run).items()
        for step, value in points
    ]
    got = [(r["label"], int(r["seed"]), r["tag"], int(r["step"]), float(r["value"])) for r in curves]
    assert sorted(got) == sorted(expected)
    assert all(math.isclose(float(r["epoch"]) * 4, int(r["step"])) for r in curves)


def test_parquet_holds_the_csv_tables(study: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    assert main(["export", str(study), "--csv", str(tmp_path / "s.csv"),
                 "--parquet", str(tmp_path / "s.parquet")]) == 0  # fmt: skip
    for name in ("s", "s_curves"):
        from_parquet = pd.read_parquet(tmp_path / f"{name}.parquet")
        from_csv = pd.read_csv(tmp_path / f"{name}.csv", keep_default_na=False, dtype=str)
        assert list(from_parquet.columns) == list(from_csv.columns)
        assert len(from_parquet) == len(from_csv) > 0
    runs = pd.read_parquet(tmp_path / "s.parquet")
    completed = runs[runs["status"] == "completed"]
    final = {(r["label"], r["seed"]): r["final_test_accuracy"] for _, r in completed.iterrows()}
    for run in _results(study)["runs"]:
        if run["status"] == "completed":
            assert final[_label(run), run["seed"]] == run["history"]["final"]["test_accuracy"]


@pytest.mark.parametrize(
    ("args", "module", "message"),
    [
        (["--tensorboard", "{tmp}/tb"], "tensorboard.summary",
         r"^bnlab: error: --tensorboard: the tensorboard package is not installed; install it with: pip install 'bnlab\[tensorboard\]'$"),
        (["--mlflow", "file:{tmp}/mlruns"], "mlflow",
         r"^bnlab: error: --mlflow: the mlflow package is not installed; install it with: pip install 'bnlab\[mlflow\]'$"),
        (["--parquet", "{tmp}/s.parquet"], "pyarrow",
         r"^bnlab: error: --parquet: Parquet needs pandas and pyarrow; install them with: pip install 'bnlab\[parquet\]'$"),
    ],
    ids=["tensorboard", "mlflow", "parquet"],
)  # fmt: skip
def test_a_missing_extra_is_a_one_line_install_hint(
    study: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    module: str,
    message: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    argv = ["export", str(study), *(a.format(tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.match(message, err.strip()), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "{study}"], "bnlab export: choose where to: --tensorboard LOGDIR, --mlflow URI"),
        (["export", "{tmp}/nowhere", "--csv", "{tmp}/a.csv"], "{tmp}/nowhere: no runs.sqlite here"),
        (["export", "{study}", "--csv", "{tmp}/no/such/a.csv"], "--csv {tmp}/no/such/a.csv: the folder {tmp}/no/such does not exist"),
        (["export", "{study}", "--mlflow", "{tmp}/mlruns"], "--mlflow {tmp}/mlruns: cannot log to experiment 'tiny_grid' there: "),
    ],
    ids=["no-destination", "not-a-run-folder", "no-folder", "mlflow-refuses"],
)  # fmt: skip
def test_bad_export_input_is_one_line_exit_2(
    study: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    if "--mlflow" in argv:
        pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'bnlab[mlflow]'")
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow refuses the store
    fill = {"study": str(study), "tmp": str(tmp_path)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"bnlab: error: {message.format(**fill)}" in err


def test_series_follow_one_step_axis(study: Path) -> None:
    _, runs = export.exported_runs(study)
    run = next(r for r in runs if r.variant == "bn" and r.status == "completed")
    points = export.run_series(run)
    # every point's epoch is its step over the 4 steps per epoch
    assert all(p.epoch * 4 == p.step for p in points)
    assert {p.tag for p in points} == set(expected_series(dict(run.record)))
