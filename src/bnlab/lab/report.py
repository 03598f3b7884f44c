"""The study report: ``report.html`` (offline, self-contained) and the per-variant table.

``write_report(out_dir)`` reads ``out_dir/results.json`` only — never the live training state —
so ``bnlab report DIR`` rebuilds the same report from stored results. It writes the plots as
PNG files (``curves.png`` always; ``grid.png`` / ``probes.png`` when the experiment has a grid
or probes) and ``report.html``, a single file whose images are embedded as base64 data URIs,
with inline CSS and no scripts, fonts or other external resources. Every piece of text from
the results is escaped with ``html.escape``.

The report holds: the experiment's name, description and settings (seeds, grid, data,
training configuration, each variant's layers), the per-variant table, the published single
runs placed among our seeds when the experiment gives them (``bnlab.lab.published``), the
comparison statements of ``bnlab.lab.stats`` (a conclusion is worded only when the 95% t-interval
of the difference excludes zero), the plots, runs that diverged, did not learn or failed (rules in
``bnlab.lab.outcomes``), per-seed numbers, and the library versions and times. When the folder
holds ``bn_statistics.json`` (``bnlab.doctor.study``: studies with ``[report] doctor = true``,
or ``bnlab doctor DIR --all``), a section gives each BN layer's moving statistics against the
statistics of its input at inference, per variant, over seeds (``table.statistics_table``).

``table_rows`` / ``format_table`` give the same per-variant table as text (aligned columns or
Markdown) for the command line.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bnlab.lab import fmt, plots
from bnlab.lab import table as tables
from bnlab.lab.outcomes import DIVERGENCE_FACTOR
from bnlab.lab.published import PublishedComparison, compare_published, settings_note
from bnlab.lab.results import (
    REPORT_FILE,
    RESULTS_FILE,
    atomic_write_bytes,
    current_statistics,
    read_statistics,
)
from bnlab.lab.stats import (
    BOOTSTRAP_RESAMPLES,
    MIN_SEEDS_FOR_CI,
    Comparison,
    VariantSummary,
    comparison_lines,
    plan_words,
    report_comparisons,
    summarize,
    threshold_words,
)
from bnlab.models import changed_arguments, parse_layer

__all__ = [
    "PUBLISHED_HEADERS",
    "REPORT_FILE",
    "RESULTS_FILE",
    "load_results",
    "published_rows",
    "render_html",
    "write_report",
]



# --------------------------------------------------------------------------- reading


def load_results(out_dir: str | Path) -> dict[str, Any]:
    """``out_dir/results.json`` as a dict.

    Raises:
        ValueError: the file is missing or is not a JSON object.
    """
    path = Path(out_dir) / RESULTS_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no results file; run `bnlab run EXPERIMENT --out {out_dir}` first"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e}); rebuild it with `bnlab report {out_dir}`"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected a JSON object, got {type(data).__name__}; rebuild it with `bnlab report {out_dir}`"
        )
    return data


# --------------------------------------------------------------------------- html pieces


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scalar(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) and value.is_integer() else repr(value)
    return str(value)


def _call(name: str, args: Mapping[str, Any]) -> str:
    """``Dense(units=50, activation=relu)`` — a layer or optimizer spec on one line."""
    inner = ", ".join(f"{k}={_compact(v)}" for k, v in args.items())
    return f"{name}({inner})"


def _compact(value: Any) -> str:
    if isinstance(value, Mapping) and {"class_name", "config"} <= set(value):
        # a Keras-serialized object (an initializer): its class and set options
        config = value["config"] if isinstance(value["config"], Mapping) else {}
        return _call(str(value["class_name"]), {k: v for k, v in config.items() if v is not None})
    if isinstance(value, Mapping):
        if "name" in value and len(value) > 0:
            return _call(str(value["name"]), {k: v for k, v in value.items() if k != "name"})
        return "{" + ", ".join(f"{k}={_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return _scalar(value)


def _kv_table(pairs: Sequence[tuple[str, Any]], css: str = "kv") -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_compact(v))}</td></tr>" for k, v in pairs)
    return f'<table class="{css}">{rows}</table>'


def _layer_texts(variant: Mapping[str, Any]) -> list[str]:
    """Each layer of a resolved variant as a call with the arguments that make it what it
    is (:func:`bnlab.models.changed_arguments`: a Keras file's layers list all of theirs);
    a named layer as ``name = Call(...)``, a graph's with ``<- inputs``."""
    layers = variant.get("layers") or []
    nodes = (variant.get("graph") or {}).get("nodes") or []
    graph = len(nodes) == len(layers)
    texts = []
    for i, layer in enumerate(layers):
        if not (isinstance(layer, Mapping) and "type" in layer):
            texts.append(_compact(layer))
            continue
        try:
            args = changed_arguments(parse_layer(layer, where="layer"))
        except ValueError:  # not a layer of this version of bnlab: as written
            args = {k: v for k, v in layer.items() if k not in ("type", "name")}
        text = _call(str(layer["type"]), args)
        name = nodes[i]["name"] if graph else layer.get("name")
        text = f"{name} = {text}" if name else text
        texts.append(f"{text} \u2190 {', '.join(nodes[i]['inbound'])}" if graph else text)
    return texts


#: Longer layer lists are folded (a Keras application has hundreds of layers).
UNFOLDED_LAYERS = 12


def _layers_list(texts: Sequence[str]) -> str:
    items = "".join(f"<li><code>{_e(text)}</code></li>" for text in texts)
    listing = f'<ol class="layers">{items}</ol>'
    if len(texts) <= UNFOLDED_LAYERS:
        return listing
    return f"<details><summary>{len(texts)} layers</summary>{listing}</details>"


def _summary_tables(summaries: Sequence[VariantSummary]) -> str:
    """The pivot (grid studies) and the per-variant table, from the one table model."""
    pivot = tables.pivot_table(summaries, "")
    parts = [] if pivot is None else [
        "<h3>Mean final test accuracy per grid point</h3>", tables.to_html(pivot, "pivot")
    ]
    return "".join([*parts, tables.to_html(tables.summary_table(summaries), "summary")])


PUBLISHED_HEADERS = [
    "variant",
    "quantity",
    "published",
    "our mean [95% CI]",
    "our min–max",
    "published value among our seeds",
    "percentile",
    "where it lies",
]


def published_rows(comparisons: Sequence[PublishedComparison]) -> list[list[str]]:
    """One row of strings per published number, in the order of `PUBLISHED_HEADERS`."""
    return [
        [
            c.label,
            c.words,
            c.fmt(c.published),
            c.mean_ci_text() + (f" ({c.n - c.never} reached it)" if c.never else ""),
            c.range_text(),
            c.rank_words(),
            "n/a" if math.isnan(c.percentile) else f"{c.percentile:.0f}",
            c.where_words(),
        ]
        for c in comparisons
    ]


def _published_html(comparisons: Sequence[PublishedComparison]) -> str:
    columns = tuple(
        tables.Column(h, h, align="left" if i in (0, 1, 7) else "right")
        for i, h in enumerate(PUBLISHED_HEADERS)
    )
    rows = tuple(tuple(r) for r in published_rows(comparisons))
    table_html = tables.to_html(tables.Table("", columns, rows), "published")
    sources: dict[str, list[str]] = {}
    for c in comparisons:
        names = sources.setdefault(c.source or "source not given", [])
        if c.variant not in names:
            names.append(c.variant)
    source_text = "; ".join(f"{src} ({', '.join(names)})" for src, names in sources.items())
    sentences = "".join(f"<li>{_e(c.sentence())}</li>" for c in comparisons)
    return (
        table_html + f'<p class="note">Published numbers: {_e(source_text)}.</p>'
        f'<ul class="published">{sentences}</ul>'
    )


def _comparisons_html(comparisons: Sequence[Comparison]) -> str:
    if not comparisons:
        return (
            "<p>Nothing to compare: fewer than two variants have runs at the same grid point.</p>"
        )
    stated = {c.sentence() for c in comparisons if c.detected}
    items = [
        f'<li class="{"detected" if line in stated else "none"}">{_e(line)}</li>'
        for line in comparison_lines(comparisons)
    ]
    return f'<ul class="comparisons">{"".join(items)}</ul>'


def _problems_html(summaries: Sequence[VariantSummary]) -> str:
    items = []
    unknown = 0
    for s in summaries:
        for seed, outcome in s.outcomes:
            verdicts = []
            if outcome.diverged:
                verdicts.append(f"diverged ({outcome.diverged_words()})")
            if outcome.did_not_learn:
                verdicts.append(f"did not learn ({outcome.did_not_learn_words()})")
            if verdicts:
                items.append(f"<li>{_e(s.label)}: seed {seed} {_e('; '.join(verdicts))}</li>")
            unknown += outcome.diverged is None or outcome.did_not_learn is None
        for seed, error in s.errors:
            items.append(f"<li>{_e(s.label)}: seed {seed} failed — <code>{_e(error)}</code></li>")
    note = (
        f'<p class="note">{unknown} completed runs were recorded without their initial loss or '
        "chance accuracy (older records): a blow-up of the loss or a failure to learn cannot be "
        "told for them and is not counted; rerun them to check.</p>"
        if unknown
        else ""
    )
    if not items:
        return f"<p>No run diverged, failed to learn or raised an error.</p>{note}"
    return f'<ul class="problems">{"".join(items)}</ul>{note}'


def _per_seed_html(summaries: Sequence[VariantSummary]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "variant",
            "seed",
            "train acc",
            "test acc",
            "time to threshold",
            "seconds",
            "status",
        )
    )
    body = []
    for s in summaries:
        train, test = s.train_accuracy.by_seed(), s.test_accuracy.by_seed()
        reach, secs = s.time_to_threshold.by_seed(), s.seconds.by_seed()
        for seed in s.seeds:
            outcome = s.outcome(seed)
            if outcome is None:
                status = "failed"
            else:
                verdicts = [
                    word
                    for word, flagged in (
                        ("diverged", outcome.diverged),
                        ("did not learn", outcome.did_not_learn),
                    )
                    if flagged
                ]
                status = ", ".join(verdicts) or "completed"
            cells = [
                _e(s.label),
                str(seed),
                fmt.accuracy(train.get(seed, math.nan)),
                fmt.accuracy(test.get(seed, math.nan)),
                _e(fmt.number(reach.get(seed, math.nan))),
                _e(fmt.number(secs.get(seed, math.nan))),
                status,
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f'<table class="seeds"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _plan_text(results: Mapping[str, Any], summaries: Sequence[VariantSummary]) -> str:
    """``"2 variants × 4 grid points × 5 seeds = 40 runs"`` (`plan_words`), planned from the
    resolved experiment, plus how many runs are recorded when that differs."""
    experiment = results.get("experiment")
    planned = experiment.get("variants") if isinstance(experiment, Mapping) else None
    if isinstance(planned, list) and all(isinstance(v, Mapping) for v in planned):
        groups = [(str(v.get("base", v.get("name"))), v.get("grid") or {}) for v in planned]
    else:
        groups = [(s.variant, dict(s.grid)) for s in summaries]
    text = plan_words(groups, len(results.get("seeds") or []))
    runs = results.get("runs")
    planned_runs = len(groups) * len(results.get("seeds") or [])
    if isinstance(runs, list) and len(runs) != planned_runs:
        text += f" ({len(runs)} recorded)"
    return text


def _settings_html(results: Mapping[str, Any]) -> str:
    experiment = results.get("experiment")
    experiment = experiment if isinstance(experiment, Mapping) else {}
    seeds = results.get("seeds") or experiment.get("seeds") or []
    general: list[tuple[str, Any]] = [("seeds", f"{len(seeds)}: {', '.join(map(str, seeds))}")]
    if experiment.get("source"):
        general.append(("source", experiment["source"]))
    for axis, values in (experiment.get("grid") or {}).items():
        general.append((f"grid: {axis}", values))
    for key, value in (experiment.get("report") or {}).items():
        if key != "published":  # shown in its own section
            general.append((f"report: {key}", value))
    parts = [_kv_table(general)]
    variants = [v for v in experiment.get("variants") or [] if isinstance(v, Mapping)]
    if variants:
        for key, title in (("data", "Data"), ("train", "Training")):
            configs = [v.get(key) for v in variants]
            if all(c == configs[0] for c in configs) and isinstance(configs[0], Mapping):
                parts.append(
                    f"<h3>{title} (all variants)</h3>{_kv_table(list(configs[0].items()))}"
                )
            else:
                rows = [(v.get("name", "?"), v.get(key)) for v in variants]
                parts.append(f"<h3>{title} (per variant)</h3>{_kv_table(rows)}")
        parts.append("<h3>Variants</h3>")
        by_base: dict[str, list[Mapping[str, Any]]] = {}
        for v in variants:
            by_base.setdefault(str(v.get("base", v.get("name", "?"))), []).append(v)
        for base, group in by_base.items():
            description = group[0].get("description") or ""
            parts.append(f'<h4>{_e(base)}</h4><p class="desc">{_e(description)}</p>')
            layer_lists = [_layer_texts(v) for v in group]
            if all(layers == layer_lists[0] for layers in layer_lists):
                shape = group[0].get("input_shape")
                if shape:
                    parts.append(f"<p>input shape {_e(_compact(shape))}</p>")
                parts.append(_layers_list(layer_lists[0]))
            else:
                for v, layers in zip(group, layer_lists, strict=True):
                    parts.append(
                        f"<p><code>{_e(v.get('name', base))}</code></p>{_layers_list(layers)}"
                    )
    else:
        other = [
            (k, v)
            for k, v in experiment.items()
            if k not in ("name", "description", "report", "grid")
        ]
        if other:
            parts.append(_kv_table(other))
    config = json.dumps(experiment, indent=1, ensure_ascii=False, allow_nan=False, default=str)
    parts.append(
        f"<details><summary>Resolved experiment (JSON)</summary><pre>{_e(config)}</pre></details>"
    )
    return "".join(parts)


_CAPTIONS = {
    "curves": (
        "Accuracy during training, mean over seeds: a panel per variant (and grid point), "
        "shared axes. Colour is the data set, line style the BN mode. Blue solid: test data in "
        f"inference mode (moving statistics), with a shaded band spanning the {plots.BAND}. Blue "
        "dashed (models with batch normalization): test data with BN in training mode (batch "
        "statistics) — the gap between dashed and solid blue is the lag of the moving averages. "
        "Orange dashed: training accuracy as Keras logs it, the running mean over each epoch's "
        "batches in training mode. Grey: the reference variant's test accuracy, for comparison "
        "in every other panel. Short series are drawn with markers. A star: the test accuracy a "
        "published single run of the same length reported."
    ),
    "loss": (
        "Loss during training, laid out as the accuracy panels: blue solid the test loss in "
        f"inference mode (band: {plots.BAND}), orange dashed the training loss (running mean "
        "over each epoch's batches), grey the reference variant's test loss."
    ),
    "grid": (
        "Mean final test accuracy over seeds at each grid point (a line over a numeric axis, "
        "separate points over a categorical one, with the 95% bootstrap CI when a group has "
        f"at least {MIN_SEEDS_FOR_CI} seeds; heat-map cells of models with BN also give the "
        "test accuracy with batch statistics). The counts at a point say how many of its runs "
        "diverged ('div'), did not learn ('no-learn') or failed ('fail'); the dotted line is "
        "chance, the accuracy of always predicting the most frequent class."
    ),
    "probes": (
        "Percentiles of the probed layers' inputs/outputs over training steps, mean over seeds: "
        "median solid, lowest percentile dotted, highest dashed, the range between them "
        "shaded; one colour per variant."
    ),
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2em auto;max-width:1250px;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.meta,.desc,.note,figcaption,footer{color:#555}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.warn{background:#fde8e8}table.kv th{background:#f8f8f8;font-weight:600}
ul.comparisons li{margin:.3em 0}li.detected{font-weight:600}li.none{color:#444}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
code{font-size:.9em}ol.layers{margin:.2em 0 .8em}
"""


_MIME = {"png": "image/png", "svg": "image/svg+xml"}


def _statistics_html(statistics: Mapping[str, Any] | None) -> str:
    """The "BN statistics after training" section, or "" without measurements."""
    table = None if statistics is None else tables.statistics_table(statistics)
    if table is None:
        return ""
    limit = statistics.get("max_batches") if statistics else None
    batches = f"at most {limit} batches" if limit else "all batches"
    return f"""<section id="bn-statistics"><h2>BN statistics after training (bnlab doctor)</h2>
{tables.to_html(table, "statistics")}
<p class="note">For every completed run, `bnlab doctor` measured each BN layer of the final
model on the training data ({_e(batches)} of the training batch size): the population mean and
variance of the layer's input per channel, as the input arrives at inference (every BN layer
before it normalizing with batch statistics, dropout off), against the moving mean and variance
the layer uses at inference. A moving variance larger than the input's (var× above 1) makes
the layer shrink its output at inference: dropout before BN does this (its moving variance was
learned on dropped-out, rescaled inputs: the “variance shift”), and so do initial moving values
that have not faded (init: their remaining weight). Rerun the measurement with
<code>bnlab doctor DIR --all</code>; one run in detail: <code>bnlab doctor DIR --variant NAME
--seed S</code>.</p>
</section>
"""


def _data_uri(image: bytes) -> str:
    """A data URI of PNG or SVG bytes (SVG when the bytes are XML)."""
    kind = "svg" if image.lstrip()[:5] in (b"<?xml", b"<svg ") else "png"
    return f"data:{_MIME[kind]};base64," + base64.b64encode(image).decode("ascii")


def render_html(
    results: Mapping[str, Any],
    *,
    summaries: Sequence[VariantSummary],
    comparisons: Sequence[Comparison],
    images: Mapping[str, bytes],
    published: Sequence[PublishedComparison] = (),
    statistics: Mapping[str, Any] | None = None,
    built: str | None = None,
) -> str:
    """The report as one HTML document; ``images`` maps plot names to PNG or SVG bytes.

    ``published``: `compare_published` rows; the section is left out when there are none.
    ``statistics``: the ``bn_statistics.json`` document; its section is left out when None.
    """
    experiment = results.get("experiment")
    experiment = experiment if isinstance(experiment, Mapping) else {}
    name = str(experiment.get("name") or "experiment")
    seeds = results.get("seeds") or []
    built = built or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    first = summaries[0].time_to_threshold if summaries else None
    reach = f"{first.unit} to first reach {threshold_words(first)}" if first else ""
    versions = results.get("versions") or {}
    version_text = ", ".join(f"{k} {v}" for k, v in versions.items()) or "not recorded"
    settings = settings_note(results)
    settings_html = f'<section id="published"><p class="note">{_e(settings.capitalize())}.</p></section>' if settings else ""
    published_section = (
        f"""<section id="published"><h2>Published single run vs our seeds</h2>
{_published_html(published)}
<p class="note">A published number comes from one training run; ours are {len(seeds)} seeds of
the same settings. “Above k of n seeds”: k of our seeds got a smaller number than the published
run (percentile rank = (k + ties / 2) / n). A value inside our seed range is what another seed
could have given; outside it, the source's setup probably differed from ours. The 95% CI is that
of our mean (percentile bootstrap over seeds), not of a single run. Epochs count a seed that
never reached the threshold as “never”; mean and CI are then over the seeds that did.</p>
</section>
"""
        if published
        else settings_html
    )
    figures = "".join(
        f'<figure id="plot-{_e(key)}"><img src="{_data_uri(png)}" alt="{_e(key)} plot of {_e(name)}">'
        f"<figcaption>{_e(_CAPTIONS.get(key, key))}</figcaption></figure>"
        for key, png in images.items()
    )
    body = f"""<header>
<h1>{_e(name)}</h1>
<p class="desc">{_e(experiment.get("description") or "")}</p>
<p class="meta">{_e(_plan_text(results, summaries))} · results created {_e(results.get("created", "unknown"))}</p>
</header>
<section id="summary"><h2>Results per variant</h2>
{_summary_tables(summaries)}
<p class="note">“fit” is the training accuracy as Keras logs it: the running mean over the last
epoch's batches, in training mode (BN normalizes with each batch's statistics while the weights
still move). “train” and “test” are final accuracies measured in inference mode after training
(moving statistics). A BN model can show a high “fit” and a low “train”: its moving statistics
lag behind its weights. The 95% CI of the mean is a percentile bootstrap over seeds
({BOOTSTRAP_RESAMPLES:,} resamples, fixed seed), given only from {MIN_SEEDS_FOR_CI} seeds on
(fewer give far too narrow intervals); the standard deviations are in summary.json. “batch”: the
last epoch's test accuracy computed with batch statistics instead of the moving averages; a large
gap to “test” means the moving statistics are stale. {_e(reach.capitalize())}: median over
seeds; a seed that never reaches it counts as “never” (the median is “never” when at least half
never do). Diverged: the training loss became NaN/inf, or the last epoch's training loss ended
above {DIVERGENCE_FACTOR:g} × the loss of the first batch before any update. Did not learn: the
final test accuracy is no better than always predicting the test set's most frequent class. A
run can be both. Failed: the run raised an error.</p>
</section>
{published_section}<section id="comparisons"><h2>Comparisons</h2>
{_comparisons_html(comparisons)}
<p class="note">Differences are the first variant minus the second, at equal grid points. Paired
by seed (paired t-test) when both variants ran the same seeds — runs with equal seeds share the
data order — and Welch's t-test otherwise; no comparison is made with fewer than
{MIN_SEEDS_FOR_CI} seeds on a side. The p-values of the study's comparisons are adjusted with
Holm's step-down method (the chance of any false statement stays below 5%); a difference is
stated, with its 95% t-interval, only when its adjusted p is below 0.05. Pairs without a
detectable difference are listed together; every number is in summary.json.</p>
</section>
{_statistics_html(statistics)}<section id="plots"><h2>Plots</h2>
{figures}
</section>
<section id="problems"><h2>Runs that diverged, did not learn or failed</h2>
{_problems_html(summaries)}
</section>
<section id="settings"><h2>Settings</h2>
{_settings_html(results)}
</section>
<section id="per-seed"><h2>Per seed</h2>
<details><summary>Every run's final numbers</summary>{_per_seed_html(summaries)}</details>
</section>
<footer><p>Versions: {_e(version_text)}. Results created {_e(results.get("created", "unknown"))};
report built {_e(built)}.</p></footer>"""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bnlab report: {_e(name)}</title>
<style>{_CSS}</style>
</head>
<body>
{body}
</body>
</html>
"""


def write_report(out_dir: str | Path, *, formats: Sequence[str] = ("png",)) -> Path:
    """Build ``report.html`` and the plots in ``out_dir`` from ``out_dir/results.json``.

    Writes each figure of ``plots.make_figures`` (``curves``, ``loss``, and ``grid`` /
    ``probes`` when the results have a grid or probes) once per format of ``formats``
    (``plots.FORMATS``: png, svg, pdf), and ``report.html``, each atomically. The page embeds
    the SVG of a figure when SVG is among the formats (sharp at any zoom), else its PNG.
    Returns the path of ``report.html``.

    Raises:
        ValueError: results.json is missing, unreadable or not in the documented shape, or
            a format is not one of ``plots.FORMATS``.
    """
    formats = plots.parse_formats(formats)
    out = Path(out_dir)
    results = load_results(out)
    summaries = summarize(results)
    comparisons = report_comparisons(results, summaries)
    published = compare_published(results, summaries)
    images: dict[str, bytes] = {}
    for key, fig in plots.make_figures(results, summaries).items():
        for kind in formats:
            data = plots.figure_bytes(fig, kind)
            atomic_write_bytes(out / f"{key}.{kind}", data)
            if kind == "svg" or (kind == "png" and key not in images):
                images[key] = data
        if key not in images:  # pdf only: the page still shows the figure
            images[key] = plots.figure_png(fig)
    page = render_html(
        results,
        summaries=summaries,
        comparisons=comparisons,
        images=images,
        published=published,
        statistics=current_statistics(read_statistics(out), results),
    )
    path = out / REPORT_FILE
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
