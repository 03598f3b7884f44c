"""Experiment files: TOML -> a validated, fully resolved `Experiment`.

An experiment file declares a study; the code knows nothing about any one study.

```toml
name = "circles"                      # default: the file name without .toml
description = "one line for `bnlab list`"
seeds = 10                            # 10 -> seeds 0..9; or a list [0, 3, 7]

[data]                                # a registered dataset and its options
name = "circles"
n_samples = 1000

[model]
input_shape = [2]                     # optional: default is the dataset's input shape
layers = [ { type = "Dense", units = 50, activation = "relu" }, { type = "Dense", units = 1 } ]
# or the architecture of a Keras model file, Sequential or Functional:
# from = "model.keras"                # relative to this file's folder
# weights = "file"                    # start every run from the file's weights (default "fresh")

[train]
optimizer = { name = "sgd", learning_rate = "$learning_rate", momentum = 0.9 }
loss = "binary_crossentropy"
epochs = 100
batch_size = 32                       # default 32
eval_every_steps = 50                 # optional: evaluate every K steps as well as at epoch ends
shuffle = true                        # default true
probes = [ { layer = "dense", where = "output" } ]

[variants.baseline]                   # empty: the [model] layers as they are
[variants.bn_after]
edits = [ { insert_after = "dense", layer = { type = "BatchNormalization" } } ]
[variants.big_batch]
train = { batch_size = 128 }          # per-variant overrides of [train] / [data] (merged)

[grid]                                # every variant that writes "$axis" is expanded
learning_rate = [0.001, 0.01]         # -> "baseline[learning_rate=0.001]", ...

[report]
threshold_metric = "val_accuracy"     # "epochs to first reach" this metric >= threshold
threshold = 0.80
reference = "baseline"                # default: the first variant; each other vs it
comparisons = [["bn_after", "baseline"]]   # or explicit pairs (matched at equal grid points)
doctor = true                         # optional (default false): `bnlab run` measures every
                                      # run's BN layers with `bnlab doctor` after training
                                      # (moving vs population statistics per layer,
                                      # `bnlab.doctor.study`) and the report shows them

[report.published.baseline]           # optional: numbers a source reported from one run
train_accuracy = 0.838                # final accuracies as fractions 0..1 (both required)
test_accuracy = 0.846
epochs_to_threshold = 35              # optional: epochs to first reach the threshold above
source = "Keras tutorial single run"  # optional text
epochs = 100                          # optional: epochs the source trained (other lengths
                                      # are not compared with these numbers)
```

Validation rejects unknown keys at every level; every error is a one-line `LabError`
(or the models' `SpecError` / the data registry's `DatasetError`, both ValueErrors)
naming the file, the key path, the value received and what is allowed.

Grid semantics: a variant is expanded over exactly the axes its resolved settings
refer to (``"$axis"`` as a whole string value anywhere in [data], [model], [train]
or the variant's own table), in file order; a variant that refers to no axis stays
one variant. Expanded names are ``base[axis=value,...]`` and each carries its grid
values. An axis no variant uses, or a ``"$name"`` that names no axis, is an error.

``[model] from = "model.keras"`` takes the base model from a Keras 3 ``.keras`` (or
legacy ``.h5``) file, read with :func:`bnlab.keras_io.load_keras_spec`: architecture
only, every run initializes its weights afresh from its seed. A Sequential file gives
the layer list; a Functional one (one input, one output; nested models flattened) its
graph, whose nodes the edits change as :func:`bnlab.models.apply_edits` describes
(``insert_after`` feeds every consumer of the target from the new layers). The layers
keep the file's names (edits may target ``"conv2d_1"``, a type such as
``"BatchNormalization"``, or an index); the input shape is the file's unless
``input_shape`` is given, and the data's where the file leaves a size open. The
resolved experiment holds the layers (and the graph's wiring) themselves, so a run
does not read the file again. A variant with its own ``layers`` is a layer list.
``weights = "file"`` makes every run start from the file's weights where its layers
match the file's (:mod:`bnlab.lab.file_weights`); the variant then records the file's
path and SHA-256, and its runs read the file.

An ``image_folder`` feeds a model that rescales its input itself
(:func:`bnlab.models.rescales_input`, e.g. a Keras file with ``Rescaling(1/255)``) pixels
0..255, as Keras does, unless ``[data]`` sets ``pixels``.

Published numbers (``[report.published.NAME]``, NAME a base variant) apply to every grid
point of that variant; the report places each among our seeds (``bnlab.lab.published``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bnlab.data import check_dataset_options
from bnlab.lab.catalog import (
    ExperimentInfo,
    bundled_dir,
    find_experiment,
    list_experiments,
    read_toml,
)
from bnlab.lab.errors import LabError
from bnlab.lab.file_weights import FileWeights
from bnlab.lab.results import DEFAULT_THRESHOLD, DEFAULT_THRESHOLD_METRIC
from bnlab.models import (
    GraphModel,
    GraphSpec,
    LayerSpec,
    SequentialModel,
    SpecError,
    apply_edits,
    build_graph_model,
    build_model,
    graph_from_wiring,
    layer_names,
    parse_layer,
    parse_layers,
    rescales_input,
)
from bnlab.train import (
    ProbeSpec,
    TrainConfig,
    list_losses,
    list_optimizers,
    validate_optimizer_args,
)

__all__ = [
    "THRESHOLD_METRICS",
    "Experiment",
    "ExperimentInfo",
    "PublishedRun",
    "ReportSettings",
    "Variant",
    "find_experiment",
    "list_experiments",
    "load_experiment",
    "parse_experiment",
]

TOP_KEYS = ("name", "description", "seeds", "data", "model", "train", "variants", "grid", "report")
MODEL_KEYS = ("input_shape", "layers", "from", "weights")
TRAIN_KEYS = (
    "optimizer",
    "loss",
    "epochs",
    "batch_size",
    "eval_every_steps",
    "shuffle",
    "probes",
)
VARIANT_KEYS = ("description", "input_shape", "layers", "edits", "train", "data")
REPORT_KEYS = (
    "threshold_metric", "threshold", "reference", "comparisons", "published", "doctor"
)
PUBLISHED_KEYS = ("train_accuracy", "test_accuracy", "epochs_to_threshold", "source", "epochs")
#: History metrics a threshold may name; "reach" means >= value, or <= value for losses.
THRESHOLD_METRICS = ("val_accuracy", "val_accuracy_train_mode", "accuracy", "val_loss", "loss")
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 32,
    "eval_every_steps": None,
    "shuffle": True,
    "probes": [],
}
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # used with fullmatch: no trailing "\n"
_AXIS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 64
"""Longest experiment or variant name (names become folder and file names)."""
MAX_VARIANT_NAME = 160
"""Longest grid-expanded variant name, ``base[axis=value,...]`` (it names weights files)."""
MAX_RUNS_ENV = "BNLAB_MAX_RUNS"
DEFAULT_MAX_RUNS = 10_000


def max_runs() -> int:
    """Most runs (variants x grid points x seeds) one experiment may plan.

    ``$BNLAB_MAX_RUNS`` raises (or lowers) the default of 10000; the bound stops a typo
    (``seeds = 1000000000``, a 100x100x100 grid) from planning for minutes or
    exhausting memory before a single run starts.
    """
    import os

    text = os.environ.get(MAX_RUNS_ENV, "")
    try:
        value = int(text) if text else DEFAULT_MAX_RUNS
    except ValueError:
        raise LabError(
            f"${MAX_RUNS_ENV}: expected an integer >= 1, got {text!r}"
        ) from None
    if value < 1:
        raise LabError(f"${MAX_RUNS_ENV}: expected an integer >= 1, got {value}")
    return value


def _too_many(what: str, count: int, limit: int) -> LabError:
    return LabError(
        f"{what}: {count} runs exceed the limit of {limit}; reduce seeds or grid values, "
        f"or raise the limit with {MAX_RUNS_ENV}={count}"
    )


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False)
class Variant:
    """One fully resolved variant: what a run of it trains, after edits and grid substitution.

    Attributes:
        name: resolved name, ``base`` or ``base[axis=value,...]`` for grid points.
        base: the name under ``[variants.NAME]`` in the file.
        description: free text from the file ("" when absent).
        grid: the grid values this variant was built with (``{}`` without a grid).
        data: ``{"name": dataset, **options}`` as written (defaults are the registry's).
        input_shape: Keras-style input shape without the batch axis, or None for the dataset's.
        layers: the validated layer specs (of a graph: its nodes' layers, in node order).
        train: the resolved [train] table (defaults filled in), JSON-ready.
        graph: a Functional model's graph (from ``[model] from``; its nodes hold
            ``layers``), or None for a stack of layers.
        file_weights: the Keras file whose weights every run starts from
            (``[model] weights = "file"``), or None: the run's seed initializes them all.
    """

    name: str
    base: str
    description: str
    grid: Mapping[str, Any]
    data: Mapping[str, Any]
    input_shape: tuple[int, ...] | None
    layers: tuple[LayerSpec, ...]
    train: Mapping[str, Any]
    graph: GraphSpec | None = None
    file_weights: FileWeights | None = None

    def config(self) -> dict[str, Any]:
        """What determines a run's result besides the seed (JSON-ready); hashed into `config_hash`.

        A graph adds ``"graph"``: its wiring (:meth:`bnlab.models.GraphSpec.wiring`),
        whose nodes are ``"layers"`` in order; starting weights from a file add
        ``"file_weights"`` (its path and SHA-256).
        """
        config = {
            "data": _plain(self.data),
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "layers": [spec.to_dict() for spec in self.layers],
            "train": _plain(self.train),
        }
        if self.graph is not None:
            config["graph"] = self.graph.wiring()
        if self.file_weights is not None:
            config["file_weights"] = self.file_weights.to_dict()
        return config

    @property
    def layer_names(self) -> list[str]:
        """The names of the model's layers (a graph's node names), as probes and edits use them."""
        if self.graph is not None:
            return [node.name for node in self.graph.nodes]
        return [n for n in layer_names(self.layers) if n is not None]

    def build(self, input_shape: Sequence[int], *, seed: int) -> SequentialModel | GraphModel:
        """A new model of this variant on ``input_shape`` (no batch axis), its weights
        initialized from ``seed`` alone.

        Raises:
            SpecError: a layer that does not fit its input.
        """
        where = f"variant {self.name}"
        if self.graph is None:
            return build_model(self.layers, tuple(input_shape), seed=seed, where=where)
        try:
            return build_graph_model(self.graph.with_input_shape(input_shape), seed=seed)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None

    @property
    def config_hash(self) -> str:
        """First 16 hex digits of SHA-256 over the canonical JSON of `config()`."""
        text = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Variant:
        """Rebuild from `to_dict` output (layers re-validated), e.g. a variant of results.json."""
        shape = d["input_shape"]
        layers, graph = _layers_and_graph(
            _parse_model(d["layers"], d.get("graph"), f"variant {d['name']}: layers"))
        return cls(
            name=d["name"],
            base=d["base"],
            description=d["description"],
            grid=dict(d["grid"]),
            data=dict(d["data"]),
            input_shape=tuple(shape) if shape is not None else None,
            layers=layers,
            train=dict(d["train"]),
            graph=graph,
            file_weights=FileWeights.from_dict(d["file_weights"]) if d.get("file_weights") else None,
        )

    def train_config(self) -> TrainConfig:
        """The `bnlab.train.TrainConfig` for this variant."""
        return _train_config(self.train)

    def to_dict(self) -> dict[str, Any]:
        """Resolved variant for ``experiment.resolved.json`` / results.json (JSON-ready)."""
        return {
            "name": self.name,
            "base": self.base,
            "description": self.description,
            "grid": _plain(self.grid),
            **self.config(),
            "config_hash": self.config_hash,
        }


@dataclass(frozen=True)
class PublishedRun:
    """What a source (a tutorial, a paper) reported for one variant from a single run.

    Attributes:
        train_accuracy: final train accuracy, a fraction 0..1.
        test_accuracy: final test accuracy, a fraction 0..1.
        epochs_to_threshold: epochs the source needed to first reach the experiment's report
            threshold (``threshold_metric`` >= ``threshold``), or None when not reported.
        source: where the numbers come from ("" when not given).
        epochs: how many epochs the source trained, or None when not given. A run of another
            length is not compared with these numbers (the report says the settings differ).
    """

    train_accuracy: float
    test_accuracy: float
    epochs_to_threshold: float | None = None
    source: str = ""
    epochs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "epochs_to_threshold": self.epochs_to_threshold,
            "source": self.source,
            "epochs": self.epochs,
        }


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes.

    Attributes:
        threshold_metric: history metric for "epochs to reach" (see `THRESHOLD_METRICS`).
        threshold: the value to reach (>=; <= for losses).
        reference: the (base) variant the others are compared against by default.
        comparisons: ``(variant, reference)`` base-name pairs; at a grid, runs are compared
            at equal grid points. Default: every other variant against `reference`.
        published: base variant name -> numbers a source reported from a single run, which
            the report places among our seeds (``{}`` when the file gives none).
        doctor: after the runs, ``bnlab run`` measures each run's BN layers with the
            doctor (``bnlab.doctor.study.measure_study``) for the report's "BN statistics
            after training" section.
    """

    threshold_metric: str
    threshold: float
    reference: str
    comparisons: tuple[tuple[str, str], ...]
    published: Mapping[str, PublishedRun] = field(default_factory=dict)
    doctor: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold_metric": self.threshold_metric,
            "threshold": self.threshold,
            "reference": self.reference,
            "comparisons": [list(pair) for pair in self.comparisons],
            "published": {name: run.to_dict() for name, run in self.published.items()},
            "doctor": self.doctor,
        }


@dataclass(frozen=True, eq=False)
class Experiment:
    """A validated experiment: its variants (grid-expanded), seeds and report settings.

    Attributes:
        name: experiment name (``name`` in the file, else the file stem).
        description: one line.
        source: the file it came from (a bundled file is named by its file name only).
        seeds: the seeds every variant runs with.
        grid: axis -> values, as declared.
        variants: resolved variants in file order (grid points in product order).
        report: report settings.
    """

    name: str
    description: str
    source: str
    seeds: tuple[int, ...]
    grid: Mapping[str, tuple[Any, ...]]
    variants: tuple[Variant, ...]
    report: ReportSettings

    def variant(self, name: str) -> Variant:
        """The resolved variant called `name`; LabError listing the names otherwise."""
        for v in self.variants:
            if v.name == name:
                return v
        names = ", ".join(v.name for v in self.variants)
        raise LabError(f"experiment {self.name!r} has no variant {name!r}; variants: {names}")

    def with_seeds(self, seeds: int | Sequence[int]) -> Experiment:
        """A copy running seeds ``0..seeds-1`` (an int) or the given seeds."""
        return replace(self, seeds=_check_seeds(seeds, "--seeds"))

    def with_epochs(self, epochs: int) -> Experiment:
        """A copy where every variant trains for `epochs` epochs (a new config, so new runs)."""
        if not _is_int(epochs) or epochs < 1:
            raise LabError(f"--epochs: expected an integer >= 1, got {epochs!r}")
        variants = tuple(replace(v, train={**v.train, "epochs": epochs}) for v in self.variants)
        return replace(self, variants=variants)

    def to_dict(self) -> dict[str, Any]:
        """The resolved experiment (JSON-ready): what ``experiment.resolved.json`` holds."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "seeds": list(self.seeds),
            "grid": {axis: list(values) for axis, values in self.grid.items()},
            "report": self.report.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
        }


def load_experiment(
    path_or_name: str | Path, *, overrides: Mapping[str, Any] | None = None
) -> Experiment:
    """Read, validate and resolve an experiment file or bundled experiment.

    Args:
        path_or_name: a bundled experiment name (see `list_experiments`) or a ``.toml`` path.
        overrides: dotted key -> value applied to the file before validation, e.g.
            ``{"train.batch_size": 64, "data.noise": 0.2}``.

    Raises:
        LabError, SpecError, DatasetError: one line naming file, key, value and what is allowed.
    """
    path = find_experiment(path_or_name)
    bundled = path.parent == bundled_dir()
    label = path.name if bundled else str(path)
    doc = read_toml(path, label)
    for key, value in (overrides or {}).items():
        _set_dotted(doc, key, value, label)
    return parse_experiment(doc, source=label, default_name=path.stem, base_dir=path.parent)


def _set_dotted(doc: dict[str, Any], key: str, value: Any, label: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise LabError(f"--set {key!r}: expected a dotted key like train.batch_size")
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise LabError(f"--set {key}: {label}: {where} is not a table; cannot set {key}")
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------- parsing


class _Where:
    """Key paths for messages: ``circles.toml: variants.bn.train.epochs``."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, path: str) -> str:
        return f"{self.label}: {path}" if path else self.label

    def error(self, path: str, message: str) -> LabError:
        return LabError(f"{self(path)}: {message}")


def _kind(value: Any) -> str:
    return type(value).__name__


def _got(value: Any) -> str:
    return f"got {value!r} ({_kind(value)})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_keys(w: _Where, path: str, table: Any, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise w.error(path, f"expected a table, {_got(table)}")
    for key in table:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise w.error(where, f"unknown key; allowed here: {', '.join(allowed)}")
    return table


def _check_name(w: _Where, path: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or len(value) > MAX_NAME:
        raise w.error(
            path,
            f"expected a name of at most {MAX_NAME} letters, digits, '_', '.', '-' "
            f"(like 'bn_after'), {_got(value)}",
        )
    return value


def _check_seeds(value: Any, where: str) -> tuple[int, ...]:
    if _is_int(value):
        if value < 1:
            raise LabError(f"{where}: expected a number of seeds >= 1, got {value!r}")
        if value > max_runs():
            raise _too_many(f"{where} = {value}", value, max_runs())
        return tuple(range(value))
    if isinstance(value, list | tuple) and len(value) > max_runs():
        raise _too_many(f"{where}: {len(value)} seeds", len(value), max_runs())
    if (
        isinstance(value, list | tuple)
        and value
        and all(_is_int(s) and s >= 0 for s in value)
        and len(set(value)) == len(value)
    ):
        return tuple(value)
    raise LabError(
        f"{where}: expected a number of seeds >= 1 or a list of distinct integers >= 0, {_got(value)}"
    )


def parse_experiment(
    doc: Mapping[str, Any],
    *,
    source: str = "<experiment>",
    default_name: str = "experiment",
    base_dir: str | Path | None = None,
) -> Experiment:
    """Validate and resolve an already-read TOML document (see the module docstring).

    Args:
        doc: the TOML document as a dict.
        source: file label used in messages and recorded in the resolved config.
        default_name: experiment name when the document has no ``name``.
        base_dir: folder that relative paths of the document (``[model] from``) are
            relative to; default the current folder.
    """
    w = _Where(source)
    doc = copy.deepcopy(dict(doc))
    _check_keys(w, "", doc, TOP_KEYS)
    name = _check_name(w, "name", doc.get("name", default_name))
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise w.error("description", f"expected a string, {_got(description)}")
    seeds = _check_seeds(doc.get("seeds", 1), w("seeds"))
    grid = _parse_grid(w, doc.get("grid", {}))

    if "data" not in doc:
        raise w.error("data", "missing table; give [data] with name = a registered dataset")
    data = doc["data"]
    if not isinstance(data, dict):
        raise w.error("data", f"expected a table, {_got(data)}")
    model = _model_from_file(w, _check_keys(w, "model", doc.get("model", {}), MODEL_KEYS),
                             base_dir)
    train = _check_keys(w, "train", doc.get("train"), TRAIN_KEYS) if "train" in doc else None
    if train is None:
        raise w.error("train", "missing table; give [train] with optimizer, loss and epochs")
    raw_variants = doc.get("variants", {"base": {}})
    if not isinstance(raw_variants, dict) or not raw_variants:
        raise w.error(
            "variants", f"expected one or more [variants.NAME] tables, {_got(raw_variants)}"
        )

    _check_references(w, "data", data, grid)
    _check_references(w, "model", model, grid)
    _check_references(w, "train", train, grid)
    variants: list[Variant] = []
    expanded: dict[str, list[Variant]] = {}
    planned = 0  # grid points so far, counted before any is expanded
    for base_name, table in raw_variants.items():
        path = f"variants.{base_name}"
        _check_name(w, path, base_name)
        _check_keys(w, path, table, VARIANT_KEYS)
        settings = {k: v for k, v in table.items() if k != "description"}
        _check_references(w, path, settings, grid)
        planned += _grid_points(settings, data, model, train, grid)
        if planned * len(seeds) > max_runs():
            raise _too_many(w("variants"), planned * len(seeds), max_runs())
        expanded[base_name] = list(_expand_variant(w, base_name, table, data, model, train, grid))
        variants.extend(expanded[base_name])

    used_axes = {axis for v in variants for axis in v.grid}
    for axis in grid:
        if axis not in used_axes:
            raise w.error(
                f"grid.{axis}",
                f'no variant uses this axis; write "${axis}" where its value goes, or remove it',
            )
    report = _parse_report(w, doc.get("report", {}), list(expanded))
    return Experiment(name, description, source, seeds, grid, tuple(variants), report)


def _model_from_file(w: _Where, model: dict[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """``[model]`` with ``from = FILE`` replaced by the file's layers (and input shape),
    a Functional file's ``graph`` wiring, and with ``weights = "file"`` its ``file_weights``."""
    if "from" not in model:
        if "weights" in model:
            raise w.error("model.weights", "starting weights come from a Keras file; give "
                          "from = FILE too, or remove weights")
        return model
    if "layers" in model:
        raise w.error("model", "give either layers or from (a Keras model file), not both")
    weights = model.get("weights", "fresh")
    if weights not in ("fresh", "file"):
        raise w.error("model.weights", f'expected "fresh" (each run initializes from its seed) '
                      f'or "file" (each run starts from the file\'s weights), {_got(weights)}')
    raw = model["from"]
    if not isinstance(raw, str) or not raw:
        raise w.error("model.from", f'expected the path of a Keras model file, {_got(raw)}')
    path = Path(raw).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise w.error("model.from", f"{raw!r} is not a file (looked for {path}); give the path "
                      "of a .keras or .h5 model file, relative to the experiment file")
    from bnlab.keras_io import KerasFileError, load_keras_spec

    try:
        spec = load_keras_spec(path)
    except KerasFileError as e:
        raise w.error("model.from", str(e)) from None
    out = {k: v for k, v in model.items() if k not in ("from", "weights")}
    out["layers"] = [layer.to_dict() for layer in spec.layers]
    if weights == "file":
        out["file_weights"] = FileWeights.of(path).to_dict()
    if spec.graph is not None:
        if len(spec.graph.inputs) != 1 or len(spec.graph.outputs) != 1:
            raise w.error(
                "model.from",
                f"{raw!r} holds a Functional model ({spec.name!r}) with "
                f"{len(spec.graph.inputs)} inputs and {len(spec.graph.outputs)} outputs; the lab "
                "trains models of one input and one output",
            )
        out["graph"] = spec.graph.wiring()
    if "input_shape" not in out and all(d is not None for d in spec.input_shape):
        out["input_shape"] = list(spec.input_shape)
    return out


def _parse_grid(w: _Where, raw: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(raw, dict):
        raise w.error("grid", f"expected a table of axis = [values], {_got(raw)}")
    grid = {}
    for axis, values in raw.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", axis):
            raise w.error(f"grid.{axis}", "axis names are letters, digits and '_'")
        ok = (
            isinstance(values, list)
            and values
            and all(isinstance(v, str | int | float | bool) for v in values)
        )
        if not ok:
            raise w.error(
                f"grid.{axis}",
                f"expected a non-empty list of numbers, strings or booleans, {_got(values)}",
            )
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            raise w.error(f"grid.{axis}", f"values must be numbers, not nan, got {values!r}")
        # 1 and 1.0 are one grid point (same settings, same runs); true and 1 are not.
        seen = [(type(v) is bool, type(v) is str, v) for v in values]
        if len(set(seen)) != len(values):
            dupes = [v for i, v in enumerate(values) if seen[i] in seen[:i]]
            raise w.error(
                f"grid.{axis}",
                f"values must be distinct, got {values!r} ({dupes[0]!r} repeats an earlier "
                "value; 1 and 1.0 are the same grid point)",
            )
        grid[axis] = tuple(values)
    return grid


def _walk(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (key path, leaf) in nested tables and lists."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, obj


def _reference(value: Any) -> str | None:
    """The axis a value refers to: only a whole ``"$axis"`` string (``"$5 model"`` is text)."""
    if isinstance(value, str) and value.startswith("$") and _AXIS_RE.fullmatch(value[1:]):
        return value[1:]
    return None


def _check_references(w: _Where, path: str, obj: Any, grid: Mapping[str, Any]) -> None:
    for leaf_path, leaf in _walk(obj, path):
        axis = _reference(leaf)
        if axis is not None and axis not in grid:
            axes = ", ".join(grid) or "none declared (add a [grid] table)"
            raise w.error(leaf_path, f"{leaf!r} names no grid axis; axes: {axes}")


def _references(obj: Any) -> set[str]:
    return {axis for _, leaf in _walk(obj, "") if (axis := _reference(leaf)) is not None}


def _substitute(obj: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    axis = _reference(obj)
    return values[axis] if axis is not None and axis in values else obj


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: tables merge key by key, anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _grid_points(
    table: Mapping[str, Any],
    data: Mapping[str, Any],
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    grid: Mapping[str, tuple[Any, ...]],
) -> int:
    """How many grid points a variant expands to (an upper bound: its settings and the
    shared tables it may use), counted without expanding anything."""
    used = _references([table, data, model, train])
    return math.prod(len(grid[axis]) for axis in grid if axis in used)


def _expand_variant(
    w: _Where,
    base_name: str,
    table: Mapping[str, Any],
    data: Mapping[str, Any],
    model: Mapping[str, Any],
    train: Mapping[str, Any],
    grid: Mapping[str, tuple[Any, ...]],
) -> Iterator[Variant]:
    path = f"variants.{base_name}"
    if "layers" in table and "edits" in table:
        raise w.error(
            path, "give either layers (a full list) or edits (changes to [model] layers), not both"
        )
    v_data = table.get("data", {})
    if not isinstance(v_data, dict):
        raise w.error(f"{path}.data", f"expected a table, {_got(v_data)}")
    v_train = _check_keys(w, f"{path}.train", table.get("train", {}), TRAIN_KEYS)
    # A different dataset replaces [data]; the same one (or none named) merges its options.
    if "name" in v_data and v_data["name"] != data.get("name"):
        merged_data = dict(v_data)
        data_path = f"{path}.data"
    else:
        merged_data = _merge(data, v_data)
        data_path = "data" if not v_data else f"data + {path}.data"
    merged_train = _merge(train, v_train)
    train_path = "train" if not v_train else f"train + {path}.train"
    input_shape = table.get("input_shape", model.get("input_shape"))
    shape_path = f"{path}.input_shape" if "input_shape" in table else "model.input_shape"
    own_layers = "layers" in table
    layers_raw = table["layers"] if own_layers else model.get("layers")
    wiring = None if own_layers else model.get("graph")  # a Functional model file's graph
    start = None if own_layers else model.get("file_weights")  # weights = "file"
    layers_path = f"{path}.layers" if own_layers else "model.layers"
    if layers_raw is None:
        raise w.error(
            "model.layers",
            f"missing; variant {base_name!r} uses the [model] layers (it has no layers of its own)",
        )
    edits_raw = table.get("edits")

    parts = {
        "data": merged_data,
        "input_shape": input_shape,
        "layers": layers_raw,
        "edits": edits_raw,
        "train": merged_train,
    }
    used = [axis for axis in grid if axis in _references(parts)]
    description = table.get("description", "")
    if not isinstance(description, str):
        raise w.error(f"{path}.description", f"expected a string, {_got(description)}")
    for combo in itertools.product(*(grid[axis] for axis in used)):
        values = dict(zip(used, combo, strict=True))
        name = base_name
        if values:
            name += "[" + ",".join(f"{a}={_format_value(v)}" for a, v in values.items()) + "]"
        if len(name) > MAX_VARIANT_NAME:
            raise w.error(
                path,
                f"grid point {name[:60]}... makes a variant name of {len(name)} characters; "
                f"at most {MAX_VARIANT_NAME} are allowed (use shorter grid values or axis names)",
            )
        resolved = _substitute(parts, values)
        at = f" (grid point {name})" if values else ""
        data_opts = _parse_data(w, data_path, resolved["data"], at)
        shape = _parse_input_shape(w, shape_path, resolved["input_shape"], at)
        model_spec = _parse_model(resolved["layers"], wiring, w(layers_path), at)
        if resolved["edits"] is not None:
            if not isinstance(resolved["edits"], list):
                raise w.error(
                    f"{path}.edits", f"expected a list of edits, {_got(resolved['edits'])}"
                )
            model_spec = apply_edits(model_spec, resolved["edits"], where=w(f"{path}.edits") + at)
        layers, graph = _layers_and_graph(model_spec)
        if (data_opts["name"] == "image_folder" and "pixels" not in resolved["data"]
                and rescales_input(layers)):
            data_opts["pixels"] = "0..255"  # what Keras feeds a model that rescales itself
        variant = Variant(
            name=name,
            base=base_name,
            description=description,
            grid=values,
            data=data_opts,
            input_shape=shape,
            layers=layers,
            train=_parse_train(w, train_path, resolved["train"], at),
            graph=graph,
            file_weights=FileWeights.from_dict(start) if start else None,
        )
        names = variant.layer_names
        for i, probe in enumerate(variant.train["probes"]):
            if probe["layer"] not in names:
                raise LabError(
                    f"{w(train_path)}.probes[{i}].layer{at}: variant {name!r} has no layer "
                    f"{probe['layer']!r}; its layers: {', '.join(names)}"
                )
        yield variant


def _parse_model(
    raw: Any, wiring: Mapping[str, Any] | None, where: str, at: str = ""
) -> list[LayerSpec] | GraphSpec:
    """The layer list, or with a Functional model file's ``wiring`` the graph of its layers;
    ``where`` names the list in messages, ``at`` the grid point."""
    if wiring is None:
        return parse_layers(raw, where=where + at)
    layers = [parse_layer(item, where=f"{where}[{i}]{at}") for i, item in enumerate(raw)]
    return graph_from_wiring(wiring, layers, where=where + at)


def _layers_and_graph(
    model: Sequence[LayerSpec] | GraphSpec,
) -> tuple[tuple[LayerSpec, ...], GraphSpec | None]:
    """A variant's ``layers`` and ``graph``: a graph's layers are its nodes', in order."""
    if isinstance(model, GraphSpec):
        return tuple(node.layer for node in model.nodes), model
    return tuple(model), None


def _parse_data(w: _Where, path: str, data: dict[str, Any], at: str) -> dict[str, Any]:
    name = data.get("name")
    if not isinstance(name, str):
        raise LabError(f"{w(path)}.name{at}: expected a registered dataset name, {_got(name)}")
    options = {k: v for k, v in data.items() if k != "name"}
    return {"name": name, **check_dataset_options(name, options, where=f"{w(path)}{at}")}


def _parse_input_shape(w: _Where, path: str, value: Any, at: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and value and all(_is_int(d) and d >= 1 for d in value):
        return tuple(value)
    raise LabError(
        f"{w(path)}{at}: expected a list of positive integers like [28, 28, 1], {_got(value)}"
    )


def _positive_int(w: _Where, path: str, value: Any, at: str) -> int:
    if not _is_int(value) or value < 1:
        raise LabError(f"{w(path)}{at}: expected an integer >= 1, {_got(value)}")
    return value


def _parse_train(w: _Where, path: str, train: dict[str, Any], at: str) -> dict[str, Any]:
    for key in ("optimizer", "loss", "epochs"):
        if key not in train:
            raise LabError(
                f"{w(path)}{at}: missing key {key!r}; [train] needs optimizer, loss, epochs"
            )
    merged = {**TRAIN_DEFAULTS, **train}
    out = {key: merged[key] for key in TRAIN_KEYS}
    optimizer = out["optimizer"]
    if isinstance(optimizer, str):
        optimizer = {"name": optimizer}
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("name"), str):
        raise LabError(
            f'{w(path)}.optimizer{at}: expected a table like {{ name = "sgd", learning_rate = 0.01 }}, '
            f"{_got(out['optimizer'])}"
        )
    out["optimizer"] = optimizer
    opt_args = {k: v for k, v in optimizer.items() if k != "name"}
    try:
        validate_optimizer_args(optimizer["name"], opt_args)
    except (ValueError, TypeError) as e:
        key = "optimizer.name" if optimizer["name"] not in list_optimizers() else "optimizer"
        raise LabError(f"{w(path)}.{key}{at}: {e}") from None
    if not isinstance(out["loss"], str):
        raise LabError(f"{w(path)}.loss{at}: expected a loss name string, {_got(out['loss'])}")
    if out["loss"] not in list_losses():
        raise LabError(
            f"{w(path)}.loss{at}: unknown loss {out['loss']!r}; choose from: {', '.join(list_losses())}"
        )
    out["epochs"] = _positive_int(w, f"{path}.epochs", out["epochs"], at)
    out["batch_size"] = _positive_int(w, f"{path}.batch_size", out["batch_size"], at)
    if out["eval_every_steps"] is not None:
        out["eval_every_steps"] = _positive_int(
            w, f"{path}.eval_every_steps", out["eval_every_steps"], at
        )
    if not isinstance(out["shuffle"], bool):
        raise LabError(f"{w(path)}.shuffle{at}: expected true or false, {_got(out['shuffle'])}")
    probes = out["probes"]
    if not isinstance(probes, list) or not all(isinstance(p, dict) for p in probes):
        raise LabError(f"{w(path)}.probes{at}: expected a list of tables, {_got(probes)}")
    normalized = []
    for i, probe in enumerate(probes):
        try:
            normalized.append(ProbeSpec.from_dict(probe).to_dict())
        except (ValueError, TypeError) as e:
            raise LabError(f"{w(path)}.probes[{i}]{at}: {e}") from None
    out["probes"] = normalized
    try:
        _train_config(out)
    except (ValueError, TypeError) as e:
        raise LabError(f"{w(path)}{at}: {e}") from None
    return out


def _train_config(train: Mapping[str, Any]) -> TrainConfig:
    optimizer = dict(train["optimizer"])
    name = optimizer.pop("name")
    return TrainConfig.from_dict(
        {
            "optimizer": name,
            "optimizer_args": optimizer,
            **{k: v for k, v in train.items() if k != "optimizer"},
        }
    )


def _parse_report(w: _Where, raw: Any, bases: Sequence[str]) -> ReportSettings:
    _check_keys(w, "report", raw, REPORT_KEYS)
    metric = raw.get("threshold_metric", DEFAULT_THRESHOLD_METRIC)
    if metric not in THRESHOLD_METRICS:
        raise w.error(
            "report.threshold_metric",
            f"unknown metric {metric!r}; choose from: {', '.join(THRESHOLD_METRICS)}",
        )
    value = raw.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise w.error("report.threshold", f"expected a number like 0.8, {_got(value)}")
    reference = raw.get("reference", bases[0])
    if reference not in bases:
        raise w.error(
            "report.reference", f"unknown variant {reference!r}; variants: {', '.join(bases)}"
        )
    published = _parse_published(w, raw.get("published", {}), bases)
    doctor = raw.get("doctor", False)
    if not isinstance(doctor, bool):
        raise w.error("report.doctor", f"expected true or false, {_got(doctor)}")
    if "comparisons" not in raw:
        pairs = tuple((b, reference) for b in bases if b != reference)
        return ReportSettings(metric, float(value), reference, pairs, published, doctor)
    pairs_raw = raw["comparisons"]
    ok = isinstance(pairs_raw, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
        for p in pairs_raw
    )
    if not ok:
        raise w.error(
            "report.comparisons",
            f'expected a list of [variant, reference] pairs like [["bn", "base"]], {_got(pairs_raw)}',
        )
    for i, pair in enumerate(pairs_raw):
        for name in pair:
            if name not in bases:
                raise w.error(
                    f"report.comparisons[{i}]",
                    f"unknown variant {name!r}; variants: {', '.join(bases)}",
                )
        if pair[0] == pair[1]:
            raise w.error(f"report.comparisons[{i}]", f"compares {pair[0]!r} with itself")
    pairs = tuple((a, b) for a, b in pairs_raw)
    return ReportSettings(metric, float(value), reference, pairs, published, doctor)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_published(w: _Where, raw: Any, bases: Sequence[str]) -> dict[str, PublishedRun]:
    if not isinstance(raw, dict):
        raise w.error(
            "report.published",
            f"expected a table of [report.published.VARIANT] tables, {_got(raw)}",
        )
    out = {}
    for name, table in raw.items():
        path = f"report.published.{name}"
        if name not in bases:
            raise w.error(path, f"unknown variant {name!r}; variants: {', '.join(bases)}")
        _check_keys(w, path, table, PUBLISHED_KEYS)
        accuracies = {}
        for key in ("train_accuracy", "test_accuracy"):
            if key not in table:
                raise w.error(
                    path,
                    f"missing key {key!r}; give train_accuracy and test_accuracy "
                    "as fractions like 0.846",
                )
            value = table[key]
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise w.error(
                    f"{path}.{key}",
                    f"expected a fraction between 0 and 1 like 0.846, {_got(value)}",
                )
            accuracies[key] = float(value)
        epochs = table.get("epochs_to_threshold")
        if epochs is not None and (not _is_number(epochs) or epochs <= 0):
            raise w.error(
                f"{path}.epochs_to_threshold",
                f"expected a number of epochs > 0 like 20, {_got(epochs)}",
            )
        source = table.get("source", "")
        if not isinstance(source, str):
            raise w.error(f"{path}.source", f"expected a string, {_got(source)}")
        trained = table.get("epochs")
        if trained is not None and (isinstance(trained, bool) or not isinstance(trained, int)
                                    or trained < 1):
            raise w.error(f"{path}.epochs", f"expected a whole number of epochs >= 1 like 100, {_got(trained)}")
        out[name] = PublishedRun(
            epochs_to_threshold=float(epochs) if epochs is not None else None,
            source=source,
            epochs=trained,
            **accuracies,
        )
    return out


def _plain(obj: Any) -> Any:
    """JSON-ready copy: tuples become lists, mappings dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
