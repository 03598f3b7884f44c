"""``summary.json`` and ``summary.csv``: the statistics of a study, machine-readable.

Written next to ``results.json`` whenever it is (``bnlab.lab.results.write_results``), and
printed by ``bnlab run/report --json``. ``summary.json``::

    {"schema_version": 1, "experiment": name, "seeds": [int],
     "min_seeds_for_ci": 5, "confidence": 0.95,
     "threshold": {"metric": "val_accuracy", "value": 0.8, "unit": "epochs"},
     "groups": [{"variant", "grid": {axis: value}, "seeds", "completed", "failed",
                 "diverged", "did_not_learn",
                 "<metric>": {"n", "mean", "std", "ci": [low, high] | null,
                              "t_ci": [low, high] | null}   # for each of METRICS
                 "time_to_threshold": {"n", "median", "never"}}],
     "comparisons": [{"a", "b", "at", "quantity", "difference", "ci": [low, high] | null,
                      "test", "p", "p_holm", "family", "n_a", "n_b", "stated", "sentence"}]}

``median`` is null when no seed reached the threshold in at least half the seeds ("never");
non-finite numbers are null. ``summary.csv`` has one row per group with the same numbers
(``<metric>_mean``, ``_std``, ``_ci_low``, ``_ci_high``; grid axes as columns).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bnlab.lab.stats import (
    CONFIDENCE,
    MIN_SEEDS_FOR_CI,
    Comparison,
    Interval,
    MetricSummary,
    VariantSummary,
    report_comparisons,
    summarize,
    threshold_settings,
)

__all__ = ["METRICS", "SUMMARY_SCHEMA_VERSION", "summary_csv", "summary_dict"]

SUMMARY_SCHEMA_VERSION = 1
#: The per-seed numbers summarized for every group, in column order.
METRICS = (
    "test_accuracy",
    "train_accuracy",
    "train_accuracy_fit",
    "test_accuracy_train_mode",
    "test_loss",
    "train_loss",
    "seconds",
    "step_seconds",
)


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _interval(ci: Interval | None) -> list[float | None] | None:
    return None if ci is None else [_number(ci.low), _number(ci.high)]


def _metric(m: MetricSummary) -> dict[str, Any]:
    return {
        "n": m.n,
        "mean": _number(m.mean),
        "std": _number(m.std),
        "ci": _interval(m.ci),
        "t_ci": _interval(m.t_ci),
    }


def _group(s: VariantSummary) -> dict[str, Any]:
    tt = s.time_to_threshold
    return {
        "variant": s.variant,
        "grid": dict(s.grid),
        "seeds": list(s.seeds),
        "completed": s.completed,
        "failed": s.failed,
        "diverged": s.diverged,
        "did_not_learn": s.did_not_learn,
        **{name: _metric(getattr(s, name)) for name in METRICS},
        "time_to_threshold": {"n": tt.n, "median": _number(tt.median), "never": tt.never},
    }


def _comparison(c: Comparison) -> dict[str, Any]:
    t = c.test
    return {
        "a": c.a,
        "b": c.b,
        "at": c.at,
        "quantity": c.quantity,
        "difference": _number(t.difference),
        "ci": _interval(t.t_ci),
        "test": t.test,
        "p": _number(t.p_value),
        "p_holm": _number(c.p_adjusted),
        "family": c.family,
        "n_a": t.n_a,
        "n_b": t.n_b,
        "stated": c.detected,
        "sentence": c.sentence(),
    }


def summary_dict(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary] | None = None
) -> dict[str, Any]:
    """The summary.json document of a results.json dict (see the module docstring)."""
    summaries = summarize(results) if summaries is None else summaries
    metric, value = threshold_settings(results)
    experiment = results.get("experiment")
    name = experiment.get("name") if isinstance(experiment, Mapping) else None
    unit = summaries[0].time_to_threshold.unit if summaries else "epochs"
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "experiment": name,
        "seeds": list(results.get("seeds") or []),
        "min_seeds_for_ci": MIN_SEEDS_FOR_CI,
        "confidence": CONFIDENCE,
        "threshold": {"metric": metric, "value": value, "unit": unit},
        "groups": [_group(s) for s in summaries],
        "comparisons": [_comparison(c) for c in report_comparisons(results, summaries)],
    }


def summary_csv(summary: Mapping[str, Any]) -> str:
    """One CSV row per group of a `summary_dict` (empty cells for nulls)."""
    groups = summary["groups"]
    axes = list(dict.fromkeys(a for g in groups for a in g["grid"]))
    header = ["variant", *axes, "seeds", "completed", "failed", "diverged", "did_not_learn"]
    for name in METRICS:
        header += [f"{name}_{k}" for k in ("n", "mean", "std", "ci_low", "ci_high")]
    header += ["time_to_threshold_median", "time_to_threshold_never"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for g in groups:
        row: list[Any] = [g["variant"], *(g["grid"].get(a, "") for a in axes)]
        row += [len(g["seeds"]), g["completed"], g["failed"], g["diverged"], g["did_not_learn"]]
        for name in METRICS:
            m = g[name]
            ci = m["ci"] or [None, None]
            row += [m["n"], m["mean"], m["std"], *ci]
        tt = g["time_to_threshold"]
        row += [tt["median"], tt["never"]]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()
