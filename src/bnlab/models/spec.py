"""Layer specifications in Keras's vocabulary: parse and validate TOML-style dicts.

A layer is written the way Keras code reads::

    {type = "Dense", units = 50, activation = "relu", kernel_initializer = "he_uniform"}

and becomes a validated, immutable :class:`LayerSpec`. Every problem raises one
:class:`SpecError` line naming where (``circles.toml: variants.bn_after.layers[1]``),
what was wrong (with the received value) and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from bnlab.models.arguments import InvalidArgError, freeze, received
from bnlab.models.errors import SpecError
from bnlab.models.registry import LayerType, get_layer_type
from bnlab.models.types_augment import AUGMENT_TYPES

__all__ = ["LayerSpec", "auto_name", "layer_names", "parse_layer", "parse_layers", "rescales_input"]


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def _check_args(layer_type: LayerType, args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate ``args`` against ``layer_type``; return them normalized (defaults not filled)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key not in layer_type.args:
            allowed = sorted(layer_type.args)
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SpecError(
                f"{where}: unknown argument {key!r} for {layer_type.name}{hint}; "
                f"allowed: {', '.join(allowed) or 'none'}"
            )
        try:
            out[key] = layer_type.args[key].check(value)
        except InvalidArgError as error:
            raise SpecError(f"{where}.{key}: {error}") from None
    for key, arg in layer_type.args.items():
        if arg.required and key not in out:
            raise SpecError(
                f"{where}: {layer_type.name} needs the argument {key!r}, e.g. "
                f"{_example(layer_type)}"
            )
    if layer_type.validate is not None:
        try:
            layer_type.validate(out)
        except InvalidArgError as error:
            raise SpecError(f"{where}{'.' + error.key if error.key else ''}: {error}") from None
        except (ValueError, TypeError) as error:
            raise SpecError(f"{where}: {error}") from None
    return out


_EXAMPLES = {
    "Input": '{type = "Input", shape = [28, 28, 1]}',
    "Dense": '{type = "Dense", units = 10}',
    "Activation": '{type = "Activation", activation = "relu"}',
    "Dropout": '{type = "Dropout", rate = 0.2}',
    "Conv2D": '{type = "Conv2D", filters = 32, kernel_size = 3}',
    "LSTM": '{type = "LSTM", units = 32}',
}


def _example(layer_type: LayerType) -> str:
    return _EXAMPLES.get(layer_type.name, f'{{type = "{layer_type.name}"}}')


@dataclass(frozen=True, init=False)
class LayerSpec:
    """One validated layer: the Keras type name and its arguments (read-only).

    ``args`` holds the arguments as given (validated; arrays as tuples); defaults are
    added by :meth:`resolved_args`. Constructing a spec validates it::

        >>> LayerSpec("Dense", {"units": 10, "activation": "softmax"})
        LayerSpec(type='Dense', args={'units': 10, 'activation': 'softmax'})

    Raises:
        SpecError: unknown type, unknown argument, bad value.
    """

    type: str
    args: Mapping[str, Any]

    def __init__(
        self, type: str, args: Mapping[str, Any] | None = None, *, where: str = "LayerSpec"
    ):
        try:
            layer_type = get_layer_type(type)
        except ValueError as error:
            raise SpecError(f"{where}: {error}") from None
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise SpecError(
                f"{where}: expected the arguments as a table (dict); got {received(args)}"
            )
        checked = _check_args(layer_type, args, where)
        object.__setattr__(self, "type", layer_type.name)
        object.__setattr__(self, "args", MappingProxyType(checked))

    @property
    def layer_type(self) -> LayerType:
        return get_layer_type(self.type)

    def resolved_args(self) -> dict[str, Any]:
        """Every argument of the layer type, defaults filled in."""
        defaults = {k: a.default for k, a in self.layer_type.args.items() if not a.required}
        return {**defaults, **self.args}

    def replace_args(self, changes: Mapping[str, Any], *, where: str = "LayerSpec") -> LayerSpec:
        """A new spec with ``changes`` merged into the arguments (validated)."""
        return LayerSpec(self.type, {**self.args, **changes}, where=where)

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form ``{"type": ..., **args}`` (tuples back to lists)."""
        return {"type": self.type, **{k: _thaw(v) for k, v in self.args.items()}}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerSpec):
            return NotImplemented
        return self.type == other.type and dict(self.args) == dict(other.args)

    def __hash__(self) -> int:
        return hash((self.type, _hashable(dict(self.args))))

    def __repr__(self) -> str:
        return f"LayerSpec(type={self.type!r}, args={dict(self.args)!r})"

    # A read-only mapping cannot be pickled: rebuild from a plain dict (pickle, deepcopy,
    # multiprocessing); immutable, so a copy may share the original.
    def __reduce__(self) -> tuple[type[LayerSpec], tuple[str, dict[str, Any]]]:
        return (LayerSpec, (self.type, dict(self.args)))

    def __copy__(self) -> LayerSpec:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> LayerSpec:
        return self


def parse_layer(raw: Mapping[str, Any] | LayerSpec, *, where: str) -> LayerSpec:
    """Parse one layer dict ``{type = "Dense", units = 10, ...}`` into a :class:`LayerSpec`.

    Args:
        raw: the dict (e.g. a TOML table, or a Keras config with ``type`` set to the
            class name), Keras's serialized layer entry ``{"class_name": "Dense",
            "config": {...}, "module": "keras.layers", "registered_name": None}``
            (as wrappers hold their inner layer); a ``LayerSpec`` passes through.
        where: the location for messages, e.g. ``"circles.toml: layers[2]"``.

    Raises:
        SpecError: not a dict, no ``type``, unknown type (lists the valid ones), unknown
            argument (lists the allowed ones), wrong type or value (shows it).
    """
    if isinstance(raw, LayerSpec):
        return raw
    if not isinstance(raw, Mapping):
        raise SpecError(
            f"{where}: expected a layer table such as {_EXAMPLES['Dense']}; got {received(raw)}"
        )
    if "type" not in raw and "class_name" in raw:
        raw = _from_keras_entry(raw, where)
    if "type" not in raw:
        raise SpecError(
            f"{where}: a layer needs a 'type' key, e.g. {_EXAMPLES['Dense']}; got {dict(raw)!r}"
        )
    args = {k: v for k, v in raw.items() if k != "type"}
    return LayerSpec(raw["type"], freeze(args), where=where)


def _from_keras_entry(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keras's ``{"class_name", "config", "module", "registered_name"}`` -> our layer table."""
    module, registered = raw.get("module"), raw.get("registered_name")
    config = raw.get("config", {})
    if (registered is not None and registered != raw["class_name"]) or (
        module is not None and not str(module).startswith("keras")
    ):
        raise SpecError(
            f"{where}: the layer {raw['class_name']!r} is a custom object (module {module!r}, "
            f"registered_name {registered!r}); only Keras's own layers can be read"
        )
    if not isinstance(config, Mapping):
        raise SpecError(f"{where}: expected the layer's config as a table; got {received(config)}")
    return {"type": raw["class_name"], **config}


def parse_layers(raw: Sequence[Mapping[str, Any] | LayerSpec], *, where: str) -> list[LayerSpec]:
    """Parse a list of layer dicts; ``where`` names the list, entries add ``[i]``.

    ``Input`` may only be the first entry. Explicit ``name`` arguments must be unique.

    Example::

        >>> parse_layers([{"type": "Dense", "units": 2}], where="my.toml: layers")
        [LayerSpec(type='Dense', args={'units': 2})]

    Raises:
        SpecError: see :func:`parse_layer`; also a misplaced Input, duplicate names, an
            empty list or a non-list.
    """
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise SpecError(f"{where}: expected a list of layer tables; got {received(raw)}")
    specs = [parse_layer(item, where=f"{where}[{i}]") for i, item in enumerate(raw)]
    check_sequence(specs, where=where)
    return specs


def check_sequence(specs: Sequence[LayerSpec], *, where: str) -> None:
    """Checks that concern the list as a whole (used after parsing and after edits)."""
    if not [s for s in specs if s.type != "Input"]:
        raise SpecError(
            f"{where}: a model needs at least one layer besides Input; got {len(specs)} entries"
        )
    for i, spec in enumerate(specs):
        if spec.type == "Input" and i != 0:
            raise SpecError(f"{where}[{i}]: Input may only be the first entry; found at index {i}")
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        name = spec.args.get("name")
        if name is None:
            continue
        if name in seen:
            raise SpecError(
                f"{where}[{i}].name: layer name {name!r} is already used by entry [{seen[name]}]; "
                "names must be unique"
            )
        seen[name] = i


def layer_names(specs: Sequence[LayerSpec]) -> list[str | None]:
    """Keras-style names for each entry: the explicit ``name`` or ``dense``, ``dense_1``, ...

    Counting is per model and per type (Keras counts per session); an automatic name
    skips names given explicitly. ``Input`` entries get ``None`` (they are no layer).
    """
    explicit = {s.args["name"] for s in specs if s.args.get("name") is not None}
    counts: dict[str, int] = {}
    names: list[str | None] = []
    for spec in specs:
        if spec.type == "Input":
            names.append(None)
            continue
        if spec.args.get("name") is not None:
            names.append(spec.args["name"])
            continue
        names.append(auto_name(spec.layer_type.auto_name, counts, explicit))
    return names


def auto_name(base: str, counts: dict[str, int], taken: set[str]) -> str:
    """Keras's next automatic name for ``base`` (``dense``, ``dense_1``, ...) not in ``taken``;
    ``counts`` holds the per-base counters and is updated."""
    while True:
        n = counts.get(base, 0)
        counts[base] = n + 1
        candidate = base if n == 0 else f"{base}_{n}"
        if candidate not in taken:
            return candidate


#: Layer types that only prepare a model's input: what may come before its own Rescaling.
_PREPARING = frozenset({"Input", "Rescaling", "Resizing", "Normalization",
                        *(t.name for t in AUGMENT_TYPES)})


def rescales_input(specs: Iterable[LayerSpec]) -> bool:
    """Whether a model of these layers (in call order) rescales its input pixels itself:
    a Rescaling layer before its first layer that does more than prepare the input
    (augmentation, Resizing, Normalization, Rescaling). Keras feeds such a model pixels
    0..255, as ``image_dataset_from_directory`` yields them.
    """
    for spec in specs:
        if spec.type == "Rescaling":
            return True
        if spec.type not in _PREPARING:
            return False
    return False
