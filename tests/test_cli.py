"""The bnlab command: exit codes, output, files written, errors without tracebacks, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from bnlab.cli import main
from bnlab.lab import LabError, load_schema
from failing import MESSAGE, failing_runs

TINY = """
name = "tiny"
description = "two small variants on 200 circles points"
seeds = 2

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
optimizer = { name = "sgd", learning_rate = 0.05, momentum = 0.9 }
loss = "binary_crossentropy"
epochs = 3

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]

[report]
threshold = 0.6

[report.published.bn]
train_accuracy = 0.846
test_accuracy = 0.848
epochs_to_threshold = 2
source = "a tutorial"
"""


def completed_runs(path: Path) -> int:
    """Completed rows in a store another process is writing (0 before it has its tables)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    except sqlite3.OperationalError:  # created, tables not yet
        return 0
    finally:
        db.close()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_list_shows_bundled_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    circles = [line for line in lines if line.startswith("circles")]
    assert len(circles) == 1
    assert " — Circles MLP" in circles[0]


def test_list_imports_no_heavy_optional_library() -> None:
    """Regression: scikit-learn/SciPy (seconds) were imported by every command via the data
    registry; matplotlib belongs to plotting only, Keras to the tests only."""
    code = (
        "import contextlib, io, sys\n"
        "from bnlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['list']) == 0\n"
        "print(' '.join(m for m in ('sklearn', 'scipy', 'matplotlib', 'keras') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""


def test_run_without_a_report_does_not_import_matplotlib(tiny: Path, tmp_path: Path) -> None:
    """Regression: the table of doctor measurements after the runs came from the report
    module, whose plots imported matplotlib (0.7 s here) into every ``--no-report`` run."""
    argv = ["run", str(tiny), "--seeds", "1", "--out", str(tmp_path / "out"),
            "--executor", "sequential", "--no-report"]
    code = (
        "import contextlib, io, sys\n"
        "from bnlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({argv!r}) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')[:3])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_show_prints_settings_and_each_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "circles"]) == 0
    out = capsys.readouterr().out
    assert out.count("== variant ") == 6
    assert '"learning_rate": 0.01' in out and '"n_samples": 1000' in out
    # Dense(2->50) + Dense(50->1) = 150 + 51; BN adds 4 * 50, half of it non-trainable
    assert "Total params: 201 " in out
    assert "Total params: 401 " in out and "Non-trainable params: 100 " in out
    # no_beta_gamma: BN without beta/gamma keeps only the 100 moving statistics
    assert "Total params: 301 " in out


def test_run_writes_files_prints_table_and_resumes(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["run", str(tiny), "--seeds", "2", "--epochs", "2", "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    printed = capsys.readouterr()
    for name in (
        "results.json",
        "runs.sqlite",
        "experiment.resolved.json",
        "report.html",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, load_schema())
    assert len(doc["runs"]) == 4
    assert {len(r["history"]["epochs"]["loss"]) for r in doc["runs"]} == {2}
    table = printed.out
    assert "tiny: 2 seeds" in table
    for row in ("base", "bn"):
        assert any(line.strip("│┃ ").startswith(row) for line in table.splitlines()), row
    test_acc = [
        r["history"]["final"]["test_accuracy"] for r in doc["runs"] if r["variant"] == "base"
    ]
    assert f"{sum(test_acc) / 2:.3f}" in table  # mean test accuracy (2 seeds: no interval)
    assert "epochs to" in table and "never" in table
    # the published single run against our seeds, after the table, within 80 columns
    assert doc["experiment"]["report"]["published"]["bn"]["test_accuracy"] == 0.848
    lines = table.splitlines()
    start = lines.index(
        next(x for x in lines if "published single run vs our seeds (a tutorial)" in x)
    )
    assert start > next(i for i, x in enumerate(lines) if x.strip().startswith("base"))
    rows = [x.split() for x in lines[start:] if x.startswith("bn ")]
    assert [r[1:4] for r in rows[:2]] == [["train", "acc", "0.846"], ["test", "acc", "0.848"]]
    assert rows[2][1:3] == ["epochs", "2"] and len(rows) == 3
    end = lines.index(next(x for x in lines if " runs (0 reused" in x))
    assert all(len(x) <= 80 for x in lines[start:end])
    assert f"results: {out / 'results.json'}" in table
    assert f"report:  {out / 'report.html'}" in table
    assert "4 runs (0 reused, 4 completed, 0 failed)" in table
    assert re.search(r"^of which training \d+\.\d s, report \d+\.\d s$", table, re.MULTILINE)
    assert "2 variants × 2 seeds = 4 runs" in printed.err  # quiet progress: no bar, one line

    assert main([*args, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert [x.split(":")[0] for x in quiet.out.splitlines()] == [  # only the paths
        "results",
        "summary",
        "report",
        "store",
    ]
    assert quiet.err == ""

    # `bnlab report DIR` rebuilds results.json and the report from the store alone
    (out / "results.json").unlink()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == doc["runs"]


def test_grid_table_has_a_column_per_axis_and_compares_the_declared_pairs(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Grid values are columns (never eaten as console markup) and comparisons follow [report]."""
    grid = TINY.replace("[variants.base]", "[grid]\nlr = [0.05, 0.5]\n\n[variants.base]")
    grid = grid.replace("learning_rate = 0.05", 'learning_rate = "$lr"')
    grid = grid.replace("[report]", '[report]\ncomparisons = [["bn", "base"]]')
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    out = tmp_path / "out"
    assert (
        main(
            ["run", str(path), "--seeds", "2", "--epochs", "1", "--out", str(out), "--workers", "1"]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "2 variants × 2 grid points × 2 seeds = 8 runs" in printed.err
    doc = json.loads((out / "results.json").read_text())
    rows = {}
    pivot, table = re.split(r"\n\w+: 2 seeds\n", printed.out.split("• ")[0])
    assert pivot.splitlines()[0].endswith(": 2 seeds, mean final test accuracy")
    assert pivot.splitlines()[1].split() == ["variant", "0.05", "0.5"]  # lr values across
    for line in table.splitlines():
        cells = line.split()
        if cells[:1] in (["base"], ["bn"]):
            rows[(cells[0], cells[1])] = cells
    assert sorted(rows) == [("base", "0.05"), ("base", "0.5"), ("bn", "0.05"), ("bn", "0.5")]
    for (variant, lr), cells in rows.items():
        acc = [
            r["history"]["final"]["test_accuracy"]
            for r in doc["runs"]
            if r["variant"] == variant and r["grid"]["lr"] == float(lr)
        ]
        assert f"{sum(acc) / 2:.3f}" in cells, (variant, lr)
    # the BN batch-statistics column: a value for bn, a dash for the model without BN
    assert "—" in rows[("base", "0.05")] and "—" not in rows[("bn", "0.05")]
    bullets = [x for x in printed.out.splitlines() if x.startswith("• ")]
    # 2 seeds: the 4 comparisons (bn vs base at each learning rate, accuracy and time) are
    # not made, and one line says so instead of four sentences with useless intervals
    assert any(b.startswith("• 4 comparisons not made: they need at least 5 seeds") for b in bullets) or any(
        b.startswith("• neither variant reached") for b in bullets
    )
    assert len(bullets) <= 2


def test_set_overrides_a_setting(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["run", str(tiny), "--seeds", "1", "--out", str(out), "--workers", "1", "--no-report"]
    assert main([*args, "--set", "train.batch_size=64", "--set", "train.epochs=1"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {v["train"]["batch_size"] for v in doc["experiment"]["variants"]} == {64}
    assert {r["history"]["steps_per_epoch"] for r in doc["runs"]} == {2}
    assert not (out / "report.html").exists()


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["run", "circlez"],
            r"^bnlab: error: unknown experiment 'circlez'; bundled experiments: .*circles",
        ),
        (["show", "nope.toml"], r"^bnlab: error: experiment file 'nope\.toml' does not exist"),
        (
            ["run", "{tiny}", "--set", "train.epoch=2"],
            r"^bnlab: error: .*tiny\.toml: train\.epoch: unknown key; allowed here: optimizer",
        ),
        (
            ["run", "{tiny}", "--set", "data.noise=-1"],
            r"^bnlab: error: .*tiny\.toml: data: dataset 'circles': invalid noise=-1; expected a number >= 0",
        ),
        (
            ["run", "{tiny}", "--set", "model.layers=[{type='Dense',units=0}]"],
            r"^bnlab: error: .*tiny\.toml: model\.layers\[0\]\.units: .*0",
        ),
        (
            ["run", "{tiny}", "--executor", "ray", "--out", "{out}"],
            r"^bnlab: error: --executor ray: Ray is not installed; install it with: pip install 'bnlab\[ray\]'",
        ),
        (["report", "{out}"], r"^bnlab: error: .*no runs\.sqlite here"),
    ],
    ids=[
        "unknown-experiment",
        "missing-file",
        "unknown-key",
        "bad-data-value",
        "bad-layer",
        "ray-missing",
        "report-empty",
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], pattern: str, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "ray" in args:
        try:
            import ray  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("ray is installed here")
    args = [a.replace("{tiny}", str(tiny)).replace("{out}", str(tmp_path / "out")) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, err.strip()), err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LabError, match="unknown experiment 'circlez'"):
        main(["run", "circlez", "--debug"])


@pytest.mark.parametrize(
    "args",
    [
        ["run", "circles", "--seeds", "0"],
        ["run", "circles", "--epochs", "x"],
        ["frobnicate"],
        ["run"],
    ],
    ids=["zero-seeds", "epochs-not-int", "unknown-command", "missing-experiment"],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage: bnlab" in capsys.readouterr().err


def test_failed_runs_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace("epochs = 3", "epochs = 3\nbatch_size = 17"))  # fails in training
    argv = ["run", str(path), "--seeds", "1", "--out", str(tmp_path / "out")]
    with failing_runs():
        code = main([*argv, "--executor", "sequential", "--no-report"])
    assert code == 1
    captured = capsys.readouterr()
    assert "bnlab: 2 runs failed:" in captured.err
    assert f"base seed 0: RuntimeError: {MESSAGE}" in captured.err
    assert any(line.split()[:2] == ["bn", "0"] and "(1)" in line for line in captured.out.splitlines())


def test_bad_data_is_exit_2_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        TINY.replace("n_samples = 200\ntrain_size = 100", "").replace(
            'name = "circles"', f'name = "npz"\npath = "{tmp_path / "missing.npz"}"'
        )
    )
    code = main(["run", str(path), "--seeds", "1", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.npz" in err and "is not a file" in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_keeps_finished_runs_and_says_how_to_resume(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    # runs of ~1 s each: the study is far from done when the first has finished, so the
    # signal lands mid-study even on a loaded machine
    path.write_text(TINY.replace("seeds = 2", "seeds = 5").replace("epochs = 3", "epochs = 200"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bnlab.cli", "run", str(path), "--out", str(out), "--workers", "1"]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONWARNINGS": "error"},
            # A runner that starts the suite in the background (nohup, `&`) leaves SIGINT
            # ignored, and Python keeps an ignored SIGINT ignored: give the child Ctrl-C back.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            done = completed_runs(out / "runs.sqlite")
            if done >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    message = log.read_text()
    assert "Traceback" not in message
    assert "bnlab: interrupted; " in message
    assert f"Resume with: bnlab run {path} --out {out} --workers 1" in message
    doc = json.loads((out / "results.json").read_text())  # written for the finished runs
    assert 1 <= len(doc["runs"]) < 10
    db = sqlite3.connect(out / "runs.sqlite")
    assert db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0] == 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


@pytest.mark.parametrize("argv", [["--help"], ["list"]], ids=["help", "list"])
def test_commands_without_tensors_do_not_import_torch(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from bnlab.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
