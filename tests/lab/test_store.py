"""The SQLite run store, results.json from it (validated by its JSON Schema), weights files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from bnlab.lab import (
    SCHEMA_VERSION,
    STORE_FILE,
    LabError,
    RunResult,
    Store,
    build_results,
    load_schema,
    load_weights,
    read_results,
    save_weights,
    stats,
    write_results,
)
from bnlab.lab.errors import StoreError
from bnlab.lab.weights import read_weights, weights_file
from bnlab.models import build_model

VERSIONS = {"bnlab": "0.1.0", "torch": "2", "numpy": "2", "python": "3.11"}


def history(test_accuracy: float | None = 0.8) -> dict[str, Any]:
    """A History dict in the contract's shape, 2 epochs, with a null (diverged-like) entry."""
    return {
        "epochs": {
            "loss": [0.7, None],
            "accuracy": [0.5, 0.75],
            "val_loss": [0.69, 0.5],
            "val_accuracy": [0.5, test_accuracy],
            "val_accuracy_train_mode": None,
        },
        "evals": [
            {"step": 4, "epoch": 1.0, "val_loss": 0.69, "val_accuracy": 0.5, "val_accuracy_train_mode": None},
            {"step": 8, "epoch": 2.0, "val_loss": 0.5, "val_accuracy": test_accuracy, "val_accuracy_train_mode": None},
        ],
        "probes": {
            "dense.output": {"percentiles": [15, 50, 85], "steps": [0, 4], "values": [[-1.0, 0.0, 1.0], [-2.0, 0.0, None]]}
        },
        "final": {"train_loss": 0.4, "train_accuracy": 0.8, "test_loss": 0.5, "test_accuracy": test_accuracy},
        "diverged": False,
        "steps_per_epoch": 4,
    }


def resolved(seeds: list[int], epochs: int = 2) -> dict[str, Any]:
    variant = {
        "name": "bn[lr=0.1]",
        "base": "bn",
        "description": "",
        "grid": {"lr": 0.1},
        "data": {"name": "circles", "n_samples": 100},
        "input_shape": None,
        "layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}],
        "train": {
            "optimizer": {"name": "sgd", "learning_rate": 0.1},
            "loss": "binary_crossentropy",
            "epochs": epochs,
            "batch_size": 32,
            "eval_every_steps": None,
            "shuffle": True,
            "probes": [],
        },
        "config_hash": f"{epochs:016x}",
    }
    return {
        "name": "tiny",
        "description": "",
        "source": "tiny.toml",
        "seeds": seeds,
        "grid": {"lr": [0.1]},
        "report": {"threshold_metric": "val_accuracy", "threshold": 0.8, "reference": "bn", "comparisons": []},
        "variants": [variant],
    }


def result(seed: int, status: str = "completed") -> RunResult:
    if status == "completed":
        return RunResult("tiny", "bn", seed, "completed", history(0.5 + seed / 10), 1.5, None, {"lr": 0.1})
    return RunResult("tiny", "bn", seed, "failed", None, 0.2, "Traceback...\nValueError: boom", {"lr": 0.1})


def key(seed: int, epochs: int = 2) -> tuple[str, str, int, str]:
    return ("tiny", "bn", seed, f"{epochs:016x}")


def test_store_lifecycle_and_pragmas(tmp_path: Path) -> None:
    with Store.in_folder(tmp_path) as store:
        store.add_experiment(resolved([0, 1, 2]))
        store.mark_running(key(0), "bn[lr=0.1]", VERSIONS)
        store.mark_running(key(1), "bn[lr=0.1]", VERSIONS)
        assert [r.status for r in store.runs()] == ["running", "running"]
        store.record(key(0), "bn[lr=0.1]", result(0), weights="weights/a.safetensors", versions=VERSIONS)
        assert store.completed_keys() == {key(0)}
        # a failed run replaces its running row and keeps the traceback
        store.record(key(1), "bn[lr=0.1]", result(1, "failed"), weights=None, versions=VERSIONS)
        store.mark_running(key(2), "bn[lr=0.1]", VERSIONS)
        assert store.drop_running() == 1
        rows = {r.seed: r for r in store.runs()}
        assert set(rows) == {0, 1}
        assert rows[0].status == "completed" and rows[0].weights == "weights/a.safetensors"
        assert rows[0].result == result(0)
        assert rows[0].started is not None and rows[0].finished is not None
        assert rows[0].versions == VERSIONS
        assert rows[1].status == "failed" and rows[1].result is not None
        assert rows[1].result.error == "Traceback...\nValueError: boom"
        assert store.get(key(1)) == rows[1]
        assert store.get(key(7)) is None
        assert store.latest_experiment() == resolved([0, 1, 2])
        assert store.integrity_ok()
    db = sqlite3.connect(tmp_path / STORE_FILE)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT schema_version FROM runs")} == {SCHEMA_VERSION}
    db.close()


def test_store_rejects_a_newer_schema_and_a_non_database(tmp_path: Path) -> None:
    Store.in_folder(tmp_path).close()
    db = sqlite3.connect(tmp_path / STORE_FILE)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(LabError, match=r"store schema version 99 is newer than this bnlab's \(1\)"):
        Store.in_folder(tmp_path)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / STORE_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LabError, match=r"runs\.sqlite: not a readable bnlab store"):
        Store.in_folder(junk)
    with pytest.raises(LabError, match=r"no runs\.sqlite here; give the --out folder"):
        Store.in_folder(tmp_path / "empty", create=False)


def test_results_json_holds_current_config_runs_and_validates(tmp_path: Path) -> None:
    with Store.in_folder(tmp_path) as store:
        store.add_experiment(resolved([0, 1]))
        for seed in (0, 1):
            store.record(key(seed), "bn[lr=0.1]", result(seed), weights=None, versions=VERSIONS)
        store.add_experiment(resolved([0, 1, 2]))
        store.record(key(2), "bn[lr=0.1]", result(2, "failed"), weights=None, versions=VERSIONS)
        # a run of another config (epochs=3) stays in the store, outside the results
        store.record(key(0, epochs=3), "bn[lr=0.1]", result(0), weights=None, versions=VERSIONS)
    path = write_results(tmp_path)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, load_schema())
    assert doc == read_results(tmp_path)
    assert doc["schema_version"] == 1
    assert doc["variants"] == ["bn"] and doc["seeds"] == [0, 1, 2]
    assert [(r["seed"], r["status"]) for r in doc["runs"]] == [(0, "completed"), (1, "completed"), (2, "failed")]
    assert doc["runs"][1]["history"]["final"]["test_accuracy"] == pytest.approx(0.6)
    assert doc["runs"][0]["history"]["epochs"]["loss"] == [0.7, None]
    assert doc["experiment"] == resolved([0, 1, 2])
    assert set(doc["versions"]) == {"bnlab", "torch", "numpy", "python"}
    assert not list(tmp_path.glob(".results.json.*"))  # no temporary left behind
    # these histories predate initial_loss and chance_accuracy: verdicts unknown, not flagged
    assert doc["outcomes"] == [
        {
            "variant": "bn",
            "grid": {"lr": 0.1},
            "runs": 3,
            "completed": 2,
            "diverged": 0,
            "non_finite": 0,
            "did_not_learn": 0,
            "unknown": 2,
            "diverged_seeds": [],
            "did_not_learn_seeds": [],
        }
    ]


def test_results_json_counts_runs_that_diverged_or_did_not_learn(tmp_path: Path) -> None:
    blown, stalled, fine = history(0.9), history(0.5), history(0.9)
    for h, last in ((blown, 1.5), (stalled, 0.69), (fine, 0.3)):
        h["epochs"]["loss"][-1] = last
        h.update(initial_loss=0.7, chance_accuracy=0.52)  # 1.5 > 2 x 0.7; 0.5 <= 0.52
    with Store.in_folder(tmp_path) as store:
        store.add_experiment(resolved([0, 1, 2]))
        for seed, h in enumerate((blown, stalled, fine)):
            run = RunResult("tiny", "bn", seed, "completed", h, 1.0, grid={"lr": 0.1})
            store.record(key(seed), "bn[lr=0.1]", run, weights=None, versions=VERSIONS)
    doc = json.loads(write_results(tmp_path).read_text())
    jsonschema.validate(doc, load_schema())
    (outcome,) = doc["outcomes"]
    assert (outcome["diverged"], outcome["non_finite"], outcome["did_not_learn"]) == (1, 0, 1)
    assert (outcome["diverged_seeds"], outcome["did_not_learn_seeds"]) == ([0], [1])
    assert outcome["unknown"] == 0
    # an older file without outcomes and without the history fields still validates and loads
    del doc["outcomes"]
    for r in doc["runs"]:
        del r["history"]["initial_loss"], r["history"]["chance_accuracy"]
    jsonschema.validate(doc, load_schema())
    (summary,) = stats.summarize(doc)
    assert (summary.diverged, summary.did_not_learn) == (0, 0)
    assert summary.diverged_unknown_seeds == summary.did_not_learn_unknown_seeds == (0, 1, 2)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d.update(schema_version=2), "schema_version"),
        (lambda d: d["runs"][0].update(status="running"), "status"),
        (lambda d: d["runs"][0].update(history=None), "history"),
        (lambda d: d["runs"][0]["history"]["final"].pop("test_accuracy"), "test_accuracy"),
        (lambda d: d["experiment"]["report"].update(threshold_metric="acc"), "threshold_metric"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["outcomes"][0].pop("did_not_learn"), "did_not_learn"),
    ],
    ids=[
        "version",
        "status",
        "completed-without-history",
        "final-key",
        "metric",
        "extra-key",
        "outcome-count",
    ],
)
def test_schema_rejects_malformed_results(tmp_path: Path, mutate: Any, where: str) -> None:
    with Store.in_folder(tmp_path) as store:
        store.add_experiment(resolved([0]))
        store.record(key(0), "bn[lr=0.1]", result(0), weights=None, versions=VERSIONS)
    doc = build_results(tmp_path)
    jsonschema.validate(doc, load_schema())
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.validate(doc, load_schema())
    assert where in str(info.value)


def test_read_results_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"results\.json: no results file; run `bnlab run"):
        read_results(tmp_path)
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(LabError, match=r"results\.json: not valid JSON"):
        read_results(tmp_path)


# --------------------------------------------------------------------------- weights

LAYERS = [
    {"type": "Dense", "units": 4, "activation": "relu"},
    {"type": "BatchNormalization"},
    {"type": "Dense", "units": 1, "activation": "sigmoid"},
]


def test_weights_round_trip_with_moving_statistics(tmp_path: Path) -> None:
    model = build_model(LAYERS, (2,), seed=0)
    with torch.no_grad():
        model(torch.randn(16, 2))  # training mode: moves the BN statistics away from 0/1
    path = tmp_path / weights_file("bn[lr=0.1]", 3, "0123456789abcdef")
    assert path.name == "bn[lr=0.1]__seed3__01234567.safetensors"
    save_weights(model, path, metadata={"variant": "bn", "seed": "3"})
    other = build_model(LAYERS, (2,), seed=1)
    assert load_weights(other, path) == {"variant": "bn", "seed": "3"}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    x = torch.randn(5, 2)
    torch.testing.assert_close(other.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert path.read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def test_corrupt_and_mismatched_weights_are_clear_errors(tmp_path: Path) -> None:
    model = build_model(LAYERS, (2,), seed=0)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, metadata={})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LabError, match=r"cut\.safetensors: not a readable safetensors file .*delete it"):
        read_weights(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(LabError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_weights(model, tmp_path / "junk.safetensors")
    wider = build_model([{**LAYERS[0], "units": 5}, *LAYERS[1:]], (2,), seed=0)
    with pytest.raises(LabError, match=r"w\.safetensors: weights do not match the model: .*shape \[4, 2\], model needs \[5, 2\]"):
        load_weights(wider, path)
    no_bn = build_model([LAYERS[0], LAYERS[2]], (2,), seed=0)
    with pytest.raises(LabError, match=r"weights do not match the model: .*unexpected layers\.batch_normalization"):
        load_weights(no_bn, path)
    with pytest.raises(LabError, match=r"missing\.safetensors: weights file not found"):
        load_weights(model, tmp_path / "missing.safetensors")


def test_a_store_opened_for_reading_never_writes(tmp_path: Path) -> None:
    Store.in_folder(tmp_path).close()
    before = (tmp_path / STORE_FILE).read_bytes()
    with Store.in_folder(tmp_path, create=False) as store:
        assert store.runs() == []
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._db.execute("CREATE TABLE x (a)")
    assert (tmp_path / STORE_FILE).read_bytes() == before


def test_a_zero_length_store_next_to_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE).write_bytes(b"")
    Store.in_folder(tmp_path).close()  # no weights: an empty file is a new store
    (tmp_path / STORE_FILE).write_bytes(b"")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a__seed0__12345678.safetensors").write_bytes(b"x")
    for create in (True, False):
        with pytest.raises(StoreError, match=r"is empty \(0 bytes\) but the folder holds 1 weights"):
            Store.in_folder(tmp_path, create=create)


def test_a_corrupted_page_is_one_line_naming_the_file(tmp_path: Path) -> None:
    with Store.in_folder(tmp_path) as store:
        store.add_experiment({"name": "e", "seeds": [0], "variants": []})
        for i in range(200):
            store.mark_running(("e", "v", i, "h" * 64), "v", {"bnlab": "x" * 100})
    data = bytearray((tmp_path / STORE_FILE).read_bytes())
    page = 4096
    data[2 * page : 6 * page] = b"\xff" * (4 * page)  # wreck b-tree pages, keep the header
    (tmp_path / STORE_FILE).write_bytes(bytes(data))
    with pytest.raises(StoreError) as caught, Store.in_folder(tmp_path, create=False) as store:
        store.runs()
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / STORE_FILE) in message
    assert "corrupted" in message and "malformed" in message


def test_disk_full_in_sqlite_is_one_line_and_keeps_what_was_stored(tmp_path: Path) -> None:
    with Store.in_folder(tmp_path) as store:
        store.add_experiment({"name": "e", "seeds": [0], "variants": []})
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own SQLITE_FULL
        stored = 0
        with pytest.raises(StoreError, match=r"the disk is full \(while storing a started run\); "
                           r"the runs finished so far are kept"):
            for i in range(1000):
                store.mark_running(("e", "v", i, "h" * 64), "v" * 500, {"bnlab": "x" * 500})
                stored += 1
        assert 0 < stored < 1000
    with Store.in_folder(tmp_path, create=False) as store:
        assert len(store.runs(status="running")) == stored
