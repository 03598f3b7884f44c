"""`bnlab doctor RUN_DIR` on a short lab run: output, exit codes, unsafe or broken weights."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
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


def _rewrite(weights: Path, change) -> None:
    """Apply `change(tensors, metadata)` to a weights file in place."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(weights), "pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(str(weights))
    change(tensors, metadata)
    save_file(tensors, str(weights), metadata=metadata)


BN = "layers.batch_normalization."


@pytest.mark.parametrize(
    ("tensor", "index", "value"),
    [
        ("moving_variance", 0, float("nan")),
        ("moving_variance", 1, -1.0),
        ("moving_mean", 2, float("inf")),
    ],
    ids=["nan-variance", "negative-variance", "inf-mean"],
)
def test_non_finite_or_negative_statistics_are_diagnosed_not_a_crash(
    broken_copy, capsys, tensor, index, value
) -> None:
    copy, weights = broken_copy
    _rewrite(weights, lambda t, m: t[BN + tensor].__setitem__(index, value))
    code, out, err = doctor(capsys, copy, "--variant", "bn", "--json")
    assert code == 0, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert any(f["code"] == "nonfinite_statistics" for f in report["findings"]), report["findings"]


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_non_finite_weights_are_diagnosed_not_a_crash(broken_copy, capsys, value) -> None:
    copy, weights = broken_copy
    _rewrite(weights, lambda t, m: t["layers.dense.weight"].__setitem__((0, 0), value))
    with pytest.warns(Warning):  # the layer's own non-finite batch warning
        code, out, err = doctor(capsys, copy, "--variant", "bn", "--json")
    assert code == 0, err
    assert any(f["code"] == "nonfinite_statistics" for f in json.loads(out)["findings"])


@pytest.mark.parametrize(
    ("key", "tensor", "message"),
    [
        (BN + "num_batches_tracked", torch.tensor(1e30, dtype=torch.float64),
         "num_batches_tracked has dtype float64, model needs int64"),
        (BN + "moving_variance", torch.ones(8, dtype=torch.bool),
         "moving_variance has dtype bool, model needs float32"),
        (BN + "moving_mean", torch.zeros(8, dtype=torch.float64),
         "moving_mean has dtype float64, model needs float32"),
        ("layers.dense.weight", torch.zeros(8, 2, dtype=torch.float16),
         "dense.weight has dtype float16, model needs float32"),
        ("layers.dense.bias", torch.zeros(8, dtype=torch.int64),
         "dense.bias has dtype int64, model needs float32"),
    ],
    ids=["num-batches-1e30", "bool-variance", "float64", "float16", "int64"],
)
def test_tensors_of_another_dtype_are_refused(broken_copy, capsys, key, tensor, message) -> None:
    copy, weights = broken_copy
    _rewrite(weights, lambda t, m: t.__setitem__(key, tensor))
    code, out, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text", ["{not json", "[0]", '"8"', "[2, true]"])
def test_metadata_input_shape_that_is_not_a_shape_is_one_line(broken_copy, capsys, text) -> None:
    copy, weights = broken_copy
    _rewrite(weights, lambda t, m: m.__setitem__("input_shape", text))
    db = sqlite3.connect(copy / "runs.sqlite")  # make the doctor read the shape from the file
    (resolved,) = db.execute("SELECT resolved FROM experiments").fetchone()
    doc = json.loads(resolved)
    for v in doc["variants"]:
        v["input_shape"] = None
    db.execute("UPDATE experiments SET resolved = ?", (json.dumps(doc),))
    db.commit()
    db.close()
    code, _, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2
    assert "metadata input_shape=" in err and "is not a JSON list" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.pop("variants"),
        lambda d: d["variants"][0].pop("layers"),
        lambda d: d["variants"][1].__setitem__("data", {"n_samples": 5}),
        lambda d: d.__setitem__("seeds", "0"),
        lambda d: d["variants"][1].__setitem__("input_shape", [-2]),
    ],
    ids=["no-variants", "no-layers", "no-dataset", "seeds-text", "negative-shape"],
)
def test_tampered_resolved_experiment_is_one_line(broken_copy, capsys, tamper) -> None:
    copy, _ = broken_copy
    db = sqlite3.connect(copy / "runs.sqlite")
    (resolved,) = db.execute("SELECT resolved FROM experiments").fetchone()
    doc = json.loads(resolved)
    tamper(doc)
    db.execute("UPDATE experiments SET resolved = ?", (json.dumps(doc),))
    db.commit()
    db.close()
    code, out, err = doctor(capsys, copy, "--variant", "bn")
    assert code == 2 and out == ""
    assert "the resolved experiment in the store is damaged" in err and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_read_only_run_folder_is_examined(broken_copy, capsys) -> None:
    copy, _ = broken_copy
    for extra in ("runs.sqlite-wal", "runs.sqlite-shm"):
        (copy / extra).unlink(missing_ok=True)
    modes = {p: p.stat().st_mode for p in [copy, *copy.rglob("*")]}
    for p in modes:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        code, _, err = doctor(capsys, copy, "--variant", "bn", "--json")
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert code == 0, err
