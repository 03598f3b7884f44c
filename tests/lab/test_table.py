"""The one table model: cells from the summaries, text within 80 columns, HTML with the same cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.lab.test_report import EPOCHS, TEST_ACC, make_results

from bnlab.lab import stats
from bnlab.lab import table as tables


def test_summary_cells_hold_both_train_accuracies_and_the_summary_numbers():
    summaries = stats.summarize(make_results())
    t = tables.summary_table(summaries, "synthetic")
    heads = [c.short for c in t.columns]
    assert heads == [
        "variant",
        "n",
        "div",
        "chance",
        "fit",
        "train",
        "test",
        "batch",
        "to 80%",
        "never",
        "ms/step",
    ]  # 4 seeds: no CI column
    long = {c.short: c.long for c in t.columns}
    assert long["fit"] == "train acc, training mode (as Keras logs it)"
    assert long["train"] == "train acc, inference mode"
    rows = {r[0]: dict(zip(heads, r, strict=True)) for r in t.rows}
    acc = np.array(TEST_ACC["baseline"])
    base = rows["baseline"]
    assert base["test"] == f"{acc.mean():.3f}" and base["train"] == f"{(acc - 0.01).mean():.3f}"
    # fit: the last epoch's running training accuracy, 0.85 - 0.01 (seed + 1), mean over seeds
    assert base["fit"] == f"{np.mean([0.85 - 0.01 * (s + 1) for s in range(4)]):.3f}"
    assert base["batch"] == "—" and rows["bn_after"]["batch"] == "0.870"
    assert (base["to 80%"], base["never"], base["n"]) == ("5", "0/4", "4")
    assert [rows["shaky"][k] for k in ("n", "div", "chance", "to 80%", "never")] == [
        "3 (1)",
        "2",
        "2",
        "never",
        "3/3",
    ]
    assert t.warn[2][heads.index("div")] and not t.warn[0][heads.index("div")]
    assert t.notes == (
        "no confidence intervals: they need at least 5 seeds per group (fewest here: 2)",
    )  # shaky: seed 1 null, seed 3 failed
    assert EPOCHS == 8


def test_a_ci_column_appears_from_the_minimum_number_of_seeds(monkeypatch):
    monkeypatch.setattr(stats, "MIN_SEEDS_FOR_CI", 2)
    summaries = stats.summarize(make_results())
    t = tables.summary_table(summaries)
    i = [c.short for c in t.columns].index("95% CI")
    ci = summaries[0].test_accuracy.ci
    assert t.rows[0][i] == f"{ci.low:.3f}–{ci.high:.3f}"
    assert t.notes == ()


def test_verdicts_of_old_records_are_marked_unknown():
    r = make_results()
    for x in r["runs"]:
        if x["history"] is not None:
            del x["history"]["initial_loss"], x["history"]["chance_accuracy"]
    t = tables.summary_table(stats.summarize(r))
    heads = [c.short for c in t.columns]
    cells = [[row[heads.index(k)] for k in ("div", "chance")] for row in t.rows]
    # seed 1's NaN is recognised in any record; seeds 0 and 2 cannot be judged
    assert cells == [["0 (4?)", "0 (4?)"], ["0 (4?)", "0 (4?)"], ["1 (2?)", "1 (2?)"]]


def long_named(results: dict) -> dict:
    for run in results["runs"]:
        run["variant"] = {"baseline": "bn_momentum_0_99"}.get(
            run["variant"], run["variant"]
        )
    results["variants"][0] = "bn_momentum_0_99"
    return results


def test_text_fits_80_columns_and_never_breaks_a_name():
    t = tables.summary_table(stats.summarize(long_named(make_results())), "synthetic: 4 seeds")
    text = tables.to_text(t)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0] == "synthetic: 4 seeds"
    assert lines[1].split() == " ".join(c.short for c in t.columns).split()
    assert lines[3].startswith("bn_momentum_0_99 ")
    assert "fit = train accuracy as Keras logs it" in text.replace("\n", " ")
    assert "train = final train accuracy in inference mode" in text.replace("\n", " ")


def test_html_and_markdown_render_the_same_cells_with_long_headers():
    t = tables.summary_table(stats.summarize(make_results()))
    html = tables.to_html(t)
    for c in t.columns:
        assert f">{c.long}</th>" in html
    for row in t.rows:
        for cell in row:
            assert f">{cell}</t" in html
    assert html.count('class="num warn"') == 3  # shaky: failed, diverged, did not learn
    md = tables.to_markdown(t).splitlines()
    assert md[0].startswith("| variant | completed runs | diverged |")
    assert md[1].startswith("| --- | ---: |") and len(md) == 2 + len(t.rows)


def grid_results() -> dict:
    r = make_results()
    runs = []
    for lr in (0.01, 0.1, 1.0):
        for run in r["runs"]:
            if run["variant"] != "shaky":
                runs.append({**run, "grid": {"learning_rate": lr, "activation": "relu"}})
    r["runs"] = runs
    r["variants"] = ["baseline", "bn_after"]
    return r


def test_pivot_puts_the_grid_values_across_and_the_variants_down():
    summaries = stats.summarize(grid_results())
    t = tables.pivot_table(summaries, "pivot")
    assert [c.short for c in t.columns] == ["variant", "acti", "0.01", "0.1", "1"]
    mean = {v: f"{np.mean(a):.3f}" for v, a in TEST_ACC.items()}
    assert t.rows == (
        ("baseline", "relu", mean["baseline"], mean["baseline"], mean["baseline"]),
        ("bn_after", "relu", mean["bn_after"], mean["bn_after"], mean["bn_after"]),
    )
    assert "columns: learning rate; cells: mean final test accuracy" in t.notes
    assert max(map(len, tables.to_text(t).splitlines())) <= 80
    assert tables.pivot_table(stats.summarize(make_results())) is None


@pytest.mark.parametrize(
    ("name", "short"), [("learning_rate", "lr"), ("batch_size", "bs"), ("activation", "acti")]
)
def test_axis_abbreviations(name, short):
    assert tables.abbreviation(name) == short


def test_one_number_formatter():
    from bnlab.lab import fmt

    assert [fmt.accuracy(x) for x in (0.84567, None, math.nan)] == ["0.846", "—", "—"]
    assert [fmt.number(x) for x in (12.0, 12.5, 0.01234, 1234.4, math.inf)] == [
        "12",
        "12.5",
        "0.0123",
        "1234",
        "never",
    ]
    assert fmt.interval(0.8421, 0.8479) == "0.842–0.848" and fmt.interval(0.5, 0.5) == "0.500"
    assert (fmt.p_value(0.0001), fmt.p_value(0.01234)) == ("p<0.001", "p=0.0123")


def _layer(name: str, log_ratio: float, dropout: float | None = None) -> dict:
    return {"name": name, "steps_seen": 450, "initial_weight": 0.99**450,
            "mean_distance": 0.1, "log_variance_ratio": log_ratio,
            "dropout_variance_ratio": dropout}


def test_statistics_table_gives_each_layer_the_geometric_mean_over_seeds_and_its_ci():
    logs = [0.70, 0.75, 0.80, 0.85, 0.90]
    runs = [
        {"variant": "dropout_then_bn", "name": "dropout_then_bn[rate=0.5]", "seed": s,
         "findings": ["dropout_before_bn", "stale_statistics"] if s < 3 else ["dropout_before_bn"],
         "layers": [_layer("batch_normalization", logs[s], 2.0),
                    _layer("batch_normalization_1", 0.0)]}
        for s in range(5)
    ] + [{"variant": "no_bn", "name": "no_bn", "seed": s, "findings": [], "layers": []}
         for s in range(5)]
    t = tables.statistics_table({"runs": runs})
    heads = [c.short for c in t.columns]
    assert heads == ["variant", "layer", "n", "var×", "95% CI", "off", "drop×", "init"]
    first, second = (dict(zip(heads, r, strict=True)) for r in t.rows)  # no_bn has no BN row
    assert first["variant"] == "dropout_then_bn[rate=0.5]" and second["variant"] == ""
    assert first["var×"] == f"{math.exp(np.mean(logs)):.2f}"  # geometric mean of the ratios
    ci = stats.bootstrap_mean_ci(logs)
    assert first["95% CI"] == f"{math.exp(ci.low):.2f}–{math.exp(ci.high):.2f}"
    assert (first["drop×"], second["drop×"]) == ("2.00", "—")
    assert first["init"] == f"{100 * 0.99**450:.1f}%" and first["off"] == "0.10"
    assert t.notes[1] == ("doctor's findings (seeds that have each): dropout_then_bn[rate=0.5]: "
                          "dropout_before_bn 5/5, stale_statistics 3/5")  # variants with BN only
    assert max(map(len, tables.to_text(t).splitlines())) <= 80
    assert tables.statistics_table({"runs": runs[5:]}) is None  # no BN layer anywhere
