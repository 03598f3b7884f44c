"""One table model for the per-variant summary, rendered for the terminal and for report.html.

`summary_table` turns `VariantSummary` objects into a `Table`: columns with a short header
for the terminal, a long header for the report and a legend line, and rows of ready-made cell
strings (numbers through :mod:`bnlab.lab.fmt`). `pivot_table` lays a grid study out as
variant × grid value. `to_text` prints a table within a width (80 columns by default): headers
are abbreviated and explained in a legend below, cells — variant names included — never wrap.
`to_html` and `to_markdown` render the same cells. `statistics_table` lays out the doctor's
per-layer measurements of a study (``bn_statistics.json``, ``bnlab.doctor.study``).

Columns of the summary (optional ones only when some row needs them):

======== ===================================================================================
variant  the variant (its grid values in their own columns, headed by abbreviations)
n        completed runs (failed ones in parentheses)
div      runs that diverged (loss NaN/inf or blown up; ``bnlab.lab.outcomes``) — optional
chance   runs that did not learn (final test accuracy at chance) — optional
fit      training accuracy as Keras logs it: the running mean over the last epoch's batches,
         in training mode (BN on batch statistics, weights still moving); mean over seeds
train    final training accuracy in inference mode (moving statistics); mean over seeds
test     final test accuracy in inference mode; mean over seeds
95% CI   percentile-bootstrap CI of the test mean (none below ``MIN_SEEDS_FOR_CI`` seeds)
batch    last epoch's test accuracy with BN in training mode (batch statistics) — optional
to 80%   epochs (or steps) to first reach the threshold, median over seeds; ``never``
never    seeds that never reached it, of those run
ms/step  mean milliseconds per training step: a run's wall time over its steps (a run
         trained in a stack gets its share of the stack's time; each run's seconds are in
         the report's per-seed table and summary.json)
======== ===================================================================================
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bnlab.lab import fmt, stats
from bnlab.lab.published import PublishedComparison, compact_rows
from bnlab.lab.stats import VariantSummary, threshold_words

__all__ = [
    "Column",
    "Table",
    "abbreviation",
    "pivot_table",
    "published_table",
    "statistics_table",
    "summary_table",
    "to_html",
    "to_markdown",
    "to_text",
]


@dataclass(frozen=True)
class Column:
    """A column: ``short`` header (terminal), ``long`` header (report), ``legend`` (meaning)."""

    short: str
    long: str
    legend: str = ""
    align: Literal["left", "right"] = "right"


@dataclass(frozen=True)
class Table:
    """Cells as strings, a title and notes; ``warn[i][j]`` marks a cell the report highlights."""

    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    warn: tuple[tuple[bool, ...], ...] = ()
    notes: tuple[str, ...] = field(default=())


def abbreviation(name: str) -> str:
    """A grid axis's short header: initials of a snake_case name (``learning_rate`` -> ``lr``),
    else its first 4 letters (``activation`` -> ``acti``)."""
    parts = [p for p in name.split("_") if p]
    if len(parts) > 1:
        return "".join(p[0] for p in parts)
    return name[:4]


def _count(flagged: int, unknown: int) -> str:
    return f"{flagged} ({unknown}?)" if unknown else str(flagged)


def _value(v: Any) -> str:
    """A grid value as the report prints it: ``0.001``, ``1`` for 1.0, ``relu``."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _axes(summaries: Sequence[VariantSummary]) -> list[str]:
    return list(dict.fromkeys(axis for s in summaries for axis, _ in s.grid))


def summary_table(summaries: Sequence[VariantSummary], title: str = "") -> Table:
    """The per-variant (and grid point) table; see the module docstring for its columns."""
    axes = _axes(summaries)
    first = summaries[0].time_to_threshold if summaries else None
    unit = first.unit if first else "epochs"
    reach = threshold_words(first) if first else "the threshold"
    short_reach = "to " + (reach.split(" ")[0] if "%" in reach else "thr.")
    outcomes = any(
        s.diverged or s.did_not_learn or s.diverged_unknown_seeds or s.did_not_learn_unknown_seeds
        for s in summaries
    )
    batch = any(s.test_accuracy_train_mode.n for s in summaries)
    cols: list[Column] = [Column("variant", "variant", align="left")]
    cols += [
        Column(
            abbreviation(a),
            a.replace("_", " "),
            f"{abbreviation(a)} = {a.replace('_', ' ')}",
            align="left",
        )
        for a in axes
    ]
    cols.append(Column("n", "completed runs", "n = completed runs (failed ones in brackets)"))
    if outcomes:
        cols += [
            Column(
                "div", "diverged", "div = runs that diverged (loss NaN/inf or above 2× its start)"
            ),
            Column(
                "chance",
                "did not learn",
                "chance = runs whose test accuracy stayed at "
                "chance; (k?) = k runs recorded without the numbers to tell",
            ),
        ]
    cols += [
        Column(
            "fit",
            "train acc, training mode (as Keras logs it)",
            "fit = train accuracy as Keras logs it: running mean over the last epoch's "
            "batches, training mode",
        ),
        Column(
            "train",
            "train acc, inference mode",
            "train = final train accuracy in inference mode (moving statistics)",
        ),
        Column("test", "test acc, inference mode", "test = final test accuracy, inference mode"),
    ]
    with_ci = any(s.test_accuracy.ci is not None for s in summaries)
    if with_ci:  # without any, the note below says why
        cols.append(
            Column(
                "95% CI",
                "test acc 95% CI",
                f"95% CI = bootstrap CI of the test mean (none below {stats.MIN_SEEDS_FOR_CI} seeds)",
            )
        )
    if batch:
        cols.append(
            Column(
                "batch",
                "test acc, BN batch statistics",
                "batch = test accuracy with BN in training mode (batch statistics)",
            )
        )
    cols += [
        Column(
            short_reach,
            f"{unit} to {reach} (median)",
            f"{short_reach} = {unit} to first reach {reach}, median over seeds",
        ),
        Column("never", "never reached it", "never = seeds that never reached it"),
        Column(
            "ms/step",
            "ms per training step",
            "ms/step = a run's wall time (evaluations included; a stacked run's share of its "
            "stack's) over its training steps",
        ),
    ]
    rows, warn = [], []
    for s in summaries:
        grid = dict(s.grid)
        tt, te = s.time_to_threshold, s.test_accuracy
        cells = [s.variant, *(_value(grid.get(a, "")) for a in axes)]
        flags = [False] * len(cells)
        cells.append(f"{s.completed}" + (f" ({s.failed})" if s.failed else ""))
        flags.append(bool(s.failed))
        if outcomes:
            cells += [
                _count(s.diverged, len(s.diverged_unknown_seeds)),
                _count(s.did_not_learn, len(s.did_not_learn_unknown_seeds)),
            ]
            flags += [bool(s.diverged), bool(s.did_not_learn)]
        cells += [
            fmt.accuracy(s.train_accuracy_fit.mean),
            fmt.accuracy(s.train_accuracy.mean),
            fmt.accuracy(te.mean),
        ]
        if with_ci:
            cells.append(fmt.interval(te.ci.low, te.ci.high) if te.ci else fmt.MISSING)
        if batch:
            cells.append(fmt.accuracy(s.test_accuracy_train_mode.mean))
        cells += [
            fmt.MISSING if math.isnan(tt.median) else fmt.number(tt.median),
            f"{tt.never}/{tt.n}",
            fmt.number(1000 * s.step_seconds.mean),
        ]
        flags += [False] * (len(cells) - len(flags))
        rows.append(tuple(cells))
        warn.append(tuple(flags))
    notes = []
    fewest = min((s.test_accuracy.n for s in summaries), default=0)
    if fewest < stats.MIN_SEEDS_FOR_CI:
        notes.append(
            f"no confidence intervals: they need at least {stats.MIN_SEEDS_FOR_CI} seeds per group "
            f"(fewest here: {fewest})"
        )
    return Table(title, tuple(cols), tuple(rows), tuple(warn), tuple(notes))


def pivot_table(summaries: Sequence[VariantSummary], title: str = "") -> Table | None:
    """Mean final test accuracy as variant × values of one grid axis (None without a grid).

    The axis with the most values goes across; further axes become row columns. A cell gets
    ``*`` when some of its runs diverged, did not learn or failed.
    """
    axes = _axes(summaries)
    if not axes:
        return None
    across = max(axes, key=lambda a: len({dict(s.grid).get(a) for s in summaries}))
    down = [a for a in axes if a != across]
    values = list(dict.fromkeys(dict(s.grid).get(across) for s in summaries if s.grid))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        values.sort()
    cells: dict[tuple[Any, ...], dict[Any, VariantSummary]] = {}
    for s in summaries:
        if s.grid:
            g = dict(s.grid)
            cells.setdefault((s.variant, *(g.get(a) for a in down)), {})[g.get(across)] = s
    cols = [Column("variant", "variant", align="left")]
    cols += [Column(abbreviation(a), a.replace("_", " "), align="left") for a in down]
    cols += [Column(_value(v), f"{across.replace('_', ' ')} {_value(v)}") for v in values]
    rows, warn = [], []
    flagged = False
    for key, by_value in cells.items():
        row = [_value(k) for k in key]
        flags = [False] * len(row)
        for v in values:
            s = by_value.get(v)
            bad = s is not None and bool(s.diverged or s.did_not_learn or s.failed)
            flagged |= bad
            row.append(
                fmt.MISSING
                if s is None
                else fmt.accuracy(s.test_accuracy.mean) + ("*" if bad else "")
            )
            flags.append(bad)
        rows.append(tuple(row))
        warn.append(tuple(flags))
    notes = [f"columns: {across.replace('_', ' ')}; cells: mean final test accuracy"]
    if down:
        notes.append("; ".join(f"{abbreviation(a)} = {a.replace('_', ' ')}" for a in down))
    if flagged:
        notes.append("* some runs diverged, did not learn or failed (see the table)")
    return Table(title, tuple(cols), tuple(rows), tuple(warn), tuple(notes))


def to_text(table: Table, width: int = 80) -> str:
    """Aligned columns within ``width`` when the cells allow it (2 spaces between columns,
    1 when that does not fit), short headers, the legend and notes wrapped below. Cells and
    names never wrap; a table wider than ``width`` even so is printed whole."""
    headers = [c.short for c in table.columns]
    widths = [max(len(x) for x in [h, *(r[i] for r in table.rows)]) for i, h in enumerate(headers)]
    gap = "  " if sum(widths) + 2 * (len(widths) - 1) <= width else " "

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if col.align == "left" else c.rjust(w)
            for c, w, col in zip(cells, widths, table.columns, strict=True)
        ]
        return gap.join(parts).rstrip()

    out = [table.title] if table.title else []
    out += [line(headers), gap.join("─" * w for w in widths)]
    out += [line(r) for r in table.rows]
    legend = "; ".join(c.legend for c in table.columns if c.legend)
    for text in [legend, *table.notes]:
        if text:
            out += textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)


def to_html(table: Table, css: str = "summary") -> str:
    """A ``<table>`` with the long headers (the legend as their tooltip), the same cells, and
    warned cells marked ``class="warn"``; the notes follow as a paragraph."""
    e = html.escape
    head = "".join(
        f'<th title="{e(c.legend)}">{e(c.long)}</th>' if c.legend else f"<th>{e(c.long)}</th>"
        for c in table.columns
    )
    body = []
    for i, row in enumerate(table.rows):
        flags = table.warn[i] if i < len(table.warn) else (False,) * len(row)
        cells = []
        for cell, col, bad in zip(row, table.columns, flags, strict=True):
            if col.align == "left" and not cells:
                cells.append(f'<th scope="row">{e(cell)}</th>')
                continue
            classes = " ".join(
                x for x in ("num" if col.align == "right" else "", "warn" if bad else "") if x
            )
            cells.append(
                f'<td class="{classes}">{e(cell)}</td>' if classes else f"<td>{e(cell)}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    notes = "".join(f'<p class="note">{e(n)}</p>' for n in table.notes)
    return (
        f'<table class="{css}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{notes}"
    )


def to_markdown(table: Table) -> str:
    """A Markdown table with the long headers."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if c.align == "left" else "---:" for c in table.columns]
    return "\n".join(
        [
            line([c.long for c in table.columns]),
            "| " + " | ".join(align) + " |",
            *map(line, table.rows),
        ]
    )


def published_table(comparisons: Sequence[PublishedComparison]) -> Table:
    """Published single runs against our seeds, compact (80 columns): see
    ``bnlab.lab.published.compact_rows``."""
    headers, rows = compact_rows(comparisons)
    sources = ", ".join(dict.fromkeys(c.source for c in comparisons if c.source))
    legends = [
        "",
        "",
        "",
        "",
        "",
        "pub>k/n = the published number exceeds k of our n seeds (=t: t ties)",
        "range/CI = inside our seeds' min–max / the 95% CI of our mean",
    ]
    cols = tuple(
        Column(h, h, legend, "left" if i < 2 else "right")
        for i, (h, legend) in enumerate(zip(headers, legends, strict=True))
    )
    epochs = next((c for c in comparisons if c.quantity == "epochs_to_threshold"), None)
    notes = (f"epochs = {epochs.words}",) if epochs is not None else ()
    title = "published single run vs our seeds" + (f" ({sources})" if sources else "")
    return Table(title, cols, tuple(tuple(r) for r in rows), (), notes)


def statistics_table(doc: Mapping[str, Any], title: str = "") -> Table | None:
    """BN layers after training, per variant (and grid point) and layer, over seeds, from a
    ``bn_statistics.json`` document (``bnlab.doctor.study``); None when no run has BN layers.

    Columns: the variant's resolved name, the layer, seeds measured, the moving variance over
    the variance of the layer's input at inference (``exp`` of the mean over seeds of the
    median-over-channels log ratio, with the ``exp`` of its bootstrap 95% CI from
    ``MIN_SEEDS_FOR_CI`` seeds), the moving mean's offset in input standard deviations, the
    input variance with dropout on over off (layers after dropout) and the weight the
    initial moving values still carry; a note lists the doctor's findings per variant (how
    many seeds have each).
    """
    groups: dict[str, dict[str, dict[int, Mapping[str, Any]]]] = {}
    runs: dict[str, list[Mapping[str, Any]]] = {}
    for run in doc.get("runs", []):
        name = str(run.get("name", run.get("variant", "?")))
        runs.setdefault(name, []).append(run)
        for layer in run.get("layers") or []:
            groups.setdefault(name, {}).setdefault(str(layer["name"]), {})[run["seed"]] = layer
    if not groups:
        return None
    cols = (
        Column("variant", "variant", align="left"),
        Column("layer", "BN layer", align="left"),
        Column("n", "seeds"),
        Column("var×", "moving variance / input variance at inference",
               "var× = moving variance over the variance of the layer's input at inference "
               "(median channel; geometric mean over seeds)"),
        Column("95% CI", "var× 95% CI", "95% CI of var× (bootstrap over seeds)"),
        Column("off", "moving mean's offset (input std)",
               "off = |population mean − moving mean| in input standard deviations "
               "(median channel, mean over seeds)"),
        Column("drop×", "input variance, dropout on / off",
               "drop× = input variance with dropout active over without (after dropout)"),
        Column("init", "weight of the initial moving values",
               "init = weight m^t the initial moving values still carry after t steps"
               " (percent)"),
    )
    rows = []
    for name, layers in groups.items():
        first = True
        for layer_name, by_seed in layers.items():
            ratio = stats.describe({s: v.get("log_variance_ratio") for s, v in by_seed.items()})
            dist = stats.describe({s: v.get("mean_distance") for s, v in by_seed.items()})
            drop = stats.describe({s: v.get("dropout_variance_ratio") for s, v in by_seed.items()})
            init = stats.describe({s: v.get("initial_weight") for s, v in by_seed.items()})
            ci = ratio.ci
            cells = [
                name if first else "",
                layer_name,
                str(len(by_seed)),
                fmt.fixed(math.exp(ratio.mean), 2) if ratio.n else fmt.MISSING,
                fmt.interval(math.exp(ci.low), math.exp(ci.high), 2) if ci else fmt.MISSING,
                fmt.fixed(dist.mean, 2),
                fmt.fixed(drop.mean, 2),
                fmt.percent(init.mean) if init.n else fmt.MISSING,
            ]
            rows.append(tuple(cells))
            first = False
    notes = (
        "measured by bnlab doctor on each run's final model: population statistics of each "
        "BN layer's input over the training data as it arrives at inference (dropout off), "
        "against the layer's moving statistics; var× above 1: the moving variance is larger "
        "than what the layer receives at inference",
        "doctor's findings (seeds that have each): "
        + "; ".join(f"{name}: {_findings(runs[name])}" for name in groups),
    )
    return Table(title, cols, tuple(rows), (), notes)


def _findings(runs: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        for code in dict.fromkeys(r.get("findings") or []):
            counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{code} {n}/{len(runs)}" for code, n in counts.items()) or "none"
