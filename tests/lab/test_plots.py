"""Plots are checked for what they show: the lines' data, legends, heat-map cells and pixels."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from bnlab.lab import plots, stats

EPOCHS = 6
SEEDS = (0, 1, 2)


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

TEST = plots.ACCURACY_SERIES[0].words
BATCH = plots.ACCURACY_SERIES[1].words
TRAIN = plots.ACCURACY_SERIES[2].words


def panels(fig) -> dict[str, object]:
    """Visible panels by title (a variant, and its grid point on a second line)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def drawn_pixels(fig, lines, dpi: int = 100) -> dict[str, int]:
    """Per line, the pixels that change when it alone is hidden: what a reader sees of it."""
    fig.set_dpi(dpi)

    def pixels():
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)

    shown = pixels()
    out = {}
    for line in lines:
        line.set_visible(False)
        out[line.get_label()] = int((np.abs(shown - pixels()).max(axis=-1) > 40).sum())
        line.set_visible(True)
    return out


def test_curves_are_small_multiples_a_panel_per_variant_with_the_reference_in_grey():
    fig = plots.curves_figure(study())
    by_title = panels(fig)
    assert list(by_title) == ["baseline", "bn_after\ngrey: baseline", "broken\ngrey: baseline"]
    base, bn, broken = by_title.values()
    assert base.get_shared_y_axes().joined(base, bn) and base.get_shared_x_axes().joined(bn, broken)
    lines = lines_by_label(bn)
    assert sorted(lines) == sorted(
        [f"bn_after: {TEST}", f"bn_after: {BATCH}", f"bn_after: {TRAIN}", f"baseline: {TEST}"]
    )
    expected = np.mean([val_curve("bn_after", s) for s in SEEDS], axis=0)
    test = lines[f"bn_after: {TEST}"]
    np.testing.assert_allclose(test.get_xdata(), np.arange(1, EPOCHS + 1))
    np.testing.assert_allclose(test.get_ydata(), expected, atol=1e-12)
    np.testing.assert_allclose(lines[f"bn_after: {BATCH}"].get_ydata(), expected + 0.03)
    np.testing.assert_allclose(lines[f"bn_after: {TRAIN}"].get_ydata(), expected - 0.05)
    # colour = data set (test / training), line style = BN mode (solid inference, dashed training)
    assert to_rgb(test.get_color()) == to_rgb(lines[f"bn_after: {BATCH}"].get_color())
    assert to_rgb(test.get_color()) != to_rgb(lines[f"bn_after: {TRAIN}"].get_color())
    assert test.get_linestyle() == "-"
    assert lines[f"bn_after: {BATCH}"].get_linestyle() == "--"
    assert lines[f"bn_after: {TRAIN}"].get_linestyle() == "--"
    reference = lines[f"baseline: {TEST}"]
    assert to_rgb(reference.get_color()) == to_rgb(plots.REFERENCE_COLOR)
    np.testing.assert_allclose(
        reference.get_ydata(), np.mean([val_curve("baseline", s) for s in SEEDS], axis=0)
    )
    assert f"baseline: {TEST}" in lines_by_label(broken)
    assert not any(label.startswith("bn_after") for label in lines_by_label(base))
    # The band is min-max over seeds: seed 0 is the lowest, seed 2 the highest curve.
    band = next(c for c in base.collections if c.get_label() == f"baseline: {TEST} ({plots.BAND})")
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(min(val_curve("baseline", 0)))
    assert ys.max() == pytest.approx(max(val_curve("baseline", 2)))
    # Divergence and a failed seed: the mean of the seeds that have a value, no crash.
    np.testing.assert_allclose(
        lines_by_label(broken)[f"broken: {TEST}"].get_ydata()[3:], val_curve("broken", 0)[3:]
    )
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == [TEST, f"band: {plots.BAND}", BATCH, TRAIN]
    assert legend[4].startswith("grey: the variant named in the panel's title")
    assert [ax.get_xlabel() for ax in (base, bn, broken)] == ["epoch"] * 3  # one row


def test_loss_figure_has_the_same_panels_with_test_and_training_loss():
    fig = plots.loss_figure(study())
    bn = panels(fig)["bn_after\ngrey: baseline"]
    assert sorted(lines_by_label(bn)) == sorted(
        [f"bn_after: {s.words}" for s in plots.LOSS_SERIES]
        + [f"baseline: {plots.LOSS_SERIES[0].words}"]
    )
    assert bn.get_ylabel() == "" and panels(fig)["baseline"].get_ylabel() == "loss"


def one_epoch_study() -> dict:
    """One epoch per run: every series is a single point; BN's two test accuracies coincide."""
    runs = []
    for seed in SEEDS:
        for variant in ("baseline", "bn_after"):
            h = history(variant, seed, bn=variant == "bn_after")
            for key, values in h["epochs"].items():
                if values is not None:
                    h["epochs"][key] = values[:1]
            if variant == "bn_after":
                h["epochs"]["val_accuracy_train_mode"] = list(h["epochs"]["val_accuracy"])
            runs.append(run(variant, seed, h))
    return results(runs, ["baseline", "bn_after"])


@pytest.mark.parametrize("make", [plots.curves_figure, plots.loss_figure], ids=["acc", "loss"])
def test_every_series_is_visible_even_a_single_point_hiding_under_another(make):
    fig = make(one_epoch_study())
    lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_label()[0] != "_"]
    assert len(lines) >= 4 + (make is plots.curves_figure)  # + BN's batch-statistics series
    assert all(len(line.get_xdata()) == 1 for line in lines)
    seen = drawn_pixels(fig, lines)
    assert min(seen.values()) >= 8, seen
    # the x axis starts at 0 instead of zooming into 0.96-1.04 around the lone point
    assert fig.axes[0].get_xlim()[0] == 0 and fig.axes[0].get_xlim()[1] < 1.5


def test_long_series_are_lines_without_markers():
    long = study()
    for r in long["runs"]:
        if r["history"]:
            for key, values in r["history"]["epochs"].items():
                if values is not None:
                    r["history"]["epochs"][key] = values * 5  # 30 epochs
    for line in panels(plots.curves_figure(long))["baseline"].get_lines():  # 30 epochs
        assert line.get_marker() in (None, "None", "")
    for line in panels(plots.curves_figure(study()))["baseline"].get_lines():
        assert line.get_marker() == "o"


def test_published_test_accuracy_is_a_star_right_of_the_last_epoch_unless_settings_differ():
    r = study()
    pub = {"train_accuracy": 0.8, "epochs_to_threshold": None, "source": "tutorial"}
    r["experiment"]["report"] = {
        "published": {
            "bn_after": {**pub, "test_accuracy": 0.846, "epochs": EPOCHS},
            "broken": {**pub, "test_accuracy": 0.7},
        }
    }
    r["experiment"]["variants"] = [
        {"name": v, "base": v, "grid": {}, "layers": [], "train": {"epochs": EPOCHS}}
        for v in ("baseline", "bn_after", "broken")
    ]
    fig = plots.curves_figure(r)
    for variant, value in (("bn_after", 0.846), ("broken", 0.7)):
        star = lines_by_label(panels(fig)[f"{variant}\ngrey: baseline"])[
            f"{variant}: published test accuracy"
        ]
        assert star.get_marker() == "*" and star.get_linestyle() == "None"
        np.testing.assert_allclose(star.get_xdata(), [EPOCHS * 1.03])
        np.testing.assert_allclose(star.get_ydata(), [value])
    assert "baseline: published test accuracy" not in lines_by_label(panels(fig)["baseline"])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "published single run: test accuracy" in legend
    # a published 6-epoch number is not placed next to a 3-epoch run
    for v in r["experiment"]["variants"]:
        v["train"]["epochs"] = 3
    shorter = plots.curves_figure(r)
    bn, broken = (panels(shorter)[f"{v}\ngrey: baseline"] for v in ("bn_after", "broken"))
    assert "bn_after: published test accuracy" not in lines_by_label(bn)
    assert "broken: published test accuracy" in lines_by_label(broken)


def test_sub_epoch_evaluations_put_training_steps_on_the_x_axis():
    fig = plots.curves_figure(study(evals=True))
    bn = panels(fig)["bn_after\ngrey: baseline"]
    lines = lines_by_label(bn)
    test = lines[f"bn_after: {TEST}"]
    np.testing.assert_allclose(test.get_xdata(), 2 * np.arange(1, 2 * EPOCHS + 1))  # steps
    np.testing.assert_allclose(test.get_ydata(), 0.5 + 0.01 * np.arange(1, 2 * EPOCHS + 1) + 0.01)
    # per-epoch training accuracy sits at the step that ends each epoch (4 steps per epoch)
    np.testing.assert_allclose(
        lines[f"bn_after: {TRAIN}"].get_xdata(), 4 * np.arange(1, EPOCHS + 1)
    )
    assert panels(fig)["broken\ngrey: baseline"].get_xlabel() == "training steps"


def test_curves_get_a_row_of_panels_per_grid_point_titled_in_words():
    runs = [
        run(v, s, history(v, s, bn=v == "bn_after"), grid={"learning_rate": lr})
        for lr in (0.1, 0.01)
        for v in ("baseline", "bn_after")
        for s in SEEDS
    ]
    fig = plots.curves_figure(results(runs, ["baseline", "bn_after"]))
    assert list(panels(fig)) == [
        "baseline\nlearning rate 0.1",
        "bn_after\ngrey: baseline, learning rate 0.1",
        "baseline\nlearning rate 0.01",
        "bn_after\ngrey: baseline, learning rate 0.01",
    ]
    bn = panels(fig)["bn_after\ngrey: baseline, learning rate 0.01"]
    assert f"baseline: {TEST}" in lines_by_label(bn)


def test_curves_image_is_150_dpi_and_draws_both_data_set_colours():
    fig = plots.curves_figure(study())
    pixels = png_pixels(fig)
    assert plots.DPI >= 150
    assert pixels.shape[:2] == (
        round(fig.get_figheight() * plots.DPI),
        round(fig.get_figwidth() * plots.DPI),
    )
    for color in (plots.TEST_COLOR, plots.TRAIN_COLOR, plots.REFERENCE_COLOR):
        assert has_color(pixels, color)


# ----------------------------------------------------------------- grid


CHANCE = 0.55


def grid_study(axes: dict[str, tuple], seeds: tuple[int, ...] = SEEDS) -> dict:
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
            for seed in seeds:
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
                    h["epochs"]["loss"][-1] = {0: None, 1: 1.1}.get(seed, 0.95)
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
        assert (ax.get_ylabel(), ax.get_xlabel()) == ("learning rate", "activation")
    texts = [t.get_text() for t in maps[0].texts]
    assert texts == [
        "0.500\n3/3 no-learn",
        "0.510\n3/3 no-learn",
        "0.600\n2/3 div",
        "0.610\n2/3 div",
    ]
    # BN cells also give the test accuracy with batch statistics (history: +0.03 over val)
    batch = f"batch stats {np.mean([val_curve('baseline', s)[-1] for s in SEEDS]) + 0.03:.3f}"
    assert [t.get_text() for t in maps[1].texts] == [
        f"{v}\n{batch}" for v in ("0.700", "0.710", "0.800", "0.810")
    ]
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert png_pixels(fig).std() > 0.05


def test_one_axis_grid_plots_accuracy_against_the_axis_on_a_log_scale():
    seeds = tuple(range(stats.MIN_SEEDS_FOR_CI))
    r = grid_study({"learning_rate": (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}, seeds)
    fig = plots.grid_figure(r)
    ax, strip = fig.axes
    assert ax.get_xscale() == "log" and strip.get_xlabel() == "learning rate"
    assert [t.get_text() for t in strip.get_xticklabels()] == [
        "0.0001",
        "0.001",
        "0.01",
        "0.1",
        "1",
    ]
    assert "95% bootstrap CI" in ax.get_ylabel()
    lines = sweeps(ax)
    assert list(lines) == ["no_bn", "bn"]
    for variant, offset in (("no_bn", 0.5), ("bn", 0.7)):
        data_line, _, (bars,) = lines[variant].lines
        assert data_line.get_linestyle() == "-"  # a numeric sweep is one line
        np.testing.assert_allclose(data_line.get_xdata(), [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
        np.testing.assert_allclose(
            data_line.get_ydata(),
            offset + 0.1 * np.arange(5) + 0.001 * (np.mean(seeds) - 1),
            atol=1e-12,
        )
        # error bars span the 95% bootstrap CI of the seeds' accuracies
        ci = stats.bootstrap_mean_ci([offset + 0.001 * (s - 1) for s in seeds])
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
    assert cells == {((1e-4, 0), "5/5 no-learn"), ((1.0, 0), "2/5 div")}
    assert [t.get_text() for t in strip.get_yticklabels()] == ["no_bn", "bn"]


def test_sweep_with_few_seeds_draws_no_error_bars_and_says_why():
    fig = plots.grid_figure(grid_study({"learning_rate": (0.01, 0.1)}))  # 3 seeds
    ax = fig.axes[0]
    for container in ax.containers:
        assert container.has_yerr is False
    assert f"no CI below {stats.MIN_SEEDS_FOR_CI} seeds" in ax.get_ylabel()


def test_sweep_colour_is_the_architecture_and_line_style_the_bn_variant():
    r = grid_study({"learning_rate": (0.01, 0.1)})
    dense = {"type": "Dense", "units": 10}
    conv = {"type": "Conv2D", "filters": 4, "kernel_size": 3}
    bn = {"type": "BatchNormalization"}
    relu = {"type": "Activation", "activation": "relu"}
    plain = {"use_bias": False, "activation": "linear"}  # how BN variants rewrite a layer
    layers = {
        "mlp": [{**dense, "activation": "relu"}],
        "mlp_bn": [{**dense, **plain}, bn, relu],
        "cnn": [conv, dense],
        "cnn_bn": [{**conv, **plain}, bn, relu, dense],
    }
    runs = []
    for name in layers:
        runs += [{**x, "variant": name} for x in r["runs"] if x["variant"] == "no_bn"]
    r["runs"], r["variants"] = runs, list(layers)
    r["experiment"]["variants"] = [{"name": n, "base": n, "layers": ls} for n, ls in layers.items()]
    sweep = sweeps(plots.grid_figure(r).axes[0])
    line = {v: c.lines[0] for v, c in sweep.items()}
    assert to_rgb(line["mlp"].get_color()) == to_rgb(line["mlp_bn"].get_color())
    assert to_rgb(line["cnn"].get_color()) == to_rgb(line["cnn_bn"].get_color())
    assert to_rgb(line["mlp"].get_color()) != to_rgb(line["cnn"].get_color())
    assert line["mlp"].get_linestyle() == line["cnn"].get_linestyle() == "-"
    assert line["mlp_bn"].get_linestyle() == line["cnn_bn"].get_linestyle() == "--"
    assert line["mlp"].get_marker() != line["mlp_bn"].get_marker()
    # the learning curves compare each BN variant with its own architecture, in grey
    r["experiment"]["report"] = {"comparisons": [["mlp_bn", "mlp"], ["cnn_bn", "cnn"]]}
    titles = list(panels(plots.curves_figure(r)))
    assert "cnn_bn\ngrey: cnn, learning rate 0.1" in titles
    assert "cnn\ngrey: mlp, learning rate 0.1" in titles  # no pair: the first variant


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
    assert all(t.get_fontsize() >= 9 for t in strip.texts)  # readable annotations


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
    assert set(plots.make_figures(study())) == {"curves", "loss"}


# ----------------------------------------------------------------- probes


def test_probe_lines_are_mean_percentiles_over_seeds_per_variant():
    fig = plots.probes_figure(study(probes=True))
    ax = fig.axes[0]
    assert ax.get_title() == "output of layer dense" and ax.get_xlabel() == "training steps"
    lines = lines_by_label(ax)
    assert sorted(lines) == sorted(
        f"{v}: p{p}" for v in ("baseline", "bn_after") for p in (15, 50, 85)
    )
    high = lines["bn_after: p85"]
    np.testing.assert_allclose(high.get_xdata(), [0, 10, 20])
    np.testing.assert_allclose(high.get_ydata(), [2.0, 3.0, 4.0])  # 1 + mean(seed) + j
    # median solid, 15th dotted, 85th dashed: the outer percentiles are told apart
    styles = [lines[f"bn_after: p{p}"].get_linestyle() for p in (15, 50, 85)]
    assert styles == [":", "-", "--"]
    assert len(ax.collections) == 2  # the 15-85 range shaded per variant
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [
        "baseline",
        "bn_after",
        "15th percentile",
        "50th percentile (median)",
        "85th percentile",
    ]
    assert png_pixels(fig).std() > 0.05


def test_probe_legend_overlaps_neither_the_title_nor_a_panel():
    fig = plots.probes_figure(study(probes=True))
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    title = next(t for t in fig.texts if t.get_text() == fig.get_suptitle())
    assert not legend.overlaps(title.get_window_extent(renderer))
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_tightbbox(renderer))


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("activation_2.input", "input of the last sigmoid activation (activation_2)"),
        ("activation.output", "output of the 1st sigmoid activation (activation)"),
        ("dense_1.output", "output of the Dense layer with softmax (dense_1)"),
        ("dense.input", "input of the Dense layer (dense)"),
        ("nothing.input", "input of layer nothing"),
    ],
    ids=["last", "first", "only", "linear", "unknown"],
)
def test_probe_titles_are_words(key, words):
    layers = [
        {"type": "Dense", "units": 8},
        {"type": "Activation", "activation": "sigmoid"},
        {"type": "Activation", "activation": "sigmoid"},
        {"type": "Activation", "activation": "sigmoid"},
        {"type": "Dense", "units": 2, "activation": "softmax"},
    ]
    assert plots.probe_words(key, layers) == words


# ----------------------------------------------------------------- files


def test_write_plots_saves_decodable_files_of_each_figure_in_each_format(tmp_path):
    paths = plots.write_plots(study(probes=True), tmp_path)
    assert paths == {name: [tmp_path / f"{name}.png"] for name in ("curves", "loss", "probes")}
    for name, (path,) in paths.items():
        pixels = imread(path)[..., :3]
        assert pixels.shape[0] > 400 and pixels.shape[1] > 800
        assert pixels.std() > 0.05, name
    other = tmp_path / "other"
    other.mkdir()
    paths = plots.write_plots(study(), other, formats=("svg", "pdf"))
    for svg, pdf in paths.values():
        assert "<svg" in svg.read_text("utf-8") and pdf.read_bytes().startswith(b"%PDF")
    assert len(list(tmp_path.iterdir())) == 4 and len(list(other.iterdir())) == 4  # no temp files


@pytest.mark.parametrize(
    ("text", "expected"),
    [("png", ("png",)), ("png,svg,pdf", ("png", "svg", "pdf")), (" SVG , png,svg", ("svg", "png"))],
)
def test_parse_formats(text, expected):
    assert plots.parse_formats(text) == expected


@pytest.mark.parametrize("text", ["", "png,jpg", ","])
def test_parse_formats_rejects_unknown_ones_naming_them(text):
    with pytest.raises(ValueError, match=f"got {text!r}; choose one or more of png, svg, pdf"):
        plots.parse_formats(text)


def test_plots_are_drawn_without_warnings_for_all_null_curves():
    r = study()
    for x in r["runs"]:
        if x["variant"] == "broken" and x["history"]:
            x["history"]["epochs"]["val_accuracy"] = [None] * EPOCHS
            x["history"]["epochs"]["val_loss"] = [math.nan] * EPOCHS
    fig = plots.curves_figure(r)  # warnings are errors under pytest
    broken = panels(fig)["broken\ngrey: baseline"]
    assert f"broken: {TEST}" not in lines_by_label(broken)
    assert f"broken: {TRAIN}" in lines_by_label(broken)


def test_grid_map_leaves_out_variants_that_use_no_grid_axis():
    r = grid_study({"learning_rate": (0.001, 0.01), "activation": ("sigmoid", "relu")})
    r["runs"] += [run("plain", s, history("baseline", s, bn=False)) for s in SEEDS]
    r["variants"].append("plain")
    fig = plots.grid_figure(r)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["no_bn", "bn"]


def test_a_variant_without_grid_axes_is_drawn_on_every_grid_row_and_gets_no_row_of_its_own():
    """Regression: no_dropout beside dropout variants at rate 0.2 and 0.5 drew a first row of
    panels saying "no completed runs" for the grid variants."""
    runs = [run("baseline", s, history("baseline", s, bn=False)) for s in SEEDS] + [
        run("bn_after", s, history("bn_after", s, bn=True), grid={"rate": rate})
        for rate in (0.2, 0.5)
        for s in SEEDS
    ]
    fig = plots.curves_figure(results(runs, ["baseline", "bn_after"]))
    assert list(panels(fig)) == [
        "baseline\nrate 0.2",
        "bn_after\ngrey: baseline, rate 0.2",
        "baseline\nrate 0.5",
        "bn_after\ngrey: baseline, rate 0.5",
    ]
    assert all(f"baseline: {TEST}" in lines_by_label(ax) for ax in panels(fig).values())


def test_long_panel_titles_wrap_to_the_panel_width():
    """Regression: input_scaling's three grid axes and its reference ran one title into the next."""
    grid = {"optimizer": "adam", "feature_scale": 10.0, "batch_size": 32}
    runs = [
        run(name, s, history(v, s, bn=v == "bn_after"), grid=grid)
        for name, v in (("baseline", "baseline"), ("bn_after", "bn_after"), ("other", "baseline"))
        for s in SEEDS
    ]
    fig = plots.curves_figure(results(runs, ["baseline", "bn_after", "other"]))
    title = "bn_after\ngrey: baseline, optimizer adam, feature scale 10.0, batch size 32"
    wrapped = next(t for t in panels(fig) if t.startswith("bn_after"))
    assert wrapped.split() == title.split()  # every word kept, in order
    width = int(12 * fig.get_figwidth() / 3)
    assert len(wrapped.splitlines()) == 3 and max(map(len, wrapped.splitlines())) <= width
