"""The doctor over a whole study: `[report] doctor = true`, `bnlab doctor DIR --all`, and
bn_statistics.json checked against the BN input's statistics computed here by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlab import lab
from bnlab.cli import main
from bnlab.lab.results import STATISTICS_FILE, STATISTICS_SCHEMA
from bnlab.lab.runs import load_variant_data
from bnlab.nn import BatchNormalization

STUDY = """
name = "tiny_dropout"
description = "Dense -> Dropout -> BN -> ReLU vs Dense -> BN -> ReLU -> Dropout vs no BN"
seeds = 2

[data]
name = "circles"
n_samples = 400
train_size = 256

[model]
layers = [
  { type = "Dense", units = 16 },
  { type = "BatchNormalization", momentum = 0.9 },
  { type = "Activation", activation = "relu" },
  { type = "Dense", units = 1, activation = "sigmoid" },
]

[train]
optimizer = { name = "adam", learning_rate = 0.01 }
loss = "binary_crossentropy"
epochs = 6
batch_size = 32

[variants.dropout_then_bn]
edits = [{ insert_after = "dense", layer = { type = "Dropout", rate = 0.5 } }]

[variants.bn_then_dropout]
edits = [{ insert_after = "Activation", layer = { type = "Dropout", rate = 0.5 } }]

[variants.no_bn]
edits = [{ remove = "BatchNormalization" }]

[report]
doctor = true
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "tiny_dropout.toml").write_text(STUDY)
    out = root / "out"
    argv = ["run", str(root / "tiny_dropout.toml"), "--out", str(out), "--workers", "1"]
    assert main(argv) == 0
    return out


def _hand_measured_log_ratio(out: Path, name: str, seed: int) -> float:
    """Median over channels of ln(moving var / var of the BN input at inference), by hand:
    the model in eval mode (dropout off), a hook on the BN layer, float64 moments."""
    results = json.loads((out / "results.json").read_text())
    entry = next(v for v in results["experiment"]["variants"] if v["name"] == name)
    model = lab.load_run_model(out, name, seed)
    data = load_variant_data(lab.Variant.from_dict(entry))
    (bn,) = [m for m in model.modules() if isinstance(m, BatchNormalization)]
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda m, args, y: seen.append(args[0].double()))
    with torch.no_grad():
        model.eval()(torch.as_tensor(data.x_train, dtype=torch.float32))
    handle.remove()
    inputs = torch.cat(seen)  # (N, 16)
    population = inputs.var(dim=0, unbiased=False)
    eps = bn.epsilon
    ratio = (bn.moving_variance.double() + eps) / (population + eps)
    return float(np.median(ratio.log().numpy()))


def test_run_writes_the_doctor_measurements_of_every_run(study: Path) -> None:
    doc = json.loads((study / STATISTICS_FILE).read_text())
    assert doc["schema"] == STATISTICS_SCHEMA
    runs = {(r["variant"], r["seed"]): r for r in doc["runs"]}
    assert set(runs) == {(v, s) for v in ("dropout_then_bn", "bn_then_dropout", "no_bn")
                         for s in (0, 1)}
    assert all(r["layers"] == [] for (v, _), r in runs.items() if v == "no_bn")
    for (variant, seed), run in runs.items():
        if variant == "no_bn":
            continue
        (layer,) = run["layers"]
        assert layer["steps_seen"] == 6 * 8  # 256 rows, batch 32, 6 epochs
        assert layer["initial_weight"] == pytest.approx(0.9 ** 48)
        expected = _hand_measured_log_ratio(study, run["name"], seed)
        # the doctor's calibration is the full training split here (8 batches < MAX_BATCHES)
        assert layer["log_variance_ratio"] == pytest.approx(expected, abs=1e-4)
    for seed in (0, 1):
        before = runs[("dropout_then_bn", seed)]
        after = runs[("bn_then_dropout", seed)]
        # dropout before BN: the moving variance was learned on dropped-out, rescaled inputs
        assert before["layers"][0]["log_variance_ratio"] > math.log(1.3)
        assert before["layers"][0]["dropout_variance_ratio"] > 1.3
        assert abs(after["layers"][0]["log_variance_ratio"]) < math.log(1.15)
        assert after["layers"][0]["dropout_variance_ratio"] is None
        assert "dropout_before_bn" in before["findings"]
        assert "dropout_before_bn" not in after["findings"]


def test_report_and_terminal_show_the_measurements(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = (study / "report.html").read_text()
    assert '<section id="bn-statistics">' in html
    assert "dropout_then_bn" in html.split('id="bn-statistics"')[1]
    assert main(["report", str(study)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # notes wrap at 80 columns
    assert "BN statistics after training (bnlab doctor)" in out
    assert "dropout_then_bn: dropout_before_bn 2/2" in out


def test_doctor_all_measures_again_and_a_stale_file_is_not_shown(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study / STATISTICS_FILE
    doc = json.loads(path.read_text())
    stale = {**doc, "runs": [{**r, "config_hash": "0" * 16} for r in doc["runs"]]}
    path.write_text(json.dumps(stale))
    assert main(["report", str(study)]) == 0
    assert 'id="bn-statistics"' not in (study / "report.html").read_text()
    capsys.readouterr()
    assert main(["doctor", str(study), "--all"]) == 0
    out = capsys.readouterr().out
    assert "dropout_then_bn" in out and STATISTICS_FILE in out
    assert json.loads(path.read_text()) == doc  # the same measurements again
    assert 'id="bn-statistics"' in (study / "report.html").read_text()
    assert main(["doctor", str(study), "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "0"], "--all measures every run; leave out --seed"),
        (["--fix", "recalibrate"], "--all measures every run; leave out --fix"),
        (["--data", "circles"], "--data applies to a Keras model file"),
    ],
    ids=["seed", "fix", "data"],
)
def test_doctor_all_refuses_per_run_options(
    study: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", str(study), "--all", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_doctor_all_needs_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(b"")
    assert main(["doctor", str(model), "--all"]) == 2
    assert f"--all measures the runs of a `bnlab run` folder; {model} is not a folder" in (
        capsys.readouterr().err
    )


def test_a_damaged_statistics_file_is_a_one_line_error(
    tmp_path: Path, study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(study, copy)
    (copy / STATISTICS_FILE).write_text('{"schema": "other", "runs": []}')
    assert main(["report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{STATISTICS_SCHEMA!r}" in err and len(err.strip().splitlines()) == 1
