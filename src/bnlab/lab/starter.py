"""``bnlab init NAME [--from EXPERIMENT | --model FILE --data DATA]``: a starting experiment.

`starter_text` returns the TOML text: a commented template of every section (data, model,
train, variants, grid, report), or a bundled experiment's own file with its name replaced.
`model_starter_text` starts from a user's Keras model file and data: the file as the base
model (``[model] from``), the data as ``bnlab doctor --data`` reads it, and variants that
ask the batch-normalization questions of that model (as saved, another momentum, without
BN; or, for a model without BN, with BN after each convolution or hidden Dense layer).
`write_starter` writes the text to ``NAME.toml`` after checking that it loads
(``bnlab.lab.load_experiment``), so a new user starts from a file that runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnlab.lab.errors import LabError
from bnlab.lab.experiment import list_experiments, load_experiment
from bnlab.models import LayerSpec

__all__ = ["TEMPLATE", "model_starter_text", "starter_text", "write_starter"]

TEMPLATE = '''# {name}: a bnlab experiment. Run it with `bnlab run {name}.toml`; `bnlab show {name}.toml`
# prints the settings as used and each variant's model summary.
name = "{name}"
description = "MLP on the circles toy data: without and with batch normalization"
seeds = 5                 # runs per variant (seeds 0..4); confidence intervals need 5 or more

[data]                    # a dataset by name: circles, moons, blobs, mnist, fashion_mnist,
name = "circles"          # npz (path = ...), image_folder (path = ..., image_size = ...)
n_samples = 1000
noise = 0.1
train_size = 500          # the first 500 rows train, the rest test

[model]                   # Keras layer names and arguments (see the README's layer list)
layers = [
  {{ type = "Dense", units = 50, activation = "relu" }},
  {{ type = "Dense", units = 1, activation = "sigmoid" }},
]

[train]
optimizer = {{ name = "sgd", learning_rate = 0.01, momentum = 0.9 }}
loss = "binary_crossentropy"
epochs = 30
batch_size = 32
# eval_every_steps = 50   # test accuracy within epochs too (curves then count steps)

[variants.baseline]       # a variant without edits is the [model] as written
description = "Dense(50, relu) -> Dense(1, sigmoid)"

[variants.bn]             # edits change the [model] layers by name or type
description = "BatchNormalization after the hidden Dense"
edits = [{{ insert_after = "dense", layer = {{ type = "BatchNormalization" }} }}]

# [grid]                  # every variant at every combination; use "$name" in a setting
# learning_rate = [0.001, 0.01, 0.1]

[report]
reference = "baseline"    # the variant the others are compared with
threshold_metric = "val_accuracy"
threshold = 0.80          # "epochs to reach 80% test accuracy"
'''


def starter_text(name: str, source: str | None = None) -> str:
    """The TOML text of a new experiment ``name``: the template, or bundled ``source``'s file.

    Raises:
        LabError: ``source`` is not a bundled experiment.
    """
    if source is None:
        return TEMPLATE.format(name=name)
    bundled = {info.name: info.path for info in list_experiments()}
    if source not in bundled:
        raise LabError(
            f"--from: no bundled experiment {source!r}; choose from: {', '.join(bundled)}"
        )
    text = bundled[source].read_text("utf-8")
    text, count = re.subn(r'^name = "[^"]*"', f'name = "{name}"', text, count=1, flags=re.M)
    if not count:
        raise LabError(f"--from {source}: the bundled file has no top-level name line")
    head = f"# {name}: started from the bundled experiment {source!r} (bnlab init --from).\n"
    return head + text


_MODEL_TEMPLATE = '''# {name}: batch normalization in {file}, over many seeds (bnlab init --model).
# Run it with `bnlab run {name}.toml`; `bnlab show {name}.toml` prints each variant's model.
name = "{name}"
description = "{file}: {summary}"
seeds = 5                 # runs per variant; confidence intervals need 5 or more

[data]
{data}

[model]                   # the file's architecture (its path is relative to this file)
from = "{model}"
{weights}

[train]                   # {train_note}
optimizer = {optimizer}
loss = "{loss}"
epochs = 10
batch_size = 32

{variants}
[report]
reference = "as_saved"    # the variant the others are compared with
'''


def model_starter_text(
    name: str, model: str | Path, data: str, *, image_size: tuple[int, int] | None = None,
    folder: str | Path = ".",
) -> str:
    """The TOML text of a study of Keras model file ``model`` on ``data`` (see the module
    docstring); ``folder`` is where the TOML goes (the model path is written relative to it).

    Raises:
        LabError: a file that is no Keras model this version of bnlab reads, or DATA that
            names no dataset, folder or ``.npz`` file.
    """
    from bnlab.data import DatasetError, check_dataset_options, parse_data_argument
    from bnlab.keras_io import KerasFileError, load_keras_spec
    from bnlab.keras_io.archive import read_file

    path = Path(model).expanduser().resolve()
    try:
        spec = load_keras_spec(path)
        compiled = read_file(path, weights=False).compile
        built = spec.build(seed=0)
        dataset, options = parse_data_argument(data)
        if "path" in options:  # [data] paths are relative to the working folder: make it last
            options["path"] = str(Path(options["path"]).expanduser().resolve())
        if dataset == "image_folder" and "image_size" not in options:
            height_width = image_size or tuple(spec.input_shape[:2])
            options["image_size"] = list(height_width) if None not in height_width else [64, 64]
        check_dataset_options(dataset, options, where="--data")
    except (KerasFileError, DatasetError) as error:
        raise LabError(str(error)) from None
    layers = [(n, s) for n, s, _ in built.named_layers()]
    outputs = built.output_shape[-1]  # type: ignore[index]
    data_lines = [f'name = "{dataset}"'] + [f"{k} = {_toml(v)}" for k, v in options.items()]
    variants, summary = _model_variants(layers)
    try:
        relative = path.relative_to(Path(folder).resolve())
    except ValueError:
        relative = path
    frozen = any(not p.requires_grad for p in built.parameters())
    weights = ('weights = "file"          # the frozen layers are pretrained: every run starts '
               'from the file\'s weights' if frozen else
               'weights = "fresh"         # "file": every run starts from the file\'s weights')
    optimizer, loss = _compiled_optimizer(compiled), _compiled_loss(compiled)
    note = ("as the file was compiled" if optimizer and loss else
            "set these to how the model is trained")
    return _MODEL_TEMPLATE.format(
        name=name, file=path.name, summary=summary, data="\n".join(data_lines),
        model=relative.as_posix(), variants=variants, weights=weights, train_note=note,
        optimizer=optimizer or '{ name = "adam", learning_rate = 0.001 }',
        loss=loss or ("binary_crossentropy" if outputs == 1 else "sparse_categorical_crossentropy"),
    )


def _compiled_optimizer(compiled: Mapping[str, Any]) -> str | None:
    """The file's compiled optimizer as a TOML table, with the arguments that differ from
    Keras's defaults; None when it is not SGD, Adam or RMSprop with plain numbers."""
    from bnlab.train import validate_optimizer_args

    entry = compiled.get("optimizer") or {}
    name = str(entry.get("class_name", "")).lower()
    config = entry.get("config") if isinstance(entry.get("config"), Mapping) else {}
    try:
        defaults = validate_optimizer_args(name, {})
        args = validate_optimizer_args(name, {
            k: float(f"{v:.7g}") if isinstance(v, float) else v  # float32 values: 0.05, not 0.0500000007
            for k, v in config.items() if k in defaults})
    except (TypeError, ValueError):  # another optimizer, or a learning-rate schedule
        return None
    changed = {k: v for k, v in args.items() if k == "learning_rate" or v != defaults[k]}
    return "{ " + ", ".join([f'name = "{name}"', *(f"{k} = {_toml(v)}" for k, v in changed.items())]) + " }"


def _compiled_loss(compiled: Mapping[str, Any]) -> str | None:
    """The file's compiled loss when bnlab has it (by name, or a serialized loss on
    probabilities such as ``SparseCategoricalCrossentropy()``); else None."""
    from bnlab.keras_io.layout import snake_case
    from bnlab.train import list_losses

    loss = compiled.get("loss")
    if isinstance(loss, Mapping):
        config = loss.get("config") if isinstance(loss.get("config"), Mapping) else {}
        if config.get("from_logits"):
            return None  # bnlab's losses take probabilities
        loss = snake_case(str(loss.get("class_name", "")))  # Keras's own name of the class
    aliases = {"mean_squared_error": "mse"}
    loss = aliases.get(loss, loss) if isinstance(loss, str) else None
    return loss if loss in list_losses() else None


def _model_variants(layers: list[tuple[str, LayerSpec]]) -> tuple[str, str]:
    """The variants' TOML and a one-line summary for a model with these named layers."""
    own = '[variants.as_saved]\ndescription = "the model as in the file"\n'
    momenta = {s.resolved_args()["momentum"] for _, s in layers if s.type == "BatchNormalization"}
    if momenta:
        other = 0.99 if momenta == {0.9} else 0.9
        tag = str(other).replace(".", "_")
        return own + (
            f'\n[variants.momentum_{tag}]\n'
            f'description = "every BatchNormalization with momentum {other} (Keras\'s default is 0.99)"\n'
            f'edits = [{{ set = {{ type = "BatchNormalization" }}, args = {{ momentum = {other} }} }}]\n'
            '\n[variants.no_bn]\n'
            'description = "without BatchNormalization"\n'
            'edits = [{ remove = "BatchNormalization" }]\n'
        ), f"as saved vs BN momentum {other} vs without BN"
    convolutions = [n for n, s in layers if s.type in ("Conv1D", "Conv2D", "Conv3D")]
    targets = convolutions or [n for n, s in layers if s.type == "Dense"][:-1]
    if not targets:
        return own, "as saved"
    where = "convolution" if convolutions else "hidden Dense layer"
    names = ", ".join(f'"{n}"' for n in targets)
    return own + (
        '\n[variants.with_bn]\n'
        f'description = "BatchNormalization after each {where}"\n'
        f'edits = [{{ insert_after = [{names}], layer = {{ type = "BatchNormalization" }} }}]\n'
    ), f"as saved vs with BN after each {where}"


def _toml(value: Any) -> str:
    """A TOML value of a dataset option (strings, numbers, booleans and lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_starter(
    name: str, *, source: str | None = None, model: str | Path | None = None,
    data: str | None = None, image_size: tuple[int, int] | None = None,
    folder: str | Path = ".", force: bool = False,
) -> Path:
    """Write ``folder/NAME.toml`` and check that it loads; returns the path. The text is
    `model_starter_text` with ``model`` (and ``data``), else `starter_text`.

    Raises:
        LabError: the name is not a plain file name, the file exists (without ``force``),
            ``--model`` without ``--data`` (or with ``--from``), or the written experiment
            does not load (it is removed again).
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise LabError(
            f"bnlab init: name {name!r} must be letters, digits, '_', '.' or '-' (it becomes "
            "NAME.toml and the experiment's name)"
        )
    path = Path(folder) / f"{name}.toml"
    if path.exists() and not force:
        raise LabError(f"bnlab init: {path} exists; pass --force to overwrite it")
    if model is not None and (data is None or source is not None):
        raise LabError("bnlab init: --model needs --data (the data to train on), and no --from")
    if model is None and (data is not None or image_size is not None):
        raise LabError("bnlab init: --data and --image-size go with --model FILE")
    text = (starter_text(name, source) if model is None else
            model_starter_text(name, model, data or "", image_size=image_size, folder=folder))
    path.write_text(text, "utf-8")
    try:
        load_experiment(path)
    except LabError:
        path.unlink()
        raise
    return path
