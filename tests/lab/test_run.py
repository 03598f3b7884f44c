"""Running studies: determinism, the store, resume (also after kill -9), executors, failures."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch

from bnlab import lab
from bnlab.data import load_dataset
from bnlab.lab import LabError, Store, execute_run, load_experiment, plan_runs
from bnlab.train import evaluate
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
epochs = 2
batch_size = 32

[variants.base]
[variants.bn]
edits = [{ insert_after = "dense", layer = { type = "BatchNormalization" } }]
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


def test_same_seed_same_history_other_seed_differs(tiny: Path) -> None:
    specs = plan_runs(load_experiment(tiny))
    assert [(s.variant.name, s.seed) for s in specs] == [("base", 0), ("bn", 0), ("base", 1), ("bn", 1)]
    first, again, other = execute_run(specs[1]), execute_run(specs[1]), execute_run(specs[3])
    assert first.status == "completed", first.error
    assert first.history == again.history
    assert first.history != other.history
    h = first.history
    assert h is not None and len(h["epochs"]["loss"]) == 2
    assert h["steps_per_epoch"] == 4  # 100 rows / batch 32, the partial batch included
    assert 0.0 <= h["final"]["test_accuracy"] <= 1.0


def test_run_writes_store_results_weights_and_resumes(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outcome = lab.run(tiny, out, executor="sequential", report=False)
    assert (outcome.total, outcome.reused, outcome.completed, outcome.failed) == (4, 0, 4, 0)
    for name in ("runs.sqlite", "results.json", "experiment.resolved.json"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, lab.load_schema())
    assert doc == outcome.results
    assert json.loads((out / "experiment.resolved.json").read_text()) == doc["experiment"]
    assert [(r["variant"], r["seed"]) for r in doc["runs"]] == [("base", 0), ("base", 1), ("bn", 0), ("bn", 1)]
    assert len(list((out / "weights").glob("*.safetensors"))) == 4

    # the saved weights reproduce the recorded final test metrics exactly
    data = load_dataset("circles", n_samples=200, train_size=100)
    model = lab.load_run_model(out, "bn", seed=1)
    metrics = evaluate(model, data.x_test, data.y_test, loss="binary_crossentropy")
    final = doc["runs"][3]["history"]["final"]
    assert metrics["accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-12)
    assert metrics["loss"] == pytest.approx(final["test_loss"], rel=1e-6)
    with pytest.raises(LabError, match=r"has no variant 'bm'; variants: base, bn"):
        lab.load_run_model(out, "bm", seed=0)
    with pytest.raises(LabError, match=r"variant 'bn' seed 5 has no run; seeds are \[0, 1\]"):
        lab.load_run_model(out, "bn", seed=5)

    with Store.in_folder(out) as store:
        finished_before = {(r.variant, r.seed): r.finished for r in store.runs()}
    # same command again: everything reused, nothing rerun
    again = lab.run(tiny, out, executor="sequential", report=False)
    assert (again.reused, again.completed) == (4, 0)
    assert again.results["runs"] == doc["runs"]
    # one more seed: only the missing runs run
    more = lab.run(tiny, out, seeds=3, executor="sequential", report=False)
    assert (more.total, more.reused, more.completed) == (6, 4, 2)
    # a deleted weights file makes its run run again
    (out / lab.plan_runs(load_experiment(tiny), out_dir=out)[0].weights).unlink()
    healed = lab.run(tiny, out, seeds=3, executor="sequential", report=False)
    assert (healed.reused, healed.completed) == (5, 1)
    with Store.in_folder(out) as store:
        finished_after = {(r.variant, r.seed): r.finished for r in store.runs()}
    assert all(finished_after[k] == v for k, v in finished_before.items() if k != ("base", 0))
    # a changed setting gives new runs, and results.json holds only the new config's
    changed = lab.run(tiny, out, epochs=1, executor="sequential", report=False)
    assert (changed.reused, changed.completed) == (0, 4)
    assert {len(r["history"]["epochs"]["loss"]) for r in changed.results["runs"]} == {1}
    with Store.in_folder(out) as store:
        assert len(store.runs()) == 10
        assert store.integrity_ok()


def test_run_spec_pickles_as_it_is_for_worker_processes(tiny: Path) -> None:
    """Executors put RunSpecs on process queues (and Ray) without a dict round trip."""
    spec = plan_runs(load_experiment(tiny), out_dir="out")[1]
    clone = pickle.loads(pickle.dumps(spec))
    assert (clone.key, clone.label, clone.weights, clone.out_dir) == (
        spec.key,
        spec.label,
        spec.weights,
        "out",
    )
    assert clone.variant.layers == spec.variant.layers
    assert clone.variant.to_dict() == spec.variant.to_dict()
    assert clone.variant.train_config() == spec.variant.train_config()


def test_process_executor_gives_the_sequential_results(tiny: Path, tmp_path: Path) -> None:
    seq = lab.run(tiny, tmp_path / "seq", executor="sequential", report=False)
    par = lab.run(tiny, tmp_path / "par", workers=2, executor="process", report=False)
    assert (par.completed, par.failed) == (4, 0)

    def by_run(results: dict) -> dict:
        return {(r["variant"], r["seed"]): r["history"] for r in results["runs"]}

    # one torch thread per run in both executors: identical numbers
    assert by_run(par.results) == by_run(seq.results)


def test_a_finished_worker_gets_its_next_task_before_the_results_are_stored(tiny: Path) -> None:
    """Storing a task's results takes the caller a while (30 runs of a stack: about half a
    second); the worker it came from must not wait for that."""
    from bnlab.lab.executors import ProcessExecutor
    from bnlab.lab.runs import SingleRun

    specs = plan_runs(load_experiment(tiny))
    events: list[str] = []
    pool = ProcessExecutor(1)
    for spec, result in pool.map_tasks([SingleRun(s, "process") for s in specs],
                                       on_start=lambda s: events.append(f"start {s.key}")):
        assert result.status == "completed"
        events.append(f"result {spec.key}")
    keys = [s.key for s in specs]
    # one worker: each next run is handed off as soon as the previous one's result is in
    assert events == [f"start {keys[0]}"] + [
        e for a, b in itertools.pairwise(keys) for e in (f"start {b}", f"result {a}")
    ] + [f"result {keys[-1]}"]


def test_sequential_runs_use_one_thread_and_restore_the_setting(tiny: Path, tmp_path: Path) -> None:
    seen = []

    class Watch(lab.Observer):
        def started(self, spec: lab.RunSpec) -> None:
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lab.run(tiny, tmp_path / "out", seeds=1, executor="sequential", observer=Watch(), report=False)
        assert seen == [1, 1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_failing_run_is_recorded_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    # valid, and the data and models check out; the bn runs fail while training
    path.write_text(
        TINY.replace("[variants.bn]", "[variants.bn]\ntrain = { batch_size = 17 }")
    )
    with failing_runs():
        outcome = lab.run(path, tmp_path / "out", seeds=1, executor="sequential", report=False)
    assert (outcome.completed, outcome.failed) == (1, 1)
    failed = [r for r in outcome.results["runs"] if r["status"] == "failed"]
    assert failed[0]["variant"] == "bn" and failed[0]["history"] is None
    assert "RuntimeError" in failed[0]["error"] and MESSAGE in failed[0]["error"]
    jsonschema.validate(outcome.results, lab.load_schema())
    # failed runs are retried by the next call
    with failing_runs():
        retry = lab.run(path, tmp_path / "out", seeds=1, executor="sequential", report=False)
    assert (retry.reused, retry.failed) == (1, 1)


def test_ray_executor_without_ray_says_what_to_install(tiny: Path, tmp_path: Path) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("ray is installed here")
    with pytest.raises(LabError, match=r"--executor ray: Ray is not installed; .*pip install 'bnlab\[ray\]'"):
        lab.run(tiny, tmp_path / "out", executor="ray", report=False)


def test_bad_executor_and_workers_are_lab_errors(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"--executor: unknown executor 'gpu'; choose from: auto, sequential"):
        lab.run(tiny, tmp_path / "a", executor="gpu", report=False)
    with pytest.raises(LabError, match=r"--workers: expected an integer >= 1, got 0"):
        lab.run(tiny, tmp_path / "b", workers=0, executor="process", report=False)
    with pytest.raises(LabError, match=r"--threads: expected an integer >= 1, got 0"):
        lab.run(tiny, tmp_path / "c", threads=0, report=False)
    assert not (tmp_path / "a").exists()  # rejected before anything was written


def test_a_second_study_in_the_same_folder_is_refused(tiny: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".bnlab.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LabError, match=r"another bnlab study is writing to this folder"):
            lab.run(tiny, out, executor="sequential", report=False)


def test_kill_9_mid_study_then_resume(tiny: Path, tmp_path: Path) -> None:
    # long enough runs that the study is still going when we kill it
    path = tmp_path / "slow.toml"
    path.write_text(TINY.replace("seeds = 2", "seeds = 4").replace("epochs = 2", "epochs = 60"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bnlab.cli", "run", str(path), "--out", str(out), "--workers", "1", "--quiet", "--no-report"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            done = completed_runs(out / "runs.sqlite")
            if done >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the study ended before it could be killed: {log.read_text()!r}"
        assert done >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with Store.in_folder(out) as store:
        assert store.integrity_ok()
        before = {(r.variant, r.seed): r.finished for r in store.runs(status="completed")}
        assert len(before) >= 2
        assert len(before) < 8
    # the same study again (here in-process): completes, reusing every finished run
    rerun = lab.run(path, out, workers=1, report=False)
    assert (rerun.reused, rerun.completed, rerun.failed) == (len(before), 8 - len(before), 0)
    with Store.in_folder(out) as store:
        after = {(r.variant, r.seed): r.finished for r in store.runs(status="completed")}
        assert store.integrity_ok()
        assert not store.runs(status="running")
    assert len(after) == 8
    assert all(after[k] == v for k, v in before.items())  # finished runs were not rerun
    doc = json.loads((out / "results.json").read_text())
    jsonschema.validate(doc, lab.load_schema())
    assert len(doc["runs"]) == 8
