r"""The doctor over a whole study: every completed run's BN layers, measured after training.

:func:`measure_study` examines the final model of each completed run of a run folder with
:func:`bnlab.doctor.examine_run` (the same measurements as ``bnlab doctor DIR --variant V
--seed S``) and writes the per-layer numbers to ``bn_statistics.json``
(:data:`bnlab.lab.results.STATISTICS_FILE`), which the report and ``bnlab run``'s summary
read. ``bnlab run`` calls it for studies with ``[report] doctor = true``; ``bnlab doctor
DIR --all`` does it for any run folder.

The file (JSON, ``schema`` = :data:`bnlab.lab.results.STATISTICS_SCHEMA`)::

    {"schema": "bnlab.bn_statistics/1", "max_batches": int | null,
     "runs": [{"variant": base name, "name": resolved name, "config_hash": str,
               "grid": {axis: value},
               "seed": int, "inference_accuracy": float | null,
               "train_mode_accuracy": float | null, "findings": [code, ...],
               "layers": [{"name": str, "steps_seen": int | null,
                           "initial_weight": float | null,
                           "mean_distance": float | null,
                           "log_variance_ratio": float | null,
                           "dropout_variance_ratio": float | null}]}]}

Per layer, with the population statistics :math:`\mu_c, \sigma^2_c` of the layer's input
over the training split as it arrives at inference (every BN layer before it on batch
statistics, dropout off; :mod:`bnlab.doctor.measure`) and the stored moving ones
:math:`m_c, v_c`:

- ``mean_distance``: median over channels of :math:`|\mu_c - m_c| / \sqrt{\sigma^2_c + \epsilon}`;
- ``log_variance_ratio``: median over channels of
  :math:`\ln\big((v_c + \epsilon) / (\sigma^2_c + \epsilon)\big)`, signed: above 0 the moving
  variance is larger than the variance the layer receives at inference (dropout before BN
  does this: the "variance shift");
- ``initial_weight``: :math:`m^t`, the weight the initial moving values still carry after
  the layer's :math:`t` updates at momentum :math:`m` (the staleness);
- ``dropout_variance_ratio``: for layers after a dropout module, the median over channels
  of the input variance with dropout active over that without.

Accuracies are on the test split (the lab's validation data) in inference mode and with
batch statistics, over at most ``max_batches`` batches of the training batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bnlab.doctor.examine import Diagnosis
from bnlab.doctor.measure import LayerMeasurement, json_number
from bnlab.doctor.run import examine_run
from bnlab.lab.results import (
    STATISTICS_FILE,
    STATISTICS_SCHEMA,
    atomic_write_text,
    dumps,
    read_results,
    run_key,
)

__all__ = ["MAX_BATCHES", "measure_study"]

#: Batches per measuring pass (of the training batch size): enough for population
#: statistics within a few percent, a few seconds per run on a CPU.
MAX_BATCHES = 32

#: ``on_run(done, total, label)`` after each measured run (progress display).
RunCallback = Callable[[int, int, str], None]


def measure_study(
    run_dir: str | Path,
    *,
    max_batches: int | None = MAX_BATCHES,
    on_run: RunCallback | None = None,
) -> Path:
    """Examine every completed run of ``run_dir`` and write ``bn_statistics.json`` there.

    Args:
        run_dir: the ``--out`` folder of ``bnlab run`` (its results.json, store and weights).
        max_batches: at most this many batches per measuring pass (None: all the data).
        on_run: called as ``on_run(done, total, label)`` after each run.

    Returns:
        The path of the file written (atomically; runs without BN layers are listed with
        no layers).

    Raises:
        LabError: no results.json or store, a missing or mismatched weights file.
    """
    out = Path(run_dir)
    results = read_results(out)
    completed = {
        run_key(run["variant"], run.get("grid"), run["seed"])
        for run in results.get("runs", [])
        if run.get("status") == "completed"
    }
    todo = [
        (entry, seed)
        for entry in results["experiment"]["variants"]
        for seed in results["seeds"]
        if run_key(entry["base"], entry["grid"], seed) in completed
    ]
    records = []
    for i, (entry, seed) in enumerate(todo):
        diagnosis = examine_run(out, variant=entry["name"], seed=seed, max_batches=max_batches)
        records.append(_record(entry, seed, diagnosis))
        if on_run is not None:
            on_run(i + 1, len(todo), f"{entry['name']} seed {seed}")
    path = out / STATISTICS_FILE
    atomic_write_text(
        path, dumps({"schema": STATISTICS_SCHEMA, "max_batches": max_batches, "runs": records})
    )
    return path


def _record(entry: Mapping[str, Any], seed: int, diagnosis: Diagnosis) -> dict[str, Any]:
    m = diagnosis.measurements
    return {
        "variant": entry["base"],
        "name": entry["name"],
        "config_hash": entry["config_hash"],
        "grid": dict(entry["grid"]),
        "seed": seed,
        "inference_accuracy": json_number(m.inference.accuracy),
        "train_mode_accuracy": json_number(m.train_mode.accuracy),
        "findings": diagnosis.codes(),
        "layers": [_layer(layer) for layer in m.layers],
    }


def _layer(layer: LayerMeasurement) -> dict[str, Any]:
    return {
        "name": layer.name,
        "steps_seen": layer.steps_seen,
        "initial_weight": json_number(layer.initial_weight),
        "mean_distance": _median(layer.mean_distance),
        "log_variance_ratio": _median(layer.log_variance_ratio),
        "dropout_variance_ratio": json_number(layer.dropout_variance_ratio),
    }


def _median(values: np.ndarray | None) -> float | None:
    if values is None or not np.isfinite(values).any():
        return None
    return json_number(float(np.nanmedian(np.where(np.isfinite(values), values, np.nan))))
