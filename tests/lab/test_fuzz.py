"""Fuzz the experiment reader and checker with mutated bundled experiments and random bytes.

Whatever the file holds, the outcome is one of: accepted (it would run), or a one-line
error of the kinds the command prints and exits 2 for (`LabError`, `SpecError`,
`DatasetError`); never another exception, a traceback, an output folder, or memory
growth beyond a bound. The cases go through the functions `bnlab run` calls before it
creates anything (`load_experiment`, then `bnlab.lab.preflight.check_experiment`),
in this process; a few go through the command itself, in a child under a memory cap.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnlab.data import DatasetError
from bnlab.lab import LabError, load_experiment
from bnlab.lab.catalog import bundled_dir
from bnlab.lab.preflight import check_experiment
from bnlab.models import SpecError
from limits import bnlab_capped

BUNDLED = sorted(bundled_dir().glob("*.toml"))
TEXTS = [p.read_text() for p in BUNDLED]

# Values an adversarial user types: wrong types, out of range, huge, non-finite, names
# with newlines, grid references that name nothing, memory bombs.
VALUES = [
    "-1", "0", "1e30", "-1e30", "inf", "nan", "9223372036854775807", "1000000000",
    "true", '""', '"t\\n"', '"$nope"', '"$5"', "[]", "{}", "[1, 1.0]", "[[[[[]]]]]",
    '"' + "x" * 300 + '"', "0.5", "2", '"relu"', '{ name = "sgd" }', "[0, 250]",
    '"../../etc"', "[60000, 60000]", '"é"',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A bundled experiment with a few lines changed, dropped, repeated, or bytes spliced in."""
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["value", "value", "drop", "repeat", "bytes"]))
        if how == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.sampled_from(VALUES))}"
        elif how == "drop":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "bytes":
            junk = draw(st.binary(min_size=1, max_size=8))
            lines[i] = lines[i] + junk.decode("latin-1")
        if not lines:
            lines = [""]
    text = "\n".join(lines)
    return text.encode("utf-8", errors="surrogateescape") if draw(st.booleans()) else (
        text.encode("latin-1", errors="replace")
    )


def _outcome(path: Path) -> int:
    """0 when `bnlab run` would start, 2 for a one-line input error; anything else raises."""
    try:
        check_experiment(load_experiment(path).with_seeds(1))
    except (LabError, SpecError, DatasetError) as e:
        message = str(e)
        assert message and "\n" not in message.strip(), message
        assert "Traceback" not in message
        return 2
    return 0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


MEMORY_BOUND_MB = 1500


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(content=st.one_of(mutated(), st.binary(max_size=400)))
def test_any_file_is_accepted_or_one_line(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "exp.toml"
    path.write_bytes(content)
    before = _peak_mb()
    assert _outcome(path) in (0, 2)
    assert _peak_mb() - before < MEMORY_BOUND_MB
    assert sorted(p.name for p in folder.iterdir()) == ["exp.toml"]  # nothing created


@pytest.mark.parametrize(
    "content",
    [
        bytes(range(256)),
        TEXTS[0].replace("units = 50", "units = 9223372036854775807").encode(),
    ],
    ids=["random-bytes", "units-2**63"],
)
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS")
def test_the_command_exits_2_with_one_line_under_a_memory_cap(tmp_path, content):
    path = tmp_path / "exp.toml"
    path.write_bytes(content)
    out = tmp_path / "out"
    done = bnlab_capped(["run", str(path), "--out", str(out)], timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bnlab: error: ")
    assert "Traceback" not in done.stderr
    assert not out.exists()
