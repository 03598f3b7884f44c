"""The worker processes' fork server: which executors use it, and that it starts light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bnlab.lab.worker_server import default_workers, uses_worker_processes


@pytest.mark.parametrize(
    ("executor", "workers", "expected"),
    [
        ("auto", 2, True),
        ("process", 3, True),
        ("vectorized", 2, True),
        ("auto", 1, False),  # one worker: in this process
        ("vectorized", 1, False),
        ("sequential", 2, False),
        ("ray", 2, False),
        ("process", 0, False),  # not a count: the executor reports it
        ("process", True, False),
        ("process", "2", False),
    ],
)
def test_which_executors_run_in_worker_processes(executor, workers, expected):
    assert uses_worker_processes(executor, workers) is expected


def test_default_workers_decide_when_none_are_given():
    assert uses_worker_processes("auto", None) is (default_workers() >= 2)


def test_the_module_imports_no_torch():
    """The command line starts the server before importing the lab: that must be cheap."""
    code = "import sys, bnlab.lab.worker_server; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
