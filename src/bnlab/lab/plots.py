"""Plots of stored results: learning curves, grid maps and probe percentiles.

Every function takes a results.json dict (the contract shape) and returns a matplotlib
``Figure`` drawn with the Agg canvas (no display, no pyplot state), or None when the results
have nothing of that kind (no grid, no probes). ``write_plots`` saves them as PNG (150 dpi),
SVG or PDF (``FORMATS``).

Encodings hold across the figures: in the learning curves **colour is the data set** (test
blue, training orange; the reference variant grey) and **line style the BN mode** (solid:
inference mode, moving statistics; dashed: training mode, batch statistics). In the sweep
plot colour is the architecture (a variant's layers without its BN layers) and line style /
marker the BN variant, when variants share an architecture. A series of at most
``MARKER_MAX_POINTS`` points gets markers, so a one-epoch run is a visible dot, not an empty
panel.

* ``curves_figure`` / ``loss_figure``: small multiples — a panel per variant (columns) and grid
  point (rows), shared axes. Each panel draws, as the mean over seeds, the rows of a table of
  series (``ACCURACY_SERIES`` / ``LOSS_SERIES``): test accuracy in inference mode with a band
  spanning the **min–max over seeds**, test accuracy with BN in training mode (models with BN:
  the gap to the solid line is the lag of the moving averages), and training accuracy as Keras
  logs it (the running mean over the epoch's batches, in training mode). Each variant's
  reference (the variant it is compared with in ``report.comparisons``, else
  ``report.reference``, else the first) is drawn in grey in its panel, named in the title. The x axis counts optimizer steps when the runs evaluated within epochs (the
  history's ``evals``), epochs otherwise (value after epoch k at x = k). A published single
  run's test accuracy is a star just right of the last epoch.
* ``grid_figure``: mean final test accuracy over seeds per grid point. Two or more grid axes:
  an annotated heat map per variant (first axis down, second across; further axes make more
  panels), each cell also giving the test accuracy with BN in training mode. One axis: final
  test accuracy against the axis value with its 95% bootstrap CI (when the group has enough
  seeds, see ``stats.MIN_SEEDS_FOR_CI``) — a line over a numeric axis (log-scaled when it
  spans a factor of 10 or more), separate points over a categorical one — and a panel below
  counting, per variant and value, the runs that diverged, did not learn or failed.
  Rules: ``bnlab.lab.outcomes``.
* ``probes_figure``: for each probed tensor, titled in words ("input of the last sigmoid
  activation"), the recorded percentiles over training steps, mean over seeds, one colour per
  variant: median solid, the lower percentile dotted, the upper dashed, the range between
  them shaded.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, NullLocator

from bnlab.lab.published import published_runs, settings_differ
from bnlab.lab.results import atomic_write_bytes
from bnlab.lab.stats import GridPoint, VariantSummary, group_runs, summarize

__all__ = [
    "ACCURACY_SERIES",
    "BAND",
    "DPI",
    "FORMATS",
    "LOSS_SERIES",
    "MARKER_MAX_POINTS",
    "Series",
    "curves_figure",
    "figure_bytes",
    "figure_png",
    "grid_figure",
    "loss_figure",
    "make_figures",
    "parse_formats",
    "probe_words",
    "probes_figure",
    "save_figure",
    "write_plots",
]

BAND = "min–max over seeds"
DPI = 150
FORMATS = ("png", "svg", "pdf")
MARKER_MAX_POINTS = 20
TEST_COLOR = "#1f77b4"
TRAIN_COLOR = "#e66100"
REFERENCE_COLOR = "#9a9a9a"
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
#: Line styles and markers of the variants that share an architecture (sweep plot).
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_ANNOTATION_SIZE = 9


@dataclass(frozen=True)
class Series:
    """One kind of curve of a learning-curve panel: a history key and how it is drawn.

    ``key``: the per-epoch list (``history.epochs[key]``) and, when ``evaluated``, the key of
    the history's ``evals`` records (several per epoch), used when present. ``color`` is the
    data set (test / training), ``style`` the BN mode ("-" inference, "--" training mode).
    ``band``: shade the min–max over seeds. ``reference``: also drawn, in grey, for the
    reference variant in the other variants' panels.
    """

    key: str
    words: str
    color: str
    style: str
    evaluated: bool
    band: bool = False
    reference: bool = False


ACCURACY_SERIES = (
    Series(
        "val_accuracy",
        "test, inference mode (moving statistics)",
        TEST_COLOR,
        "-",
        True,
        band=True,
        reference=True,
    ),
    Series(
        "val_accuracy_train_mode",
        "test, BN in training mode (batch statistics)",
        TEST_COLOR,
        "--",
        True,
    ),
    Series(
        "accuracy",
        "training, running mean over the epoch's batches in training mode (as Keras logs it)",
        TRAIN_COLOR,
        "--",
        False,
    ),
)
LOSS_SERIES = (
    Series(
        "val_loss",
        "test, inference mode (moving statistics)",
        TEST_COLOR,
        "-",
        True,
        band=True,
        reference=True,
    ),
    Series(
        "loss",
        "training, running mean over the epoch's batches in training mode",
        TRAIN_COLOR,
        "--",
        False,
    ),
)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,svg"`` -> ``("png", "svg")``; duplicates dropped, order kept.

    Raises:
        ValueError: an empty list or a format not in ``FORMATS``.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(
            f"figure formats: got {text!r}; choose one or more of {', '.join(FORMATS)}, "
            "comma-separated (e.g. png,svg)"
        )
    return formats


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


def _steps_per_epoch(histories: Sequence[Mapping[str, Any]]) -> int | None:
    steps = {int(h["steps_per_epoch"]) for h in histories if h.get("steps_per_epoch")}
    return steps.pop() if len(steps) == 1 else None


def _in_steps(histories: Sequence[Mapping[str, Any]]) -> bool:
    """Steps on the x axis: the runs evaluated within epochs and agree on steps per epoch."""
    return _steps_per_epoch(histories) is not None and any(
        not float(r["epoch"]).is_integer() for h in histories for r in h.get("evals") or []
    )


def _per_epoch(
    histories: Sequence[Mapping[str, Any]], key: str, steps: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """x (epoch k = 1..E, or k · steps per epoch) and a (seeds, E) matrix; None if absent."""
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
    x = np.arange(1, width + 1, dtype=np.float64)
    return (x * (_steps_per_epoch(histories) or 1) if steps else x), matrix


def _per_eval(
    histories: Sequence[Mapping[str, Any]], key: str, steps: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """x (step, or epoch as a float) of each evaluation and a (seeds, evals) matrix."""
    epoch_of: dict[int, float] = {}
    for h in histories:
        for rec in h.get("evals") or []:
            epoch_of.setdefault(int(rec["step"]), float(rec["epoch"]))
    if not epoch_of:
        return None
    order = sorted(epoch_of)
    column = {s: j for j, s in enumerate(order)}
    matrix = np.full((len(histories), len(order)), np.nan)
    for i, h in enumerate(histories):
        for rec in h.get("evals") or []:
            matrix[i, column[int(rec["step"])]] = _as_float(rec.get(key))
    if np.isnan(matrix).all():
        return None
    x = np.array(order if steps else [epoch_of[s] for s in order], dtype=np.float64)
    return x, matrix


def _series_data(
    histories: Sequence[Mapping[str, Any]], series: Series, steps: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    if series.evaluated:
        found = _per_eval(histories, series.key, steps)
        if found is not None:
            return found
    return _per_epoch(histories, series.key, steps)


def _plot_mean(
    ax: Any,
    data: tuple[np.ndarray, np.ndarray],
    *,
    color: str,
    style: str,
    label: str,
    band: bool,
    zorder: float = 2.0,
    linewidth: float = 1.6,
    marker: str = "o",
) -> None:
    """The mean over seeds (markers when short, so one point still shows), and the band."""
    x, matrix = data
    mean, low, high = _spread(matrix)
    short = int((~np.isnan(mean)).sum()) <= MARKER_MAX_POINTS
    # Training-mode (dashed) series get open rings around the filled dots of the solid ones:
    # when both coincide (one epoch, equal values) both still show.
    ring = style != "-"
    ax.plot(
        x,
        mean,
        color=color,
        linestyle=style,
        linewidth=linewidth,
        marker=marker if short else None,
        markersize=(8.0 if ring else 4.5) if short else None,
        markerfacecolor="none" if ring else color,
        markeredgewidth=1.4,
        label=label,
        zorder=zorder + (0.1 if ring else 0.0),
    )
    if band and matrix.shape[0] > 1:
        if x.size == 1:  # a band over one x is an error bar
            ax.errorbar(
                x,
                mean,
                yerr=[mean - low, high - mean],
                color=color,
                alpha=0.45,
                fmt="none",
                capsize=3,
                zorder=zorder - 0.5,
                label=f"{label} ({BAND})",
            )
        else:
            ax.fill_between(
                x,
                low,
                high,
                color=color,
                alpha=0.18,
                linewidth=0,
                label=f"{label} ({BAND})",
                zorder=zorder - 0.5,
            )


def _last_x(histories: Sequence[Mapping[str, Any]], steps: bool) -> float:
    """The x of the curves' end: the most epochs any seed recorded (in steps when ``steps``)."""
    epochs = [len((h.get("epochs") or {}).get("val_accuracy") or []) for h in histories]
    evals = [
        float(r["step" if steps else "epoch"]) for h in histories for r in h.get("evals") or []
    ]
    last = float(max(epochs, default=0))
    if steps:
        last *= _steps_per_epoch(histories) or 1
    return max([last, *evals])


def _title(results: Mapping[str, Any]) -> str:
    experiment = results.get("experiment")
    name = experiment.get("name") if isinstance(experiment, Mapping) else None
    name = name or next(
        (r.get("experiment") for r in results.get("runs") or [] if r.get("experiment")), None
    )
    seeds = results.get("seeds") or []
    return f"{name or 'experiment'} — {len(seeds)} seeds" if seeds else str(name or "experiment")


def _words(name: str) -> str:
    """An identifier as words: ``learning_rate`` -> ``learning rate``."""
    return name.replace("_", " ")


def _point_words(grid: GridPoint) -> str:
    """``learning rate 0.01, activation sigmoid``."""
    return ", ".join(f"{_words(k)} {v}" for k, v in grid)


def _references(results: Mapping[str, Any], variants: Sequence[str]) -> dict[str, str]:
    """Variant -> the variant drawn in grey in its panels: the one it is compared with in the
    experiment's ``report.comparisons`` (first pair), else ``report.reference``, else the
    first variant. The reference itself has none."""
    experiment = results.get("experiment")
    report = experiment.get("report") if isinstance(experiment, Mapping) else None
    report = report if isinstance(report, Mapping) else {}
    default = report.get("reference")
    default = default if default in variants else (variants[0] if variants else None)
    out: dict[str, str] = {}
    for pair in report.get("comparisons") or []:
        if len(pair) == 2 and pair[0] in variants and pair[1] in variants and pair[0] != default:
            out.setdefault(str(pair[0]), str(pair[1]))
    for v in variants:
        if v not in out and default is not None and v != default:
            out[v] = str(default)
    return out


def _curve_panels(
    results: Mapping[str, Any],
    table: Sequence[Series],
    quantity: str,
) -> Figure:
    """Small multiples of ``table``'s series: rows = grid points, columns = variants."""
    groups = group_runs(results)
    variants = _variant_order(results, list(groups))
    present = [v for v in variants if any(g[0] == v for g in groups)] or variants
    # A variant that uses no grid axis has the empty point: drawn on every grid row, no row
    # of its own (dropout_order's no_dropout beside rate = [0.2, 0.5]).
    points = [p for p in dict.fromkeys(grid for _, grid in groups) if p] or [()]
    references = _references(results, present)
    published = published_runs(results) if quantity == "accuracy" else {}
    for variant, _, _ in settings_differ(results):  # a star of another run length misleads
        published.pop(variant, None)
    if points == [()]:  # no grid: the variants' panels wrap after three
        ncols = min(len(present), 3) or 1
        cells = [((), v) for v in present]
    else:
        ncols = len(present)
        cells = [(p, v) for p in points for v in present]
    nrows = math.ceil(len(cells) / ncols)
    fig = _new_figure(min(max(3.6 * ncols, 7.0), 16.0), 1.6 + 2.7 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    histories = {key: _histories(runs) for key, runs in groups.items()}
    steps = _in_steps([h for hs in histories.values() for h in hs])
    shown: dict[str, Any] = {}
    for index, (point, variant) in enumerate(cells):
        ax = axes[index // ncols][index % ncols]

        # A variant that uses no grid axis has one group, drawn on every row.
        def group(name: str, point: GridPoint = point) -> list[Mapping[str, Any]]:
            return histories.get((name, point)) or histories.get((name, ()), [])

        reference = references.get(variant)
        vs = f"grey: {reference}" if reference and group(reference) else ""
        detail = ", ".join(x for x in (vs, _point_words(point)) if x)
        # wrapped to the panel's width (about 12 characters per inch at this size): three
        # grid axes and a reference do not fit on one line
        lines = [variant, *textwrap.wrap(detail, max(int(12 * fig.get_figwidth() / ncols), 24),
                                         break_on_hyphens=False)]
        ax.set_title("\n".join(lines), fontsize=10)
        own = group(variant)
        if vs:
            for s in (s for s in table if s.reference):
                data = _series_data(group(reference), s, steps)
                if data is not None:
                    _plot_mean(
                        ax,
                        data,
                        color=REFERENCE_COLOR,
                        style=s.style,
                        band=False,
                        label=f"{reference}: {s.words}",
                        zorder=1.5,
                        linewidth=1.3,
                        marker="s",
                    )
                    shown.setdefault("reference", reference)
        for s in table:
            data = _series_data(own, s, steps) if own else None
            if data is None:
                continue
            _plot_mean(
                ax, data, color=s.color, style=s.style, band=s.band, label=f"{variant}: {s.words}"
            )
            shown.setdefault(s.key, s)
        mark = _as_float((published.get(variant) or {}).get("test_accuracy"))
        if own and not math.isnan(mark):
            ax.plot(
                [_last_x(own, steps) * 1.03],
                [mark],
                linestyle="none",
                marker="*",
                markersize=13,
                color=TEST_COLOR,
                markeredgecolor="black",
                markeredgewidth=0.8,
                zorder=5,
                clip_on=False,
                label=f"{variant}: published test accuracy",
            )
            shown.setdefault("published", None)
        if not any(line.get_label().startswith(f"{variant}:") for line in ax.get_lines()):
            ax.text(
                0.5,
                0.5,
                "no completed runs",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=_ANNOTATION_SIZE,
            )
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelbottom=True, labelleft=True)
        if index // ncols == nrows - 1 or index + ncols >= len(cells):
            ax.set_xlabel("training steps" if steps else "epoch")
        if index % ncols == 0:
            ax.set_ylabel(quantity)
    for index in range(len(cells), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    axes[0][0].set_xlim(left=0)
    if not steps:
        axes[0][0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if quantity == "loss":
        _log_if_wide(fig, axes[0][0])
    fig.suptitle(f"{_title(results)}: {quantity} during training (mean over seeds)")
    fig.legend(
        handles=_legend(shown, table),
        loc="outside lower center",
        ncols=2 if fig.get_figwidth() >= 10.0 else 1,  # what fits the width
        fontsize=9,
        frameon=False,
    )
    return fig


def _log_if_wide(fig: Figure, ax: Any) -> None:
    """A log y axis when the positive values drawn span more than a factor of 100 (blow-ups)."""
    drawn = [np.asarray(line.get_ydata(), dtype=float) for a in fig.axes for line in a.get_lines()]
    values = np.concatenate(drawn) if drawn else np.ones(1)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size and values.max() / values.min() > 100:
        ax.set_yscale("log")


def _legend(shown: Mapping[str, Any], table: Sequence[Series]) -> list[Any]:
    handles: list[Any] = []
    for s in table:
        if s.key in shown:
            ring = s.style != "-"
            handles.append(
                Line2D(
                    [],
                    [],
                    color=s.color,
                    linestyle=s.style,
                    marker="o",
                    markersize=7 if ring else 4,
                    markerfacecolor="none" if ring else s.color,
                    label=s.words,
                )
            )
            if s.band:
                handles.append(Patch(color=s.color, alpha=0.25, label=f"band: {BAND}"))
    if "reference" in shown:
        handles.append(
            Line2D(
                [],
                [],
                color=REFERENCE_COLOR,
                marker="s",
                markersize=4,
                label="grey: the variant named in the panel's title (its "
                "reference), test, inference mode",
            )
        )
    if "published" in shown:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="*",
                markersize=11,
                color=TEST_COLOR,
                markeredgecolor="black",
                label="published single run: test accuracy",
            )
        )
    return handles


def curves_figure(results: Mapping[str, Any]) -> Figure:
    """Accuracy during training: a panel per variant and grid point (``ACCURACY_SERIES``).

    Line labels are ``"<variant>: <series words>"``; the reference variant's grey line in
    another variant's panel is labelled with the reference's name. A published test accuracy
    is a star labelled ``"<variant>: published test accuracy"`` at x = 1.03 × the last x.
    """
    return _curve_panels(results, ACCURACY_SERIES, "accuracy")


def loss_figure(results: Mapping[str, Any]) -> Figure:
    """Loss during training, laid out as ``curves_figure`` (``LOSS_SERIES``); a log y axis
    when the losses span more than a factor of 100."""
    return _curve_panels(results, LOSS_SERIES, "loss")


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
    first axis as rows, the second as columns; each cell shows the mean over seeds, for models
    with BN ``batch stats`` and the mean test accuracy with BN in training mode, and, where k
    of its n runs diverged, did not learn or failed, ``k/n div``, ``k/n no-learn`` or
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
    fig = _new_figure(1.2 + (1.3 * len(cols) + 1.6) * ncols, 0.8 + (0.9 * len(rows) + 1.3) * nrows)
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
            lines = ["n/a" if math.isnan(value) else f"{value:.3f}"]
            if s.test_accuracy_train_mode.n:
                lines.append(f"batch stats {s.test_accuracy_train_mode.mean:.3f}")
            problems = _problem_counts(s, "\n")
            if problems:
                lines.append(problems)
            dark = math.isnan(value) or norm(value) < 0.6
            ax.text(
                j,
                i,
                "\n".join(lines),
                ha="center",
                va="center",
                fontsize=_ANNOTATION_SIZE,
                color="white" if dark else "black",
            )
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(_words(col_axis))
        ax.set_ylabel(_words(row_axis))
        extra = ", ".join(f"{_words(a)} {v}" for a, v in zip(rest, rest_values, strict=True))
        ax.set_title(f"{variant}{f' ({extra})' if extra else ''}")
    for ax in list(grid_axes.flat)[len(order) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(
            image, ax=grid_axes.ravel().tolist(), label="final test accuracy (inference mode)"
        )
    return fig


#: The layer arguments that make an architecture (sizes), not how it is normalized or
#: activated: ``use_bias = false`` and a split-off Activation come with BN.
_SIZE_ARGS = ("units", "filters", "kernel_size", "pool_size", "strides", "rate")


def _architectures(results: Mapping[str, Any], variants: Sequence[str]) -> dict[str, int]:
    """Variant -> index of its architecture: the sizes of its layers other than BN layers
    and Activation layers (first resolved entry of the variant)."""
    experiment = results.get("experiment")
    entries = experiment.get("variants") if isinstance(experiment, Mapping) else None
    layers: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping):
            base = str(entry.get("base", entry.get("name")))
            kept = [
                repr([layer.get("type"), *(layer.get(k) for k in _SIZE_ARGS)])
                for layer in entry.get("layers") or []
                if isinstance(layer, Mapping)
                and "BatchNorm" not in str(layer.get("type", ""))
                and layer.get("type") != "Activation"
            ]
            layers.setdefault(base, "|".join(kept))
    kinds: dict[str, int] = {}
    return {v: kinds.setdefault(layers.get(v, v), len(kinds)) for v in variants}


def _sweep_styles(
    results: Mapping[str, Any], variants: Sequence[str]
) -> dict[str, tuple[str, str, str]]:
    """Variant -> (colour, line style, marker).

    When some variants share an architecture and there are several architectures (an MLP and
    a CNN, each with and without BN), colour is the architecture and line style and marker the
    variant within it (the first, usually without BN, solid). Otherwise colour is the variant.
    """
    arch = _architectures(results, variants)
    shared = len(set(arch.values())) < len(variants)
    if shared and len(set(arch.values())) > 1:
        seen: dict[int, int] = {}
        out = {}
        for v in variants:
            k = seen[arch[v]] = seen.get(arch[v], -1) + 1
            out[v] = (
                _COLORS[arch[v] % len(_COLORS)],
                _STYLES[k % len(_STYLES)],
                _MARKERS[k % len(_MARKERS)],
            )
        return out
    return {v: (_COLORS[i % len(_COLORS)], "-", "o") for i, v in enumerate(variants)}


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
    order of categories means nothing. Error bars: 95% bootstrap CI of the mean over seeds,
    for groups with enough seeds (``stats.MIN_SEEDS_FOR_CI``; none otherwise, as the title
    says). Colours and line styles: ``_sweep_styles``. The lower panel has a row per variant
    with, at each value, ``k/n div`` (diverged), ``k/n no-learn`` (did not learn) and
    ``k/n fail`` (failed) where k > 0.
    """
    from bnlab.lab.stats import MIN_SEEDS_FOR_CI

    values = _axis_values([dict(s.grid).get(axis) for s in summaries])
    numeric = all(_is_number(v) for v in values)
    log = numeric and min(values) > 0 and max(values) / min(values) >= 10
    present = [v for v in variants if any(s.variant == v for s in summaries)]
    styles = _sweep_styles(results, present)
    fig = _new_figure(10.5, 5.2 + 0.4 * len(present))
    with_ci = any(s.test_accuracy.ci is not None for s in summaries)
    ci_words = (
        "mean, 95% bootstrap CI"
        if with_ci
        else f"mean over seeds; no CI below {MIN_SEEDS_FOR_CI} seeds"
    )
    fig.suptitle(f"{_title(results)}: final test accuracy against {_words(axis)}")
    ax, strip = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [4.0, 0.3 + 0.4 * len(present)]}
    )
    width = min(0.6 / len(present), 0.15)
    for k, variant in enumerate(present):
        color, style, marker = styles[variant]
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
            yerr=np.vstack([mean - low, high - mean]) if any(ci) else None,
            color=color,
            marker=marker,
            markersize=6,
            linestyle=style if numeric else "none",
            capsize=3,
            label=variant,
        )
        for xi, s in zip(at, rows, strict=True):
            text = _problem_counts(s, "\n")
            if text:
                strip.text(
                    xi, k, text, ha="center", va="center", fontsize=_ANNOTATION_SIZE, color=color
                )
    handles: list[Any] = list(ax.containers)
    chance = _chance_accuracy(summaries)
    if chance is not None:
        handles.append(
            ax.axhline(
                chance,
                color="gray",
                linestyle=(0, (1, 3)),
                linewidth=1.2,
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
    ax.set_ylabel(f"final test accuracy\n({ci_words})")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.1)  # room for the counts at the first and last value
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    strip.set_ylim(len(present) - 0.5, -0.5)
    strip.set_yticks(range(len(present)), present)
    for label, variant in zip(strip.get_yticklabels(), present, strict=True):
        label.set_color(styles[variant][0])
    strip.set_title(
        "runs that diverged (div), did not learn (no-learn) or failed (fail), of the seeds run"
        + _unknown_note(summaries),
        fontsize=10,
    )
    strip.grid(True, axis="x", alpha=0.3)
    strip.set_xlabel(_words(axis))
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


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def probe_words(key: str, layers: Sequence[Mapping[str, Any]] | None) -> str:
    """A probe key in words: ``"activation_2.input"`` -> ``"input of the last sigmoid
    activation (activation_2)"``, from the model's resolved layer list.

    The layer is named by what it is (an Activation by its function, another layer by its
    type and activation) and its place among the layers of that kind (``the``, ``the 2nd``,
    ``the last``). Falls back to ``"input of layer activation_2"`` when the layer is not found.
    """
    from bnlab.models import SpecError, layer_names, parse_layers

    name, _, where = key.rpartition(".")
    if not name:
        return key
    fallback = f"{where} of layer {name}"
    try:
        specs = parse_layers(list(layers or []), where="probe")
    except SpecError:
        return fallback
    names = layer_names(specs)
    if name not in names:
        return fallback

    def kind(i: int) -> str:
        spec = specs[i]
        activation = spec.args.get("activation")
        if spec.type == "Activation":
            return f"{activation} activation"
        if isinstance(activation, str) and activation != "linear":
            return f"{spec.type} layer with {activation}"
        return f"{spec.type} layer"

    index = names.index(name)
    same = [i for i in range(len(specs)) if names[i] is not None and kind(i) == kind(index)]
    if len(same) == 1:
        place = "the"
    elif index == same[-1]:
        place = "the last"
    else:
        place = f"the {_ordinal(same.index(index) + 1)}"
    return f"{where} of {place} {kind(index)} ({name})"


def _variant_layers(results: Mapping[str, Any]) -> dict[tuple[str, GridPoint], list[Any]]:
    experiment = results.get("experiment")
    entries = experiment.get("variants") if isinstance(experiment, Mapping) else None
    out: dict[tuple[str, GridPoint], list[Any]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping):
            grid = tuple((str(k), v) for k, v in (entry.get("grid") or {}).items())
            out[(str(entry.get("base", entry.get("name"))), grid)] = list(entry.get("layers") or [])
    return out


def probes_figure(results: Mapping[str, Any]) -> Figure | None:
    """Recorded percentiles of probed tensors over training steps; None without probes.

    One panel per probed tensor (and grid point), titled in words (`probe_words`); per variant
    one line per percentile, the mean over seeds at each recorded step: the median solid, the
    lowest percentile dotted, the highest dashed, others dash-dotted, and the range between
    lowest and highest shaded. Line labels are ``"<variant>: p50"``.
    """
    groups = group_runs(results)
    variants = _variant_order(results, list(groups))
    colors = _color_map(variants)
    layers = _variant_layers(results)
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
    fig = _new_figure(12.0 if ncols == 2 else 8.0, 1.2 + 3.6 * nrows)
    fig.suptitle(
        f"{_title(results)}: percentiles of the probed values over training (mean over seeds)"
    )
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
            means = [_spread(cube[:, :, p])[0] for p in range(len(percentiles))]
            for p_index, p in enumerate(percentiles):
                percentile_sets.setdefault(p)
                ax.plot(
                    steps,
                    means[p_index],
                    color=colors[variant],
                    linestyle=_percentile_style(p_index, len(percentiles)),
                    linewidth=1.8 if p_index == len(percentiles) // 2 else 1.2,
                    marker="o" if len(steps) <= MARKER_MAX_POINTS else None,
                    markersize=3,
                    label=f"{variant}: p{p:g}",
                )
            if len(percentiles) > 1:
                ax.fill_between(
                    steps, means[0], means[-1], color=colors[variant], alpha=0.12, linewidth=0
                )
        first = next(iter(layers.get((entries[0][0], grid)) or [None]), None)
        words = probe_words(key, layers.get((entries[0][0], grid)) if first else None)
        ax.set_title(words + (f"\n{_point_words(grid)}" if grid else ""), fontsize=10)
        ax.set_xlabel("training steps")
        ax.set_ylabel("value")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    ps = sorted(percentile_sets)
    handles: list[Any] = [
        Line2D([], [], color=colors[v], linewidth=2.5, label=v)
        for v in variants
        if any(v == e[0] for entries in panels.values() for e in entries)
    ]
    handles += [
        Line2D(
            [],
            [],
            color="black",
            linestyle=_percentile_style(i, len(ps)),
            label=f"{_ordinal(round(p)) if float(p).is_integer() else f'{p:g}th'} percentile"
            + (" (median)" if p == 50 else ""),
        )
        for i, p in enumerate(ps)
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=max(len(handles) - len(ps), len(ps)),  # filled column by column
        fontsize=9,
        frameon=False,
    )
    return fig


def _percentile_style(index: int, count: int) -> str:
    """Median solid, the lowest percentile dotted, the highest dashed, others dash-dotted."""
    if index == count // 2:
        return "-"
    if index == 0:
        return ":"
    return "--" if index == count - 1 else "-."


def make_figures(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary] | None = None
) -> dict[str, Figure]:
    """``{"curves", "loss", "grid", "probes"}`` for the plots these results support."""
    figures = {"curves": curves_figure(results), "loss": loss_figure(results)}
    grid = grid_figure(results, summaries)
    if grid is not None:
        figures["grid"] = grid
    probes = probes_figure(results)
    if probes is not None:
        figures["probes"] = probes
    return figures


_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def figure_bytes(fig: Figure, fmt: str = "png", *, dpi: int = DPI) -> bytes:
    """The figure as PNG, SVG or PDF bytes (no creation date: the same figure, the same bytes)."""
    fmt = parse_formats(fmt)[0]
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "bnlab"}):  # SVG ids from a fixed salt
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buffer.getvalue()


def figure_png(fig: Figure, *, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    return figure_bytes(fig, "png", dpi=dpi)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write the figure in the format of the path's suffix (.png, .svg, .pdf), atomically."""
    path = Path(path)
    atomic_write_bytes(path, figure_bytes(fig, path.suffix.lstrip("."), dpi=dpi))
    return path


def write_plots(
    results: Mapping[str, Any],
    out_dir: str | Path,
    summaries: Sequence[VariantSummary] | None = None,
    *,
    formats: Sequence[str] = ("png",),
) -> dict[str, list[Path]]:
    """Save every figure of `make_figures` in out_dir, once per format: ``curves.png``, ..."""
    out = Path(out_dir)
    formats = parse_formats(formats)
    return {
        name: [save_figure(fig, out / f"{name}.{fmt}") for fmt in formats]
        for name, fig in make_figures(results, summaries).items()
    }
