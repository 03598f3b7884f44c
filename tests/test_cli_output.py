"""What the bnlab command prints: --version, python -m, completion, init, pipes, --quiet,
--json, progress lines off a terminal, --format, and the doctor's --grid / no BN layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.test_cli import TINY

from bnlab.cli import main
from bnlab.lab import load_experiment

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def bnlab(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bnlab", *args], capture_output=True, text=True, timeout=300,
        env=ENV, **kwargs,
    )


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    import bnlab as package

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"bnlab {package.__version__}"
    done = bnlab("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"bnlab {package.__version__}"


def test_a_closed_pipe_ends_quietly_with_status_0() -> None:
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-m', 'bnlab', 'completion', 'bash'], "
        "stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
        "p.stdout.readline(); p.stdout.close()\n"  # like `| head -1`
        "err = p.stderr.read().decode(); sys.exit(10 * p.wait() + ('Traceback' in err))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=ENV, timeout=300)
    assert done.returncode == 0


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_know_the_commands(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("bnlab", "run", "report", "doctor", "init", "--format"):
        assert word in script, word


def test_init_writes_a_commented_file_that_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "mine"]) == 0
    text = (tmp_path / "mine.toml").read_text()
    assert text.count("#") >= 10 and 'name = "mine"' in text
    exp = load_experiment(tmp_path / "mine.toml")
    assert exp.name == "mine" and [v.name for v in exp.variants] == ["baseline", "bn"]
    assert main(["init", "c", "--from", "circles"]) == 0
    copy = load_experiment(tmp_path / "c.toml")
    assert copy.name == "c" and len(copy.variants) == len(load_experiment("circles").variants)
    capsys.readouterr()
    assert main(["init", "mine"]) == 2  # exists
    assert "mine.toml exists; pass --force" in capsys.readouterr().err
    assert main(["init", "x", "--from", "nope"]) == 2
    assert "no bundled experiment 'nope'; choose from: circles," in capsys.readouterr().err
    assert main(["init", "bad/name"]) == 2


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny study run through a pipe (not a terminal), with SVG and PDF figures."""
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "tiny.toml"
    path.write_text(TINY)
    out = folder / "out"
    done = bnlab("run", str(path), "--epochs", "2", "--out", str(out), "--workers", "1",
                 "--format", "png,svg,pdf")
    assert done.returncode == 0, done.stderr
    return out, done


def test_off_a_terminal_each_finished_run_prints_a_line(ran) -> None:
    _, done = ran
    lines = [x for x in done.stderr.splitlines() if x.startswith("run ")]
    assert len(lines) == 4 and lines[-1].startswith("run 4/4: ")
    assert "tiny: 2 variants × 2 seeds = 4 runs" in done.stderr


def test_the_data_is_described_before_training(ran) -> None:
    _, done = ran
    data = [x for x in done.stderr.splitlines() if x.startswith("data: ")]
    assert data == [
        "data: circles: 100 training and 100 test samples of shape (2,), 2 classes: outer, inner"
    ]
    assert done.stderr.index("data: ") < done.stderr.index("run 1/4: ")


def test_tables_fit_80_columns_and_both_train_accuracies_are_labelled(ran) -> None:
    _, done = ran
    table = done.stdout.split("\n\n")[0].splitlines()
    assert max(len(x) for x in table) <= 80
    header = table[1].split()
    assert header[:2] == ["variant", "n"] and header.index("fit") + 1 == header.index("train")
    legend = " ".join(table)
    assert "fit = train accuracy as Keras logs it" in legend
    assert "no confidence intervals: they need at least 5 seeds" in legend
    assert "summary: " in done.stdout


def test_figure_formats_and_the_report_embeds_the_svg(ran) -> None:
    out, _ = ran
    for name in ("curves", "loss"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.pdf").is_file()
        assert "<svg" in (out / f"{name}.svg").read_text()
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/svg+xml;base64,') == 2
    assert 'src="data:image/png' not in page


def test_report_json_and_summary_files(ran, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = ran
    assert main(["report", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert summary == json.loads((out / "summary.json").read_text())
    assert [g["variant"] for g in summary["groups"]] == ["base", "bn"]
    bn = summary["groups"][1]
    assert bn["test_accuracy"]["n"] == 2 and bn["test_accuracy"]["ci"] is None
    assert bn["train_accuracy_fit"]["mean"] is not None
    assert summary["min_seeds_for_ci"] == 5
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("variant,seeds,completed,failed,diverged,did_not_learn,")
    assert len(csv_lines) == 3 and "results: " in printed.err


def test_quiet_prints_only_where_the_results_went(ran, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = ran
    tiny = out.parent / "tiny.toml"
    assert main(["run", str(tiny), "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert [x.split(":")[0] for x in printed.out.splitlines()] == [
        "results", "summary", "report", "store"
    ]
    assert printed.err == ""


def test_doctor_picks_a_grid_point_and_says_when_there_is_no_bn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = TINY.replace("[variants.base]", "[grid]\nlr = [0.05, 0.5]\n\n[variants.base]")
    grid = grid.replace("learning_rate = 0.05", 'learning_rate = "$lr"')
    path = tmp_path / "grid.toml"
    path.write_text(grid)
    out = tmp_path / "out"
    args = ["run", str(path), "--seeds", "1", "--epochs", "1", "--out", str(out), "--no-report"]
    assert main([*args, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["doctor", str(out), "--variant", "bn", "--grid", "lr=0.5"]) == 0
    assert "bn[lr=0.5]" in capsys.readouterr().out
    assert main(["doctor", str(out), "--variant", "bn", "--grid", "lr=7"]) == 2
    assert "lr" in capsys.readouterr().err
    assert main(["doctor", str(out), "--variant", "base", "--grid", "lr=0.05"]) == 0
    assert "no BN layers" in capsys.readouterr().out


def test_doctor_help_lists_the_fixes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    assert "recalibrate" in capsys.readouterr().out
