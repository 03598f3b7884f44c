"""Run Python code or the ``bnlab`` command in a subprocess under a memory cap.

A regression that makes bnlab allocate without bound (a label of ``2**40`` turned into
that many class names) then fails with ``MemoryError`` in the child instead of taking
the test machine down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MEMORY_CAP = 3 * 1024**3
"""Address-space cap of the child (bytes): torch alone maps about 0.7 GB."""

_CAPPED = """
import resource, runpy, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
sys.argv = sys.argv[2:]
if sys.argv[0] == "-c":
    exec(compile(sys.argv[1], "<capped>", "exec"), {"__name__": "__main__"})
else:
    runpy.run_module("bnlab.cli", run_name="__main__")
"""


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("KERAS_BACKEND", "torch")
    env.update(extra or {})
    return env


def run_capped(
    code: str,
    *,
    cap: int = MEMORY_CAP,
    timeout: float = 180.0,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` (Python source) in a child limited to `cap` bytes of address space."""
    return subprocess.run(
        [sys.executable, "-c", _CAPPED, str(cap), "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(env),
    )


def bnlab_capped(
    args: Sequence[str],
    *,
    cap: int = MEMORY_CAP,
    timeout: float = 180.0,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``bnlab ARGS`` in a child limited to `cap` bytes of address space."""
    return subprocess.run(
        [sys.executable, "-c", _CAPPED, str(cap), "bnlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(env),
    )
