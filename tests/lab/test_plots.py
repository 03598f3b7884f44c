"""Plots are checked for what they show: the lines' data, legends, heat-map cells and pixels."""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from bnlab.lab import plots, stats

EPOCHS = 6
SEEDS = (0, 1, 2)


def dashes(line) -> list[float]:
    """A broken line's (on, off) pattern in line widths (get_linestyle says "--" for any)."""
    return list(line._unscaled_dash_pattern[1])


def val_curve(variant: str, seed: int) -> list[float]:
    """Known per-epoch test accuracies: a variant-specific level plus a seed offset."""
    level = {"baseline": 0.70, "bn_after": 0.80, "broken": 0.60}[variant]
    return [round(level + 0.02 * k + 0.01 * seed, 4) for k in range(EPOCHS)]


def history(
    variant: str, seed: int, *, bn: bool, evals: bool = False, probes: bool = False
) -> dict:
    va = val_curve(variant, seed)
    h = {
        "epochs": {
            "loss": [1.0 / (k + 1) + 0.01 * seed for k in range(EPOCHS)],
            "accuracy": [v - 0.05 for v in va],
            "val_loss": [1.2 / (k + 1) + 0.01 * seed for k in range(EPOCHS)],
            "val_accuracy": va,
            "val_accuracy_train_mode": [v + 0.03 for v in va] if bn else None,
        },
        "evals": [],
        "probes": {},
        "final": {
            "train_loss": 0.3,
            "train_accuracy": va[-1] - 0.05,
            "test_loss": 0.4,
            "test_accuracy": va[-1],
        },
        "diverged": False,
        "steps_per_epoch": 4,
    }
    if evals:  # two evaluations per epoch: steps 2, 4, 6, ... at epochs 0.5, 1.0, 1.5, ...
        h["evals"] = [
            {
                "step": 2 * i,
                "epoch": i / 2,
                "val_loss": 1.0 / i,
                "val_accuracy": 0.5 + 0.01 * i + 0.01 * seed,
                "val_accuracy_train_mode": (0.55 + 0.01 * i) if bn else None,
            }
            for i in range(1, 2 * EPOCHS + 1)
        ]
    if probes:
        h["probes"] = {
            "dense.output": {
                "percentiles": [15, 50, 85],
                "steps": [0, 10, 20],
                "values": [[-1.0 - seed, 0.1 * seed, 1.0 + seed + j] for j in range(3)],
            }
        }
    return h


def run(variant: str, seed: int, hist: dict | None, *, grid=None, status="completed") -> dict:
    return {
        "experiment": "synthetic",
        "variant": variant,
        "seed": seed,
        "status": status,
        "history": hist,
        "seconds": 1.5,
        "error": None if hist else "RuntimeError: boom",
        "grid": grid or {},
    }


def results(runs: list[dict], variants: list[str]) -> dict:
    return {
        "schema_version": 1,
        "experiment": {"name": "synthetic"},
        "variants": variants,
        "seeds": list(SEEDS),
        "runs": runs,
        "versions": {"bnlab": "0", "torch": "0", "numpy": "0", "python": "3"},
        "created": "2026-01-01T00:00:00+00:00",
    }


def study(*, evals: bool = False, probes: bool = False) -> dict:
    runs = []
    for seed in SEEDS:
        runs.append(
            run("baseline", seed, history("baseline", seed, bn=False, evals=evals, probes=probes))
        )
        runs.append(
            run("bn_after", seed, history("bn_after", seed, bn=True, evals=evals, probes=probes))
        )
        broken = history("broken", seed, bn=False, evals=evals)
        if seed == 1:  # diverged from epoch 4 on: nulls in the curves and the finals
            broken["epochs"]["val_accuracy"][3:] = [None] * (EPOCHS - 3)
            broken["epochs"]["val_loss"][3:] = [None] * (EPOCHS - 3)
            broken["final"] = dict.fromkeys(broken["final"])
            broken["diverged"] = True
        runs.append(
            run(
                "broken",
                seed,
                broken if seed != 2 else None,
                status="completed" if seed != 2 else "failed",
            )
        )
    return results(runs, ["baseline", "bn_after", "broken"])


def lines_by_label(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def png_pixels(fig) -> np.ndarray:
    return imread(io.BytesIO(plots.figure_png(fig)), format="png")[..., :3]  # (H, W, 3) in [0, 1]


def has_color(pixels: np.ndarray, color: str, tol: float = 0.03) -> bool:
    return bool((np.abs(pixels - np.array(to_rgb(color))).max(axis=-1) < tol).any())


# ----------------------------------------------------------------- curves


def test_curves_show_mean_over_seeds_per_variant_with_train_dashed_and_bn_train_mode_dotted():
    fig = plots.curves_figure(study())
    ax_acc, ax_loss = fig.axes[:2]
    lines = lines_by_label(ax_acc)
    assert sorted(lines) == sorted(
        [
            "baseline: test accuracy",
            "baseline: train accuracy",
            "bn_after: test accuracy",
            "bn_after: train accuracy",
            "bn_after: test accuracy, BN in training mode",
            "broken: test accuracy",
            "broken: train accuracy",
        ]
    )
    test_lines = [name for name in lines if name.endswith(": test accuracy")]
    assert len(test_lines) == 3  # one per variant
    base = lines["baseline: test accuracy"]
    expected = np.mean([val_curve("baseline", s) for s in SEEDS], axis=0)
    np.testing.assert_allclose(base.get_xdata(), np.arange(1, EPOCHS + 1))
    np.testing.assert_allclose(base.get_ydata(), expected, atol=1e-12)
    assert base.get_linestyle() == "-"
    assert dashes(lines["baseline: train accuracy"]) == matplotlib.rcParams["lines.dashed_pattern"]
    np.testing.assert_allclose(
        lines["baseline: train accuracy"].get_ydata(), expected - 0.05, atol=1e-12
    )
    dotted = lines["bn_after: test accuracy, BN in training mode"]
    assert dashes(dotted) == matplotlib.rcParams["lines.dotted_pattern"]
    # each variant's broken lines start at its own offset: coinciding curves show both colors
    offsets = {
        lines[f"{v}: train accuracy"]._unscaled_dash_pattern[0] for v in ("baseline", "bn_after")
    }
    assert len(offsets) == 2
    np.testing.assert_allclose(
        dotted.get_ydata(), np.mean([val_curve("bn_after", s) for s in SEEDS], axis=0) + 0.03
    )
    # The band is min-max over seeds: seed 0 is the lowest, seed 2 the highest curve.
    band = next(
        c for c in ax_acc.collections if c.get_label() == f"baseline: test accuracy ({plots.BAND})"
    )
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(min(val_curve("baseline", 0)))
    assert ys.max() == pytest.approx(max(val_curve("baseline", 2)))
    # Divergence and a failed seed: the mean of the seeds that have a value, no crash.
    broken = lines["broken: test accuracy"].get_ydata()
    np.testing.assert_allclose(broken[3:], val_curve("broken", 0)[3:])  # only seed 0 left there
    assert len(lines_by_label(ax_loss)) == 6
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == ["baseline", "bn_after", "broken"]
    assert "train (epoch mean)" in legend and "test, BN in training mode" in legend
    assert f"band: {plots.BAND}" in legend
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["epoch", "epoch"]


def test_published_test_accuracy_is_a_star_right_of_the_last_epoch():
    r = study()
    pub = {"train_accuracy": 0.8, "epochs_to_threshold": None, "source": "tutorial"}
    r["experiment"]["report"] = {
        "published": {
            "bn_after": {**pub, "test_accuracy": 0.846},
            "broken": {**pub, "test_accuracy": 0.7},
        }
    }
    fig = plots.curves_figure(r)
    lines = lines_by_label(fig.axes[0])
    for k, (variant, value) in enumerate((("bn_after", 0.846), ("broken", 0.7)), start=1):
        star = lines[f"{variant}: published test accuracy"]
        assert star.get_marker() == "*" and star.get_linestyle() == "None"
        np.testing.assert_allclose(star.get_xdata(), [EPOCHS * (1 + 0.02 * k)])
        np.testing.assert_allclose(star.get_ydata(), [value])
        assert to_rgb(star.get_color()) == to_rgb(lines[f"{variant}: test accuracy"].get_color())
    assert "baseline: published test accuracy" not in lines
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "published single run: test accuracy" in legend
    plain = [t.get_text() for t in plots.curves_figure(study()).legends[0].get_texts()]
    assert "published single run: test accuracy" not in plain


def test_curves_use_the_finer_evals_with_fractional_epochs():
    fig = plots.curves_figure(study(evals=True))
    lines = lines_by_label(fig.axes[0])
    test = lines["baseline: test accuracy"]
    np.testing.assert_allclose(test.get_xdata(), np.arange(1, 2 * EPOCHS + 1) / 2)
    np.testing.assert_allclose(test.get_ydata(), 0.5 + 0.01 * np.arange(1, 2 * EPOCHS + 1) + 0.01)
    assert len(lines["baseline: train accuracy"].get_xdata()) == EPOCHS  # train stays per epoch


def test_curves_image_is_not_blank_and_draws_each_variant_color():
    fig = plots.curves_figure(study())
    pixels = png_pixels(fig)
    assert pixels.shape[:2] == (
        round(fig.get_figheight() * plots.DPI),
        round(fig.get_figwidth() * plots.DPI),
    )
    assert pixels.std() > 0.05
    for color in plots._COLORS[:3]:
        assert has_color(pixels, color)


def test_curves_get_one_row_per_grid_point():
    runs = [
        run(v, s, history(v, s, bn=v == "bn_after"), grid={"learning_rate": lr})
        for lr in (0.1, 0.01)
        for v in ("baseline", "bn_after")
        for s in SEEDS
    ]
    fig = plots.curves_figure(results(runs, ["baseline", "bn_after"]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [
        "accuracy — learning_rate=0.1",
        "loss — learning_rate=0.1",
        "accuracy — learning_rate=0.01",
        "loss — learning_rate=0.01",
    ]
    for ax in fig.axes[::2]:
        assert sum(name.endswith(": test accuracy") for name in lines_by_label(ax)) == 2


# ----------------------------------------------------------------- grid


CHANCE = 0.55


def grid_study(axes: dict[str, tuple]) -> dict:
    """Final test accuracy = 0.5 + 0.1·(index on first axis) + 0.01·(index on second) + bn 0.2.

    Chance accuracy is 0.55, so no_bn at the first value of the first axis did not learn
    (3/3). At its last value seed 0's loss is NaN and seed 1's blew up (1.1 > 2 × initial 0.5):
    2/3 diverged; seed 2's 0.95 stays below 2 × 0.5.
    """
    names = list(axes)
    runs = []
    points = [dict(zip(names, combo, strict=True)) for combo in _product(*axes.values())]
    for point in points:
        idx = [axes[n].index(point[n]) for n in names]
        for variant in ("no_bn", "bn"):
            for seed in SEEDS:
                h = history("baseline", seed, bn=variant == "bn")
                h["initial_loss"], h["chance_accuracy"] = 0.5, CHANCE
                value = (
                    0.5
                    + 0.1 * idx[0]
                    + (0.01 * idx[1] if len(idx) > 1 else 0)
                    + (0.2 if variant == "bn" else 0)
                )
                h["final"]["test_accuracy"] = value + 0.001 * (seed - 1)  # seed mean = value
                if variant == "no_bn" and idx[0] == len(axes[names[0]]) - 1:
                    if seed == 0:
                        h["diverged"] = True
                    h["epochs"]["loss"][-1] = {0: None, 1: 1.1, 2: 0.95}[seed]
                runs.append(run(variant, seed, h, grid=point))
    return results(runs, ["no_bn", "bn"])


def sweeps(ax) -> dict[str, object]:
    """Errorbar containers of a sweep panel by variant: .lines = (data line, caps, bars)."""
    return {c.get_label(): c for c in ax.containers}


def _product(*pools):
    out = [()]
    for pool in pools:
        out = [(*x, y) for x in out for y in pool]
    return out


def test_grid_heat_map_cells_hold_the_mean_final_test_accuracy_annotated():
    r = grid_study({"learning_rate": (0.001, 0.01), "activation": ("sigmoid", "relu")})
    fig = plots.grid_figure(r)
    maps = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in maps] == ["no_bn", "bn"]
    for ax, offset in zip(maps, (0.0, 0.2), strict=True):
        cells = ax.images[0].get_array()
        np.testing.assert_allclose(
            cells, [[0.5 + offset, 0.51 + offset], [0.6 + offset, 0.61 + offset]], atol=1e-12
        )
        texts = [t.get_text().split("\n")[0] for t in ax.texts]
        assert f"{0.5 + offset:.3f}" in texts
        assert [t.get_text() for t in ax.get_xticklabels()] == ["sigmoid", "relu"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0.001", "0.01"]
        assert (ax.get_ylabel(), ax.get_xlabel()) == ("learning_rate", "activation")
    texts = [t.get_text() for t in maps[0].texts]
    assert texts == [
        "0.500\n3/3 no-learn",
        "0.510\n3/3 no-learn",
        "0.600\n2/3 div",
        "0.610\n2/3 div",
    ]
    assert [t.get_text() for t in maps[1].texts] == ["0.700", "0.710", "0.800", "0.810"]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert png_pixels(fig).std() > 0.05


def test_one_axis_grid_plots_accuracy_against_the_axis_on_a_log_scale():
    r = grid_study({"learning_rate": (1e-4, 1e-3, 1e-2, 1e-1, 1.0)})
    fig = plots.grid_figure(r)
    ax, strip = fig.axes
    assert ax.get_xscale() == "log" and strip.get_xlabel() == "learning_rate"
    assert [t.get_text() for t in strip.get_xticklabels()] == [
        "0.0001",
        "0.001",
        "0.01",
        "0.1",
        "1",
    ]
    lines = sweeps(ax)
    assert list(lines) == ["no_bn", "bn"]
    for variant, offset in (("no_bn", 0.5), ("bn", 0.7)):
        data_line, _, (bars,) = lines[variant].lines
        assert data_line.get_linestyle() == "-"  # a numeric sweep is one line
        np.testing.assert_allclose(data_line.get_xdata(), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
        np.testing.assert_allclose(data_line.get_ydata(), offset + 0.1 * np.arange(5), atol=1e-12)
        # error bars span the 95% bootstrap CI of the three seeds' accuracies
        ci = stats.bootstrap_mean_ci([offset + 0.001 * (s - 1) for s in SEEDS])
        (x0, low), (_, high) = bars.get_segments()[0]
        assert x0 == 1e-4 and (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "no_bn",
        "bn",
        "chance (most frequent class)",
    ]
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert list(chance[0].get_ydata()) == [CHANCE, CHANCE]
    # the counts panel: a row per variant; no_bn did not learn at 1e-4 and diverged at 1
    cells = {(t.get_position(), t.get_text()) for t in strip.texts}
    assert cells == {((1e-4, 0), "3/3 no-learn"), ((1.0, 0), "2/3 div")}
    assert [t.get_text() for t in strip.get_yticklabels()] == ["no_bn", "bn"]


def test_one_categorical_axis_gets_separate_points_side_by_side_without_lines():
    r = grid_study({"activation": ("relu", "sigmoid", "tanh")})
    fig = plots.grid_figure(r)
    ax, strip = fig.axes
    assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in strip.get_xticklabels()] == ["relu", "sigmoid", "tanh"]
    lines = sweeps(ax)
    for variant, dodge, offset in (("no_bn", -0.075, 0.5), ("bn", 0.075, 0.7)):
        data_line = lines[variant].lines[0]
        assert data_line.get_linestyle() == "None"  # nothing joins the categories
        np.testing.assert_allclose(data_line.get_xdata(), np.arange(3) + dodge, atol=1e-12)
        np.testing.assert_allclose(data_line.get_ydata(), offset + 0.1 * np.arange(3), atol=1e-12)
    assert all(
        line.get_linestyle() == "None" or line.get_label().startswith("chance")
        for line in ax.get_lines()
    )
    cells = {(t.get_position(), t.get_text()) for t in strip.texts}
    assert cells == {((0, 0), "3/3 no-learn"), ((2, 0), "2/3 div")}


def test_sweep_notes_runs_recorded_without_the_verdicts_numbers():
    r = grid_study({"learning_rate": (0.01, 0.1)})
    for x in r["runs"]:
        del x["history"]["initial_loss"], x["history"]["chance_accuracy"]
    strip = plots.grid_figure(r).axes[1]
    assert "12 runs were recorded without initial loss or chance accuracy" in strip.get_title()
    assert {t.get_text() for t in strip.texts} == {"1/3 div"}  # seed 0's NaN still counts


def test_no_grid_and_no_probes_give_no_figure():
    assert plots.grid_figure(study()) is None
    assert plots.probes_figure(study()) is None
    assert set(plots.make_figures(study())) == {"curves"}


# ----------------------------------------------------------------- probes


def test_probe_lines_are_mean_percentiles_over_seeds_per_variant():
    fig = plots.probes_figure(study(probes=True))
    ax = fig.axes[0]
    assert ax.get_title() == "dense.output" and ax.get_xlabel() == "step"
    lines = lines_by_label(ax)
    assert sorted(lines) == sorted(
        f"{v}: p{p}" for v in ("baseline", "bn_after") for p in (15, 50, 85)
    )
    high = lines["bn_after: p85"]
    np.testing.assert_allclose(high.get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(high.get_ydata(), [2.0, 3.0, 4.0])  # 1 + mean(seed) + j
    assert lines["bn_after: p50"].get_linestyle() == "-" and high.get_linestyle() == "--"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [
        "baseline",
        "bn_after",
        "broken",
        "percentile 15",
        "percentile 50",
        "percentile 85",
    ]
    assert png_pixels(fig).std() > 0.05


# ----------------------------------------------------------------- files


def test_write_plots_saves_decodable_pngs_of_each_figure(tmp_path):
    paths = plots.write_plots(study(probes=True), tmp_path)
    assert set(paths) == {"curves", "probes"}
    for name, path in paths.items():
        assert path == tmp_path / f"{name}.png"
        pixels = imread(path)[..., :3]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels.std() > 0.05, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "curves.png",
        "probes.png",
    ]  # no temp files left


def test_plots_are_drawn_without_warnings_for_all_null_curves():
    r = study()
    for x in r["runs"]:
        if x["variant"] == "broken" and x["history"]:
            x["history"]["epochs"]["val_accuracy"] = [None] * EPOCHS
            x["history"]["epochs"]["val_loss"] = [math.nan] * EPOCHS
    fig = plots.curves_figure(r)  # warnings are errors under pytest
    assert "broken: test accuracy" not in lines_by_label(fig.axes[0])
    assert "broken: train accuracy" in lines_by_label(fig.axes[0])


def test_grid_map_leaves_out_variants_that_use_no_grid_axis():
    r = grid_study({"learning_rate": (0.001, 0.01), "activation": ("sigmoid", "relu")})
    r["runs"] += [run("plain", s, history("baseline", s, bn=False)) for s in SEEDS]
    r["variants"].append("plain")
    fig = plots.grid_figure(r)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["no_bn", "bn"]
