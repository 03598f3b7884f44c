"""A lab-trained model as a Keras file: ``bnlab export RUN_DIR --variant V --seed S --to F``.

:func:`select_run` finds one completed run of a study folder (variant, grid point,
seed); :func:`export_run` rebuilds its model from the resolved experiment, loads the
run's final weights from its safetensors file (:func:`bnlab.lab.load_run_model`: no
pickle) and writes it with :func:`bnlab.save_keras`, so ``keras.saving.load_model``
opens it and computes the same outputs. :func:`write_model_file` is how the commands
write a model file: never over an existing file unless asked, and atomically, so an
interrupted write leaves no half-written model behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bnlab.lab.errors import LabError
from bnlab.lab.store import Store, StoredRun
from bnlab.lab.weights import load_run_model

__all__ = [
    "KERAS_SUFFIXES",
    "SelectedRun",
    "check_model_file",
    "export_run",
    "select_run",
    "write_model_file",
]

#: File name endings bnlab writes Keras models to.
KERAS_SUFFIXES: tuple[str, ...] = (".keras",)


@dataclass(frozen=True)
class SelectedRun:
    """One completed run of a study folder.

    Attributes:
        out_dir: the study's ``--out`` folder.
        experiment: the resolved experiment (as stored).
        variant: the resolved variant entry (name with grid suffix, layers, train, ...).
        seed: the run's seed.
        run: the stored run record (None only for runs outside the store).
    """

    out_dir: Path
    experiment: Mapping[str, Any]
    variant: Mapping[str, Any]
    seed: int
    run: StoredRun | None


def select_run(
    run_dir: str | Path,
    *,
    variant: str | None = None,
    grid: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> SelectedRun:
    """Find a completed run by variant (and grid point) and seed.

    Args:
        run_dir: the ``--out`` folder of ``bnlab run``.
        variant: a variant's full name (``"bn[learning_rate=0.01]"``) or base name; may
            be left out when the experiment has one variant.
        grid: the grid point, axis -> value (``{"learning_rate": 0.01}``), with a base name.
        seed: the run's seed; default the first seed with a completed run.

    Raises:
        LabError: no store, unknown variant or grid point (lists them), no completed
            run for the seed (lists the completed ones).
    """
    out = Path(run_dir)
    with Store.in_folder(out, create=False) as store:
        resolved = store.latest_experiment()
        if resolved is None:
            raise LabError(f"{out}: the store holds no experiment; run one with --out {out}")
        entry = _variant(out, resolved, variant, dict(grid or {}))
        runs = {s: store.get((resolved["name"], entry["base"], s, entry["config_hash"]))
                for s in resolved["seeds"]}
    completed = [s for s, r in runs.items() if r is not None and r.status == "completed"]
    if seed is None:
        if not completed:
            raise LabError(f"{out}: variant {entry['name']!r} has no completed run; run the study "
                           "to completion first")
        seed = completed[0]
    elif seed not in completed:
        raise LabError(f"{out}: variant {entry['name']!r} has no completed run with seed {seed}; "
                       f"completed seeds: {completed or 'none'}")
    return SelectedRun(out, resolved, entry, seed, runs[seed])


def _variant(out: Path, resolved: Mapping[str, Any], name: str | None,
             grid: dict[str, Any]) -> Mapping[str, Any]:
    entries = list(resolved["variants"])
    names = ", ".join(v["name"] for v in entries)
    exp = resolved["name"]
    if name is None and not grid:
        if len(entries) == 1:
            return entries[0]
        raise LabError(f"{out}: experiment {exp!r} has {len(entries)} variants; pass --variant "
                       f"with one of: {names}")
    by_name = [v for v in entries if v["name"] == name]
    if by_name and not grid:
        return by_name[0]
    matches = [v for v in entries if (name is None or v["base"] == name)
               and (not grid or dict(v["grid"]) == grid)]
    if len(matches) == 1:
        return matches[0]
    what = (f"variant {name!r}" if name is not None else "a variant") + (
        f" at grid point {grid}" if grid else "")
    if not matches:
        raise LabError(f"{out}: experiment {exp!r} has no {what}; variants: {names}")
    raise LabError(f"{out}: experiment {exp!r} has {len(matches)} grid points of {what}; pass "
                   f"--grid AXIS=VALUE for each axis or the full name, one of: "
                   f"{', '.join(v['name'] for v in matches)}")


def check_model_file(path: str | Path, *, overwrite: bool = False) -> Path:
    """Check that a model may be written to ``path`` (see :func:`write_model_file`).

    Raises:
        LabError: another suffix than ``.keras``, a missing folder, or an existing file
            without ``overwrite``.
    """
    target = Path(path)
    if target.suffix.lower() not in KERAS_SUFFIXES:
        raise LabError(f"{target}: bnlab writes Keras 3 archives; give a file name ending in "
                       f"{' or '.join(KERAS_SUFFIXES)}, got {target.suffix or 'no suffix'!r}")
    if not target.parent.is_dir():
        raise LabError(f"{target}: the folder {str(target.parent)!r} does not exist; create it "
                       "first")
    if target.exists() and not overwrite:
        raise LabError(f"{target} exists; give another file name or --overwrite to replace it")
    return target


def write_model_file(model: nn.Module, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` with :func:`bnlab.save_keras` to ``path``, never over a file unasked.

    :func:`bnlab.save_keras` writes atomically (a temporary file in the same folder,
    renamed into place): ``path`` holds the old file or the complete new one.

    Args:
        model: a bnlab model (from a Keras file or the lab).
        path: a ``.keras`` file; its folder must exist.
        overwrite: replace an existing file (otherwise refused).

    Returns:
        ``path``.

    Raises:
        LabError: see :func:`check_model_file`; nothing is written then.
    """
    from bnlab.keras_io import save_keras

    target = check_model_file(path, overwrite=overwrite)
    save_keras(model, target)
    return target


def export_run(
    run_dir: str | Path,
    to: str | Path,
    *,
    variant: str | None = None,
    grid: Mapping[str, Any] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> tuple[SelectedRun, Path]:
    """Write the final model of one run as a Keras file (see the module docstring).

    Args:
        run_dir, variant, grid, seed: select the run (:func:`select_run`).
        to: the ``.keras`` file to write.
        overwrite: replace an existing file.

    Returns:
        The run exported and the file written.

    Raises:
        LabError: see :func:`select_run`, :func:`write_model_file`, and a missing,
            corrupt or mismatched weights file.
    """
    check_model_file(to, overwrite=overwrite)
    selected = select_run(run_dir, variant=variant, grid=grid, seed=seed)
    model = load_run_model(selected.out_dir, selected.variant["name"], selected.seed)
    return selected, write_model_file(model, to, overwrite=overwrite)
