"""Signals: SIGTERM stops a study like Ctrl-C (exit 143), and no child outlives the study.

Each test starts ``bnlab run`` with two worker processes in its own session, waits
(polling) until a run has finished, signals the main process, and then scans ``/proc``
for anything left in that session: workers, the fork server, the resource tracker.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnlab.lab.lifeline import process_alive

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="scans /proc"),
]

STUDY = """
name = "slow"
description = "runs of about a second, so a signal lands mid-study"
seeds = 6

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
epochs = 150

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]
"""


def _session_members(sid: int) -> list[tuple[int, str]]:
    """Live processes of session `sid` other than its leader: (pid, command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            state, session = fields[0], int(fields[3])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if session == sid and state not in (b"Z", b"X"):
            found.append((int(entry), cmd[:120]))
    return found


def _rows(path: Path, status: str) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]
    except sqlite3.OperationalError:  # tables not yet created
        return 0
    finally:
        db.close()


def _poll(condition, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def _start(folder: Path) -> tuple[subprocess.Popen, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "slow.toml"
    path.write_text(STUDY)
    out = folder / "out"
    log = folder / "stderr.txt"
    cmd = [sys.executable, "-m", "bnlab.cli", "run", str(path), "--out", str(out)]
    cmd += ["--workers", "2", "--executor", "process", "--no-report"]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return proc, out, log


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two studies started together (their start-up, seconds each, overlaps): one per test."""
    base = tmp_path_factory.mktemp("signals")
    started = {name: _start(base / name) for name in ("term", "kill")}
    yield started
    for proc, _, _ in started.values():
        _reap(proc)


def _until_mid_study(proc: subprocess.Popen, out: Path, log: Path) -> None:
    """Poll until one run is stored and both workers are busy with others."""
    store = out / "runs.sqlite"
    assert _poll(lambda: proc.poll() is not None or _rows(store, "completed") >= 1, 120)
    assert proc.poll() is None, log.read_text()
    assert _poll(lambda: _rows(store, "running") >= 1, 30), "no run in flight"
    workers = [c for _, c in _session_members(proc.pid) if "forkserver" in c]
    assert len(workers) >= 2, workers  # the fork server and its workers


def _reap(proc: subprocess.Popen) -> None:
    for pid, _ in _session_members(proc.pid):
        os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_stores_finished_runs_writes_results_and_exits_143(studies):
    proc, out, log = studies["term"]
    try:
        _until_mid_study(proc, out, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()
        assert _poll(lambda: not _session_members(proc.pid), 30), _session_members(proc.pid)
    finally:
        _reap(proc)
    message = log.read_text()
    assert "Traceback" not in message
    assert "bnlab: terminated by SIGTERM; " in message
    assert "runs in flight were stopped and will run again" in message
    assert f"Resume with: bnlab run {out.parent / 'slow.toml'} --out {out}" in message
    assert _rows(out / "runs.sqlite", "running") == 0
    completed = _rows(out / "runs.sqlite", "completed")
    doc = json.loads((out / "results.json").read_text())
    assert 1 <= completed == len(doc["runs"]) < 12
    weights = sorted((out / "weights").glob("*.safetensors"))
    assert len(weights) == completed  # no worker wrote weights the store does not know


def test_sigkill_takes_workers_fork_server_and_resource_tracker_with_it(studies):
    proc, out, log = studies["kill"]
    try:
        _until_mid_study(proc, out, log)
        members = _session_members(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _poll(lambda: not _session_members(proc.pid), 30), _session_members(proc.pid)
        assert not any(process_alive(pid) for pid, _ in members)
        # nothing keeps training: the store and the weights stay as the kill left them
        completed = _rows(out / "runs.sqlite", "completed")
        weights = len(list((out / "weights").glob("*.safetensors")))
        time.sleep(2)
        assert _rows(out / "runs.sqlite", "completed") == completed
        assert len(list((out / "weights").glob("*.safetensors"))) == weights
    finally:
        _reap(proc)
