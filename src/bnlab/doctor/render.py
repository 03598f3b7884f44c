"""Doctor's output: rich tables for a terminal (:func:`render`) and JSON (:func:`to_json`).

The tables: the model-level metrics (inference vs training mode), one row per BN
layer, the ranked findings with evidence and remedy, and for a :class:`Treatment` the
numbers before and after the fix. The JSON is :meth:`Diagnosis.to_dict` /
:meth:`Treatment.to_dict` with every non-finite number as ``null``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bnlab.doctor.examine import Diagnosis
from bnlab.doctor.fix import Treatment
from bnlab.doctor.measure import Measurements
from bnlab.lab.fmt import fixed as _fmt

__all__ = ["render", "to_json"]

_STYLE = {"critical": "bold red", "serious": "red", "warning": "yellow", "info": "cyan"}


def to_json(result: Diagnosis | Treatment, *, indent: int | None = 2) -> str:
    """The result as JSON text (non-finite numbers as null)."""
    return json.dumps(_finite(result.to_dict()), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def render(result: Diagnosis | Treatment, console: Console | None = None) -> None:
    """Print the result as tables (colours on a terminal)."""
    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 120)
    diagnosis = result.before if isinstance(result, Treatment) else result
    _header(diagnosis, console)
    console.print(_metrics_table(diagnosis.measurements))
    if diagnosis.measurements.layers:
        console.print(_layers_table(diagnosis.measurements))
    else:
        console.print("no BN layers: this model has no batch-normalization layer to examine; "
                      "the accuracies above are all there is to compare", highlight=False)
    console.print(_findings_table(diagnosis, "Findings"))
    if isinstance(result, Treatment):
        console.print(_treatment_table(result))
        closed = result.gap_closed
        if closed is not None:
            console.print(f"{result.fix} closed {closed:.1%} of the gap between inference-mode "
                          "and training-mode accuracy (without retraining).", highlight=False)
        remaining = [f for f in result.after.findings if f.severity != "info"]
        if remaining:
            console.print(_findings_table(result.after, f"After {result.fix}"))
        else:
            console.print(f"After {result.fix}: no finding above info.", highlight=False)
        if result.details.get("saved"):
            console.print(f"Fixed model written to {result.details['saved']}", highlight=False)


def _header(diagnosis: Diagnosis, console: Console) -> None:
    context = diagnosis.context
    if context.get("run_dir"):
        console.print(f"[bold]bnlab doctor[/bold] {context['run_dir']}: experiment "
                      f"{context.get('experiment')}, variant {escape(str(context.get('variant')))}, seed "
                      f"{context.get('seed')}", highlight=False)
    elif context.get("model_file"):
        steps = context.get("train_steps")
        console.print(f"[bold]bnlab doctor[/bold] {context['model_file']}: input "
                      f"{tuple(context.get('input_shape') or ())}, {context.get('output_units')} "
                      f"outputs; "
                      + (f"{steps} training steps (the optimizer's iterations)" if steps is not None
                         else "training steps unknown (the file holds no optimizer state)"),
                      highlight=False)
        console.print(f"data: {context.get('data')}; pixels fed {context.get('pixels')} "
                      f"({context.get('pixel_rule')})", highlight=False)
    m = diagnosis.measurements
    ev, cal = m.evaluation, m.calibration
    console.print(f"evaluation data: {_data_words(ev)}; statistics from: {_data_words(cal)}"
                  + (f"; trained with batches of {m.train_batch_size}" if m.train_batch_size
                     else ""), highlight=False)


def _data_words(described: dict[str, Any]) -> str:
    samples = described.get("samples")
    return f"{described.get('name')}" + (f" ({samples} samples)" if samples is not None else "")


def _metrics_table(m: Measurements) -> Table:
    table = Table(title="Accuracy and loss", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("mode")
    table.add_column("accuracy", justify="right")
    table.add_column("loss", justify="right")
    size = f" in batches of {m.batch_size}" if m.batch_size else ""
    table.add_row("inference (moving statistics)", _fmt(m.inference.accuracy),
                  _fmt(m.inference.loss, 4))
    table.add_row(f"training (batch statistics{size})", _fmt(m.train_mode.accuracy),
                  _fmt(m.train_mode.loss, 4))
    if m.as_is is not None:
        table.add_row("as handed over (modes unchanged)", _fmt(m.as_is.accuracy),
                      _fmt(m.as_is.loss, 4))
    gap = m.accuracy_gap
    if gap is not None:
        table.add_row("gap (training − inference)", f"{gap:+.3f}" if math.isfinite(gap) else "—", "")
    return table


def _layers_table(m: Measurements) -> Table:
    table = Table(title="BN layers (moving vs population statistics of the input)",
                  box=box.SIMPLE_HEAD, title_justify="left")
    for name, justify in (("layer", "left"), ("momentum", "right"), ("steps\nseen/needed", "right"),
                          ("initial\nweight", "right"), ("mean off σ\nmax/median", "right"),
                          ("variance\noff ×max", "right"), ("batch\nnoise σ", "right"),
                          ("notes", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for layer in m.layers:
        d, r = layer.mean_distance, layer.log_variance_ratio
        needed = "∞" if math.isinf(layer.steps_needed) else str(int(layer.steps_needed))
        seen = "—" if layer.steps_seen is None else str(layer.steps_seen)
        weight = layer.initial_weight
        notes = []
        if layer.frozen:
            notes.append("frozen")
        if not layer.tracks_statistics:
            notes.append("no running stats")
        if layer.dead_channels.size:
            notes.append(f"{layer.dead_channels.size} dead")
        if layer.zero_variance_channels.size:
            notes.append(f"{layer.zero_variance_channels.size} constant")
        if layer.nonfinite_statistics.size or layer.nonfinite_parameters.size:
            notes.append("NON-FINITE")
        if layer.values_per_channel == 0:
            notes.append("not reached")
        table.add_row(
            layer.name,
            "None" if layer.momentum is None else f"{layer.momentum:g}",
            f"{seen}/{needed}",
            "—" if weight is None else f"{weight:.1%}",
            "—" if d is None else f"{_fmt(_nanmax(d), 2)}/{_fmt(_nanmedian(d), 2)}",
            "—" if r is None else _fmt(math.exp(_nanmax(np.abs(r))), 2),
            _fmt(layer.batch_mean_noise, 2),
            ", ".join(notes),
        )
    return table


def _nanmax(a: np.ndarray) -> float:
    return float(np.nanmax(a)) if a.size and np.isfinite(a).any() else math.nan


def _nanmedian(a: np.ndarray) -> float:
    return float(np.nanmedian(a)) if a.size and np.isfinite(a).any() else math.nan


def _findings_table(diagnosis: Diagnosis, title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_lines=True)
    table.add_column("#", justify="right")
    table.add_column("severity")
    table.add_column("finding: evidence → remedy", ratio=1)
    if not diagnosis.findings:
        table.add_row("", "", "no findings: the BN layers look healthy")
    for i, f in enumerate(diagnosis.findings, 1):
        style = _STYLE[f.severity]
        text = Text()
        text.append(f.title, style="bold")
        text.append(f"\n{f.summary}\n")
        text.append(f"→ {f.remedy}", style="italic")
        table.add_row(str(i), Text(f.severity, style=style), text)
    return table


def _treatment_table(treatment: Treatment) -> Table:
    before, after = treatment.before.measurements, treatment.after.measurements
    table = Table(title=f"Before and after {treatment.fix}", box=box.SIMPLE_HEAD,
                  title_justify="left")
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    rows = [
        ("inference accuracy", before.inference.accuracy, after.inference.accuracy, 3),
        ("inference loss", before.inference.loss, after.inference.loss, 4),
        ("training-mode accuracy", before.train_mode.accuracy, after.train_mode.accuracy, 3),
        ("gap (training − inference)", before.accuracy_gap, after.accuracy_gap, 3),
    ]
    for label, a, b, digits in rows:
        table.add_row(label, _fmt(a, digits), _fmt(b, digits))
    for old, new in zip(before.layers, after.layers, strict=True):
        d0, d1 = old.mean_distance, new.mean_distance
        if d0 is None or d1 is None:
            continue
        table.add_row(f"{old.name}: mean off max (σ)", _fmt(_nanmax(d0), 2), _fmt(_nanmax(d1), 2))
    return table
