"""Statistics over seeds, checked against scipy.stats and hand-computed numbers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as sps

from bnlab.lab import fmt, stats

# ----------------------------------------------------------------- synthetic results.json


def history(
    val_accuracy: list[float | None],
    *,
    final: dict[str, float | None] | None = None,
    diverged: bool = False,
    evals: list[dict] | None = None,
    steps_per_epoch: int = 16,
) -> dict:
    """A History dict in the contract shape; train curves trail the test curve by 0.01."""
    n = len(val_accuracy)
    acc = [None if v is None else v - 0.01 for v in val_accuracy]
    return {
        "epochs": {
            "loss": [1.0 / (k + 1) for k in range(n)],
            "accuracy": acc,
            "val_loss": [1.1 / (k + 1) for k in range(n)],
            "val_accuracy": val_accuracy,
            "val_accuracy_train_mode": None,
        },
        "evals": evals or [],
        "probes": {},
        "final": final
        or {
            "train_loss": 0.3,
            "train_accuracy": 0.84,
            "test_loss": 0.35,
            "test_accuracy": val_accuracy[-1],
        },
        "diverged": diverged,
        "steps_per_epoch": steps_per_epoch,
    }


def step_curve(reach: int | None, epochs: int = 20, low: float = 0.70, high: float = 0.85) -> list:
    """val_accuracy that first reaches 0.80 after epoch ``reach`` (1-based); None = never."""
    return [high if reach is not None and k >= reach else low for k in range(1, epochs + 1)]


def run(variant: str, seed: int, hist: dict | None, *, status="completed", grid=None, error=None):
    return {
        "experiment": "synthetic",
        "variant": variant,
        "seed": seed,
        "status": status,
        "history": hist,
        "seconds": 2.0 + seed,
        "error": error,
        "grid": grid or {},
    }


def results(runs: list[dict], variants: list[str], seeds: list[int]) -> dict:
    return {
        "schema_version": 1,
        "experiment": {"name": "synthetic"},
        "variants": variants,
        "seeds": seeds,
        "runs": runs,
        "versions": {"bnlab": "0", "torch": "0", "numpy": "0", "python": "3"},
        "created": "2026-01-01T00:00:00+00:00",
    }


# baseline reaches 80% after epochs 12..16, fast after 3..7 on the same seeds: 9 epochs sooner,
# with per-seed differences 9, 9, 9, 9, 9 + small noise from the fixed lists below.
BASE_REACH = [12, 15, 13, 16, 14]
FAST_REACH = [3, 5, 4, 7, 6]  # differences 9, 10, 9, 9, 8
BASE_TEST = [0.82, 0.84, 0.83, 0.85, 0.81]
FAST_TEST = [0.83, 0.84, 0.85, 0.86, 0.82]


def study() -> dict:
    runs = []
    for seed, (rb, rf, tb, tf) in enumerate(
        zip(BASE_REACH, FAST_REACH, BASE_TEST, FAST_TEST, strict=True)
    ):
        hb = history(step_curve(rb))
        hb["final"]["test_accuracy"] = tb
        hf = history(step_curve(rf))
        hf["final"]["test_accuracy"] = tf
        runs += [run("baseline", seed, hb), run("fast", seed, hf)]
    # "shaky": 2 seeds never reach 0.80, one diverged with null finals, one failed.
    shaky_reach = [10, None, 11, None, 9]
    for seed, reach in enumerate(shaky_reach):
        if seed == 4:
            runs.append(
                run("shaky", seed, None, status="failed", error="Traceback ...\nRuntimeError: boom")
            )
            continue
        h = history(step_curve(reach))
        if seed == 1:
            h = history(
                step_curve(None),
                diverged=True,
                final={
                    "train_loss": None,
                    "train_accuracy": 0.5,
                    "test_loss": None,
                    "test_accuracy": None,
                },
            )
        runs.append(run("shaky", seed, h))
    return results(runs, ["baseline", "fast", "shaky"], [0, 1, 2, 3, 4])


# ----------------------------------------------------------------- run counts


def test_plan_words_count_variants_grid_points_and_seeds():
    lr = [{"learning_rate": v} for v in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 0.3, 0.03, 3e-3, 3e-4)]
    lr_range = [(v, g) for v in ("mlp", "mlp_bn", "cnn", "cnn_bn") for g in lr]
    assert stats.plan_words(lr_range, 5) == "4 variants × 9 grid points × 5 seeds = 180 runs"
    points = [{"learning_rate": a, "activation": b} for a in (1e-3, 1e-2) for b in ("s", "r")]
    mnist_cnn = [(v, g) for v in ("no_bn", "bn") for g in points]
    assert stats.plan_words(mnist_cnn, 5) == "2 variants × 4 grid points × 5 seeds = 40 runs"
    assert stats.plan_words([("a", {}), ("b", {})], 10) == "2 variants × 10 seeds = 20 runs"
    assert stats.plan_words([("a", {})], 1) == "1 variant × 1 seed = 1 run"
    # a reference that uses no grid axis runs at one point: 4 + 4 + 1 pairs
    mixed = [(v, g) for v in ("bn", "ghost") for g in lr[:4]] + [("no_bn", {})]
    assert (
        stats.plan_words(mixed, 5) == "3 variants, 9 variant/grid-point pairs × 5 seeds = 45 runs"
    )


# ----------------------------------------------------------------- one sample


def test_describe_matches_hand_computed_mean_std_and_t_interval():
    s = stats.describe({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0}, name="x")
    assert s.mean == 3.0
    assert s.std == pytest.approx(math.sqrt(2.5), abs=1e-15)  # ddof=1: 10 / 4
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4}
    assert (s.t_ci.low, s.t_ci.high) == pytest.approx((3 - half, 3 + half), abs=1e-12)
    ref = sps.t.interval(0.95, 4, loc=3.0, scale=sps.sem([1, 2, 3, 4, 5]))
    assert (s.t_ci.low, s.t_ci.high) == pytest.approx(ref, abs=1e-12)
    assert s.t_ci.method == "t" and s.ci.method == "bootstrap"


def test_describe_lists_null_and_nonfinite_values_as_missing():
    s = stats.describe({3: 0.5, 1: None, 2: float("nan"), 0: 0.7}, name="x")
    assert s.seeds == (0, 3) and s.values == (0.7, 0.5) and s.missing == (1, 2)
    assert s.mean == pytest.approx(0.6)
    one = stats.describe({0: 0.9, 1: None})
    assert one.n == 1 and one.mean == 0.9 and math.isnan(one.std) and one.ci is None


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap():
    x = np.random.default_rng(7).normal(0.83, 0.02, size=10)
    ours = stats.bootstrap_mean_ci(x)
    ref = sps.bootstrap(
        (x,), np.mean, method="percentile", n_resamples=100_000, rng=1
    ).confidence_interval
    # Both are Monte Carlo estimates of the same percentiles: agree to a small fraction of the SE.
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ours.low == pytest.approx(ref.low, abs=0.05 * se)
    assert ours.high == pytest.approx(ref.high, abs=0.05 * se)
    # Seeded: the same values give the same interval, every time.
    assert stats.bootstrap_mean_ci(x) == ours
    # At 10 seeds the percentile bootstrap is narrower than the t-interval (why tests must agree).
    assert ours.high - ours.low < stats.t_interval(x).high - stats.t_interval(x).low


def test_bootstrap_ci_of_constant_values_is_a_point_and_needs_two_values():
    ci = stats.bootstrap_mean_ci([0.8, 0.8, 0.8])
    assert (ci.low, ci.high) == pytest.approx((0.8, 0.8))
    assert stats.bootstrap_mean_ci([0.8]) is None
    with pytest.raises(ValueError, match=r"nan"):
        stats.bootstrap_mean_ci([0.8, float("nan")])


# ----------------------------------------------------------------- two samples


def test_paired_difference_matches_scipy_ttest_rel_and_paired_bootstrap():
    rng = np.random.default_rng(3)
    b = rng.normal(0.80, 0.03, size=8)
    a = b + rng.normal(0.02, 0.01, size=8)
    t = stats.difference_test(dict(enumerate(a)), dict(enumerate(b)), paired=True)
    ref = sps.ttest_rel(a, b)
    assert t.paired and t.test == "paired t-test" and t.n_a == t.n_b == 8
    assert t.difference == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    assert t.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert t.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert t.df == ref.df == 7
    ref_ci = ref.confidence_interval(0.95)
    assert (t.t_ci.low, t.t_ci.high) == pytest.approx((ref_ci.low, ref_ci.high), abs=1e-12)
    boot = sps.bootstrap((a - b,), np.mean, method="percentile", n_resamples=100_000, rng=2)
    se = (a - b).std(ddof=1) / math.sqrt(8)
    assert t.ci.low == pytest.approx(boot.confidence_interval.low, abs=0.06 * se)
    assert t.ci.high == pytest.approx(boot.confidence_interval.high, abs=0.06 * se)
    assert t.detected


def test_welch_difference_matches_scipy_ttest_ind_and_two_sample_bootstrap():
    rng = np.random.default_rng(5)
    a = rng.normal(0.85, 0.01, size=6)
    b = rng.normal(0.80, 0.04, size=9)
    t = stats.difference_test(
        dict(enumerate(a)), {10 + i: v for i, v in enumerate(b)}, paired=False
    )
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert not t.paired and t.test == "Welch's t-test" and (t.n_a, t.n_b) == (6, 9)
    assert t.difference == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert t.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert t.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert t.df == pytest.approx(ref.df, rel=1e-12)
    ref_ci = ref.confidence_interval(0.95)
    assert (t.t_ci.low, t.t_ci.high) == pytest.approx((ref_ci.low, ref_ci.high), abs=1e-12)
    boot = sps.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        method="percentile",
        n_resamples=100_000,
        rng=4,
    )
    se = math.sqrt(a.var(ddof=1) / 6 + b.var(ddof=1) / 9)
    assert t.ci.low == pytest.approx(boot.confidence_interval.low, abs=0.06 * se)
    assert t.ci.high == pytest.approx(boot.confidence_interval.high, abs=0.06 * se)


def test_difference_of_identical_or_shifted_constants_and_too_few_values():
    same = stats.difference_test({0: 0.8, 1: 0.8}, {0: 0.8, 1: 0.8}, paired=True)
    assert same.p_value == 1.0 and not same.detected
    shifted = stats.difference_test({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.7}, paired=True)
    assert shifted.difference == pytest.approx(0.1) and shifted.p_value == 0.0 and shifted.detected
    few = stats.difference_test({0: 0.9}, {0: 0.8}, paired=True)
    assert not few.estimable and not few.detected and few.ci is None and math.isnan(few.p_value)


# ----------------------------------------------------------------- thresholds


def test_first_reach_uses_epochs_then_steps_and_counts_never_as_inf():
    h = history([0.5, 0.7, None, 0.81, 0.79, 0.9], steps_per_epoch=16)
    assert stats.first_reach(h) == 4.0
    assert stats.first_reach(h, unit="steps") == 64.0
    assert stats.first_reach(h, threshold=0.95) == math.inf
    assert stats.first_reach(h, metric="val_loss", threshold=0.25) == 5.0  # 1.1/5 = 0.22 ≤ 0.25
    with pytest.raises(ValueError, match=r"'val_acc'"):
        stats.first_reach(h, metric="val_acc")
    with pytest.raises(ValueError, match=r"'minutes'"):
        stats.first_reach(h, unit="minutes")


def test_first_reach_prefers_the_finer_evals():
    evals = [
        {
            "step": 4,
            "epoch": 0.25,
            "val_loss": 0.6,
            "val_accuracy": 0.6,
            "val_accuracy_train_mode": 0.7,
        },
        {
            "step": 8,
            "epoch": 0.5,
            "val_loss": 0.5,
            "val_accuracy": None,
            "val_accuracy_train_mode": 0.8,
        },
        {
            "step": 12,
            "epoch": 0.75,
            "val_loss": 0.4,
            "val_accuracy": 0.82,
            "val_accuracy_train_mode": 0.9,
        },
        {
            "step": 16,
            "epoch": 1.0,
            "val_loss": 0.3,
            "val_accuracy": 0.85,
            "val_accuracy_train_mode": 0.9,
        },
    ]
    h = history([0.85], evals=evals)
    assert stats.first_reach(h) == 0.75
    assert stats.first_reach(h, unit="steps") == 12.0
    assert stats.first_reach(h, metric="val_accuracy_train_mode") == 0.5


def test_threshold_median_is_never_when_half_or_more_never_reach():
    def summary(reaches):
        runs = [run("v", s, history(step_curve(r))) for s, r in enumerate(reaches)]
        return stats.summarize(results(runs, ["v"], list(range(len(reaches)))))[0].time_to_threshold

    s = summary([3, 5, None, 4, None])
    assert s.never == 2 and s.n == 5 and s.median == 5.0
    assert s.values == (3.0, 5.0, math.inf, 4.0, math.inf)
    assert summary([3, None, None, 4]).median == math.inf  # exactly half: midpoint of 4 and never
    assert summary([3, None, None]).median == math.inf


# ----------------------------------------------------------------- summarize and compare


def test_summarize_reports_per_variant_numbers_divergence_and_failures():
    base, fast, shaky = stats.summarize(study())
    assert [s.label for s in (base, fast, shaky)] == ["baseline", "fast", "shaky"]
    assert base.test_accuracy.mean == pytest.approx(np.mean(BASE_TEST), abs=1e-15)
    assert base.test_accuracy.std == pytest.approx(np.std(BASE_TEST, ddof=1), abs=1e-15)
    assert base.time_to_threshold.median == 14.0 and base.time_to_threshold.never == 0
    assert fast.time_to_threshold.median == 5.0
    assert base.seconds.mean == pytest.approx(4.0)  # 2 + mean(0..4)
    assert base.test_accuracy_train_mode.n == 0  # no BN: nothing recorded, nothing missing
    assert base.test_accuracy_train_mode.missing == ()
    assert (base.completed, base.failed, base.diverged) == (5, 0, 0)
    # shaky: seed 4 failed, seed 1 diverged with null finals, seeds 1 and 3 never reach 0.80.
    assert shaky.seeds == (0, 1, 2, 3, 4)
    assert (shaky.completed, shaky.failed_seeds, shaky.diverged_seeds) == (4, (4,), (1,))
    assert shaky.errors == ((4, "RuntimeError: boom"),)
    assert shaky.test_accuracy.seeds == (0, 2, 3) and shaky.test_accuracy.missing == (1,)
    assert shaky.train_accuracy.n == 4  # the diverged run still reports a finite train accuracy
    assert shaky.time_to_threshold.values == (10.0, math.inf, 11.0, math.inf)
    assert shaky.time_to_threshold.never == 2 and shaky.time_to_threshold.median == math.inf


@pytest.fixture
def few_seeds_compared(monkeypatch):
    """Compare groups of 3-4 seeds, to check the wording of the t-tests on small data."""
    monkeypatch.setattr(stats, "MIN_SEEDS_FOR_CI", 2)


def test_compare_pairs_by_seed_and_words_a_conclusion_only_when_the_ci_excludes_zero():
    base, fast, _ = stats.summarize(study())
    c = stats.compare(fast, base, quantity="time_to_threshold")
    d = np.subtract(FAST_REACH, BASE_REACH)  # -9, -10, -9, -9, -8
    ref = sps.ttest_rel(FAST_REACH, BASE_REACH)
    assert c.test.paired and c.test.difference == pytest.approx(d.mean())
    assert c.test.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert c.detected
    ci = ref.confidence_interval(0.95)  # the paired t-test's own interval of the mean difference
    assert (c.test.t_ci.low, c.test.t_ci.high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert c.sentence() == (
        f"fast reaches 80% test accuracy 9 epochs sooner than baseline (95% CI "
        f"{fmt.number(-ci.high)}–{fmt.number(-ci.low)}, paired t-test p<0.001, 5 seeds)"
    )
    assert 8.0 <= -ci.high <= -ci.low <= 10.0

    acc = stats.compare(fast, base, quantity="test_accuracy")
    ref = sps.ttest_rel(FAST_TEST, BASE_TEST)  # differences .01 0 .02 .01 .01
    assert acc.test.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert acc.test.difference == pytest.approx(0.01)
    assert acc.detected
    assert acc.sentence().startswith(
        "fast has higher final test accuracy than baseline by 1 percentage point (95% CI "
    )


def test_compare_says_no_detectable_difference_when_the_ci_contains_zero(few_seeds_compared):
    runs = []
    for seed, (ta, tb) in enumerate([(0.80, 0.82), (0.84, 0.81), (0.82, 0.83), (0.83, 0.82)]):
        for name, t in (("a", ta), ("b", tb)):
            h = history(step_curve(5))
            h["final"]["test_accuracy"] = t
            runs.append(run(name, seed, h))
    a, b = stats.summarize(results(runs, ["a", "b"], [0, 1, 2, 3]))
    c = stats.compare(b, a)
    assert not c.detected and c.test.t_ci.low < 0 < c.test.t_ci.high
    ref = sps.ttest_rel([0.82, 0.81, 0.83, 0.82], [0.80, 0.84, 0.82, 0.83])
    ci = ref.confidence_interval(0.95)
    assert c.sentence() == (
        "no detectable difference in final test accuracy between b and a at 4 seeds "
        f"(b − a = -0.25 percentage points, 95% CI {fmt.number(ci.low * 100)} to "
        f"{fmt.number(ci.high * 100)}, paired t-test p={ref.pvalue:.3g})"
    )


def test_a_difference_is_stated_exactly_when_its_t_interval_excludes_zero():
    """A mean difference of +2.4 points with one contrary seed: p > 0.05, so no conclusion."""
    diffs = [0.10, 0.12, 0.09, 0.11, -0.30]
    runs = []
    for seed, d in enumerate(diffs):
        for name, t in (("a", 0.5 + d), ("b", 0.5)):
            h = history(step_curve(5))
            h["final"]["test_accuracy"] = t
            runs.append(run(name, seed, h))
    a, b = stats.summarize(results(runs, ["a", "b"], list(range(5))))
    c = stats.compare(a, b)
    ref = sps.ttest_rel([0.5 + d for d in diffs], [0.5] * 5)
    assert ref.pvalue > 0.05 and c.test.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert not c.detected and c.sentence().startswith("no detectable difference")
    assert "bootstrap" not in c.sentence()


def test_compare_uses_welch_when_seeds_differ_and_notes_never_and_nulls(few_seeds_compared):
    base, _, shaky = stats.summarize(study())
    t = stats.compare(shaky, base, quantity="time_to_threshold")
    assert t.test.paired  # both have runs for seeds 0..4; the failed seed 4 drops out of the pairs
    assert t.test.n_a == 2  # seeds 0 and 2 reached in both
    assert (
        "never reached it: shaky 2/4, baseline 0/5; compared on the 2 seeds where both did"
        in t.sentence()
    )
    acc = stats.compare(shaky, base)
    assert acc.note == "null values left out: shaky 1, baseline 0"

    r = study()
    r["runs"] = [x for x in r["runs"] if not (x["variant"] == "baseline" and x["seed"] == 0)]
    base, fast, _ = stats.summarize(r)
    w = stats.compare(fast, base)
    ref = sps.ttest_ind(FAST_TEST, BASE_TEST[1:], equal_var=False)
    assert not w.test.paired and (w.test.n_a, w.test.n_b) == (5, 4)
    assert w.test.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert "Welch's t-test" in w.sentence() and ("5 and 4 seeds" in w.sentence())


def test_compare_when_a_variant_never_reaches_the_threshold():
    runs = [run("a", s, history(step_curve(None))) for s in range(3)]
    runs += [run("b", s, history(step_curve(4))) for s in range(3)]
    a, b = stats.summarize(results(runs, ["a", "b"], [0, 1, 2]))
    c = stats.compare(b, a, quantity="time_to_threshold")
    assert not c.test.estimable
    assert c.sentence() == (
        "b reached 80% test accuracy in 3/3 seeds and a in 0/3; too few seeds reached it in both "
        "to estimate the difference in time"
    )


def test_compare_all_compares_each_variant_with_the_reference_at_each_grid_point(few_seeds_compared):
    runs = []
    for lr in (0.1, 0.01):
        for seed in range(3):
            for name in ("no_bn", "bn"):
                h = history(step_curve(3 if name == "bn" else 6))
                runs.append(run(name, seed, h, grid={"learning_rate": lr, "activation": "relu"}))
    summaries = stats.summarize(results(runs, ["no_bn", "bn"], [0, 1, 2]))
    assert [s.label for s in summaries] == [
        "no_bn [learning_rate=0.1, activation=relu]",
        "no_bn [learning_rate=0.01, activation=relu]",
        "bn [learning_rate=0.1, activation=relu]",
        "bn [learning_rate=0.01, activation=relu]",
    ]
    comps = stats.compare_all(summaries)
    assert [(c.at, c.a, c.b, c.quantity) for c in comps] == [
        (f"learning_rate={lr}, activation=relu", "bn", "no_bn", q)
        for lr in (0.1, 0.01)
        for q in ("test_accuracy", "time_to_threshold")
    ]
    assert (
        comps[1]
        .sentence()
        .startswith(
            "at learning_rate=0.1, activation=relu: bn reaches 80% test accuracy 3 epochs sooner"
        )
    )
    with pytest.raises(ValueError, match=r"'base'.*no_bn, bn"):
        stats.compare_all(summaries, reference="base")


def test_train_mode_accuracy_is_the_last_epoch_with_batch_statistics():
    runs = []
    for seed in range(3):
        h = history(step_curve(2, epochs=4))
        h["epochs"]["val_accuracy_train_mode"] = [0.5, 0.9, 0.95, 0.97 + 0.01 * seed]
        runs.append(run("bn", seed, h))
    (bn,) = stats.summarize(results(runs, ["bn"], [0, 1, 2]))
    assert bn.test_accuracy_train_mode.values == pytest.approx((0.97, 0.98, 0.99))
    assert bn.test_accuracy.mean == pytest.approx(0.85)


def test_threshold_settings_come_from_the_experiment_report_table():
    r = study()
    r["experiment"]["report"] = {"threshold": 0.84, "threshold_metric": "val_accuracy"}
    base = stats.summarize(r)[0]
    assert base.time_to_threshold.threshold == 0.84 and base.time_to_threshold.median == 14.0
    assert stats.summarize(r, threshold=0.9)[0].time_to_threshold.never == 5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(schema_version=7), r"schema_version .* got 7"),
        (
            lambda r: r["runs"].append(dict(r["runs"][0])),
            r"repeats variant 'baseline', grid \{\} and seed 0",
        ),
        (lambda r: r["runs"][0].pop("variant"), r"runs\[0\] must have a 'variant' entry"),
        (lambda r: r["runs"][0].update(seed="1"), r"'seed' must be an integer; got '1'"),
    ],
    ids=["schema", "duplicate", "no-variant", "seed-type"],
)
def test_bad_results_raise_one_line_errors_naming_the_value(mutate, message):
    r = study()
    mutate(r)
    with pytest.raises(ValueError, match=message):
        stats.summarize(r)


def test_compare_all_with_explicit_pairs_and_a_reference_without_grid():
    runs = [run("ref", s, history(step_curve(6))) for s in range(3)]  # uses no grid axis
    for lr in (0.1, 0.01):
        for s in range(3):
            runs.append(run("bn", s, history(step_curve(2)), grid={"learning_rate": lr}))
            runs.append(run("other", s, history(step_curve(4)), grid={"learning_rate": lr}))
    summaries = stats.summarize(results(runs, ["ref", "bn", "other"], [0, 1, 2]))
    comps = stats.compare_all(summaries, quantities=("time_to_threshold",))
    assert [(c.at, c.a, c.b) for c in comps] == [
        ("learning_rate=0.1", "bn", "ref"),
        ("learning_rate=0.01", "bn", "ref"),
        ("learning_rate=0.1", "other", "ref"),
        ("learning_rate=0.01", "other", "ref"),
    ]
    assert [c.test.difference for c in comps] == [-4.0, -4.0, -2.0, -2.0]
    pairs = stats.compare_all(summaries, pairs=[("bn", "other")], quantities=("time_to_threshold",))
    assert [(c.at, c.a, c.b, c.test.difference) for c in pairs] == [
        ("learning_rate=0.1", "bn", "other", -2.0),
        ("learning_rate=0.01", "bn", "other", -2.0),
    ]
    with pytest.raises(ValueError, match=r"variant 'nope'.*choose from: ref, bn, other"):
        stats.compare_all(summaries, pairs=[("bn", "nope")])


def test_report_comparisons_follow_the_experiment_report_table():
    r = study()
    r["experiment"]["report"] = {"reference": "fast", "comparisons": []}
    summaries = stats.summarize(r)
    assert [(c.a, c.b) for c in stats.report_comparisons(r, summaries)][::2] == [
        ("baseline", "fast"),
        ("shaky", "fast"),
    ]
    r["experiment"]["report"] = {"reference": "fast", "comparisons": [["shaky", "baseline"]]}
    assert {(c.a, c.b) for c in stats.report_comparisons(r, summaries)} == {("shaky", "baseline")}
    # Names missing from a partial run fall back to the defaults instead of failing the report.
    r["experiment"]["report"] = {"reference": "gone", "comparisons": [["gone", "baseline"]]}
    assert [(c.a, c.b) for c in stats.report_comparisons(r, summaries)][::2] == [
        ("fast", "baseline"),
        ("shaky", "baseline"),
    ]


def group(variant: str, values: list[float]) -> stats.VariantSummary:
    runs = []
    for seed, v in enumerate(values):
        h = history([0.5, v])
        h["final"]["test_accuracy"] = v
        runs.append(run(variant, seed, h))
    return stats.summarize(results(runs, [variant], list(range(len(values)))))[0]


def test_below_the_minimum_seeds_nothing_is_stated_and_no_mean_ci_is_given():
    few = stats.MIN_SEEDS_FOR_CI - 1
    a, b = group("a", [0.9 + 0.001 * i for i in range(few)]), group("b", [0.5] * few)
    assert a.test_accuracy.ci is None and a.test_accuracy.t_ci is None
    c = stats.compare(a, b)
    assert c.test.detected and not c.detected  # a huge difference, but 4 seeds state nothing
    assert c.sentence() == (
        f"a vs b: too few seeds to compare final test accuracy ({few} and {few} values; "
        f"at least {stats.MIN_SEEDS_FOR_CI} each are needed)"
    )
    enough = stats.MIN_SEEDS_FOR_CI
    a, b = group("a", [0.9 + 0.001 * i for i in range(enough)]), group("b", [0.5] * enough)
    assert a.test_accuracy.ci is not None and stats.compare(a, b).detected


def test_holm_adjusts_the_p_values_of_a_family_step_down():
    """Hand-computed: p = 0.01, 0.04, 0.03, 0.5 -> sorted 0.01, 0.03, 0.04, 0.5 ->
    4·0.01, max(0.04, 3·0.03), max(0.09, 2·0.04), max(0.09, 0.5) = 0.04, 0.09, 0.09, 0.5."""
    base = stats.compare(group("a", [0.9, 0.8, 0.85, 0.7, 0.75]), group("b", [0.5] * 5))
    family = [
        dataclasses.replace(base, test=dataclasses.replace(base.test, p_value=p))
        for p in (0.01, 0.04, 0.03, 0.5)
    ]
    adjusted = stats.holm(family)
    assert [c.p_adjusted for c in adjusted] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert [c.family for c in adjusted] == [4] * 4
    assert [c.detected for c in adjusted] == [True, False, False, False]
    assert "Holm-adjusted p=0.09 over 4 comparisons" in adjusted[1].sentence()


def test_comparison_lines_collapse_what_says_nothing():
    five = stats.MIN_SEEDS_FOR_CI
    strong = group("strong", [0.95, 0.96, 0.94, 0.95, 0.97])
    same = group("same", [0.5, 0.52, 0.49, 0.51, 0.5])
    also = group("also", [0.51, 0.5, 0.5, 0.52, 0.49])
    base = group("base", [0.5, 0.51, 0.5, 0.5, 0.5])
    comparisons = stats.holm(
        [stats.compare(x, base) for x in (strong, same, also)]
        + [stats.compare(x, base, quantity="time_to_threshold") for x in (same, also)]
    )
    lines = stats.comparison_lines(comparisons)
    assert lines[0].startswith("strong has higher final test accuracy than base by")
    assert "Holm-adjusted p" in lines[0] and "over 3 comparisons" in lines[0]
    assert lines[1] == (
        "no detectable difference in final test accuracy (p ≥ 0.05, Holm-adjusted over 3 "
        "comparisons): same vs base; also vs base"
    )
    assert lines[2] == "neither variant reached 80% test accuracy: same vs base; also vs base"
    assert len(lines) == 3
    few = [stats.compare(group("x", [0.6, 0.7]), group("y", [0.5, 0.55]))] * 3
    assert stats.comparison_lines(few) == [
        f"3 comparisons not made: they need at least {five} seeds per variant, these have 2 "
        "(differences and intervals are in summary.json)"
    ]
    assert stats.comparison_lines(few[:1])[0].startswith("1 comparison not made: they need")


# ----------------------------------------------------------------- time per step


def test_step_seconds_divide_each_runs_time_by_the_steps_it_trained():
    base, _, shaky = stats.summarize(study())
    # 20 epochs of 16 steps; seconds 2 + seed
    assert base.step_seconds.by_seed() == {s: pytest.approx((2 + s) / 320) for s in range(5)}
    assert base.step_seconds.mean == pytest.approx(4.0 / 320)
    # the failed seed 4 has no time per step
    assert 4 not in shaky.step_seconds.by_seed()


def test_steps_trained_counts_a_diverged_run_up_to_the_epoch_it_diverged_in():
    h = history([0.5] * 6, steps_per_epoch=10)
    assert stats.steps_trained(h) == 60
    h["diverged"] = True
    h["epochs"]["loss"] = [1.0, 0.9, None, None, None, None]  # diverged during epoch 3
    assert stats.steps_trained(h) == 30
    h["epochs"]["loss"] = [None] * 6  # in the first epoch
    assert stats.steps_trained(h) == 10
    assert stats.steps_trained({"epochs": {"loss": [1.0]}}) is None  # no steps_per_epoch
