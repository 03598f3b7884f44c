"""`bnlab run` / `report` when the disk fills up, the store is damaged, or the input is bad.

Every case ends in one line on stderr (no traceback) and a known exit status; finished
runs are never lost.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

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
    code, out, err = _run(tmp_path, capsys, "--seeds", "8")
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
