"""Published single runs placed among our seeds: ranks, percentiles, ranges and CIs.

Synthetic results.json dicts with known per-seed numbers (no training); percentile ranks are
checked against scipy.stats.percentileofscore(kind="mean"), intervals against stats'.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import percentileofscore

from bnlab.lab import published, stats

SEEDS = tuple(range(10))
EPOCHS = 40
TEST_ACC = [0.80 + 0.01 * i for i in SEEDS]  # 0.80 .. 0.89 (0.83 is 0.8300000000000001)
TRAIN_ACC = [0.78 + 0.01 * i for i in SEEDS]
REACH = [18, 19, 20, 20, 22, 25, 30, 35, None, None]  # epoch of first val_accuracy >= 0.80


def history(seed: int) -> dict:
    reach = REACH[seed] or EPOCHS + 1
    va = [0.85 if k >= reach else 0.5 for k in range(1, EPOCHS + 1)]
    return {
        "epochs": {
            "loss": [0.5] * EPOCHS,
            "accuracy": va,
            "val_loss": [0.5] * EPOCHS,
            "val_accuracy": va,
            "val_accuracy_train_mode": None,
        },
        "evals": [],
        "probes": {},
        "final": {
            "train_loss": 0.4,
            "train_accuracy": TRAIN_ACC[seed],
            "test_loss": 0.4,
            "test_accuracy": TEST_ACC[seed],
        },
        "diverged": False,
        "steps_per_epoch": 16,
    }


def results(pub: dict, *, variants=("bn", "base"), grids=({},)) -> dict:
    runs = [
        {
            "experiment": "synthetic",
            "variant": v,
            "seed": seed,
            "status": "completed",
            "history": history(seed),
            "seconds": 1.0,
            "error": None,
            "grid": grid,
        }
        for v in variants
        for grid in grids
        for seed in SEEDS
    ]
    return {
        "schema_version": 1,
        "experiment": {
            "name": "synthetic",
            "report": {
                "threshold_metric": "val_accuracy",
                "threshold": 0.8,
                "reference": variants[0],
                "comparisons": [],
                "published": pub,
            },
        },
        "variants": list(variants),
        "seeds": list(SEEDS),
        "runs": runs,
        "versions": {},
        "created": "2026-01-01T00:00:00+00:00",
    }


def entry(test: float, train: float = 0.8, epochs: float | None = None) -> dict:
    return {
        "train_accuracy": train,
        "test_accuracy": test,
        "epochs_to_threshold": epochs,
        "source": "a tutorial",
    }


def published_test_row(pub_value: float) -> published.PublishedComparison:
    rows = published.compare_published(results({"bn": entry(pub_value)}))
    (row,) = [r for r in rows if r.quantity == "test_accuracy"]
    return row


@pytest.mark.parametrize(
    ("value", "below", "equal", "words"),
    [
        (0.846, 5, 0, "above 5 of 10 seeds"),
        (0.83, 3, 1, "above 3 of 10 seeds, equal to 1"),  # a tie despite 0.8300000000000001
        (0.80, 0, 1, "above 0 of 10 seeds, equal to 1"),
        (0.95, 10, 0, "above all 10 seeds"),
        (0.50, 0, 0, "below all 10 seeds"),
    ],
    ids=["between", "tie", "tie-at-min", "above-all", "below-all"],
)
def test_rank_and_percentile_of_a_published_accuracy(value, below, equal, words) -> None:
    c = published_test_row(value)
    assert (c.n, c.below, c.equal, c.above) == (10, below, equal, 10 - below - equal)
    assert c.rank_words() == words
    reference = percentileofscore(np.round(TEST_ACC, 12), value, kind="mean")
    assert c.percentile == pytest.approx(reference, abs=1e-12)


def test_mean_ci_range_and_where_it_lies() -> None:
    c = published_test_row(0.846)
    ci = stats.bootstrap_mean_ci(TEST_ACC)
    assert c.mean == pytest.approx(np.mean(TEST_ACC), abs=1e-15)
    assert (c.ci.low, c.ci.high) == (ci.low, ci.high)
    assert (c.low, c.high) == (pytest.approx(0.80), pytest.approx(0.89))
    assert c.inside_range and c.inside_ci
    assert c.where_words() == "inside our seed range and 95% CI"
    assert c.sentence() == (
        f"bn test accuracy: the published 0.846 lies inside our seed range 0.800–0.890 and "
        f"inside the 95% CI {ci.low:.3f}–{ci.high:.3f} of our mean {np.mean(TEST_ACC):.3f}; "
        "it is above 5 of 10 seeds (percentile 50)"
    )

    # inside the seed range, below the CI of the mean (about 0.83-0.86)
    low = published_test_row(0.81)
    assert low.inside_range and low.inside_ci is False
    assert low.where_words() == "inside our seed range, below the 95% CI of our mean"
    assert " but below the 95% CI " in low.sentence()

    high = published_test_row(0.95)
    assert not high.inside_range and high.where_words() == "above every seed"
    assert high.sentence() == (
        f"bn test accuracy: the published 0.950 lies outside our seed range 0.800–0.890, above "
        f"all 10 seeds (percentile 100); our mean {np.mean(TEST_ACC):.3f}, "
        f"95% CI {ci.low:.3f}–{ci.high:.3f}"
    )
    assert published_test_row(0.5).where_words() == "below every seed"


def test_epochs_to_threshold_count_never_as_above_and_summarize_the_seeds_that_reached_it() -> None:
    rows = published.compare_published(results({"bn": entry(0.846, 0.8, epochs=20)}))
    assert [r.quantity for r in rows] == ["train_accuracy", "test_accuracy", "epochs_to_threshold"]
    c = rows[2]
    assert c.words == "epochs to 80% test accuracy"
    assert c.values == (18, 19, 20, 20, 22, 25, 30, 35, math.inf, math.inf)
    assert (c.below, c.equal, c.above, c.never) == (2, 2, 6, 2)
    assert c.percentile == pytest.approx(percentileofscore(c.values, 20, kind="mean"))
    assert c.percentile == pytest.approx(30.0)
    reached = [18, 19, 20, 20, 22, 25, 30, 35]
    ci = stats.bootstrap_mean_ci(reached)
    assert c.mean == pytest.approx(np.mean(reached))
    assert (c.ci.low, c.ci.high) == (ci.low, ci.high)
    assert (c.range_text(), c.inside_range) == ("18–never", True)
    assert c.rank_words() == "above 2 of 10 seeds, equal to 2"
    assert c.sentence().endswith("(percentile 30); 2 of 10 seeds never reached it")
    assert "of our mean (seeds that reached it) 23.6" in c.sentence()
    # a published number no seed reached as late: still inside the range that ends at "never"
    late = published.compare_published(results({"bn": entry(0.846, 0.8, epochs=80)}))[2]
    assert (late.below, late.above, late.inside_range) == (8, 2, True)


def test_rows_follow_the_variants_and_grid_points_with_runs() -> None:
    pub = {"base": entry(0.85), "ghost": entry(0.9)}  # ghost has no runs: left out
    rows = published.compare_published(results(pub))
    assert [(r.label, r.quantity) for r in rows] == [
        ("base", "train_accuracy"),
        ("base", "test_accuracy"),
    ]
    grids = ({"lr": 0.1}, {"lr": 0.01})
    rows = published.compare_published(results({"bn": entry(0.85)}, grids=grids))
    assert [r.label for r in rows] == ["bn [lr=0.1]"] * 2 + ["bn [lr=0.01]"] * 2
    assert published.compare_published(results({})) == []
    old = results({})
    del old["experiment"]["report"]["published"]  # results.json written before the key existed
    assert published.compare_published(old) == []


def test_compact_rows_fit_the_command_line() -> None:
    rows = published.compare_published(results({"bn": entry(0.83, 0.95, epochs=20)}))
    headers, table = published.compact_rows(rows)
    assert headers[:4] == ["variant", "", "published", "ours [95% CI]"]
    ci = stats.bootstrap_mean_ci(TEST_ACC)
    assert table[1] == [
        "bn",
        "test acc",
        "0.830",
        f"{np.mean(TEST_ACC):.3f} [{ci.low:.3f},{ci.high:.3f}]",
        "0.800–0.890",
        "3/10 (=1)",
        "yes/yes",
    ]
    assert table[0][-2:] == ["10/10", "no/no"]  # train: 0.95 above every seed
    assert table[2][1:3] == ["epochs", "20"] and table[2][4] == "18–never"
    widths = [
        max(len(line) for r in [headers, *table] for line in r[i].split("\n")) for i in range(7)
    ]
    assert sum(widths) + 6 <= 80  # one space between columns
