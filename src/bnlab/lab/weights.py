"""Final weights of each run as safetensors files (no pickle), and loading them back.

Each completed run saves its model's ``state_dict`` (parameters and buffers, e.g.
BatchNormalization's moving statistics) to
``<out>/weights/<variant>__seed<k>__<config hash>.safetensors``, written to a
temporary file and renamed into place. The file's metadata names the experiment,
variant, seed, config hash and input shape. `load_run_model` rebuilds the model from
the resolved experiment in the store and loads the weights into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as _safetensors_bytes

from bnlab.lab.errors import LabError
from bnlab.lab.experiment import Variant
from bnlab.lab.results import atomic_write_bytes
from bnlab.models import GraphModel, SequentialModel

__all__ = ["load_run_model", "load_weights", "save_weights", "weights_file"]

WEIGHTS_DIR = "weights"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=\[\]+-]")


def weights_file(variant: str, seed: int, config_hash: str) -> str:
    """Path of a run's weights relative to the output folder."""
    return f"{WEIGHTS_DIR}/{_UNSAFE.sub('_', variant)}__seed{seed}__{config_hash[:8]}.safetensors"


def save_weights(model: torch.nn.Module, path: str | Path, *, metadata: Mapping[str, str]) -> None:
    """Write ``model.state_dict()`` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, _safetensors_bytes(tensors, metadata=dict(metadata)))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file.

    Raises:
        LabError: the file is missing or not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise LabError(f"{path}: weights file not found; run the study again to recreate it")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:
        raise LabError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); delete it and "
            "run the same `bnlab run` command again to retrain that run"
        ) from None
    return tensors, metadata


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load a weights file into `model` after checking names, shapes and dtypes; returns its metadata.

    Raises:
        LabError: unreadable file, or tensors that do not match the model (missing,
            unexpected, differently shaped or of another dtype), listing the first
            differences.
    """
    tensors, metadata = read_weights(path)
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k} has shape {list(tensors[k].shape)}, model needs {list(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    # load_state_dict would cast silently (a bool moving variance becomes 1.0, a float
    # step count of 1e30 overflows later): the file must hold the model's own dtypes.
    problems += [
        f"{k} has dtype {str(tensors[k].dtype).removeprefix('torch.')}, model needs "
        f"{str(v.dtype).removeprefix('torch.')}"
        for k, v in expected.items()
        if k in tensors and tensors[k].dtype != v.dtype
    ]
    if problems:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise LabError(f"{path}: weights do not match the model: {shown}")
    model.load_state_dict(tensors, strict=True)
    return metadata


def _metadata_shape(path: Path, metadata: Mapping[str, str]) -> list[int]:
    """The ``input_shape`` a weights file's metadata records (a JSON list of sizes >= 1).

    Raises:
        LabError: absent, not JSON, or not a list of positive integers.
    """
    text = metadata.get("input_shape")
    if text is None:
        raise LabError(f"{path}: no input shape in the experiment or the file's metadata")
    try:
        shape = json.loads(text)
    except ValueError:
        shape = None
    if not (
        isinstance(shape, list)
        and shape
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise LabError(
            f"{path}: metadata input_shape={text[:80]!r} is not a JSON list of sizes >= 1; "
            "the file was not written by bnlab or was edited; run the study again to recreate it"
        )
    return shape


def load_run_model(out_dir: str | Path, variant: str, seed: int) -> SequentialModel | GraphModel:
    """Rebuild the model of one finished run from its output folder and load its final weights.

    Args:
        out_dir: the ``--out`` folder of a study.
        variant: the variant's name, with its grid suffix if it has one
            (e.g. ``"bn[learning_rate=0.01]"``).
        seed: the run's seed.

    Returns:
        The model in inference mode (``eval()``).

    Raises:
        LabError: no store, unknown variant (lists them), no completed run for that seed,
            or a missing, corrupt or mismatched weights file.
    """
    from bnlab.lab.store import Store

    with Store.in_folder(out_dir, create=False) as store:
        resolved = store.latest_experiment()
        if resolved is None:
            raise LabError(
                f"{out_dir}: the store holds no experiment; run one with --out {out_dir}"
            )
        entries = {v["name"]: v for v in resolved["variants"]}
        if variant not in entries:
            raise LabError(
                f"{out_dir}: experiment {resolved['name']!r} has no variant {variant!r}; "
                f"variants: {', '.join(entries)}"
            )
        entry: dict[str, Any] = entries[variant]
        run = store.get((resolved["name"], entry["base"], seed, entry["config_hash"]))
    if run is None or run.status != "completed" or run.weights is None:
        status = "no run" if run is None else f"a {run.status} run without weights"
        raise LabError(
            f"{out_dir}: variant {variant!r} seed {seed} has {status}; "
            f"seeds are {resolved['seeds']}; run the study to completion first"
        )
    path = Path(out_dir) / run.weights
    _, metadata = read_weights(path)
    shape = entry["input_shape"]
    if shape is None:
        shape = _metadata_shape(path, metadata)
    model = Variant.from_dict(entry).build(shape, seed=0)
    load_weights(model, path)
    return model.eval()
