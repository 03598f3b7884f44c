"""`bnlab run` / `report` when the disk fills up, the store is damaged, or the input is bad.

Every case ends in one line on stderr (no traceback) and a known exit status; finished
runs are never lost.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bnlab.cli import main
from bnlab.lab.store import Store

TINY = """
name = "tiny"
description = "two small variants on 200 circles points"
seeds = 3

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
optimizer = { name = "sgd", learning_rate = 0.05 }
loss = "binary_crossentropy"
epochs = 2

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]
"""


def _run(tmp_path: Path, capsys, *extra: str, text: str = TINY, out: str = "out"):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    argv = ["run", str(path), "--out", str(tmp_path / out), "--executor", "sequential"]
    code = main([*argv, "--quiet", "--no-report", *extra])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def _statuses(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    finally:
        db.close()


def test_disk_full_while_storing_is_one_line_and_keeps_the_finished_runs(
    tmp_path, capsys, monkeypatch
):
    add = Store.add_experiment

    def then_fill(self, resolved):  # SQLite's own SQLITE_FULL a few runs later
        add(self, resolved)
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {pages + 3}")

    monkeypatch.setattr(Store, "add_experiment", then_fill)
    code, _, err = _run(tmp_path, capsys, "--seeds", "8")
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the disk is full" in err and "the runs finished so far are kept" in err
    kept = _statuses(tmp_path / "out" / "runs.sqlite").get("completed", 0)
    assert 1 <= kept < 16
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["runs"]) == kept
    monkeypatch.undo()
    # resume after freeing space; without --quiet, which prints only the result paths
    argv = ["run", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "out")]
    code = main([*argv, "--executor", "sequential", "--no-report", "--seeds", "8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{kept} reused" in out
    assert _statuses(tmp_path / "out" / "runs.sqlite") == {"completed": 16}


def test_no_space_for_results_json_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import bnlab.lab.results as results

    real = results.os.replace

    def full(src, dst):
        if str(dst).endswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(results.os, "replace", full)
    code, _, err = _run(tmp_path, capsys)
    assert code == 2 and err.count("\n") == 1
    assert "results.json: the disk is full (while writing results.json)" in err
    assert _statuses(tmp_path / "out" / "runs.sqlite") == {"completed": 6}


def test_corrupted_store_is_one_line_for_run_and_report(tmp_path, capsys):
    assert _run(tmp_path, capsys)[0] == 0
    store = tmp_path / "out" / "runs.sqlite"
    data = bytearray(store.read_bytes())
    data[4096:] = b"\xee" * (len(data) - 4096)  # every page after the first
    store.write_bytes(bytes(data))
    for argv in (["report", str(tmp_path / "out")], None):
        if argv is None:
            code, _, err = _run(tmp_path, capsys)
        else:
            code = main(argv)
            err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "runs.sqlite: not a readable bnlab store, the file is corrupted" in err


# ------------------------------------------------------------------ bad input: exit 2, nothing created


def _bad(tmp_path: Path, capsys, text: str, *extra: str) -> str:
    """Run `text`; assert exit 2, one stderr line, no traceback, no output folder; the line."""
    code, _, err = _run(tmp_path, capsys, *extra, text=text)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bnlab: error: "), err
    assert not (tmp_path / "out").exists()
    return err


def _npz(path: Path, *, x_train=None, y_train=None, classes: int = 3) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32) if x_train is None else x_train
    y = np.arange(30) % classes if y_train is None else y_train
    np.savez(path, x_train=x, y_train=y, x_test=x[:9], y_test=np.arange(9) % classes)
    return path


def _with_data(data: str, layers: str | None = None, loss: str | None = None) -> str:
    text = TINY.replace('name = "circles"\nn_samples = 200\ntrain_size = 100', data)
    if layers is not None:
        text = text.replace(
            '{ type = "Dense", units = 1, activation = "sigmoid" }', layers
        )
    if loss is not None:
        text = text.replace('"binary_crossentropy"', f'"{loss}"')
    return text


@pytest.mark.parametrize(
    ("grid", "shown"),
    [("[1, 1.0]", "[1, 1.0]"), ('["a", "a"]', "['a', 'a']"), ("[0.1, 0.2, 0.1]", "0.1 repeats")],
)
def test_duplicate_grid_points_are_refused(tmp_path, capsys, grid, shown):
    text = TINY.replace("[train]", f"[grid]\nlr = {grid}\n\n[train]").replace(
        "learning_rate = 0.05", 'learning_rate = "$lr"'
    )
    err = _bad(tmp_path, capsys, text)
    assert "grid.lr: values must be distinct" in err and shown in err


def test_true_and_1_are_distinct_grid_values(tmp_path):
    import tomllib

    from bnlab.lab import parse_experiment

    doc = tomllib.loads(
        TINY.replace("[train]", "[grid]\nflag = [true, 1]\n\n[train]").replace(
            "epochs = 2", 'epochs = 2\nshuffle = "$flag"'
        )
    )
    with pytest.raises(ValueError, match="shuffle"):  # 1 is no boolean, but not a duplicate
        parse_experiment(doc)


@pytest.mark.parametrize(
    ("case", "shown"),
    [
        ("labels-250", "the model has 1 output but dataset 'npz' has 251 classes"),
        ("dense2-softmax-3", "the model has 2 outputs but dataset 'npz' has 3 classes"),
        ("dense6-3", "the model has 6 outputs but dataset 'npz' has 3 classes"),
        ("nan-pixel", "1 training sample values are NaN or infinite"),
        ("huge-pixel", "training samples hold values up to 1e+30"),
        ("bn-axis-5", "BatchNormalization axis 5 is out of range for input (None, 8)"),
        ("units-huge", "cannot build the model on input shape [2]: Storage size"),
        ("epsilon-inf", "epsilon must be a number > 0; got inf"),
        ("train-size", "train_size"),
    ],
)
def test_data_and_model_mismatches_are_caught_before_any_run(tmp_path, capsys, case, shown):
    import numpy as np

    npz = f'name = "npz"\npath = "{tmp_path / "d.npz"}"'
    dense = '{{ type = "Dense", units = {}, activation = "{}" }}'
    text = {
        "labels-250": lambda: _with_data(npz),
        "dense2-softmax-3": lambda: _with_data(
            npz, dense.format(2, "softmax"), "sparse_categorical_crossentropy"
        ),
        "dense6-3": lambda: _with_data(
            npz, dense.format(6, "softmax"), "sparse_categorical_crossentropy"
        ),
        "nan-pixel": lambda: _with_data(npz, dense.format(3, "softmax"), "categorical_crossentropy"),
        "huge-pixel": lambda: _with_data(npz, dense.format(3, "softmax"), "categorical_crossentropy"),
        "bn-axis-5": lambda: TINY.replace(
            '{ type = "BatchNormalization" }', '{ type = "BatchNormalization", axis = 5 }'
        ),
        "units-huge": lambda: TINY.replace("units = 8", "units = 9223372036854775807"),
        "epsilon-inf": lambda: TINY.replace(
            '{ type = "BatchNormalization" }', '{ type = "BatchNormalization", epsilon = inf }'
        ),
        "train-size": lambda: TINY.replace("train_size = 100", "train_size = 200"),
    }[case]()
    y = np.arange(30) % 3
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    if case == "labels-250":
        y = y.copy()
        y[4] = 250
    if case == "nan-pixel":
        x[3, 1] = np.nan
    if case == "huge-pixel":
        x[3, 1] = 1e30
    _npz(tmp_path / "d.npz", x_train=x, y_train=y)
    err = _bad(tmp_path, capsys, text)
    assert shown in err


def test_a_bound_on_runs_names_the_limit_and_how_to_raise_it(tmp_path, capsys, monkeypatch):
    err = _bad(tmp_path, capsys, TINY.replace("seeds = 3", "seeds = 1000000000"))
    assert "1000000000 runs exceed the limit of 10000" in err and "BNLAB_MAX_RUNS=" in err
    grid = "[grid]\na = [{0}]\nb = [{0}]\nc = [{0}]\n\n[train]".format(
        ", ".join(str(i / 1000) for i in range(100))
    )
    text = TINY.replace("[train]", grid).replace(
        "learning_rate = 0.05", 'learning_rate = "$a", momentum = "$b", nesterov = false'
    ).replace("epochs = 2", 'epochs = 2\nbatch_size = 32\n# "$c"')
    text = text.replace("[variants.base]", '[variants.base]\ndescription = "uses c"\ndata = { noise = "$c" }')
    err = _bad(tmp_path, capsys, text)
    assert "runs exceed the limit of 10000" in err
    monkeypatch.setenv("BNLAB_MAX_RUNS", "5")
    err = _bad(tmp_path, capsys, TINY)
    assert "6 runs exceed the limit of 5" in err


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ('"t\\n"', "expected a name of at most 64"),
        ('"' + "n" * 65 + '"', "expected a name of at most 64"),
    ],
    ids=["trailing-newline", "too-long"],
)
def test_names_are_full_matches_with_a_length_limit(tmp_path, capsys, name, shown):
    err = _bad(tmp_path, capsys, TINY.replace('name = "tiny"', f"name = {name}", 1))
    assert shown in err
    err = _bad(
        tmp_path, capsys, TINY.replace("[variants.base]", f"[variants.{'v' * 300}]")
    )
    assert f"variants.{'v' * 300}" in err and "at most 64" in err


def test_a_dollar_in_a_description_is_text(tmp_path):
    from bnlab.lab import load_experiment

    path = tmp_path / "d.toml"
    path.write_text(TINY.replace("[variants.base]", '[variants.base]\ndescription = "$5 model, $x"'))
    exp = load_experiment(path)
    assert exp.variants[0].description == "$5 model, $x"


@pytest.mark.parametrize(
    "content",
    [b'name = "caf\xe9"\n', bytes(range(256)) * 4, b"a = " + b"[" * 5000 + b"]" * 5000],
    ids=["latin-1", "binary", "deep-nesting"],
)
def test_unreadable_toml_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "bad.toml" in err and not (tmp_path / "out").exists()


def test_another_experiment_into_an_existing_folder_is_refused(tmp_path, capsys):
    assert _run(tmp_path, capsys)[0] == 0
    before = (tmp_path / "out" / "results.json").read_bytes()
    other = TINY.replace('name = "tiny"', 'name = "other"')
    code, _, err = _run(tmp_path, capsys, text=other)
    assert code == 2 and err.count("\n") == 1
    assert "holds experiment 'tiny'" in err and "--force" in err
    assert (tmp_path / "out" / "results.json").read_bytes() == before
    code, _, err = _run(tmp_path, capsys, "--force", text=other)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["experiment"]["name"] == "other"


def test_a_model_over_the_parameter_bound_is_refused_before_allocation(tmp_path):
    from limits import bnlab_capped

    path = tmp_path / "big.toml"
    path.write_text(TINY.replace("units = 8", "units = 200000000"))  # 600M parameters: 2.4 GB
    done = bnlab_capped(["run", str(path), "--out", str(tmp_path / "out")], timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "parameters on input shape [2]; at most 100000000 are allowed" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
