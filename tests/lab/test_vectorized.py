"""The vectorized executor: same results as one run at a time, grouping, memory, auto rule."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from tests.lab.test_run import TINY

from bnlab import lab
from bnlab.lab import LabError, load_experiment, plan_runs
from bnlab.lab.runs import SingleRun, build_run_model, load_variant_data
from bnlab.lab.vectorized import (
    MAX_MULTIPLY_ADDS,
    RunGroup,
    VectorizationFallbackWarning,
    parse_memory_budget,
    pays_to_stack,
    plan_tasks,
)
from bnlab.train.vectorized import multiply_adds, stack_bytes


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("seeds = 2", "seeds = 3"))
    return path


def _numbers_close(a: Any, b: Any, where: str = "") -> None:
    if isinstance(b, dict):
        assert set(a) == set(b), where
        for k in b:
            _numbers_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _numbers_close(x, y, f"{where}[{i}]")
    elif isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), f"{where}: {a} != {b}"
    else:
        assert a == b, where


def _runs(doc: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["variant"], r["seed"]): r for r in doc["runs"]}


def test_vectorized_study_equals_the_sequential_one(tiny: Path, tmp_path: Path) -> None:
    seq = lab.run(tiny, tmp_path / "seq", executor="sequential", report=False)
    vec = lab.run(tiny, tmp_path / "vec", executor="vectorized", workers=1, report=False)
    assert (vec.completed, vec.failed) == (6, 0)
    jsonschema.validate(vec.results, lab.load_schema())
    expected, actual = _runs(seq.results), _runs(vec.results)
    assert set(actual) == set(expected)
    for key, record in actual.items():
        assert record["executor"] == "vectorized" and expected[key]["executor"] == "sequential"
        _numbers_close(record["history"], expected[key]["history"], str(key))


def test_a_study_resumes_with_the_other_executor(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = lab.run(tiny, out, seeds=2, executor="sequential", report=False)
    assert first.completed == 4
    more = lab.run(tiny, out, seeds=3, executor="vectorized", workers=1, report=False)
    assert (more.reused, more.completed) == (4, 2)
    back = lab.run(tiny, out, seeds=4, executor="process", workers=1, report=False)
    assert (back.reused, back.completed) == (6, 2)
    executors = {(r["variant"], r["seed"]): r["executor"] for r in back.results["runs"]}
    assert executors[("base", 0)] == "sequential" and executors[("bn", 2)] == "vectorized"
    assert executors[("bn", 3)] == "process"
    jsonschema.validate(back.results, lab.load_schema())
    # The time the runs took is part of the call's, and nothing to train takes none.
    assert 0.0 < back.training_seconds < back.seconds and back.report_seconds == 0.0
    again = lab.run(tiny, out, seeds=4, executor="vectorized", workers=1, report=False)
    assert (again.reused, again.completed, again.training_seconds) == (8, 0, 0.0)


def test_vectorized_groups_run_in_worker_processes(tiny: Path, tmp_path: Path) -> None:
    seq = lab.run(tiny, tmp_path / "seq", executor="sequential", report=False)
    par = lab.run(tiny, tmp_path / "par", executor="vectorized", workers=2, report=False)
    for key, record in _runs(par.results).items():
        assert record["executor"] == "vectorized"
        _numbers_close(record["history"], _runs(seq.results)[key]["history"], str(key))


def _specs(path: Path, seeds: int = 5) -> list[Any]:
    return plan_runs(load_experiment(path).with_seeds(seeds))


def test_variants_that_differ_only_in_bn_momentum_center_or_scale_share_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "momenta.toml"
    path.write_text(
        TINY.replace('name = "tiny"', 'name = "momenta"')
        + '[variants.bn_fast]\nedits = [{ insert_after = "dense", layer = { type = "BatchNormalization", '
        + "momentum = 0.5 } }]\n"
        + '[variants.bn_bare]\nedits = [{ insert_after = "dense", layer = { type = "BatchNormalization", '
        + "center = false, scale = false } }]\n"
        + '[variants.bn_renorm]\nedits = [{ insert_after = "dense", layer = { type = "BatchNormalization", '
        + "momentum = 0.5, renorm = true } }]\n"
    )
    tasks = plan_tasks(_specs(path, 3), policy="always", budget=2**40, single="sequential")
    stacks = [sorted({s.variant.name for s in t.specs}) for t in tasks]
    # longest first: the shared stack (9 runs), then the deeper of the two left
    assert stacks == [["bn", "bn_bare", "bn_fast"], ["bn_renorm"], ["base"]]
    seq = lab.run(path, tmp_path / "seq", seeds=3, executor="sequential", report=False)
    vec = lab.run(path, tmp_path / "vec", seeds=3, executor="vectorized", workers=1, report=False)
    expected, actual = _runs(seq.results), _runs(vec.results)
    assert set(actual) == set(expected) and len(actual) == 15
    for key, record in actual.items():
        _numbers_close(record["history"], expected[key]["history"], str(key))
    # The variants really differ: the fast one's moving statistics end elsewhere, and
    # the bare one's network trains differently without the offset and scale.
    assert actual[("bn", 0)]["history"]["final"] != actual[("bn_fast", 0)]["history"]["final"]
    assert actual[("bn", 0)]["history"]["final"] != actual[("bn_bare", 0)]["history"]["final"]


def test_plan_groups_by_variant_and_splits_at_the_memory_budget(tiny: Path) -> None:
    specs = _specs(tiny)
    tasks = plan_tasks(specs, policy="always", budget=2**40, single="sequential")
    assert [type(t) for t in tasks] == [RunGroup, RunGroup]
    assert [[s.seed for s in t.specs] for t in tasks] == [[0, 1, 2, 3, 4]] * 2
    assert {s.variant.name for s in tasks[0].specs} == {"bn"}  # the deeper model first
    variant = specs[1].variant
    model = build_run_model(specs[1], load_variant_data(variant))
    budget = stack_bytes(model, variant.train_config(), 2)
    split = plan_tasks(specs, policy="always", budget=budget, single="sequential")
    bn = [len(t.specs) for t in split if t.specs[0].variant.name == "bn"]
    assert bn == [2, 2, 1]  # even stacks under the budget
    alone = plan_tasks(specs, policy="always", budget=1, single="process")
    assert [len(t.specs) for t in alone] == [1] * 10 and all(isinstance(t, RunGroup) for t in alone)


def test_auto_stacks_small_models_and_leaves_convolutions_alone(tiny: Path, tmp_path: Path) -> None:
    specs = _specs(tiny)
    tasks = plan_tasks(specs, policy="auto", budget=2**40, single="process")
    assert all(isinstance(t, RunGroup) for t in tasks)
    one_seed = plan_tasks(_specs(tiny, 1), policy="auto", budget=2**40, single="process")
    assert all(isinstance(t, SingleRun) and t.executor == "process" for t in one_seed)
    cnn = load_experiment("mnist_cnn")
    assert multiply_adds(build_run_model(plan_runs(cnn)[0], _FakeData())) * 32 > MAX_MULTIPLY_ADDS
    assert pays_to_stack(100, 32, 10) and not pays_to_stack(100, 32, 1)
    assert not pays_to_stack(MAX_MULTIPLY_ADDS // 32 + 1, 32, 10)


class _FakeData:
    input_shape = (28, 28, 1)


def test_a_model_that_cannot_be_stacked_runs_alone_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "raise.toml"
    path.write_text(TINY.replace('{ type = "BatchNormalization" }', '{ type = "BatchNormalization", on_nonfinite = "raise" }'))
    with pytest.warns(VectorizationFallbackWarning, match="variant bn: .*not stacked: .*on_nonfinite='raise'"):
        outcome = lab.run(path, tmp_path / "out", executor="vectorized", workers=1, report=False)
    executors = {(r["variant"], r["executor"]) for r in outcome.results["runs"]}
    assert executors == {("base", "vectorized"), ("bn", "sequential")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * 10**6), ("2G", 2 * 10**9), ("1.5GB", 1_500_000_000), ("2GiB", 2 * 2**30), ("4096", 4096)],
)
def test_memory_budget_sizes(text: str, expected: int) -> None:
    assert parse_memory_budget(text) == expected


def test_bad_memory_budget_is_a_one_line_usage_error(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"--memory-budget: expected a size such as 4G, 512M or 1.5GB; got '3X'"):
        parse_memory_budget("3X")
    with pytest.raises(LabError, match=r"--memory-budget: expected a size of at least 1 byte; got 0"):
        lab.run(tiny, tmp_path / "out", executor="vectorized", memory_budget=0, report=False)
    cli = [sys.executable, "-m", "bnlab.cli", "run", str(tiny), "--memory-budget", "lots"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "argument --memory-budget: expected a size such as 4G, 512M or 1.5GB; got 'lots'" in done.stderr
    assert "Traceback" not in done.stderr
