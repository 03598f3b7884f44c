"""`bnlab doctor RUN_DIR` on a short lab run: output, exit codes, unsafe or broken weights."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bnlab import lab
from bnlab.cli import main

TINY = """
name = "tiny_doctor"
description = "a BN MLP trained for 8 steps at momentum 0.99, and one without BN"
seeds = 1

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
epochs = 2
batch_size = 32

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doctor_run")
    toml = root / "tiny.toml"
    toml.write_text(TINY)
    out = root / "out"
    outcome = lab.run(toml, out, workers=1, executor="sequential", report=False)
    assert outcome.failed == 0
    return out


@pytest.fixture
def broken_copy(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run folder and the path of the bn variant's weights file in it."""
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (weights,) = (copy / "weights").glob("bn__seed0__*.safetensors")
    return copy, weights


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["doctor", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_names_stale_statistics_with_the_step_count(run_dir, capsys) -> None:
    code, out, err = doctor(capsys, run_dir, "--variant", "bn", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["schema"] == "bnlab.doctor/1"
    assert data["context"]["variant"] == "bn" and data["context"]["seed"] == 0
    assert data["context"]["train_steps"] == 8  # 100 rows / 32 = 4 steps, 2 epochs
    assert data["metrics"]["train_batch_size"] == 32
    assert data["metrics"]["evaluation"]["name"] == "circles test split"
    (layer,) = data["layers"]
    assert (layer["name"], layer["steps_seen"], layer["steps_needed"]) == (
        "batch_normalization", 8, 299)
    stale = data["findings"][0]
    assert stale["code"] == "stale_statistics"
    assert stale["evidence"]["layers"][0]["steps_seen"] == 8
    assert stale["evidence"]["recommended_momentum"] == pytest.approx(0.05 ** (1 / 8))


def test_fix_recalibrate_json_and_table(run_dir, capsys) -> None:
    code, out, _ = doctor(capsys, run_dir, "--variant", "bn", "--fix", "recalibrate", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"fix", "details", "gap_closed", "before", "after"}
    assert data["after"]["layers"][0]["mean_distance"]["max"] < 1e-5
    assert "stale_statistics" not in [f["code"] for f in data["after"]["findings"]]
    weights = next((run_dir / "weights").glob("bn__seed0__*.safetensors"))
    before = weights.read_bytes()
    code, out, _ = doctor(capsys, run_dir, "--variant", "bn", "--fix", "recalibrate")
    assert code == 0
    for expected in ("bnlab doctor", "Stale moving statistics", "Before and after recalibrate"):
        assert expected in out
    assert weights.read_bytes() == before  # the fix changes the loaded model, not the file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "has 2 variants; pass --variant with one of: base, bn"),
        (("--variant", "bn2"), "has no variant 'bn2'; variants: base, bn"),
        (("--variant", "bn", "--seed", "7"), "no completed run with seed 7; completed seeds: [0]"),
        (("--variant", "bn", "--fix", "retrain"), "unknown fix 'retrain'; choose from: recalibrate"),
    ],
    ids=["no-variant", "unknown-variant", "unknown-seed", "unknown-fix"],
)
def test_bad_arguments_exit_2_with_one_line(run_dir, capsys, args, message) -> None:
    code, out, err = doctor(capsys, run_dir, *args)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_not_a_run_folder(tmp_path, capsys) -> None:
    code, _, err = doctor(capsys, tmp_path)
    assert code == 2 and "no runs.sqlite here" in err


def test_corrupt_weights_file(broken_copy, capsys) -> None:
    copy, weights = broken_copy
    weights.write_bytes(b"\x00\x01 not safetensors")
    code, out, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2 and out == ""
    assert "not a readable safetensors file" in err and err.count("\n") == 1


def test_mismatched_weights_file(broken_copy, capsys) -> None:
    copy, weights = broken_copy
    save_file({"layers.dense.weight": torch.zeros(3, 2)}, str(weights), metadata={"input_shape": "[2]"})
    code, _, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2
    assert "weights do not match the model" in err and "missing layers.dense.bias" in err
    assert err.count("\n") == 1


class _Payload:
    """Unpickling this would create a file: doctor must never unpickle a weights file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_never_unpickled(broken_copy, tmp_path, capsys) -> None:
    copy, weights = broken_copy
    marker = tmp_path / "pickle-ran"
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    torch.save({"x": _Payload(marker)}, tmp_path / "other.pt")  # a torch.load file, too
    code, _, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2 and "not a readable safetensors file" in err
    assert not marker.exists()
