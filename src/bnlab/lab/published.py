"""Published single runs against our seeds: where a reported number falls among them.

A tutorial or a paper usually reports one training run per variant. An experiment file records
those numbers under ``[report.published.VARIANT]`` (``train_accuracy``, ``test_accuracy``,
optionally ``epochs_to_threshold`` and ``source``); they reach ``results.json`` as
``experiment.report.published``. For each variant (at each of its grid points) and each
published quantity, `compare_published` puts the published value ``p`` next to our values
``x_1..x_n``, one per seed:

* our mean with its 95% percentile-bootstrap CI (``stats.describe``) and our min–max;
* its rank: ``below`` = #{i : x_i < p}, ``equal`` = #{i : |x_i − p| ≤ 1e-9}, ``above`` = the
  rest, so "above 7 of 10 seeds" means seven of our seeds got a smaller number than the
  published run; the percentile rank is ``100 · (below + equal / 2) / n`` (the "mean"
  definition of ``scipy.stats.percentileofscore``);
* whether ``p`` lies inside our seed range ``[min, max]`` and inside the CI of our mean.

Accuracies are the final ones (inference mode, as in ``history.final``). For
``epochs_to_threshold`` our values are the epochs to first reach the experiment's threshold
(``stats.first_reach``, the same numbers as the table's "epochs to 80%"); a seed that never
reached it counts as ``inf`` — above any published number and the maximum of the range
("never") — while mean and CI are over the seeds that reached it.

Everything reads the results.json dict, never live training state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bnlab.lab import fmt
from bnlab.lab.stats import (
    Interval,
    VariantSummary,
    describe,
    summarize,
    threshold_words,
)

__all__ = [
    "QUANTITIES",
    "PublishedComparison",
    "compact_rows",
    "compare_published",
    "published_runs",
    "settings_differ",
    "settings_note",
]

Quantity = Literal["train_accuracy", "test_accuracy", "epochs_to_threshold"]
#: Published quantities in display order.
QUANTITIES: tuple[Quantity, ...] = ("train_accuracy", "test_accuracy", "epochs_to_threshold")
_TIE = 1e-9


def published_runs(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``experiment.report.published`` of a results.json dict (``{}`` when absent)."""
    experiment = results.get("experiment") if isinstance(results, Mapping) else None
    report = experiment.get("report") if isinstance(experiment, Mapping) else None
    published = report.get("published") if isinstance(report, Mapping) else None
    if not isinstance(published, Mapping):
        return {}
    return {str(k): dict(v) for k, v in published.items() if isinstance(v, Mapping)}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class PublishedComparison:
    """One published number of one variant (at one grid point) against our seeds.

    ``values`` are our per-seed values (``inf`` = never reached, for epochs); ``mean`` and
    ``ci`` are over the finite ones (``ci`` None for fewer than 2). ``low``/``high`` are our
    min and max (``high`` is ``inf`` when some seed never reached the threshold; both nan
    without values).
    """

    variant: str
    label: str
    quantity: Quantity
    words: str
    published: float
    source: str
    values: tuple[float, ...]
    mean: float
    ci: Interval | None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def below(self) -> int:
        """Seeds whose value is smaller than the published one."""
        return sum(1 for v in self.values if v < self.published - _TIE)

    @property
    def equal(self) -> int:
        return sum(1 for v in self.values if abs(v - self.published) <= _TIE)

    @property
    def above(self) -> int:
        return self.n - self.below - self.equal

    @property
    def never(self) -> int:
        return sum(1 for v in self.values if math.isinf(v))

    @property
    def low(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def high(self) -> float:
        return max(self.values) if self.values else math.nan

    @property
    def percentile(self) -> float:
        """Percentile rank of the published value among our seeds (nan without seeds)."""
        if not self.values:
            return math.nan
        return 100.0 * (self.below + 0.5 * self.equal) / self.n

    @property
    def inside_range(self) -> bool:
        return bool(self.values) and self.low - _TIE <= self.published <= self.high + _TIE

    @property
    def inside_ci(self) -> bool | None:
        """Inside the 95% CI of our mean; None when there is no CI (fewer than 2 values)."""
        if self.ci is None:
            return None
        return self.ci.low - _TIE <= self.published <= self.ci.high + _TIE

    def fmt(self, x: float) -> str:
        """A value of this quantity: accuracies with 3 decimals, epochs short, inf as never."""
        if math.isnan(x):
            return "n/a"
        if self.quantity == "epochs_to_threshold" or math.isinf(x):
            return fmt.number(x)
        return fmt.accuracy(x)

    def mean_ci_text(self, sep: str = ", ") -> str:
        """``0.840 [0.834, 0.851]``; over the seeds that reached it, for epochs."""
        text = self.fmt(self.mean)
        if self.ci is not None:
            text += f" [{self.fmt(self.ci.low)}{sep}{self.fmt(self.ci.high)}]"
        return text

    def range_text(self) -> str:
        """``0.830–0.851``; one value when all agree (``never`` when no seed reached it)."""
        if not self.values:
            return "n/a"
        low, high = self.fmt(self.low), self.fmt(self.high)
        return low if low == high else f"{low}–{high}"

    def rank_words(self) -> str:
        """``above 7 of 10 seeds`` (the published value is larger than 7 seeds' values)."""
        if not self.values:
            return "no seeds"
        if self.below == self.n:
            return f"above all {self.n} seeds"
        if self.above == self.n:
            return f"below all {self.n} seeds"
        text = f"above {self.below} of {self.n} seeds"
        return text + (f", equal to {self.equal}" if self.equal else "")

    def where_words(self) -> str:
        """``inside our seed range and 95% CI`` / ``inside our seed range, above the 95% CI`` /
        ``above every seed``."""
        if not self.values:
            return "no seeds to compare with"
        if not self.inside_range:
            return "above every seed" if self.published > self.high else "below every seed"
        inside_ci = self.inside_ci
        if inside_ci is None:
            return "inside our seed range"
        if inside_ci:
            return "inside our seed range and 95% CI"
        assert self.ci is not None
        side = "above" if self.published > self.ci.high else "below"
        return f"inside our seed range, {side} the 95% CI of our mean"

    def sentence(self) -> str:
        """The comparison in words, e.g. for the report's list under the table."""
        head = f"{self.label} {self.words}: the published {self.fmt(self.published)}"
        if not self.values:
            return f"{head} has no completed runs of ours to compare with"
        percentile = f"percentile {self.percentile:.0f}"
        reached = " (seeds that reached it)" if self.never else ""
        mean = f"our mean{reached} {self.fmt(self.mean)}"
        ci = self.ci
        ci_words = f"95% CI {self.fmt(ci.low)}–{self.fmt(ci.high)}" if ci is not None else ""
        never = f"; {self.never} of {self.n} seeds never reached it" if self.never else ""
        if not self.inside_range:
            side = "above" if self.published > self.high else "below"
            ours = f"{mean}, {ci_words}" if ci_words else mean
            return (
                f"{head} lies outside our seed range {self.range_text()}, {side} all "
                f"{self.n} seeds ({percentile}); {ours}{never}"
            )
        if ci is None:
            where = f"; {mean}"
        elif self.inside_ci:
            where = f" and inside the {ci_words} of {mean}"
        else:
            side = "above" if self.published > ci.high else "below"
            where = f" but {side} the {ci_words} of {mean}"
        return (
            f"{head} lies inside our seed range {self.range_text()}{where}; it is "
            f"{self.rank_words()} ({percentile}){never}"
        )


def _trained_epochs(results: Mapping[str, Any]) -> dict[str, set[int]]:
    """Base variant -> the numbers of epochs its runs were configured to train."""
    experiment = results.get("experiment") if isinstance(results, Mapping) else None
    entries = experiment.get("variants") if isinstance(experiment, Mapping) else None
    out: dict[str, set[int]] = {}
    for entry in entries if isinstance(entries, list) else []:
        train = entry.get("train") if isinstance(entry, Mapping) else None
        epochs = train.get("epochs") if isinstance(train, Mapping) else None
        if isinstance(epochs, int):
            out.setdefault(str(entry.get("base", entry.get("name"))), set()).add(epochs)
    return out


def settings_differ(results: Mapping[str, Any]) -> list[tuple[str, int, list[int]]]:
    """``(variant, published epochs, our epochs)`` where a published run trained another length.

    Such numbers are not compared (`compare_published` leaves them out): a 100-epoch accuracy
    says nothing about where a 20-epoch run should land.
    """
    trained = _trained_epochs(results)
    out = []
    for variant, entry in published_runs(results).items():
        theirs = entry.get("epochs")
        ours = sorted(trained.get(variant, set()))
        if isinstance(theirs, int) and ours and ours != [theirs]:
            out.append((variant, theirs, ours))
    return out


def settings_note(results: Mapping[str, Any]) -> str:
    """One sentence on published numbers left out because the settings differ ("" if none)."""
    differ = settings_differ(results)
    if not differ:
        return ""
    theirs = sorted({t for _, t, _ in differ})
    ours = sorted({e for _, _, o in differ for e in o})
    names = ", ".join(v for v, _, _ in differ)
    return (
        f"published single runs ({names}) trained {'/'.join(map(str, theirs))} epochs, these "
        f"runs {'/'.join(map(str, ours))}: the settings differ, so they are not compared"
    )


def _group_values(summary: VariantSummary, quantity: Quantity) -> dict[int, float]:
    if quantity == "epochs_to_threshold":
        return summary.time_to_threshold.by_seed()
    return getattr(summary, quantity).by_seed()


def _words(summary: VariantSummary, quantity: Quantity) -> str:
    if quantity == "epochs_to_threshold":
        tt = summary.time_to_threshold
        return f"{tt.unit} to {threshold_words(tt)}"
    return quantity.replace("_", " ")


def compare_published(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary] | None = None
) -> list[PublishedComparison]:
    """Every published number against our seeds, in variant (and grid point) order.

    Variants with published numbers but no runs in `results` are left out (a partial study).
    ``summaries`` defaults to ``stats.summarize(results)``.
    """
    published = published_runs(results)
    if not published:
        return []
    summaries = summarize(results) if summaries is None else summaries
    differ = {v for v, _, _ in settings_differ(results)}
    out = []
    for s in summaries:
        entry = published.get(s.variant)
        if entry is None or s.variant in differ:
            continue
        for quantity in QUANTITIES:
            value = _number(entry.get(quantity))
            if value is None:
                continue
            by_seed = _group_values(s, quantity)
            values = tuple(by_seed[seed] for seed in sorted(by_seed))
            finite = describe({i: v for i, v in enumerate(values) if math.isfinite(v)})
            out.append(
                PublishedComparison(
                    variant=s.variant,
                    label=s.label,
                    quantity=quantity,
                    words=_words(s, quantity),
                    published=value,
                    source=str(entry.get("source") or ""),
                    values=values,
                    mean=finite.mean,
                    ci=finite.ci,
                )
            )
    return out


_SHORT = {
    "train_accuracy": "train acc",
    "test_accuracy": "test acc",
    "epochs_to_threshold": "epochs",
}


def compact_rows(
    comparisons: Sequence[PublishedComparison],
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for a text table that fits 80 columns (the command line).

    Columns: variant, quantity, published, our mean [95% CI], our min–max, how many seeds the
    published value is above (``7/10``, ``=k`` for ties), and whether it lies inside our seed
    range / inside the CI (``yes``/``no``/``—``).
    """
    headers = ["variant", "", "published", "ours [95% CI]", "min–max", "pub>k/n", "range/CI"]
    rows = []
    for c in comparisons:
        above = f"{c.below}/{c.n}" + (f" (={c.equal})" if c.equal else "")
        ci = {True: "yes", False: "no", None: "—"}[c.inside_ci]
        rows.append(
            [
                c.label,
                _SHORT[c.quantity],
                c.fmt(c.published),
                c.mean_ci_text(sep=","),
                c.range_text(),
                above,
                f"{'yes' if c.inside_range else 'no'}/{ci}",
            ]
        )
    return headers, rows
