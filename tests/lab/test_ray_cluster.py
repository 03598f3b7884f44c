"""``bnlab run --executor ray --address ADDR`` on a real Ray cluster, started as users start one.

One cluster for the module: ``ray start --head --block --num-cpus 2 --port 0`` in its own
session with its own temp folder, dashboard and usage statistics off, every address on
loopback. Teardown stops exactly that cluster (SIGTERM to ``ray start --block``, which
stops the processes it started, then SIGKILL to whatever is left of its session) — what
``ray stop`` does, without touching another Ray instance on the same machine (``ray
stop`` stops them all). Every wait is bounded.

The runs are tiny circles studies; the assertions are about where runs go and what is
stored: the same numbers as the sequential executor, a killed worker losing one run,
a killed driver resuming, and the number of runs in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tests.lab.test_run import TINY

pytest.importorskip("ray", reason="Ray is not installed; install it with: pip install 'bnlab[ray]'")

import bnlab
from bnlab import lab
from bnlab.lab.weights import read_weights

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 180.0  # a loaded 2-core machine takes ~15 s
RUN_SECONDS = 240.0



@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]
    session: int  # session id of `ray start` and every process of the cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(session: int) -> list[int]:
    """Processes of this session still running (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ProcessLookupError, IndexError):
            continue
        if state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp = Path(tempfile.mkdtemp(prefix="bnlab-ray-"))  # short: socket paths have a 107-byte limit
    src = str(Path(bnlab.__file__).parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Explicit, so neither side depends on a token another Ray left in ~/.ray (Ray
        # turns token authentication on for a cluster when that file exists, but a driver
        # joining it only when told to).
        "RAY_AUTH_MODE": "disabled",
        # Ray's single-machine mode: it keeps 127.0.0.1 instead of swapping in the
        # machine's routable address, so nothing listens beyond loopback.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    heads: list[subprocess.Popen[bytes]] = []
    try:
        # `ray start` gives up when its node takes over 30 s to register (a loaded
        # machine); such a start is stopped and tried again, at most three times.
        for attempt in range(3):
            log = temp / f"ray-start-{attempt}.log"
            heads.append(_start_head(temp, env, log))
            address = _wait_until_ready(heads[-1], temp, log)
            if address is not None:
                break
            _stop(heads[-1])
        assert address is not None, f"ray start failed three times: {log.read_text()[-2000:]}"
        yield Cluster(address, env, heads[-1].pid)
    finally:
        for head in heads:
            _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def _start_head(temp: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    ray_cli = str(Path(sys.executable).with_name("ray"))
    command = [
        ray_cli, "start", "--head", "--block", "--num-cpus", "2", "--port", "0",
        "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
        "--disable-usage-stats", "--temp-dir", str(temp),
        "--dashboard-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--ray-client-server-port", str(_free_port()),
    ]  # fmt: skip
    (temp / "ray_current_cluster").unlink(missing_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )


def _terminate_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the test process ends, even
    by ``kill -9``, and ``ray start --block`` then stops its cluster (no cluster outlives
    a killed test run)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def _wait_until_ready(head: subprocess.Popen[bytes], temp: Path, log: Path) -> str | None:
    """The cluster's address once `ray start` blocks; None if it exited first."""
    address_file = temp / "ray_current_cluster"
    deadline = time.monotonic() + STARTUP_SECONDS
    while "block forever" not in log.read_text() or not address_file.is_file():
        if head.poll() is not None:
            return None
        assert time.monotonic() < deadline, f"ray start not ready: {log.read_text()[-2000:]}"
        time.sleep(0.2)
    return address_file.read_text().strip()


def _stop(head: subprocess.Popen[bytes]) -> None:
    """Stop the cluster of `head` (a `ray start --block` in its own session) and all its processes."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(head.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(head.pid):
        os.killpg(head.pid, signal.SIGKILL)
    if head.poll() is None:
        head.wait(timeout=10)


def _run_tasks(cluster: Cluster) -> dict[int, str]:
    """pid -> title of the cluster's processes running a bnlab run (``ray::bnlab bn seed 0``)."""
    tasks = {}
    for pid in _alive(cluster.session):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:
            continue
        if title.startswith(b"ray::bnlab "):
            tasks[pid] = title.decode()[len("ray::") :].strip()
    return tasks


def _bnlab(cluster: Cluster, *args: str) -> list[str]:
    return [sys.executable, "-m", "bnlab.cli", "run", *args, "--executor", "ray",
            "--address", cluster.address, "--quiet", "--no-report"]  # fmt: skip


def _watch(cluster: Cluster, command: list[str], log: Path) -> tuple[int, list[dict[int, str]]]:
    """Run `command`, sampling the cluster's bnlab tasks until it exits: (exit code, samples)."""
    samples = []
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=err, stderr=subprocess.STDOUT, env=cluster.env)
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"the study did not finish: {log.read_text()}"
            samples.append(_run_tasks(cluster))
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, samples


def _histories(results: dict) -> dict[tuple[str, int], object]:
    return {(r["variant"], r["seed"]): r["history"] for r in results["runs"]}


def _assert_same_weights(a: Path, b: Path) -> None:
    names = sorted(p.name for p in (a / "weights").iterdir())
    assert names == sorted(p.name for p in (b / "weights").iterdir()) and names
    for name in names:
        (ta, ma), (tb, mb) = read_weights(a / "weights" / name), read_weights(b / "weights" / name)
        assert ma == mb
        assert ta.keys() == tb.keys()
        for key in ta:
            assert torch.equal(ta[key], tb[key]), f"{name} {key}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("experiment") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def sequential(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study (2 seeds, 100 epochs) run by the sequential executor."""
    out = tmp_path_factory.mktemp("sequential")
    lab.run(tiny, out, seeds=2, epochs=100, executor="sequential", report=False)
    return out


def test_cluster_results_equal_the_sequential_executor_and_use_every_cpu(
    cluster: Cluster, tiny: Path, sequential: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    # 100 epochs: runs long enough (0.5-0.9 s each alone, against 0.1-0.2 s at 20 epochs,
    # when one worker did all four before the second had started) that the second worker
    # process, which Ray starts as the first one's runs begin, joins before they are done
    command = _bnlab(cluster, str(tiny), "--seeds", "2", "--epochs", "100", "--out", str(out))
    code, samples = _watch(cluster, command, tmp_path / "log.txt")
    assert code == 0, (tmp_path / "log.txt").read_text()
    # every number stored is the sequential executor's, to the bit
    ray_results = lab.read_results(out)
    seq_results = lab.read_results(sequential)
    assert [r["status"] for r in ray_results["runs"]] == ["completed"] * 4
    assert _histories(ray_results) == _histories(seq_results)
    _assert_same_weights(out, sequential)
    # without --workers: as many runs in flight as the cluster has CPUs, in two processes.
    # A worker shows a finished run's title for a moment after Ray starts the next run
    # elsewhere, so one sample may see three; more than two in flight would show in
    # consecutive samples.
    counts = [len(s) for s in samples]
    assert max(counts) >= 2
    assert not any(a > 2 and b > 2 for a, b in itertools.pairwise(counts)), counts
    assert len({pid for s in samples for pid in s}) >= 2
    titles = {title for s in samples for title in s.values()}
    assert titles <= {f"bnlab {v} seed {k}" for v in ("base", "bn") for k in range(2)}


def test_ray_tasks_can_be_groups_of_seeds_trained_stacked(
    cluster: Cluster, tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    command = _bnlab(cluster, str(tiny), "--seeds", "2", "--epochs", "20", "--out", str(out),
                     "--seeds-per-task", "2")  # fmt: skip
    code, samples = _watch(cluster, command, tmp_path / "log.txt")
    assert code == 0, (tmp_path / "log.txt").read_text()
    # one task per variant with both seeds inside
    titles = {title for s in samples for title in s.values()}
    assert titles <= {"bnlab base seeds 0,1", "bnlab bn seeds 0,1"} and titles
    # each run stored alone, trained as the vectorized executor trains it: the same stack,
    # so the same numbers to the bit
    vec = tmp_path / "vec"
    lab.run(tiny, vec, seeds=2, epochs=20, executor="vectorized", workers=1, report=False)
    ray_results = lab.read_results(out)
    assert [r["executor"] for r in ray_results["runs"]] == ["vectorized"] * 4
    assert _histories(ray_results) == _histories(lab.read_results(vec))
    _assert_same_weights(out, vec)


def test_a_killed_worker_loses_only_its_run_retried_once(
    cluster: Cluster, tiny: Path, tmp_path: Path
) -> None:
    # bn trains long enough (about a second) to be killed twice: its first try, then
    # Ray's one retry
    slow = tmp_path / "slow.toml"
    slow.write_text(TINY.replace("[variants.bn]", "[variants.bn]\ntrain = { epochs = 60 }"))
    out = tmp_path / "ray"
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(_bnlab(cluster, str(slow), "--out", str(out)), stdout=err,
                                stderr=subprocess.STDOUT, env=cluster.env)  # fmt: skip
    killed: list[int] = []
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while len(killed) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, f"no run to kill: {log.read_text()}"
            for pid, title in _run_tasks(cluster).items():
                if title == "bnlab bn seed 0" and pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)
        proc.wait(timeout=RUN_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(killed) == 2, f"killed {killed}; study output: {log.read_text()}"
    assert proc.returncode == 1, log.read_text()  # 1: some runs failed
    runs = {(r["variant"], r["seed"]): r for r in lab.read_results(out)["runs"]}
    assert {k: r["status"] for k, r in runs.items()} == {
        ("base", 0): "completed",
        ("base", 1): "completed",
        ("bn", 0): "failed",
        ("bn", 1): "completed",
    }
    error = runs["bn", 0]["error"]
    assert error.startswith("the Ray worker running this run died (2 times tried): "), error
    assert runs["bn", 0]["history"] is None
    assert "bn seed 0: the Ray worker running this run died" in log.read_text()
    assert not list((out / "weights").glob("bn__seed0__*"))


def _completed(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(store, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not yet created
        return 0
    finally:
        db.close()


def test_a_killed_driver_resumes_from_the_store_and_workers_bounds_the_runs_in_flight(
    cluster: Cluster, tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    command = _bnlab(cluster, str(tiny), "--seeds", "2", "--epochs", "30", "--out", str(out),
                     "--workers", "1")  # fmt: skip
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=err, stderr=subprocess.STDOUT, env=cluster.env)
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while _completed(out / lab.STORE_FILE) < 1:
            assert proc.poll() is None, f"the study ended before it was killed: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with lab.Store.in_folder(out) as store:
        assert store.integrity_ok()
        before = {(r.variant, r.seed): r.finished for r in store.runs(status="completed")}
    assert 1 <= len(before) < 4
    # Ray ends the dead driver's tasks
    deadline = time.monotonic() + 60
    while _run_tasks(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _run_tasks(cluster)

    code, samples = _watch(cluster, command, log)
    assert code == 0, log.read_text()
    assert max(len(s) for s in samples) == 1  # --workers 1: one run in flight at a time
    with lab.Store.in_folder(out) as store:
        after = {(r.variant, r.seed): r.finished for r in store.runs(status="completed")}
        assert not store.runs(status="running")
    assert len(after) == 4
    assert all(after[k] == v for k, v in before.items())  # finished runs were not run again
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "ray", "--address", "127.0.0.1:{port}"],
         "--address 127.0.0.1:{port}: no Ray cluster answers there (Connection refused); "
         "start one with `ray start --head` and give the address it prints"),
        (["--executor", "process", "--address", "127.0.0.1:{port}"],
         "--address 127.0.0.1:{port}: a Ray cluster address needs --executor ray"),
        (["--executor", "vectorized", "--seeds-per-task", "3"],
         "--seeds-per-task 3: groups of seeds per task need --executor ray (the vectorized "
         "executors group seeds by themselves)"),
    ],
    ids=["nothing-listens", "not-ray", "groups-not-ray"],
)  # fmt: skip
def test_a_bad_address_is_one_line_exit_2_before_anything_is_written(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from bnlab.cli import main

    port = _free_port()  # closed again: nothing listens there
    out = tmp_path / "out"
    argv = ["run", str(tiny), "--out", str(out), *(a.format(port=port) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"bnlab: error: {message.format(port=port)}\n"
    assert not out.exists()


def test_without_ray_the_executor_names_the_install_command(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import fails as if not installed
    with pytest.raises(lab.LabError, match=r"^--executor ray: Ray is not installed; install it with: pip install 'bnlab\[ray\]'$"):
        lab.run(tiny, tmp_path / "out", executor="ray", report=False)
    assert not (tmp_path / "out").exists()
