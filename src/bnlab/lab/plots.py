"""Plots of stored results: learning curves, grid maps and probe percentiles.

Every function takes a results.json dict (the contract shape) and returns a matplotlib
``Figure`` drawn with the Agg canvas (no display, no pyplot state), or None when the results
have nothing of that kind (no grid, no probes). ``write_plots`` saves them as PNG.

* ``curves_figure``: per variant, the mean over seeds of each curve. Left panel accuracy — test
  accuracy (inference mode) solid, train accuracy (mean over the epoch's batches, training mode,
  as Keras reports it) dashed, and for models with BN the test accuracy in training mode (batch
  statistics) dotted, so the lag of the moving averages is visible as the gap between solid and
  dotted. Right panel loss — test solid, train dashed. The shaded band around each test curve
  is the **min–max over seeds**. Test curves use the history's ``evals`` (several per epoch)
  when present, with x = epochs as a float; per-epoch values sit at x = 1..E (after epoch k).
  An experiment with a grid gets one row of panels per grid point. A variant with a published
  single run (``report.published``) gets a star at its published test accuracy just right of
  the last epoch (side by side in variant order, so close values stay visible).
* ``grid_figure``: mean final test accuracy over seeds per grid point. Two or more grid axes:
  an annotated heat map per variant (first axis down, second across; further axes make more
  panels). One axis: final test accuracy against the axis value with its 95% bootstrap CI —
  a line over a numeric axis (log-scaled when it spans a factor of 10 or more), separate
  points over a categorical one — and a panel below counting, per variant and value, the runs
  that diverged, did not learn or failed. Rules: ``bnlab.lab.outcomes``.
* ``probes_figure``: for each probed tensor, the recorded percentiles (e.g. 15/50/85) over
  training steps, mean over seeds, one colour per variant (median solid, others dashed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from bnlab.lab.published import published_runs
from bnlab.lab.stats import GridPoint, VariantSummary, group_runs, summarize

__all__ = [
    "BAND",
    "curves_figure",
    "figure_png",
    "grid_figure",
    "make_figures",
    "probes_figure",
    "save_figure",
    "write_plots",
]

BAND = "min–max over seeds"
DPI = 100
_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _color_map(variants: Sequence[str]) -> dict[str, str]:
    return {v: _COLORS[i % len(_COLORS)] for i, v in enumerate(variants)}


def _variant_order(
    results: Mapping[str, Any], groups: Sequence[tuple[str, GridPoint]]
) -> list[str]:
    names = [str(v) for v in results.get("variants") or []]
    return list(dict.fromkeys([*names, *(v for v, _ in groups)]).keys())


def _histories(runs: Mapping[int, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        r["history"]
        for _, r in sorted(runs.items())
        if r.get("status") == "completed" and isinstance(r.get("history"), Mapping)
    ]


def _as_float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _spread(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over seeds (rows), ignoring NaN; NaN where a column has no value."""
    ok = ~np.isnan(matrix)
    count = ok.sum(axis=0)
    total = np.where(ok, matrix, 0.0).sum(axis=0)
    mean = np.full(matrix.shape[1], np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean, np.fmin.reduce(matrix, axis=0), np.fmax.reduce(matrix, axis=0)


def _per_epoch(
    histories: Sequence[Mapping[str, Any]], key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """x = 1..E and a (seeds, E) matrix of one per-epoch list; None when no seed has it."""
    rows = [(h.get("epochs") or {}).get(key) for h in histories]
    rows = [r for r in rows if r]
    if not rows:
        return None
    width = max(len(r) for r in rows)
    matrix = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        matrix[i, : len(r)] = [_as_float(v) for v in r]
    if np.isnan(matrix).all():
        return None
    return np.arange(1, width + 1, dtype=np.float64), matrix


def _per_eval(
    histories: Sequence[Mapping[str, Any]], key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """x = epoch (float) of each evaluation step and a (seeds, evals) matrix, aligned by step."""
    epoch_of: dict[int, float] = {}
    for h in histories:
        for rec in h.get("evals") or []:
            epoch_of.setdefault(int(rec["step"]), float(rec["epoch"]))
    if not epoch_of:
        return None
    steps = sorted(epoch_of)
    column = {s: j for j, s in enumerate(steps)}
    matrix = np.full((len(histories), len(steps)), np.nan)
    for i, h in enumerate(histories):
        for rec in h.get("evals") or []:
            matrix[i, column[int(rec["step"])]] = _as_float(rec.get(key))
    if np.isnan(matrix).all():
        return None
    return np.array([epoch_of[s] for s in steps]), matrix


def _test_curve(
    histories: Sequence[Mapping[str, Any]], key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    return _per_eval(histories, key) or _per_epoch(histories, key)


#: Dash patterns (on, off, in line widths) of the broken line styles: matplotlib's own, so
#: the legend's "--" and ":" samples look the same.
_PATTERNS = {
    "--": tuple(matplotlib.rcParams["lines.dashed_pattern"]),
    ":": tuple(matplotlib.rcParams["lines.dotted_pattern"]),
}


def _line_style(style: str, place: tuple[int, int]) -> Any:
    """``style`` for variant ``k`` of ``n`` (``place``): a broken line starts k/n of a period in.

    Variants whose curves coincide (e.g. two BN momenta train identically, only their moving
    statistics differ) then show alternating dashes of both colors instead of one hiding the
    other.
    """
    if style not in _PATTERNS:
        return style
    k, n = place
    on, off = _PATTERNS[style]
    return ((on + off) * k / max(n, 1), (on, off))


def _draw(
    ax: Any,
    data: tuple[np.ndarray, np.ndarray] | None,
    *,
    color: str,
    style: str,
    label: str,
    band: bool,
    place: tuple[int, int] = (0, 1),
) -> None:
    if data is None:
        return
    x, matrix = data
    mean, low, high = _spread(matrix)
    ax.plot(x, mean, color=color, linestyle=_line_style(style, place), linewidth=1.6, label=label)
    if band and matrix.shape[0] > 1:
        ax.fill_between(
            x, low, high, color=color, alpha=0.18, linewidth=0, label=f"{label} ({BAND})"
        )


def _last_epoch(histories: Sequence[Mapping[str, Any]]) -> float:
    """The x of the curves' end: the most epochs any seed recorded (evals' epochs otherwise)."""
    epochs = [len((h.get("epochs") or {}).get("val_accuracy") or []) for h in histories]
    evals = [float(r["epoch"]) for h in histories for r in h.get("evals") or []]
    return float(max([*epochs, *evals], default=0))


def _style_handles(train_mode: bool, published: bool = False) -> list[Any]:
    handles: list[Any] = [
        Line2D([], [], color="black", linestyle="-", label="test (inference mode)"),
        Line2D([], [], color="black", linestyle="--", label="train (epoch mean)"),
    ]
    if train_mode:
        handles.append(
            Line2D([], [], color="black", linestyle=":", label="test, BN in training mode")
        )
    if published:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="*",
                markersize=11,
                color="gray",
                markeredgecolor="black",
                label="published single run: test accuracy",
            )
        )
    handles.append(Patch(color="gray", alpha=0.3, label=f"band: {BAND}"))
    return handles


def _title(results: Mapping[str, Any]) -> str:
    experiment = results.get("experiment")
    name = experiment.get("name") if isinstance(experiment, Mapping) else None
    name = name or next(
        (r.get("experiment") for r in results.get("runs") or [] if r.get("experiment")), None
    )
    seeds = results.get("seeds") or []
    return f"{name or 'experiment'} — {len(seeds)} seeds" if seeds else str(name or "experiment")


def _point_label(grid: GridPoint) -> str:
    return ", ".join(f"{k}={v}" for k, v in grid)


def curves_figure(results: Mapping[str, Any]) -> Figure:
    """Learning curves, mean over seeds with a min–max band; one row per grid point.

    Each accuracy panel holds, per variant with completed runs, a solid test line, a dashed
    train line and (BN models) a dotted training-mode test line; the loss panel a solid test
    and a dashed train line. Line labels are ``"<variant>: test accuracy"`` and so on. A
    published test accuracy is a star (``"<variant>: published test accuracy"``) at
    x = E · (1 + 0.02 · k), E the variant's last epoch and k = 1, 2, ... its place among the
    variants with a published number.
    """
    groups = group_runs(results)
    published = published_runs(results)
    variants = _variant_order(results, list(groups))
    star_place = {v: k for k, v in enumerate((v for v in variants if v in published), start=1)}
    colors = _color_map(variants)
    points = list(dict.fromkeys(grid for _, grid in groups)) or [()]
    fig = _new_figure(12.0, 0.8 + 3.6 * len(points))
    fig.suptitle(_title(results))
    axes = fig.subplots(len(points), 2, squeeze=False)
    any_train_mode = False
    any_published = False
    for row, point in enumerate(points):
        ax_acc, ax_loss = axes[row]
        suffix = f" — {_point_label(point)}" if point else ""
        ax_acc.set_title(f"accuracy{suffix}")
        ax_loss.set_title(f"loss{suffix}")
        for (variant, grid), runs in groups.items():
            if grid != point:
                continue
            histories = _histories(runs)
            if not histories:
                continue
            color = colors[variant]
            place = (variants.index(variant), len(variants))
            _draw(
                ax_acc,
                _test_curve(histories, "val_accuracy"),
                color=color,
                style="-",
                label=f"{variant}: test accuracy",
                band=True,
            )
            _draw(
                ax_acc,
                _per_epoch(histories, "accuracy"),
                color=color,
                style="--",
                label=f"{variant}: train accuracy",
                band=False,
                place=place,
            )
            train_mode = _test_curve(histories, "val_accuracy_train_mode")
            if train_mode is not None:
                any_train_mode = True
                _draw(
                    ax_acc,
                    train_mode,
                    color=color,
                    style=":",
                    label=f"{variant}: test accuracy, BN in training mode",
                    band=False,
                    place=place,
                )
            mark = _as_float((published.get(variant) or {}).get("test_accuracy"))
            if not math.isnan(mark):
                any_published = True
                ax_acc.plot(
                    [_last_epoch(histories) * (1.0 + 0.02 * star_place.get(variant, 1))],
                    [mark],
                    linestyle="none",
                    marker="*",
                    markersize=13,
                    color=color,
                    markeredgecolor="black",
                    markeredgewidth=0.8,
                    zorder=5,
                    clip_on=False,
                    label=f"{variant}: published test accuracy",
                )
            _draw(
                ax_loss,
                _test_curve(histories, "val_loss"),
                color=color,
                style="-",
                label=f"{variant}: test loss",
                band=True,
            )
            _draw(
                ax_loss,
                _per_epoch(histories, "loss"),
                color=color,
                style="--",
                label=f"{variant}: train loss",
                band=False,
                place=place,
            )
        for ax, ylabel in ((ax_acc, "accuracy"), (ax_loss, "loss")):
            if not ax.get_lines():
                ax.text(
                    0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colors[v], linewidth=2.5, label=v) for v in variants]
    fig.legend(
        handles=handles + _style_handles(any_train_mode, any_published), loc="outside right upper"
    )
    return fig


def _grid_axes(groups: Mapping[tuple[str, GridPoint], Any]) -> list[str]:
    names: dict[str, None] = {}
    for _, grid in groups:
        for k, _ in grid:
            names.setdefault(k)
    return list(names)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _axis_values(values: Sequence[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    return sorted(unique) if all(_is_number(v) for v in unique) else unique


def grid_figure(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary] | None = None
) -> Figure | None:
    """Mean final test accuracy over the experiment's grid; None without a grid.

    Two or more axes: one annotated heat map per variant (and per value of further axes), the
    first axis as rows, the second as columns; each cell shows the mean over seeds and, where
    k of its n runs diverged, did not learn or failed, ``k/n div``, ``k/n no-learn`` or
    ``k/n fail``. One axis: see ``_sweep_figure``.
    """
    summaries = list(summaries) if summaries is not None else summarize(results)
    summaries = [s for s in summaries if s.grid]  # variants that use no grid axis have no cell
    if not summaries:
        return None
    axes_names = _grid_axes({(s.variant, s.grid): None for s in summaries})
    variants = _variant_order(results, [(s.variant, s.grid) for s in summaries])
    if len(axes_names) == 1:
        return _sweep_figure(results, summaries, axes_names[0], variants)
    row_axis, col_axis, rest = axes_names[0], axes_names[1], axes_names[2:]
    point = {id(s): dict(s.grid) for s in summaries}
    rows = _axis_values([point[id(s)].get(row_axis) for s in summaries])
    cols = _axis_values([point[id(s)].get(col_axis) for s in summaries])
    panels: dict[tuple[str, tuple[Any, ...]], list[VariantSummary]] = {}
    for s in summaries:
        key = (s.variant, tuple(point[id(s)].get(a) for a in rest))
        panels.setdefault(key, []).append(s)
    order = sorted(panels, key=lambda k: (variants.index(k[0]), str(k[1])))
    means = [s.test_accuracy.mean for s in summaries if not math.isnan(s.test_accuracy.mean)]
    norm = Normalize(vmin=min(means, default=0.0), vmax=max(means, default=1.0))
    ncols = min(len(order), 3)
    nrows = math.ceil(len(order) / ncols)
    fig = _new_figure(1.2 + (1.1 * len(cols) + 1.6) * ncols, 0.8 + (0.7 * len(rows) + 1.3) * nrows)
    fig.suptitle(f"{_title(results)}: mean final test accuracy{_unknown_note(summaries)}")
    grid_axes = fig.subplots(nrows, ncols, squeeze=False)
    image = None
    for ax, key in zip(grid_axes.flat, order, strict=False):
        variant, rest_values = key
        table = np.full((len(rows), len(cols)), np.nan)
        notes: dict[tuple[int, int], VariantSummary] = {}
        for s in panels[key]:
            i = rows.index(point[id(s)].get(row_axis))
            j = cols.index(point[id(s)].get(col_axis))
            table[i, j] = s.test_accuracy.mean
            notes[(i, j)] = s
        image = ax.imshow(np.ma.masked_invalid(table), cmap="viridis", norm=norm, aspect="auto")
        for (i, j), s in notes.items():
            value = table[i, j]
            mean_text = "n/a" if math.isnan(value) else f"{value:.3f}"
            problems = _problem_counts(s, "\n")
            text = f"{mean_text}\n{problems}" if problems else mean_text
            dark = math.isnan(value) or norm(value) < 0.6
            ax.text(
                j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black"
            )
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(col_axis)
        ax.set_ylabel(row_axis)
        extra = ", ".join(f"{a}={v}" for a, v in zip(rest, rest_values, strict=True))
        ax.set_title(f"{variant}{f' ({extra})' if extra else ''}")
    for ax in list(grid_axes.flat)[len(order) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=grid_axes.ravel().tolist(), label="final test accuracy")
    return fig


def _sweep_figure(
    results: Mapping[str, Any],
    summaries: Sequence[VariantSummary],
    axis: str,
    variants: Sequence[str],
) -> Figure:
    """Final test accuracy against one grid axis, and below it what went wrong where.

    Numeric axis: a line per variant through the sorted values, on a log x axis when every
    value is positive and they span a factor of 10 or more. Categorical axis (strings,
    booleans, mixed): one point per value and variant, variants side by side, no lines — the
    order of categories means nothing. Error bars: 95% bootstrap CI of the mean over seeds.
    The lower panel has a row per variant with, at each value, ``k/n div`` (diverged),
    ``k/n no-learn`` (did not learn) and ``k/n fail`` (failed) where k > 0.
    """
    colors = _color_map(variants)
    values = _axis_values([dict(s.grid).get(axis) for s in summaries])
    numeric = all(_is_number(v) for v in values)
    log = numeric and min(values) > 0 and max(values) / min(values) >= 10
    present = [v for v in variants if any(s.variant == v for s in summaries)]
    fig = _new_figure(9.0, 5.0 + 0.35 * len(present))
    fig.suptitle(f"{_title(results)}: final test accuracy against {axis}")
    ax, strip = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [4.0, 0.3 + 0.35 * len(present)]}
    )
    width = min(0.6 / len(present), 0.15)
    for k, variant in enumerate(present):
        rows = sorted(
            (s for s in summaries if s.variant == variant),
            key=lambda s: values.index(dict(s.grid).get(axis)),
        )
        # The axis value itself, or a category's position (variants side by side around it).
        at = [dict(s.grid)[axis] if numeric else values.index(dict(s.grid)[axis]) for s in rows]
        dodge = 0.0 if numeric else (k - (len(present) - 1) / 2) * width
        x = np.array(at, dtype=np.float64) + dodge
        mean = np.array([s.test_accuracy.mean for s in rows])
        ci = [s.test_accuracy.ci for s in rows]
        low = np.array([c.low if c else m for c, m in zip(ci, mean, strict=True)])
        high = np.array([c.high if c else m for c, m in zip(ci, mean, strict=True)])
        ax.errorbar(
            x,
            mean,
            yerr=np.vstack([mean - low, high - mean]),
            color=colors[variant],
            marker="o",
            linestyle="-" if numeric else "none",
            capsize=3,
            label=variant,
        )
        for xi, s in zip(at, rows, strict=True):
            text = _problem_counts(s, "\n")
            if text:
                strip.text(xi, k, text, ha="center", va="center", fontsize=7, color=colors[variant])
    handles: list[Any] = list(ax.containers)
    chance = _chance_accuracy(summaries)
    if chance is not None:
        handles.append(
            ax.axhline(
                chance,
                color="gray",
                linestyle="--",
                linewidth=1.0,
                label="chance (most frequent class)",
            )
        )
    if log:
        ax.set_xscale("log")
        strip.xaxis.set_minor_locator(NullLocator())
    if numeric:
        strip.set_xticks(values, [f"{v:g}" for v in values])
    else:
        strip.set_xticks(range(len(values)), [str(v) for v in values])
        strip.set_xlim(-0.5, len(values) - 0.5)
    ax.set_ylabel("final test accuracy (mean, 95% bootstrap CI)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="best")
    strip.set_ylim(len(present) - 0.5, -0.5)
    strip.set_yticks(range(len(present)), present)
    for label, variant in zip(strip.get_yticklabels(), present, strict=True):
        label.set_color(colors[variant])
    strip.set_title(
        "runs that diverged (div), did not learn (no-learn) or failed (fail), of the seeds run"
        + _unknown_note(summaries),
        fontsize=9,
    )
    strip.grid(True, axis="x", alpha=0.3)
    strip.set_xlabel(axis)
    return fig


def _problem_counts(s: VariantSummary, sep: str) -> str:
    """``"4/5 div", "5/5 no-learn", "1/5 fail"`` joined by ``sep``, the nonzero ones only."""
    n = len(s.seeds)
    counts = ((s.diverged, "div"), (s.did_not_learn, "no-learn"), (s.failed, "fail"))
    return sep.join(f"{k}/{n} {word}" for k, word in counts if k)


def _unknown_note(summaries: Sequence[VariantSummary]) -> str:
    """A second title line when some runs cannot be checked for a blow-up or for learning."""
    unknown = sum(
        o.diverged is None or o.did_not_learn is None for s in summaries for _, o in s.outcomes
    )
    if not unknown:
        return ""
    return (
        f"\n{unknown} runs were recorded without initial loss or chance accuracy: "
        "not checked for a blow-up or a failure to learn"
    )


def _chance_accuracy(summaries: Sequence[VariantSummary]) -> float | None:
    """The chance accuracy shared by every run that recorded one; None if none or several."""
    values = {
        round(o.chance_accuracy, 12)
        for s in summaries
        for _, o in s.outcomes
        if o.chance_accuracy is not None
    }
    return values.pop() if len(values) == 1 else None


def probes_figure(results: Mapping[str, Any]) -> Figure | None:
    """Recorded percentiles of probed tensors over training steps; None without probes.

    One panel per probed tensor (and grid point); per variant one line per percentile, the
    mean over seeds at each recorded step. Line labels are ``"<variant>: p50"``.
    """
    groups = group_runs(results)
    variants = _variant_order(results, list(groups))
    colors = _color_map(variants)
    panels: dict[tuple[GridPoint, str], list[tuple[str, list[Mapping[str, Any]]]]] = {}
    for (variant, grid), runs in groups.items():
        histories = _histories(runs)
        keys = dict.fromkeys(k for h in histories for k in (h.get("probes") or {}))
        for key in keys:
            panels.setdefault((grid, key), []).append(
                (variant, [h["probes"][key] for h in histories if key in (h.get("probes") or {})])
            )
    if not panels:
        return None
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(12.0 if ncols == 2 else 7.5, 0.8 + 3.4 * nrows)
    fig.suptitle(f"{_title(results)}: probe percentiles over training (mean over seeds)")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    percentile_sets: dict[float, None] = {}
    for ax, ((grid, key), entries) in zip(axes.flat, panels.items(), strict=False):
        for variant, records in entries:
            percentiles = [float(p) for p in records[0].get("percentiles") or []]
            steps = sorted({int(s) for r in records for s in r.get("steps") or []})
            if not steps or not percentiles:
                continue
            column = {s: j for j, s in enumerate(steps)}
            cube = np.full(
                (len(records), len(steps), len(percentiles)), np.nan
            )  # (seeds, steps, P)
            for i, r in enumerate(records):
                for s, row in zip(r.get("steps") or [], r.get("values") or [], strict=False):
                    cube[i, column[int(s)], : len(row)] = [
                        _as_float(v) for v in row[: len(percentiles)]
                    ]
            middle = len(percentiles) // 2
            for p_index, p in enumerate(percentiles):
                percentile_sets.setdefault(p)
                mean, _, _ = _spread(cube[:, :, p_index])
                ax.plot(
                    steps,
                    mean,
                    color=colors[variant],
                    linestyle="-" if p_index == middle else "--",
                    linewidth=1.6 if p_index == middle else 1.0,
                    label=f"{variant}: p{p:g}",
                )
        ax.set_title(f"{key}{f' — {_point_label(grid)}' if grid else ''}")
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    ps = sorted(percentile_sets)
    middle_p = ps[len(ps) // 2] if ps else None
    handles: list[Any] = [Line2D([], [], color=colors[v], linewidth=2.5, label=v) for v in variants]
    handles += [
        Line2D(
            [],
            [],
            color="black",
            linestyle="-" if p == middle_p else "--",
            label=f"percentile {p:g}",
        )
        for p in ps
    ]
    fig.legend(handles=handles, loc="outside right upper")
    return fig


def make_figures(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary] | None = None
) -> dict[str, Figure]:
    """``{"curves": ..., "grid": ..., "probes": ...}`` for the plots these results support."""
    figures = {"curves": curves_figure(results)}
    grid = grid_figure(results, summaries)
    if grid is not None:
        figures["grid"] = grid
    probes = probes_figure(results)
    if probes is not None:
        figures["probes"] = probes
    return figures


def figure_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write the figure as a PNG file (atomically: a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(figure_png(fig, dpi=dpi))
    tmp.replace(path)
    return path


def write_plots(
    results: Mapping[str, Any],
    out_dir: str | Path,
    summaries: Sequence[VariantSummary] | None = None,
) -> dict[str, Path]:
    """Save ``curves.png`` (always), ``grid.png`` and ``probes.png`` (when there is data) in out_dir."""
    out = Path(out_dir)
    return {
        name: save_figure(fig, out / f"{name}.png")
        for name, fig in make_figures(results, summaries).items()
    }
