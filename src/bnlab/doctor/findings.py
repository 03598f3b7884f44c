r"""Rules that turn :class:`~bnlab.doctor.measure.Measurements` into ranked findings.

Each rule is a function ``Measurements -> list[Finding]`` registered in :data:`RULES`
under its finding code. A finding carries a severity, a title, the evidence (numbers,
JSON-ready, and a sentence that cites them) and a remedy. :func:`diagnose` runs every
rule and ranks the findings: severity first (critical, serious, warning, info), then
the rule's score (e.g. the accuracy it costs).

=====================  =========  ===========================================================
code                   severity   when
=====================  =========  ===========================================================
nonfinite_statistics   critical   NaN/inf (or negative variance) in moving statistics,
                                  gamma/beta, or in a BN layer's input
stale_statistics       serious    moving statistics off the population statistics
                       / warning  (:func:`is_off`); serious when training-mode accuracy beats
                                  inference-mode accuracy by >= :data:`GAP_SERIOUS`
                                  (or, without labels, when the distances are severe)
never_updated          serious    a non-frozen layer with 0 update steps or momentum 1
                       / warning  (serious when its statistics are off)
frozen_layer           serious /  frozen layer; serious if never updated and off, warning if
                       warning /  off, info otherwise
                       info
wrong_mode             serious    a BN layer in training mode inside an eval-mode model
                       / warning  (warning: an eval-mode BN layer inside a training model;
                       / info     info: the whole model in training mode)
no_running_statistics  warning    PyTorch BN with ``track_running_stats=False``
small_batch            serious    trained with small batches: batch-mean noise >= 0.5
                       / warning  (warning >= 0.3) population standard deviations
dropout_before_bn      warning    dropout runs before BN layers (variance shift); info when
                       / info     the measured shift of every such layer is within ×1.25
dead_channels          warning    ``|gamma| <`` 1e-3
zero_variance          warning    population variance < 0.01 epsilon
unexplained_gap        warning    accuracy gap >= :data:`GAP_SERIOUS` that no layer explains
bias_before_bn         info       a Linear/Conv bias that the next BN cancels
input_bn               info       BN on the model's inputs (input standardization)
not_reached            info       BN layers the data never reached
=====================  =========  ===========================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bnlab.doctor.measure import (
    FADE_THRESHOLD,
    LayerMeasurement,
    Measurements,
    json_number,
    json_steps,
    momentum_for,
)
from bnlab.lab.fmt import fixed as _fmt

__all__ = [
    "GAP_SERIOUS",
    "RULES",
    "SEVERITIES",
    "Finding",
    "Severity",
    "diagnose",
    "is_off",
    "list_rules",
]

Severity = Literal["critical", "serious", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "serious", "warning", "info")

#: Training-mode minus inference-mode accuracy from which the gap counts as serious.
GAP_SERIOUS = 0.05
#: A layer's moving statistics are "off" beyond any of these (see :func:`is_off`).
OFF_MEAN_MEDIAN, OFF_MEAN_MAX = 0.25, 1.0
OFF_VARIANCE_MEDIAN, OFF_VARIANCE_MAX = math.log(1.25), math.log(2.0)
#: Without labels, distances this large make a stale finding serious.
SEVERE_MEAN_MAX, SEVERE_VARIANCE_MAX = 2.0, math.log(4.0)
#: Batch-mean noise (population standard deviations) at the training batch size.
NOISE_WARNING, NOISE_SERIOUS = 0.3, 0.5


@dataclass(frozen=True)
class Finding:
    """One diagnosed problem (or notable fact).

    Attributes:
        code: the rule's name in :data:`RULES` (stable, for programs).
        severity: ``"critical"``, ``"serious"``, ``"warning"`` or ``"info"``.
        title: a few words.
        summary: the evidence in one or two sentences, with the numbers.
        remedy: what to do about it.
        layers: the BN (or other) layers concerned.
        evidence: the numbers, JSON-ready.
        score: orders findings of one severity (larger first).
    """

    code: str
    severity: Severity
    title: str
    summary: str
    remedy: str
    layers: tuple[str, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    score: float = 0.0

    @property
    def serious(self) -> bool:
        """Critical or serious."""
        return self.severity in ("critical", "serious")

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "summary": self.summary,
            "remedy": self.remedy,
            "layers": list(self.layers),
            "evidence": dict(self.evidence),
        }


Rule = Callable[[Measurements], list[Finding]]


def diagnose(measurements: Measurements) -> tuple[Finding, ...]:
    """Every rule's findings, ranked: severity, then score (largest first)."""
    findings = [f for rule in RULES.values() for f in rule(measurements)]
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return tuple(sorted(findings, key=lambda f: (rank[f.severity], -f.score)))


def list_rules() -> list[str]:
    """The finding codes, in rule order."""
    return list(RULES)


# --------------------------------------------------------------------------- helpers


def is_off(layer: LayerMeasurement) -> bool:
    """Whether a layer's moving statistics are off its input's population statistics.

    Off when the median over channels of the mean distance exceeds 0.25 (population
    standard deviations) or its maximum exceeds 1, or the median of the absolute log
    variance ratio exceeds ln 1.25 or its maximum ln 2.
    """
    d, r = layer.mean_distance, layer.log_variance_ratio
    if d is None or r is None or d.size == 0:
        return False
    r = np.abs(r)
    return bool(
        _median(d) > OFF_MEAN_MEDIAN or _max(d) > OFF_MEAN_MAX
        or _median(r) > OFF_VARIANCE_MEDIAN or _max(r) > OFF_VARIANCE_MAX
    )


def _severe(layer: LayerMeasurement) -> bool:
    d, r = layer.mean_distance, layer.log_variance_ratio
    if d is None or r is None:
        return False
    return bool(_max(d) > SEVERE_MEAN_MAX or _max(np.abs(r)) > SEVERE_VARIANCE_MAX)


def _max(a: np.ndarray) -> float:
    return float(np.nanmax(a)) if a.size and np.isfinite(a).any() else math.nan


def _median(a: np.ndarray) -> float:
    return float(np.nanmedian(a)) if a.size and np.isfinite(a).any() else math.nan


def _momentum(m: float | None) -> str:
    return "None (cumulative average)" if m is None else f"{m:g}"


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _channels(indices: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def _layer_distance(layer: LayerMeasurement) -> dict[str, Any]:
    d, r = layer.mean_distance, layer.log_variance_ratio
    assert d is not None and r is not None  # callers check is_off first
    worst = np.argsort(-np.where(np.isfinite(d), d, np.inf), kind="stable")[:3]
    evidence: dict[str, Any] = {
        "layer": layer.name,
        "momentum": layer.momentum,
        "steps_seen": layer.steps_seen,
        "steps_needed": json_steps(layer.steps_needed),
        "initial_weight": json_number(layer.initial_weight),
        "mean_distance_max": json_number(_max(d)),
        "mean_distance_median": json_number(_median(d)),
        "variance_factor_max": json_number(math.exp(_max(np.abs(r)))),
        "variance_factor_median": json_number(math.exp(_median(np.abs(r)))),
        "worst_channels": [
            {"channel": int(c), "mean_distance": json_number(d[c]),
             "log_variance_ratio": json_number(r[c])}
            for c in worst
        ],
    }
    predicted = layer.predicted_by_initial()
    if predicted is not None:
        pd, pr = predicted
        c_mean, c_var = _argmax(d), _argmax(np.abs(r))
        evidence["initial_values_predict"] = {
            "mean_distance": {"channel": c_mean, "observed": json_number(d[c_mean]),
                              "predicted": json_number(pd[c_mean])},
            "variance_factor": {"channel": c_var,
                                "observed": json_number(math.exp(abs(r[c_var]))),
                                "predicted": json_number(math.exp(abs(pr[c_var])))},
        }
    return evidence


def _gap_words(m: Measurements) -> str:
    a, b, gap = m.inference.accuracy, m.train_mode.accuracy, m.accuracy_gap
    if gap is None:
        return ""
    size = f" in batches of {m.batch_size}" if m.batch_size else ""
    return (f"inference-mode accuracy {_fmt(a)} vs {_fmt(b)} with batch statistics{size} "
            f"(gap {gap:+.3f}); ")


def _steps_words(layer: LayerMeasurement) -> str:
    if layer.steps_seen is None:
        return f"momentum {_momentum(layer.momentum)}"
    weight = layer.initial_weight
    needed = "never" if math.isinf(layer.steps_needed) else f"{int(layer.steps_needed)}"
    words = (f"{layer.steps_seen} updates at momentum {_momentum(layer.momentum)} "
             f"({needed} needed for the initial values to fade below 5%")
    if weight is not None and weight > FADE_THRESHOLD:
        words += f"; they still weigh {weight:.1%}"
    return words + ")"


def _badness(layer: LayerMeasurement) -> float:
    """Worst channel's mean distance or absolute log variance ratio, whichever is larger."""
    d, r = layer.mean_distance, layer.log_variance_ratio
    if d is None or r is None:
        return 0.0
    worst = max(_max(d), _max(np.abs(r)))
    return worst if math.isfinite(worst) else math.inf


def _distance_words(layer: LayerMeasurement) -> str:
    d, r = layer.mean_distance, layer.log_variance_ratio
    if d is None or r is None:
        return ""
    worst_mean, worst_var = _argmax(d), _argmax(np.abs(r))
    mean_words = (f"moving mean off by up to {_fmt(_max(d), 2)} σ at channel {worst_mean} "
                  f"(median {_fmt(_median(d), 2)}")
    var_words = (f"moving variance off by up to ×{_fmt(math.exp(_max(np.abs(r))), 2)} at "
                 f"channel {worst_var}")
    predicted = layer.predicted_by_initial()
    weight = layer.initial_weight
    if predicted is not None and weight is not None and weight > FADE_THRESHOLD:
        pd, pr = predicted
        mean_words += (f"; the initial values' remaining {weight:.1%} alone predict "
                       f"{_fmt(float(pd[worst_mean]), 2)} σ there")
        var_words += f" (they predict ×{_fmt(math.exp(abs(float(pr[worst_var]))), 2)})"
    mean_words += ")"
    return f"{mean_words}, {var_words}"


def _argmax(a: np.ndarray) -> int:
    return int(np.argmax(np.where(np.isfinite(a), a, -np.inf)))


# --------------------------------------------------------------------------- rules


def _nonfinite(m: Measurements) -> list[Finding]:
    layers, evidence, params_bad = [], {}, False
    for layer in m.layers:
        stats, params = layer.nonfinite_statistics, layer.nonfinite_parameters
        if stats.size or params.size or layer.nonfinite_inputs:
            layers.append(layer.name)
            evidence[layer.name] = {
                "statistics_channels": stats.tolist(),
                "parameter_channels": params.tolist(),
                "nonfinite_input": layer.nonfinite_inputs,
            }
            params_bad |= bool(params.size)
    if not layers:
        return []
    first = evidence[layers[0]]
    parts = []
    if first["statistics_channels"]:
        parts.append(f"moving statistics of channel(s) {_channels(np.array(first['statistics_channels']))} "
                     "are NaN/inf or negative")
    if first["parameter_channels"]:
        parts.append(f"gamma/beta of channel(s) {_channels(np.array(first['parameter_channels']))} "
                     "are NaN/inf")
    if first["nonfinite_input"]:
        parts.append("its input holds NaN/inf values")
    accuracy = m.inference.accuracy
    summary = (f"{layers[0]!r}: {'; '.join(parts)}"
               + (f" (and {len(layers) - 1} more layer(s))" if len(layers) > 1 else "")
               + f"; inference-mode accuracy {_fmt(accuracy)}.")
    remedy = ("Recalibrate to replace the moving statistics with finite population statistics "
              "(--fix recalibrate / bnlab.recalibrate). ")
    if params_bad or any(evidence[n]["nonfinite_input"] for n in layers):
        remedy = ("The weights themselves are non-finite: training diverged. Retrain from a "
                  "checkpoint before the divergence with a lower learning rate. ")
    remedy += ("bnlab's BatchNormalization keeps non-finite batches out of its moving "
               "statistics (on_nonfinite='skip').")
    return [Finding("nonfinite_statistics", "critical", "Non-finite BN statistics or parameters",
                    summary, remedy, tuple(layers), {"layers": evidence}, score=len(layers))]


def _stale(m: Measurements) -> list[Finding]:
    candidates = [
        layer for layer in m.layers
        if layer.tracks_statistics and not layer.frozen and layer.values_per_channel > 0
        and not layer.nonfinite_statistics.size and not layer.nonfinite_inputs
        and layer.steps_seen != 0 and not math.isinf(layer.steps_needed)
    ]
    off = [layer for layer in candidates if is_off(layer)]
    if not off:
        return []  # unfaded initial values that do no measurable harm are not worth a line
    gap = m.accuracy_gap
    if gap is not None and math.isfinite(gap):
        severity: Severity = "serious" if gap >= GAP_SERIOUS - 1e-9 else "warning"
    else:
        severity = "serious" if any(_severe(layer) for layer in off) else "warning"
    unfaded = [layer for layer in off if layer.initial_weight is not None
               and layer.initial_weight > FADE_THRESHOLD]
    cause = "initial_values" if unfaded else "lagging_average"
    title = ("Stale moving statistics: too few update steps for the momentum" if unfaded
             else "Stale moving statistics: the moving average lags the trained weights")
    ranked = sorted(off, key=lambda layer: -_badness(layer))
    details = "; ".join(f"{layer.name!r}: {_steps_words(layer)}, {_distance_words(layer)}"
                        for layer in ranked[:3])
    more = f"; and {len(ranked) - 3} more layer(s)" if len(ranked) > 3 else ""
    summary = (_gap_words(m) + f"the moving statistics of {len(off)} of {len(m.layers)} BN "
               f"layer(s) do not match their inputs' population statistics: {details}{more}.")
    remedy = ("Without retraining: recalibrate (`bnlab doctor RUN_DIR|MODEL.keras ... --fix "
              "recalibrate --save FIXED.keras`, or bnlab.recalibrate(model, training batches)) "
              "to store the exact population statistics. When retraining: ")
    evidence: dict[str, Any] = {
        "cause": cause,
        "accuracy_inference": json_number(m.inference.accuracy),
        "accuracy_train_mode": json_number(m.train_mode.accuracy),
        "accuracy_gap": json_number(gap),
        "layers": [_layer_distance(layer) for layer in ranked],
    }
    if unfaded:
        steps = min(layer.steps_seen or 1 for layer in unfaded)
        needed = max(layer.steps_needed for layer in unfaded)
        suggestion = momentum_for(steps)
        evidence["recommended_momentum"] = suggestion
        remedy += (f"momentum ≤ {suggestion:.4f} (= 0.05^(1/{steps}): the initial values fade "
                   f"below 5% within the {steps} steps; PyTorch momentum ≥ {1 - suggestion:.4f}), "
                   f"or train for at least {int(needed)} steps.")
    else:
        remedy += ("a lower momentum (e.g. 0.9: the average covers the last ~20 steps and "
                   "follows the changing weights), or recalibrate after training.")
    score = gap if gap is not None and math.isfinite(gap) else _badness(ranked[0])
    return [Finding("stale_statistics", severity, title, summary, remedy,
                    tuple(layer.name for layer in ranked), evidence, score=score)]


def _never_updated(m: Measurements) -> list[Finding]:
    found = [layer for layer in m.layers
             if layer.tracks_statistics and not layer.frozen and layer.values_per_channel > 0
             and (layer.steps_seen == 0 or math.isinf(layer.steps_needed))]
    if not found:
        return []
    off = [layer for layer in found if is_off(layer)]
    severity: Severity = "serious" if off else "warning"
    first = found[0]
    why = ("momentum 1 never changes the moving statistics" if math.isinf(first.steps_needed)
           else "num_batches_tracked is 0: no training step updated it")
    summary = (f"{_names([layer.name for layer in found])}: {why}"
               + (f"; {_distance_words(off[0])}" if off else
                  "; its initial statistics happen to fit the data") + ".")
    remedy = ("Recalibrate (--fix recalibrate / bnlab.recalibrate) to give it the population "
              "statistics; check that the layer is in training mode while training and that its "
              "momentum is below 1 (Keras convention; PyTorch momentum above 0).")
    return [Finding("never_updated", severity, "BN layer never updated", summary, remedy,
                    tuple(layer.name for layer in found),
                    {"layers": [{"layer": layer.name, "steps_seen": layer.steps_seen,
                                 "momentum": layer.momentum, "off": is_off(layer)}
                                for layer in found]},
                    score=len(off))]


def _frozen(m: Measurements) -> list[Finding]:
    found = [layer for layer in m.layers if layer.frozen]
    if not found:
        return []
    untrained = [layer for layer in found if layer.steps_seen == 0 and is_off(layer)]
    off = [layer for layer in found if is_off(layer)]
    evidence = {"layers": [{"layer": layer.name, "steps_seen": layer.steps_seen,
                            "off": is_off(layer),
                            **({"mean_distance_max": json_number(_max(layer.mean_distance))}
                               if layer.mean_distance is not None else {})}
                           for layer in found]}
    names = tuple(layer.name for layer in found)
    fix_frozen = ("bnlab.nn.unfreeze(model); bnlab.recalibrate(model, batches); "
                  "bnlab.nn.freeze(model) (recalibrate leaves frozen layers alone)")
    if untrained:
        return [Finding(
            "frozen_layer", "serious", "Frozen BN layer with its initial statistics",
            f"{_names([layer.name for layer in untrained])}: frozen with 0 update steps, so it "
            f"normalizes with its initial statistics; {_distance_words(untrained[0])}.",
            f"Give it real statistics before freezing: {fix_frozen}; or unfreeze it for "
            "training.", names, evidence, score=len(untrained))]
    if off:
        return [Finding(
            "frozen_layer", "warning", "Frozen BN layer whose statistics do not fit this data",
            f"{_names([layer.name for layer in off])}: frozen; {_distance_words(off[0])} "
            "(fine-tuning on a new domain?).",
            f"Recalibrate on the new data: {fix_frozen}.", names, evidence, score=len(off))]
    return [Finding(
        "frozen_layer", "info", "Frozen BN layers",
        f"{_names(list(names))}: frozen (inference statistics in every mode); their statistics "
        "fit the data.",
        "Nothing to do; freezing is what fine-tuning with small batches wants.", names, evidence)]


def _wrong_mode(m: Measurements) -> list[Finding]:
    s = m.structure
    frozen = {layer.name for layer in m.layers if layer.frozen}
    training = [n for n, t in s.layer_training.items() if t and n not in frozen]
    evaluating = [n for n, t in s.layer_training.items() if not t and n not in frozen]
    if not s.model_training and training:
        as_is = m.as_is.accuracy if m.as_is is not None else None
        summary = (f"the model is in eval mode but {_names(training)} is in training mode: it "
                   "normalizes with each batch's statistics and updates its moving statistics on "
                   "every inference call")
        if as_is is not None:
            summary += (f"; accuracy as handed over {_fmt(as_is)} vs {_fmt(m.inference.accuracy)} "
                        "in eval mode")
        return [Finding("wrong_mode", "serious", "BN layer left in training mode",
                        summary + ".",
                        "Call model.eval() on the whole model before inference (not on single "
                        "submodules), and model.train() before training.",
                        tuple(training),
                        {"model_training": False, "layers_training": training,
                         "accuracy_as_is": json_number(as_is),
                         "accuracy_inference": json_number(m.inference.accuracy)},
                        score=len(training))]
    if s.model_training and evaluating:
        return [Finding("wrong_mode", "warning", "BN layer in eval mode inside a training model",
                        f"{_names(evaluating)} is in eval mode while the model trains: it "
                        "normalizes with its moving statistics, which no step updates, while "
                        "gamma/beta still learn.",
                        "Freeze it explicitly (bnlab.nn.freeze / trainable=False) if that is "
                        "intended; otherwise call model.train() on the whole model.",
                        tuple(evaluating), {"model_training": True, "layers_eval": evaluating},
                        score=len(evaluating))]
    if s.model_training and m.layers:
        return [Finding("wrong_mode", "info", "Model in training mode",
                        "the model was handed over in training mode; doctor measured both modes, "
                        "but predictions in training mode depend on the batch.",
                        "Call model.eval() before inference.", (), {"model_training": True})]
    return []


def _no_running_statistics(m: Measurements) -> list[Finding]:
    found = [layer.name for layer in m.layers if not layer.tracks_statistics]
    if not found:
        return []
    return [Finding("no_running_statistics", "warning", "BN without moving statistics",
                    f"{_names(found)}: track_running_stats=False, so inference normalizes with "
                    "the batch's statistics: a prediction depends on the other samples in the "
                    "batch, and a batch of one sample fails.",
                    "Build the layer with track_running_stats=True and recalibrate "
                    "(bnlab.recalibrate), or convert it with bnlab.nn.BatchNormalization.",
                    tuple(found), {"layers": found})]


def _small_batch(m: Measurements) -> list[Finding]:
    size = m.train_batch_size
    if size is None:
        return []
    noisy = []
    for layer in m.layers:
        noise = layer.batch_mean_noise
        if noise is None or not math.isfinite(noise) or layer.batch_size is None:
            continue
        noise *= math.sqrt(layer.batch_size / size)  # the noise of a mean goes as 1/sqrt(B)
        noisy.append((noise, layer))
    if not noisy:
        return []
    noise, worst = max(noisy, key=lambda item: item[0])
    if noise < NOISE_WARNING:
        return []
    severity: Severity = "serious" if noise >= NOISE_SERIOUS else "warning"
    summary = (f"trained with batches of {size}: a batch mean at {worst.name} is off the "
               f"population mean by {noise:.2f} σ on average (median over channels), so training "
               "normalized with noisy statistics")
    if m.accuracy_gap is not None and m.batch_size == size:
        summary += (f"; accuracy with batch statistics at this size {_fmt(m.train_mode.accuracy)} "
                    f"vs {_fmt(m.inference.accuracy)} with moving statistics")
    remedy = ("Train with larger batches (≥ 32 samples per BN statistic); or batch "
              "renormalization (BatchNormalization(renorm=True)) or GroupNorm/LayerNorm for small "
              "batches; for fine-tuning with small batches, freeze the BN layers "
              "(bnlab.nn.freeze). Recalibrating after training removes the noise from the moving "
              "statistics.")
    return [Finding("small_batch", severity, "Small training batches: noisy batch statistics",
                    summary + ".", remedy, tuple(layer.name for _, layer in noisy),
                    {"train_batch_size": size, "batch_mean_noise": {
                        layer.name: json_number(n) for n, layer in noisy}},
                    score=noise)]


def _dropout(m: Measurements) -> list[Finding]:
    found = m.structure.dropout_before_bn
    if not found:
        return []
    ratios = {}
    for d in found:
        for name in d.layers:
            ratio = m.layer(name).dropout_variance_ratio
            if ratio is not None:
                ratios[name] = ratio
    first = found[0]
    summary = (f"{first.dropout!r} (rate {first.rate:g}) runs before {_names(list(first.layers))}: "
               "in training their inputs carry the dropout noise, at inference not")
    severity = "warning"
    if ratios:
        name, ratio = max(ratios.items(), key=lambda item: abs(math.log(item[1])))
        summary += f"; the input variance of {name!r} is ×{ratio:.2f} with dropout active "
        if abs(math.log(ratio)) <= OFF_VARIANCE_MEDIAN:  # e.g. EfficientNet's light drop-connect
            severity = "info"
            summary += "(median over channels), a shift too small to matter here"
        else:
            summary += "(median over channels), so its moving variance does not fit inference"
    return [Finding("dropout_before_bn", severity, "Dropout before BN (variance shift)",
                    summary + ".",
                    "Put Dropout after the last BN layer (Li et al., 'Understanding the "
                    "disharmony between dropout and batch normalization by variance shift', "
                    "CVPR 2019); or recalibrate with dropout off (--fix recalibrate) so the "
                    "moving variance fits inference.",
                    tuple(n for d in found for n in d.layers),
                    {"dropout": [{"module": d.dropout, "rate": d.rate, "layers": list(d.layers)}
                                 for d in found],
                     "variance_ratio": {k: json_number(v) for k, v in ratios.items()}},
                    score=max((abs(math.log(r)) for r in ratios.values()), default=0.0))]


def _dead(m: Measurements) -> list[Finding]:
    found = {layer.name: layer.dead_channels for layer in m.layers if layer.dead_channels.size}
    if not found:
        return []
    total = sum(v.size for v in found.values())
    name, channels = next(iter(found.items()))
    layer = m.layer(name)
    return [Finding("dead_channels", "warning", "Dead channels (gamma ≈ 0)",
                    f"{total} channel(s) have |gamma| < 1e-3, so they output the constant beta; "
                    f"{name!r}: {channels.size} of {layer.channels} (channels {_channels(channels)}).",
                    "Prune those channels and the weights that feed them; if many die, lower the "
                    "gamma regularization (gamma_regularizer, weight decay on gamma) or the "
                    "learning rate.",
                    tuple(found),
                    {"layers": {n: {"channels": c.tolist(), "of": m.layer(n).channels}
                                for n, c in found.items()}},
                    score=total)]


def _zero_variance(m: Measurements) -> list[Finding]:
    found = {layer.name: layer.zero_variance_channels for layer in m.layers
             if layer.zero_variance_channels.size}
    if not found:
        return []
    name, channels = next(iter(found.items()))
    layer = m.layer(name)
    return [Finding("zero_variance", "warning", "Channels with ≈0 input variance",
                    f"{name!r}: {channels.size} of {layer.channels} channels (channels "
                    f"{_channels(channels)}) have population variance below 0.01·epsilon "
                    f"(= {0.01 * layer.epsilon:.1e}): their input is constant, so BN cannot "
                    "normalize them and they carry no information.",
                    "Look at the layer before: a dead ReLU channel (constant 0) is the usual "
                    "cause — lower the learning rate, check initialization, or put BN before the "
                    "activation; prune channels that stay constant.",
                    tuple(found),
                    {"layers": {n: {"channels": c.tolist(), "of": m.layer(n).channels}
                                for n, c in found.items()}},
                    score=sum(c.size for c in found.values()))]


def _unexplained(m: Measurements) -> list[Finding]:
    gap = m.accuracy_gap
    if gap is None or not math.isfinite(gap) or gap < GAP_SERIOUS - 1e-9:
        return []
    explained = any(is_off(layer) for layer in m.layers) or any(
        layer.nonfinite_statistics.size for layer in m.layers)
    if explained:
        return []
    return [Finding("unexplained_gap", "warning",
                    "Inference/training-mode gap not explained by the moving statistics",
                    _gap_words(m) + "yet every layer's moving statistics fit its training-mode "
                    "inputs.",
                    "Look for other train/inference differences: layers in the wrong mode, "
                    "dropout before BN, inputs that differ between training and evaluation.",
                    (), {"accuracy_gap": json_number(gap)}, score=gap)]


def _bias(m: Measurements) -> list[Finding]:
    found = m.structure.bias_before_bn
    if not found:
        return []
    wasted = sum(b.parameters for b in found)
    pairs = ", ".join(f"{b.producer} → {b.layer}" for b in found[:4])
    return [Finding("bias_before_bn", "info", "Bias before BN (cancelled by the BN layer)",
                    f"{len(found)} layer(s) add a bias that the next BN layer subtracts again "
                    f"({pairs}): {wasted} wasted parameters.",
                    "Build those layers without a bias (Keras use_bias=False, PyTorch "
                    "bias=False): BN's beta plays its role. For inference, bnlab.fold merges BN "
                    "into the layer anyway.",
                    tuple(b.producer for b in found),
                    {"pairs": [{"producer": b.producer, "layer": b.layer,
                                "parameters": b.parameters} for b in found],
                     "wasted_parameters": wasted},
                    score=wasted)]


def _input_bn(m: Measurements) -> list[Finding]:
    found = m.structure.input_bn
    if not found:
        return []
    layer = m.layer(found[0])
    mean, std = layer.population_mean, np.sqrt(layer.population_variance)
    return [Finding("input_bn", "info", "BN on the inputs (input standardization)",
                    f"{layer.name!r} normalizes the model's raw inputs ({layer.channels} channels; "
                    f"input means {_fmt(float(np.nanmin(mean)), 2)}..{_fmt(float(np.nanmax(mean)), 2)}, "
                    f"standard deviations {_fmt(float(np.nanmin(std)), 2)}..{_fmt(float(np.nanmax(std)), 2)}): "
                    "it stands in for standardizing the data.",
                    "Standardize the data once, (x - mean) / std with the training data's "
                    "statistics (listed in the evidence), and drop the layer; or keep it, knowing "
                    "that in training it adds batch noise to the raw inputs.",
                    tuple(found),
                    {"layer": layer.name, "mean": [json_number(v) for v in mean[:64]],
                     "std": [json_number(v) for v in std[:64]]})]


def _not_reached(m: Measurements) -> list[Finding]:
    found = [layer.name for layer in m.layers if layer.values_per_channel == 0]
    if not found:
        return []
    return [Finding("not_reached", "info", "BN layers the data never reached",
                    f"{_names(found)}: not called on the calibration data, so nothing was "
                    "measured there.",
                    "Nothing to do if the layers are unused on this path; otherwise check the "
                    "data passed to doctor.", tuple(found), {"layers": found})]


RULES: dict[str, Rule] = {
    "nonfinite_statistics": _nonfinite,
    "stale_statistics": _stale,
    "never_updated": _never_updated,
    "frozen_layer": _frozen,
    "wrong_mode": _wrong_mode,
    "no_running_statistics": _no_running_statistics,
    "small_batch": _small_batch,
    "dropout_before_bn": _dropout,
    "dead_channels": _dead,
    "zero_variance": _zero_variance,
    "unexplained_gap": _unexplained,
    "bias_before_bn": _bias,
    "input_bn": _input_bn,
    "not_reached": _not_reached,
}
