"""Statistics over seeds: what each variant achieved, and whether two variants differ.

Everything here reads the record shapes of ``results.json`` (RunResult dicts holding a History
dict) and never live training state, so tables and reports can be rebuilt from stored results.

A *group* is one variant at one grid point (an experiment without a grid has one group per
variant). Its runs differ only by seed.

Per group, for one number per seed ``x_1..x_n`` (final test accuracy, say):

* mean ``x̄ = Σ x_i / n`` and sample standard deviation ``s = sqrt(Σ (x_i − x̄)² / (n − 1))``;
* a 95% confidence interval of the mean by the **percentile bootstrap over seeds**: draw
  ``BOOTSTRAP_RESAMPLES`` (10,000) resamples of the n seeds with replacement from a generator
  seeded with ``BOOTSTRAP_SEED`` (so the same results always give the same interval), take each
  resample's mean, and report the 2.5th and 97.5th percentiles (numpy's linear interpolation);
* the t-interval ``x̄ ± t_{0.975, n−1} · s / √n`` next to it. With few seeds the percentile
  bootstrap is too narrow (it behaves like a z-interval with the biased variance), which is why
  differences are judged by their t-interval (see below);
* the time per training step of a run: its wall time (``seconds``: data, training, the
  evaluations, saving) over ``steps_per_epoch`` × the epochs it trained (`steps_trained`);
* the time to first reach a threshold (``val_accuracy ≥ 0.80`` by default), in epochs or steps.
  Seeds that never reach it count as ``never`` (``math.inf``), they are not dropped: the median
  over seeds is ``never`` when at least half of the seeds never reach it, and the count of
  ``never`` is reported.

Between two groups A and B (the difference is always ``A − B``):

* **paired** when both have runs for the same set of seeds (runs with the same seed share the
  initial weights' generator and the data order): per-seed differences ``d_i = a_i − b_i`` over
  the seeds where both values are finite, paired t-test ``t = d̄ / (s_d / √n)`` with ``n − 1``
  degrees of freedom and the t-interval ``d̄ ± t_{0.975, n−1} · s_d / √n``;
* **Welch** otherwise: ``t = (ā − b̄) / sqrt(s_a²/n_a + s_b²/n_b)`` with Welch–Satterthwaite
  degrees of freedom and the matching t-interval.

**Few seeds.** Below ``MIN_SEEDS_FOR_CI`` (5) values a group gets no confidence interval of
its mean, and two groups are not compared: with 2–4 seeds the percentile bootstrap is far too
narrow (2 equal seeds give ``[0.838, 0.838]``) and the t-interval spans tens of percentage
points. The report and the command line say so instead of printing such intervals.

**Many comparisons.** A study makes a family of comparisons (every variant against its
reference, at every grid point, on two quantities). Their p-values are adjusted with Holm's
step-down method (`holm`), and a difference is worded as a conclusion only when its adjusted p
is below 0.05; the sentence gives the difference with its (unadjusted) 95% t-interval and both
p-values. Otherwise the pair is listed on one line "no detectable difference"
(`comparison_lines`). A percentile-bootstrap interval of the difference
(resampling seeds; each group independently for Welch) is kept in ``DifferenceTest.ci``.

Runs that diverged (a non-finite loss, or a training loss that ended above twice its initial
value), runs that did not learn (final test accuracy no better than always predicting the most
frequent class) and runs that failed are counted and reported; the rules are in
:mod:`bnlab.lab.outcomes`. A metric's statistics use every run whose value is a finite number —
a diverged run that still reports a finite accuracy contributes it (that is what the model
achieved); a null value is listed as missing for that metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

# Student's t from scipy.special (what scipy.stats.t's ppf and sf call): importing
# scipy.stats would add more than a second to every command that summarises a study.
from scipy.special import stdtr, stdtrit

from bnlab.lab import fmt
from bnlab.lab.outcomes import RunOutcome, run_outcome
from bnlab.lab.results import DEFAULT_THRESHOLD, DEFAULT_THRESHOLD_METRIC, SCHEMA_VERSION
from bnlab.train.history import EPOCH_METRICS

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "DEFAULT_THRESHOLD",
    "DEFAULT_THRESHOLD_METRIC",
    "MIN_SEEDS_FOR_CI",
    "QUANTITIES",
    "Comparison",
    "GridPoint",
    "Interval",
    "MetricSummary",
    "ThresholdSummary",
    "VariantSummary",
    "bootstrap_mean_ci",
    "compare",
    "compare_all",
    "comparison_lines",
    "describe",
    "difference_test",
    "first_reach",
    "group_label",
    "group_runs",
    "holm",
    "plan_words",
    "report_comparisons",
    "steps_trained",
    "summarize",
    "t_interval",
    "threshold_settings",
    "threshold_words",
]

CONFIDENCE = 0.95
#: Fewer seeds than this give no confidence interval of a mean and no comparison: a percentile
#: bootstrap over 2-4 values is far too narrow, a t-interval spans most of the scale.
MIN_SEEDS_FOR_CI = 5
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
SUPPORTED_SCHEMA_VERSIONS = (SCHEMA_VERSION,)

Unit = Literal["epochs", "steps"]
GridPoint = tuple[tuple[str, Any], ...]

_HISTORY_METRICS = EPOCH_METRICS


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``level`` (0.95), made by ``method``.

    ``method`` is ``"bootstrap"`` (percentile bootstrap over seeds) or ``"t"`` (Student t).
    """

    low: float
    high: float
    level: float = CONFIDENCE
    method: Literal["bootstrap", "t"] = "bootstrap"

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside ``[low, high]``."""
        return value < self.low or value > self.high


def _as_finite_array(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{what} expects finite numbers; got {list(values)}; drop null/inf values first"
        )
    return x


def bootstrap_mean_ci(
    values: Sequence[float],
    *,
    level: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Percentile-bootstrap CI of the mean of ``values`` (one value per seed).

    ``resamples`` draws of n values with replacement (``numpy.random.default_rng(seed)``), the
    mean of each, and the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of those means.
    Returns None for fewer than 2 values (no spread to resample).
    """
    x = _as_finite_array(values, "bootstrap_mean_ci")
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    return _percentile_interval(means, level)


def _percentile_interval(draws: np.ndarray, level: float) -> Interval:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), level, "bootstrap")


def _t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (``t.ppf(q, df)``)."""
    return float(stdtrit(df, q))


def t_interval(values: Sequence[float], *, level: float = CONFIDENCE) -> Interval | None:
    """Student-t CI of the mean: ``x̄ ± t_{(1+level)/2, n−1} · s / √n``; None for n < 2."""
    x = _as_finite_array(values, "t_interval")
    if x.size < 2:
        return None
    mean = float(x.mean())
    half = (
        _t_quantile((1.0 + level) / 2.0, x.size - 1)
        * float(x.std(ddof=1))
        / math.sqrt(x.size)
    )
    return Interval(mean - half, mean + half, level, "t")


# --------------------------------------------------------------------------- one group


@dataclass(frozen=True)
class MetricSummary:
    """One number per seed (finite ones only) and what they say together.

    ``values[i]`` belongs to ``seeds[i]``; ``missing`` lists the seeds whose value was null or
    non-finite. ``std`` uses ddof=1 (nan for n < 2); the intervals are None for fewer than
    ``MIN_SEEDS_FOR_CI`` values.
    """

    name: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    missing: tuple[int, ...]
    mean: float
    std: float
    ci: Interval | None
    t_ci: Interval | None

    @property
    def n(self) -> int:
        return len(self.values)

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))


def _finite_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def describe(per_seed: Mapping[int, float | None], *, name: str = "value") -> MetricSummary:
    """Summarize one value per seed; null/non-finite values are listed as missing."""
    seeds: list[int] = []
    values: list[float] = []
    missing: list[int] = []
    for seed in sorted(per_seed):
        v = _finite_or_none(per_seed[seed])
        if v is None:
            missing.append(seed)
        else:
            seeds.append(seed)
            values.append(v)
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean()) if x.size else math.nan
    std = float(x.std(ddof=1)) if x.size >= 2 else math.nan
    return MetricSummary(
        name=name,
        seeds=tuple(seeds),
        values=tuple(values),
        missing=tuple(missing),
        mean=mean,
        std=std,
        ci=bootstrap_mean_ci(values) if x.size >= MIN_SEEDS_FOR_CI else None,
        t_ci=t_interval(values) if x.size >= MIN_SEEDS_FOR_CI else None,
    )


@dataclass(frozen=True)
class ThresholdSummary:
    """Time for each seed to first reach ``metric ≥ threshold`` (``≤`` for a loss).

    ``values[i]`` is seed ``seeds[i]``'s time in ``unit`` (``math.inf`` = never reached).
    ``median`` is ``math.inf`` ("never") when at least half of the seeds never reach it.
    Seeds without a history (failed runs) are not counted here.
    """

    metric: str
    threshold: float
    unit: Unit
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    median: float
    never: int

    @property
    def n(self) -> int:
        return len(self.values)

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))


def _reached(metric: str, value: float, threshold: float) -> bool:
    return value <= threshold if "loss" in metric else value >= threshold


def first_reach(
    history: Mapping[str, Any],
    *,
    metric: str = DEFAULT_THRESHOLD_METRIC,
    threshold: float = DEFAULT_THRESHOLD,
    unit: Unit = "epochs",
) -> float:
    """The first time a run's ``metric`` is ``≥ threshold`` (``≤`` for losses); ``inf`` if never.

    Uses the history's ``evals`` records when there are any (``epoch`` is a float there, e.g.
    2.25 = a quarter into the third epoch; ``step`` counts optimizer steps). Otherwise uses the
    per-epoch lists, where the value after epoch k (1-based, as Keras prints "Epoch k/E") is
    time k, or step ``k · steps_per_epoch``. Null values (divergence) do not reach anything.

    Raises:
        ValueError: unknown ``metric`` or ``unit``, or ``unit="steps"`` without
            ``steps_per_epoch`` in a history without evals.
    """
    if metric not in _HISTORY_METRICS:
        raise ValueError(
            f"first_reach metric must be one of {', '.join(_HISTORY_METRICS)}; got {metric!r}"
        )
    if unit not in ("epochs", "steps"):
        raise ValueError(f"first_reach unit must be 'epochs' or 'steps'; got {unit!r}")
    evals = history.get("evals") or []
    if metric != "loss" and metric != "accuracy" and evals:
        for record in evals:
            v = _finite_or_none(record.get(metric))
            if v is not None and _reached(metric, v, threshold):
                return float(record["epoch"] if unit == "epochs" else record["step"])
        return math.inf
    per_epoch = (history.get("epochs") or {}).get(metric) or []
    for k, value in enumerate(per_epoch, start=1):
        v = _finite_or_none(value)
        if v is not None and _reached(metric, v, threshold):
            if unit == "epochs":
                return float(k)
            steps = history.get("steps_per_epoch")
            if not steps:
                raise ValueError(
                    f"first_reach(unit='steps') needs the history's steps_per_epoch; got {steps!r}; "
                    "use unit='epochs'"
                )
            return float(k * int(steps))
    return math.inf


def _has_metric(history: Mapping[str, Any], metric: str) -> bool:
    if (history.get("epochs") or {}).get(metric) is not None:
        return True
    return any(_finite_or_none(r.get(metric)) is not None for r in history.get("evals") or [])


def _threshold_summary(
    histories: Mapping[int, Mapping[str, Any]], *, metric: str, threshold: float, unit: Unit
) -> ThresholdSummary:
    seeds = [s for s in sorted(histories) if _has_metric(histories[s], metric)]
    values = [
        first_reach(histories[s], metric=metric, threshold=threshold, unit=unit) for s in seeds
    ]
    median = float(np.median(values)) if values else math.nan
    return ThresholdSummary(
        metric=metric,
        threshold=threshold,
        unit=unit,
        seeds=tuple(seeds),
        values=tuple(values),
        median=median,
        never=sum(1 for v in values if math.isinf(v)),
    )


def group_label(variant: str, grid: GridPoint) -> str:
    """``"bn"`` or, at a grid point, ``"bn [learning_rate=0.01, activation=sigmoid]"``."""
    if not grid:
        return variant
    return f"{variant} [{', '.join(f'{k}={v}' for k, v in grid)}]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def plan_words(groups: Sequence[tuple[str, Mapping[str, Any]]], seeds: int) -> str:
    """How many runs a study has, in words, from its ``(variant, grid values)`` groups.

    The count is ``Σ over variants of (its grid points) × seeds``. Examples::

        "3 variants × 10 seeds = 30 runs"                          (no grid)
        "2 variants × 4 grid points × 5 seeds = 40 runs"           (every variant on the grid)
        "3 variants, 9 variant/grid-point pairs × 5 seeds = 45 runs"
                                     (a variant that uses no grid axis runs at one point only)

    ``groups`` lists each variant once per grid point, e.g. ``[(v.base, v.grid) for v in
    experiment.variants]`` or the resolved experiment's ``variants`` entries.
    """
    points: dict[str, int] = {}
    for variant, _ in groups:
        points[variant] = points.get(variant, 0) + 1
    pairs = sum(points.values())
    runs = f"{_plural(seeds, 'seed')} = {_plural(pairs * seeds, 'run')}"
    variants = _plural(len(points), "variant")
    if not any(grid for _, grid in groups):
        return f"{variants} × {runs}"
    if len(set(points.values())) == 1:
        return f"{variants} × {_plural(pairs // len(points), 'grid point')} × {runs}"
    return f"{variants}, {pairs} variant/grid-point pairs × {runs}"


@dataclass(frozen=True)
class VariantSummary:
    """Everything the table and the report say about one variant (at one grid point).

    ``seeds`` lists every seed with a run record. ``completed``/``failed`` count run statuses.
    ``outcomes`` holds ``(seed, RunOutcome)`` for each completed run; from them come
    ``diverged_seeds`` (non-finite loss, or a loss that ended above twice its initial value),
    ``did_not_learn_seeds`` (final test accuracy no better than chance) and the seeds whose
    verdict is unknown because the record predates ``initial_loss``/``chance_accuracy``
    (:mod:`bnlab.lab.outcomes`). ``errors`` keeps the last line of each failed run's error (the
    exception), by seed. ``train_accuracy`` is the final accuracy on the training data in
    inference mode (moving statistics); ``train_accuracy_fit`` the last epoch's training
    accuracy as Keras logs it: the running mean over that epoch's batches, in training mode
    (batch statistics, weights still changing). ``test_accuracy_train_mode`` is the last epoch's test accuracy with BN in training
    mode (batch statistics); it has no values for models without BN. Its gap to
    ``test_accuracy`` (inference mode, moving statistics) measures stale moving statistics.
    ``seconds`` is each run's wall time; ``step_seconds`` that time divided by the run's
    training steps (`steps_trained`): the cost of one step with its share of the
    evaluations, comparable between variants trained the same way.
    """

    variant: str
    grid: GridPoint
    seeds: tuple[int, ...]
    completed: int
    failed_seeds: tuple[int, ...]
    outcomes: tuple[tuple[int, RunOutcome], ...]
    train_accuracy: MetricSummary
    train_accuracy_fit: MetricSummary
    test_accuracy: MetricSummary
    train_loss: MetricSummary
    test_loss: MetricSummary
    test_accuracy_train_mode: MetricSummary
    time_to_threshold: ThresholdSummary
    seconds: MetricSummary
    step_seconds: MetricSummary
    errors: tuple[tuple[int, str], ...]

    @property
    def label(self) -> str:
        return group_label(self.variant, self.grid)

    @property
    def failed(self) -> int:
        return len(self.failed_seeds)

    @property
    def diverged_seeds(self) -> tuple[int, ...]:
        return tuple(seed for seed, o in self.outcomes if o.diverged)

    @property
    def did_not_learn_seeds(self) -> tuple[int, ...]:
        return tuple(seed for seed, o in self.outcomes if o.did_not_learn)

    @property
    def diverged_unknown_seeds(self) -> tuple[int, ...]:
        """Completed runs whose record cannot show a blow-up (no ``initial_loss``)."""
        return tuple(seed for seed, o in self.outcomes if o.diverged is None)

    @property
    def did_not_learn_unknown_seeds(self) -> tuple[int, ...]:
        """Completed runs whose record cannot show learning (no ``chance_accuracy``)."""
        return tuple(seed for seed, o in self.outcomes if o.did_not_learn is None)

    @property
    def diverged(self) -> int:
        return len(self.diverged_seeds)

    @property
    def did_not_learn(self) -> int:
        return len(self.did_not_learn_seeds)

    def outcome(self, seed: int) -> RunOutcome | None:
        """The verdicts of a completed run; None for a failed or unknown seed."""
        return dict(self.outcomes).get(seed)

    def quantity(self, name: str) -> MetricSummary | ThresholdSummary:
        """The summary behind a ``QUANTITIES`` name, e.g. ``"test_accuracy"``."""
        if name not in QUANTITIES:
            raise ValueError(f"unknown quantity {name!r}; choose from: {', '.join(QUANTITIES)}")
        return getattr(self, name)


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise ValueError(
            f"{where} must have a {key!r} entry; got {_short(mapping)}; rebuild results.json with `bnlab run`"
        )
    return mapping[key]


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


def _grid_point(run: Mapping[str, Any]) -> GridPoint:
    grid = run.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ValueError(f"a run's 'grid' must be an object {{axis: value}}; got {_short(grid)}")
    return tuple((str(k), v) for k, v in grid.items())


def threshold_settings(results: Mapping[str, Any]) -> tuple[str, float]:
    """``(metric, threshold)`` from the experiment's optional ``report`` table, else defaults.

    Reads ``experiment.report.threshold_metric`` and ``experiment.report.threshold`` when the
    resolved experiment has them; otherwise ``("val_accuracy", 0.80)``.
    """
    experiment = results.get("experiment") if isinstance(results, Mapping) else None
    report = experiment.get("report") if isinstance(experiment, Mapping) else None
    report = report if isinstance(report, Mapping) else {}
    metric = str(report.get("threshold_metric", DEFAULT_THRESHOLD_METRIC))
    threshold = float(report.get("threshold", DEFAULT_THRESHOLD))
    return metric, threshold


def _check_schema(results: Any) -> Sequence[Mapping[str, Any]]:
    if not isinstance(results, Mapping):
        raise TypeError(
            f"results must be the results.json object (a dict); got {type(results).__name__}"
        )
    version = results.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"results.json schema_version must be one of {SUPPORTED_SCHEMA_VERSIONS}; got {version!r}; "
            "rebuild it with this bnlab version (`bnlab run` resumes from the store)"
        )
    runs = _require(results, "runs", "results.json")
    if not isinstance(runs, Sequence):
        raise ValueError(f"results.json 'runs' must be a list of run records; got {_short(runs)}")
    return runs


def group_runs(
    results: Mapping[str, Any],
) -> dict[tuple[str, GridPoint], dict[int, Mapping[str, Any]]]:
    """Runs by group ``(variant, grid point)`` then by seed, in the experiment's variant order.

    Raises:
        ValueError: a run record lacks ``variant``/``seed``, or two runs share variant, grid
            point and seed.
    """
    runs = _check_schema(results)
    order = {name: i for i, name in enumerate(results.get("variants") or [])}
    groups: dict[tuple[str, GridPoint], dict[int, Mapping[str, Any]]] = {}
    for i, run in enumerate(runs):
        where = f"results.json runs[{i}]"
        variant = str(_require(run, "variant", where))
        seed = _require(run, "seed", where)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{where} 'seed' must be an integer; got {seed!r}")
        key = (variant, _grid_point(run))
        by_seed = groups.setdefault(key, {})
        if seed in by_seed:
            raise ValueError(
                f"{where} repeats variant {variant!r}, grid {dict(key[1])} and seed {seed}; "
                "each (variant, grid point, seed) must appear once"
            )
        by_seed[seed] = run
    first_seen = {key: i for i, key in enumerate(groups)}
    ordered = sorted(groups, key=lambda k: (order.get(k[0], len(order)), first_seen[k]))
    return {key: groups[key] for key in ordered}


def _last_epoch(
    histories: Mapping[int, Mapping[str, Any]], key: str
) -> dict[int, float | None]:
    """The last epoch's value of a per-epoch list, for the seeds that have it (e.g.
    ``val_accuracy_train_mode`` only for models with BN)."""
    out: dict[int, float | None] = {}
    for seed, h in histories.items():
        values = (h.get("epochs") or {}).get(key)
        if values:
            out[seed] = values[-1]
    return out


def steps_trained(history: Mapping[str, Any]) -> int | None:
    """Optimizer steps a run took: ``steps_per_epoch`` × the epochs it trained before
    stopping (a diverged run stops early; its NaN-padded epochs are not counted).
    None when the record does not tell."""
    per_epoch = history.get("steps_per_epoch")
    losses = (history.get("epochs") or {}).get("loss")
    if isinstance(per_epoch, bool) or not isinstance(per_epoch, int) or not isinstance(
            losses, list):
        return None
    epochs = len(losses)
    if history.get("diverged"):
        finite = [i for i, v in enumerate(losses) if _finite_or_none(v) is not None]
        epochs = finite[-1] + 2 if finite else 1  # the epoch that diverged was (partly) run
        epochs = min(epochs, len(losses))
    return per_epoch * epochs or None


def summarize(
    results: Mapping[str, Any],
    *,
    threshold: float | None = None,
    metric: str | None = None,
    unit: Unit = "epochs",
) -> list[VariantSummary]:
    """One ``VariantSummary`` per group of ``results`` (a results.json dict), in variant order.

    ``threshold``/``metric`` default to ``threshold_settings(results)`` (0.80 on
    ``val_accuracy`` unless the experiment's ``report`` table says otherwise).
    """
    default_metric, default_threshold = threshold_settings(results)
    metric = default_metric if metric is None else metric
    threshold = default_threshold if threshold is None else float(threshold)
    summaries = []
    for (variant, grid), by_seed in group_runs(results).items():
        histories: dict[int, Mapping[str, Any]] = {}
        failed: list[int] = []
        errors: list[tuple[int, str]] = []
        seconds: dict[int, float | None] = {}
        per_step: dict[int, float | None] = {}
        for seed in sorted(by_seed):
            run = by_seed[seed]
            history = run.get("history")
            if run.get("status") == "completed" and isinstance(history, Mapping):
                histories[seed] = history
                seconds[seed] = run.get("seconds")
                steps, wall = steps_trained(history), _finite_or_none(run.get("seconds"))
                per_step[seed] = wall / steps if steps and wall is not None else None
            else:
                failed.append(seed)
                error = str(run.get("error") or f"status {run.get('status')!r} without a history")
                errors.append((seed, error.strip().splitlines()[-1] if error.strip() else error))

        def finals(
            key: str, histories: Mapping[int, Mapping[str, Any]] = histories
        ) -> dict[int, Any]:
            return {s: (h.get("final") or {}).get(key) for s, h in histories.items()}

        summaries.append(
            VariantSummary(
                variant=variant,
                grid=grid,
                seeds=tuple(sorted(by_seed)),
                completed=len(histories),
                failed_seeds=tuple(failed),
                outcomes=tuple((s, run_outcome(histories[s])) for s in sorted(histories)),
                train_accuracy=describe(finals("train_accuracy"), name="train_accuracy"),
                train_accuracy_fit=describe(
                    _last_epoch(histories, "accuracy"), name="train_accuracy_fit"
                ),
                test_accuracy=describe(finals("test_accuracy"), name="test_accuracy"),
                train_loss=describe(finals("train_loss"), name="train_loss"),
                test_loss=describe(finals("test_loss"), name="test_loss"),
                test_accuracy_train_mode=describe(
                    _last_epoch(histories, "val_accuracy_train_mode"),
                    name="test_accuracy_train_mode",
                ),
                time_to_threshold=_threshold_summary(
                    histories, metric=metric, threshold=threshold, unit=unit
                ),
                seconds=describe(seconds, name="seconds"),
                step_seconds=describe(per_step, name="step_seconds"),
                errors=tuple(errors),
            )
        )
    return summaries


# --------------------------------------------------------------------------- two groups


@dataclass(frozen=True)
class DifferenceTest:
    """``mean(A) − mean(B)`` with its intervals and t-test (see the module docstring).

    ``n_a``/``n_b`` are the values used (equal to the number of pairs when ``paired``).
    Statistic, p-value and intervals are nan/None when either side has fewer than 2 values.
    """

    paired: bool
    n_a: int
    n_b: int
    difference: float
    ci: Interval | None
    t_ci: Interval | None
    statistic: float
    df: float
    p_value: float

    @property
    def test(self) -> str:
        return "paired t-test" if self.paired else "Welch's t-test"

    @property
    def estimable(self) -> bool:
        return self.ci is not None and self.t_ci is not None

    @property
    def detected(self) -> bool:
        """The t-interval excludes zero, i.e. the t-test gives p below 1 − level."""
        return self.estimable and self.t_ci.excludes(0.0)  # type: ignore[union-attr]


def _spread(x: np.ndarray) -> float:
    """Sample std (ddof=1), 0 when the values agree to 12 digits (0.9 − 0.8 vs 0.8 − 0.7)."""
    std = float(x.std(ddof=1))
    return 0.0 if std <= 1e-12 * float(np.abs(x).max()) else std


def _t_test(diff: float, se: float, df: float) -> tuple[float, float]:
    if se == 0.0:
        # Every resample gives the same difference: certain if nonzero, nothing if zero.
        return (0.0, 1.0) if diff == 0.0 else (math.copysign(math.inf, diff), 0.0)
    t = diff / se
    return t, float(2.0 * stdtr(df, -abs(t)))  # two-sided: 2 P(T > |t|)


def difference_test(
    a: Mapping[int, float],
    b: Mapping[int, float],
    *,
    paired: bool,
    level: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> DifferenceTest:
    """Test ``mean(A) − mean(B)`` from finite values keyed by seed.

    ``paired=True`` uses the seeds present in both (``d_i = a_i − b_i``, paired t-test,
    bootstrap over seeds); ``paired=False`` uses all values of each (Welch's t-test, each group
    resampled independently). Values must be finite.
    """
    if paired:
        common = sorted(set(a) & set(b))
        xa = _as_finite_array([a[s] for s in common], "difference_test")
        xb = _as_finite_array([b[s] for s in common], "difference_test")
    else:
        xa = _as_finite_array([a[s] for s in sorted(a)], "difference_test")
        xb = _as_finite_array([b[s] for s in sorted(b)], "difference_test")
    na, nb = xa.size, xb.size
    diff = (
        float((xa - xb).mean())
        if paired and na
        else (float(xa.mean() - xb.mean()) if na and nb else math.nan)
    )
    if min(na, nb) < 2:
        return DifferenceTest(paired, na, nb, diff, None, None, math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    if paired:
        d = xa - xb
        se = _spread(d) / math.sqrt(na)
        df = float(na - 1)
        draws = d[rng.integers(0, na, size=(resamples, na))].mean(axis=1)
    else:
        va = _spread(xa) ** 2 / na
        vb = _spread(xb) ** 2 / nb
        se = math.sqrt(va + vb)
        denom = va * va / (na - 1) + vb * vb / (nb - 1)
        df = (va + vb) ** 2 / denom if denom > 0 else float(na + nb - 2)
        draws = xa[rng.integers(0, na, size=(resamples, na))].mean(axis=1) - xb[
            rng.integers(0, nb, size=(resamples, nb))
        ].mean(axis=1)
    statistic, p_value = _t_test(diff, se, df)
    half = _t_quantile((1.0 + level) / 2.0, df) * se
    return DifferenceTest(
        paired=paired,
        n_a=na,
        n_b=nb,
        difference=diff,
        ci=_percentile_interval(draws, level),
        t_ci=Interval(diff - half, diff + half, level, "t"),
        statistic=statistic,
        df=df,
        p_value=p_value,
    )


@dataclass(frozen=True)
class _Quantity:
    words: str  # "final test accuracy"
    higher_is_better: bool
    scale: float  # multiply a difference by this for the sentence
    unit: str  # "percentage points", "epochs", ""


QUANTITIES: dict[str, _Quantity] = {
    "test_accuracy": _Quantity("final test accuracy", True, 100.0, "percentage points"),
    "train_accuracy": _Quantity("final train accuracy", True, 100.0, "percentage points"),
    "test_loss": _Quantity("final test loss", False, 1.0, ""),
    "train_loss": _Quantity("final train loss", False, 1.0, ""),
    "time_to_threshold": _Quantity("time to threshold", False, 1.0, "epochs"),
}




_METRIC_WORDS = {
    "val_accuracy": "test accuracy",
    "val_accuracy_train_mode": "test accuracy in training mode",
    "val_loss": "test loss",
    "accuracy": "train accuracy",
    "loss": "train loss",
}


def threshold_words(summary: ThresholdSummary) -> str:
    """``"80% test accuracy"`` / ``"test loss 0.3"`` for sentences and table headers."""
    words = _METRIC_WORDS.get(summary.metric, summary.metric)
    if "accuracy" in summary.metric:
        return f"{fmt.number(summary.threshold * 100)}% {words}"
    return f"{words} {fmt.number(summary.threshold)}"


def _unit_words(unit: str, size: float) -> str:
    if not unit:
        return ""
    return f" {unit[:-1]}" if fmt.number(abs(size)) == "1" and unit.endswith("s") else f" {unit}"


@dataclass(frozen=True)
class Comparison:
    """Group ``a`` against group ``b`` on one quantity; ``test.difference`` is ``a − b``.

    ``note`` says which seeds were left out and why (for times to a threshold, seeds where
    either never reached it; for accuracies, null values). ``at`` names the grid point both
    groups share (``"learning_rate=0.01, activation=sigmoid"``; "" without a grid): the
    sentence says it once, and ``a``/``b`` are then the variant names.
    """

    a: str
    b: str
    quantity: str
    words: str
    unit: str
    test: DifferenceTest
    note: str = ""
    reach_counts: tuple[tuple[int, int], tuple[int, int]] | None = None  # ((reached, n) a, b)
    at: str = ""
    p_adjusted: float = math.nan
    family: int = 1

    @property
    def enough_seeds(self) -> bool:
        """Both sides have at least ``MIN_SEEDS_FOR_CI`` values: below that nothing is stated."""
        return min(self.test.n_a, self.test.n_b) >= MIN_SEEDS_FOR_CI

    @property
    def detected(self) -> bool:
        """Enough seeds, and p below 0.05 — Holm-adjusted within the study's family of
        comparisons when there are several (`holm`)."""
        if not self.enough_seeds or not self.test.estimable:
            return False
        if self.family > 1:
            return self.p_adjusted < 1.0 - self.test.t_ci.level  # type: ignore[union-attr]
        return self.test.detected

    @property
    def pair(self) -> str:
        """``"bn_after vs baseline"`` (and ``" at learning_rate=0.01"`` at a grid point)."""
        return f"{self.a} vs {self.b}" + (f" at {self.at}" if self.at else "")

    def sentence(self) -> str:
        """The conclusion in words (after the grid point, if any), or "no detectable difference"."""
        return f"at {self.at}: {self._conclusion()}" if self.at else self._conclusion()

    def _conclusion(self) -> str:
        q = QUANTITIES[self.quantity]
        t = self.test
        seeds = f"{t.n_a} seeds" if t.paired else f"{t.n_a} and {t.n_b} seeds"
        note = f"; {self.note}" if self.note else ""
        if t.estimable and not self.enough_seeds:
            return (
                f"{self.a} vs {self.b}: too few seeds to compare {self.words} ({t.n_a} and "
                f"{t.n_b} values; at least {MIN_SEEDS_FOR_CI} each are needed){note}"
            )
        if not t.estimable:
            if self.reach_counts is not None:
                (ra, na), (rb, nb) = self.reach_counts
                if ra == 0 and rb == 0:
                    return f"neither {self.a} nor {self.b} reached {self.words} (0/{na} and 0/{nb} seeds)"
                return (
                    f"{self.a} reached {self.words} in {ra}/{na} seeds and {self.b} in {rb}/{nb}; "
                    f"too few seeds reached it in both to estimate the difference in time"
                )
            return (
                f"{self.a} vs {self.b}: too few seeds to compare {self.words} "
                f"({t.n_a} and {t.n_b} values; at least 2 each are needed){note}"
            )
        ci, scale = t.t_ci, q.scale
        assert ci is not None  # estimable
        if t.detected:
            a_wins = (t.difference > 0) == q.higher_is_better
            winner, loser = (self.a, self.b) if a_wins else (self.b, self.a)
            sign = 1.0 if t.difference > 0 else -1.0
            size = abs(t.difference) * scale
            unit = _unit_words(self.unit, size)
            low, high = sorted((sign * ci.low * scale, sign * ci.high * scale))
            stats = (
                f"95% CI {fmt.number(low)}–{fmt.number(high)}, {t.test} {fmt.p_value(t.p_value)}"
                f"{self._holm_words()}, {seeds}"
            )
            if self.quantity == "time_to_threshold":
                claim = (
                    f"{winner} reaches {self.words} {fmt.number(size)}{unit} sooner than {loser}"
                )
            elif q.higher_is_better:
                claim = f"{winner} has higher {self.words} than {loser} by {fmt.number(size)}{unit}"
            else:
                claim = f"{winner} has lower {self.words} than {loser} by {fmt.number(size)}{unit}"
            return f"{claim} ({stats}){note}"
        diff = t.difference * scale
        unit = _unit_words(self.unit, diff)
        return (
            f"no detectable difference in {self.words} between {self.a} and {self.b} at {seeds} "
            f"({self.a} − {self.b} = {'+' if diff > 0 else ''}{fmt.number(diff)}{unit}, "
            f"95% CI {fmt.number(ci.low * scale)} to {fmt.number(ci.high * scale)}, "
            f"{t.test} {fmt.p_value(t.p_value)}{self._holm_words()}){note}"
        )

    def _holm_words(self) -> str:
        if self.family <= 1:
            return ""
        return f", Holm-adjusted {fmt.p_value(self.p_adjusted)} over {self.family} comparisons"


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values over the family of those that have one.

    With the m p-values sorted, ``p_(1) ≤ … ≤ p_(m)``, the adjusted value of the i-th is
    ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; a difference is stated when its adjusted p is
    below 0.05, which keeps the chance of any false statement in the study below 5%.
    Comparisons without a p-value (too few values) are not part of the family.
    """
    tested = [
        i
        for i, c in enumerate(comparisons)
        if c.enough_seeds and c.test.estimable and not math.isnan(c.test.p_value)
    ]
    order = sorted(tested, key=lambda i: comparisons[i].test.p_value)
    m = len(order)
    adjusted: dict[int, float] = {}
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * comparisons[i].test.p_value))
        adjusted[i] = running
    return [
        replace(c, p_adjusted=adjusted[i], family=m) if i in adjusted else c
        for i, c in enumerate(comparisons)
    ]


def _pairs(comparisons: Sequence[Comparison]) -> str:
    """``"a vs b; c vs b at learning_rate=0.1, 0.3"``: the grid points of a pair together."""
    points: dict[tuple[str, str], list[str]] = {}
    for c in comparisons:
        points.setdefault((c.a, c.b), []).append(c.at)
    parts = []
    for (a, b), ats in points.items():
        ats = [x for x in ats if x]
        axes = {x.partition("=")[0] for x in ats}
        if len(axes) == 1 and all("," not in x for x in ats):  # one grid axis: its values
            parts.append(f"{a} vs {b} at {axes.pop()}=" + ", ".join(x.partition("=")[2] for x in ats))
        else:
            parts.append(f"{a} vs {b}" + (" at " + "; ".join(ats) if ats else ""))
    return "; ".join(parts)


def comparison_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """What the comparisons say, without repeating what says nothing.

    Each stated difference gets its sentence. The others collapse to one line per kind: pairs
    where neither variant reached the threshold; pairs with fewer than ``MIN_SEEDS_FOR_CI``
    seeds on a side (nothing is stated, the numbers are in summary.json); and, per quantity,
    the pairs with no detectable difference. Sentences that carry other news (one variant
    reached the threshold, the other did not, with enough seeds) are kept.
    """
    lines: list[str] = []
    neither: list[Comparison] = []
    few: list[Comparison] = []
    none: dict[str, list[Comparison]] = {}
    for c in comparisons:
        counts = c.reach_counts
        if c.detected:
            lines.append(c.sentence())
        elif counts is not None and counts[0][0] == 0 and counts[1][0] == 0:
            neither.append(c)
        elif min(counts[0][1], counts[1][1]) < MIN_SEEDS_FOR_CI if counts else not c.enough_seeds:
            few.append(c)
        elif c.test.estimable:
            none.setdefault(c.words, []).append(c)
        else:
            lines.append(c.sentence())
    for words, group in none.items():
        family = max(c.family for c in group)
        correction = f", Holm-adjusted over {family} comparisons" if family > 1 else ""
        lines.append(f"no detectable difference in {words} (p ≥ 0.05{correction}): {_pairs(group)}")
    if neither:
        lines.append(f"neither variant reached {neither[0].words}: {_pairs(neither)}")
    if few:
        seeds = sorted(
            {min(c.reach_counts[0][1], c.reach_counts[1][1]) if c.reach_counts
             else min(c.test.n_a, c.test.n_b) for c in few}
        )
        lines.append(
            f"{_plural(len(few), 'comparison')} not made: they need at least {MIN_SEEDS_FOR_CI} seeds per "
            f"variant, these have {'/'.join(map(str, seeds))} (differences and intervals are in "
            "summary.json)"
        )
    return lines


def compare(a: VariantSummary, b: VariantSummary, *, quantity: str = "test_accuracy") -> Comparison:
    """Compare group ``a`` with group ``b`` (difference ``a − b``) on one of ``QUANTITIES``.

    Paired by seed when both groups have runs for the same seeds, Welch otherwise. For
    ``time_to_threshold`` only seeds that reached the threshold enter the test; the note and the
    sentence say how many did not.
    """
    sa, sb = a.quantity(quantity), b.quantity(quantity)
    paired = set(a.seeds) == set(b.seeds)
    # At a grid point both share (or against a reference that uses no grid axis), name the
    # point once and the groups by their variant names.
    shared = a.grid and b.grid in (a.grid, ())
    name_a, name_b = (a.variant, b.variant) if shared else (a.label, b.label)
    notes: list[str] = []
    reach_counts = None
    if isinstance(sa, ThresholdSummary):
        assert isinstance(sb, ThresholdSummary)
        va = {s: v for s, v in sa.by_seed().items() if math.isfinite(v)}
        vb = {s: v for s, v in sb.by_seed().items() if math.isfinite(v)}
        reach_counts = ((len(va), sa.n), (len(vb), sb.n))
        words = threshold_words(sa)
        unit = sa.unit
        if sa.never or sb.never:
            never = f"never reached it: {name_a} {sa.never}/{sa.n}, {name_b} {sb.never}/{sb.n}"
            if paired:
                used = len(set(va) & set(vb))
                notes.append(f"{never}; compared on the {used} seeds where both did")
            else:
                notes.append(f"{never}; compared on the seeds that did")
    else:
        assert isinstance(sa, MetricSummary) and isinstance(sb, MetricSummary)
        va, vb = sa.by_seed(), sb.by_seed()
        words = QUANTITIES[quantity].words
        unit = QUANTITIES[quantity].unit
        if sa.missing or sb.missing:
            notes.append(
                f"null values left out: {name_a} {len(sa.missing)}, {name_b} {len(sb.missing)}"
            )
    return Comparison(
        a=name_a,
        b=name_b,
        at=", ".join(f"{k}={v}" for k, v in a.grid) if shared else "",
        quantity=quantity,
        words=words,
        unit=unit,
        test=difference_test(va, vb, paired=paired),
        note="; ".join(notes),
        reach_counts=reach_counts,
    )


def compare_all(
    summaries: Sequence[VariantSummary],
    *,
    reference: str | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    quantities: Sequence[str] = ("test_accuracy", "time_to_threshold"),
) -> list[Comparison]:
    """Comparisons between variants at equal grid points, in variant order.

    ``pairs`` lists ``(variant, reference)`` names to compare; without it every other variant
    is compared with ``reference`` (default: the first variant, usually the baseline). A pair
    is compared at each grid point where both variants have runs; a reference that uses no
    grid axis (one group without grid values) is compared with the variant at every point.

    Raises:
        ValueError: a name is not one of the variants, or a quantity is unknown.
    """
    for q in quantities:
        if q not in QUANTITIES:
            raise ValueError(f"unknown quantity {q!r}; choose from: {', '.join(QUANTITIES)}")
    variants = list(dict.fromkeys(s.variant for s in summaries))
    if not variants:
        return []
    if reference is None:
        reference = variants[0]
    if pairs is None:
        if reference not in variants:
            raise ValueError(
                f"reference variant {reference!r} is not in the results; "
                f"choose from: {', '.join(variants)}"
            )
        pairs = [(v, reference) for v in variants if v != reference]
    for pair in pairs:
        for name in pair:
            if name not in variants:
                raise ValueError(
                    f"comparison names variant {name!r}, which is not in the results; "
                    f"choose from: {', '.join(variants)}"
                )
    by_point: dict[GridPoint, dict[str, VariantSummary]] = {}
    for s in summaries:
        by_point.setdefault(s.grid, {})[s.variant] = s
    out = []
    for a_name, b_name in pairs:
        for group in by_point.values():
            # A variant that uses no grid axis is the same at every grid point.
            ref = group.get(b_name) or by_point.get((), {}).get(b_name)
            if a_name in group and ref is not None:
                out.extend(compare(group[a_name], ref, quantity=q) for q in quantities)
    return holm(out)


def report_comparisons(
    results: Mapping[str, Any], summaries: Sequence[VariantSummary]
) -> list[Comparison]:
    """``compare_all`` with the experiment's ``report.reference`` and ``report.comparisons``.

    Names that are not in the results (e.g. a run limited to some variants) are skipped
    rather than raised: the report of a partial study still shows what it can.
    """
    experiment = results.get("experiment") if isinstance(results, Mapping) else None
    report = experiment.get("report") if isinstance(experiment, Mapping) else None
    report = report if isinstance(report, Mapping) else {}
    variants = list(dict.fromkeys(s.variant for s in summaries))
    reference = report.get("reference")
    if reference not in variants:
        reference = variants[0] if variants else None
    pairs = [tuple(p) for p in report.get("comparisons") or [] if len(p) == 2]
    pairs = [p for p in pairs if p[0] in variants and p[1] in variants] or None
    if reference is None:
        return []
    return compare_all(summaries, reference=reference, pairs=pairs)
