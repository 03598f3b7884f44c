"""Doctor for a model the lab trained: :func:`examine_run` on a run folder.

The run folder (``bnlab run ... --out DIR``) holds the resolved experiment in its store
and each completed run's final weights as safetensors. :func:`examine_run` rebuilds the
variant's model from the resolved config, loads the weights with
:func:`bnlab.lab.load_run_model` (safetensors only: no pickle ever runs; a corrupt or
mismatched file is a :class:`~bnlab.lab.LabError`), loads the variant's dataset
(evaluation on its test split = the lab's validation data, statistics from its
training split), and examines the model with the run's training batch size and loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bnlab.doctor.examine import Diagnosis, examine
from bnlab.doctor.fix import Treatment, list_fixes, treat
from bnlab.lab import LabError, Variant, load_run_model
from bnlab.lab.keras_export import check_model_file, select_run, write_model_file
from bnlab.lab.runs import load_variant_data

__all__ = ["DoctorError", "examine_run"]


class DoctorError(LabError):
    """Bad input to ``bnlab doctor`` (folder, variant, seed, fix); one line, exit status 2."""


def examine_run(
    run_dir: str | Path,
    *,
    variant: str | None = None,
    grid: Mapping[str, Any] | None = None,
    seed: int | None = None,
    fix: str | None = None,
    save: str | Path | None = None,
    overwrite: bool = False,
    max_batches: int | None = None,
) -> Diagnosis | Treatment:
    """Examine (and optionally fix) the final model of one run of a lab study.

    Args:
        run_dir: the ``--out`` folder of ``bnlab run``.
        variant: the variant's display name (with its grid suffix if any); may be left
            out when the experiment has one variant.
        grid: the grid point ``{axis: value}`` of a variant given by its base name
            (``bnlab doctor DIR --variant bn --grid learning_rate=0.01``).
        seed: the run's seed; default the first seed with a completed run.
        fix: None, or a fix from :func:`bnlab.doctor.list_fixes` (``"recalibrate"``):
            applied to the loaded model (the weights file is not changed).
        save: write the fixed model here as a new ``.keras`` file (needs ``fix``; see
            :func:`bnlab.lab.keras_export.write_model_file`).
        overwrite: allow ``save`` to replace an existing file.
        max_batches: at most this many batches per measuring pass.

    Returns:
        A :class:`Diagnosis`, or a :class:`Treatment` when ``fix`` is given; the
        ``context`` names the run, its training steps and the accuracies it recorded.

    Raises:
        DoctorError / LabError: no store, unknown variant or seed, no completed run, a
            missing, corrupt or mismatched weights file, an unknown fix, a ``save`` path
            that exists (without ``overwrite``) or is no ``.keras`` file (nothing written).
    """
    if fix is not None and fix not in list_fixes():
        raise DoctorError(f"unknown fix {fix!r}; choose from: {', '.join(list_fixes())}")
    if save is not None:
        if fix is None:
            raise DoctorError(f"--save {save} writes the fixed model; give --fix "
                              f"({', '.join(list_fixes())}) too")
        check_model_file(save, overwrite=overwrite)
    selected = select_run(run_dir, variant=variant, grid=grid, seed=seed)
    out, entry, seed, run = selected.out_dir, selected.variant, selected.seed, selected.run
    resolved = selected.experiment
    model = load_run_model(out, entry["name"], seed)
    data = load_variant_data(Variant.from_dict(entry))
    train = entry["train"]
    history = run.result.history if run is not None and run.result is not None else None
    steps_per_epoch = history.get("steps_per_epoch") if history else None
    context: dict[str, Any] = {
        "run_dir": str(out),
        "experiment": resolved["name"],
        "variant": entry["name"],
        "seed": seed,
        "weights": run.weights if run is not None else None,
        "epochs": train.get("epochs"),
        "batch_size": train.get("batch_size"),
        "loss": train.get("loss"),
        "train_steps": (train["epochs"] * steps_per_epoch
                        if steps_per_epoch and train.get("epochs") else None),
        "recorded": _recorded(history),
    }
    args: dict[str, Any] = {
        "train_batch_size": train.get("batch_size"),
        "loss": train.get("loss"),
        "max_batches": max_batches,
        "context": context,
    }
    return examine_and_treat(model, data, args, fix=fix, save=save, overwrite=overwrite)


def examine_and_treat(
    model: Any,
    data: Any,
    args: Mapping[str, Any],
    *,
    fix: str | None,
    save: str | Path | None,
    overwrite: bool,
) -> Diagnosis | Treatment:
    """Examine ``model`` on ``data``; with ``fix``, treat it and (with ``save``) write the
    fixed model with :func:`bnlab.lab.keras_export.write_model_file`. ``args`` are the
    keyword arguments both :func:`examine` and :func:`treat` take."""
    diagnosis = examine(model, data, **args)
    if fix is None:
        return diagnosis
    treatment = treat(model, data, fix, before=diagnosis, **args)
    if save is not None:
        saved = write_model_file(model, save, overwrite=overwrite)
        treatment = replace(treatment, details={**treatment.details, "saved": str(saved)})
    return treatment


def _recorded(history: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last validation accuracies the run recorded (both modes), for comparison."""
    if not history:
        return None
    epochs = history.get("epochs", {})
    last = lambda key: (epochs.get(key) or [None])[-1]  # noqa: E731
    return {"val_accuracy": last("val_accuracy"),
            "val_accuracy_train_mode": last("val_accuracy_train_mode")}
