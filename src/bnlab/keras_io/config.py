"""A Keras model configuration -> the layers, their connections and the input shapes.

Reads the serialized model of a ``.keras`` archive's ``config.json`` or a legacy
``.h5`` file's ``model_config``:

- ``Sequential``: ``config.layers`` in order; the input shape comes from a leading
  ``InputLayer`` (``batch_shape``, legacy ``batch_input_shape``), else from the
  model's ``build_input_shape`` or the first layer's ``batch_input_shape``.
- ``Functional`` (``Model``): ``config.layers``, each with ``inbound_nodes`` (Keras 3:
  ``[{"args": [...], "kwargs": {...}}]`` whose tensors carry ``keras_history =
  [layer, node, tensor]``; tf.keras: ``[[[layer, node, tensor, kwargs], ...]]``), and
  ``input_layers`` / ``output_layers``.

Before anything is built, :func:`check_objects` walks the whole configuration and
rejects what would need Python code that is not Keras's own: custom objects (a
``module`` outside ``keras``, a ``registered_name`` other than the class name) and
marshalled Python functions (``Lambda`` layers, ``__lambda__`` objects).

Nested models (a model used as a layer) are flattened into the outer model.

Masks: Keras 3 records how a Functional model computes a mask as operation nodes
(``"module": "keras.src.ops..."``, e.g. ``NotEqual`` then ``Any`` after an input) that
feed only the ``mask`` call argument of later layers. bnlab's models derive masks
themselves as Keras's layers do (``Masking``, ``Embedding(mask_zero=True)``), so
operation nodes reached only through ``mask`` arguments are dropped, with those
arguments. An operation whose output is data runs as the layer of its class name where
there is one (``x + y`` as Add); one between a tensor and a number (``x + 3.0``,
``x * (1 / 6)``, as in MobileNetV3's hard sigmoid) as a Rescaling
(:func:`scalar_operation`).

A ``training`` value recorded for a call (Keras 3 records ``training=False`` for most
calls and ``True`` for the augmentation layers, whose call defaults to it) gives way to
the model's mode, as in Keras 3 when the model is called with ``training=`` (``fit``,
``predict``, ``evaluate``): ``model.train()`` or ``model.eval()`` decides.

Not supported (one-line error each): a layer called on several inputs at different
times (shared layers, and so a nested model called twice), layers with several
outputs, call arguments other than tensors and ``training``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bnlab.keras_io.errors import KerasFileError
from bnlab.keras_io.layout import layer_keys

__all__ = ["LayerEntry", "ModelConfig", "check_objects", "parse_model_config", "scalar_operation"]

Shape = tuple[int | None, ...]
_MODELS = ("Sequential", "Functional", "Model")
_KERAS_TENSOR = "__keras_tensor__"


@dataclass(frozen=True)
class LayerEntry:
    """One layer of the configuration.

    Attributes:
        name: the layer's name.
        class_name: Keras's class name, e.g. ``"Conv2D"``.
        entry: the serialized layer ``{"module", "class_name", "config", ...}``.
        inbound: names of the layers (or inputs) feeding it, in call order (a Sequential
            model's layers: the previous layer; inputs: none).
        path: the group of ``model.weights.h5`` that holds its weights, e.g.
            ``layers/conv2d`` or, inside a nested model, ``layers/functional/layers/conv2d``
            (see :mod:`bnlab.keras_io.layout`).
    """

    name: str
    class_name: str
    entry: Mapping[str, Any]
    inbound: tuple[str, ...] = ()
    path: str = ""

    @property
    def is_operation(self) -> bool:
        """A Keras operation recorded in the graph (``x + 3.0``), not a layer."""
        return str(self.entry.get("module", "")).startswith("keras.src.ops")

    @property
    def config(self) -> dict[str, Any]:
        """The layer's arguments, without Keras's object-sharing bookkeeping; tf.keras's
        BatchNormalization ``axis`` (a list of one axis, ``[3]``) becomes that int."""
        config = _unshared(self.entry.get("config") or {})
        axis = config.get("axis")
        if self.class_name == "BatchNormalization" and isinstance(axis, list) and len(axis) == 1:
            config["axis"] = axis[0]
        return config


def _unshared(value: Any) -> Any:
    """``value`` without ``shared_object_id`` keys: Keras marks an object (an initializer,
    a dtype policy) used in several places with one, and writes its full configuration at
    each place, so dropping the mark loses nothing."""
    if isinstance(value, Mapping):
        return {k: _unshared(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelConfig:
    """The model's structure, read from its configuration.

    Nested models (a model used as a layer, e.g. a pretrained base inside a classifier)
    are flattened: their layers join the outer model's, connected where the nested model
    was called, and the model becomes ``"functional"``.

    Attributes:
        kind: ``"sequential"`` or ``"functional"``.
        name: the model's name.
        inputs: ``(input name, shape without the batch axis)`` per model input.
        layers: every layer that is not an input, in configuration order.
        outputs: the names of the layers whose outputs are the model's outputs.
        saved: every entry whose group Keras writes in ``model.weights.h5`` (Sequential:
            its layers; Functional: inputs included), nested models' entries included.
        nested: the names of the nested models that were flattened.
    """

    kind: Literal["sequential", "functional"]
    name: str
    inputs: tuple[tuple[str, Shape], ...]
    layers: tuple[LayerEntry, ...]
    outputs: tuple[str, ...]
    saved: tuple[LayerEntry, ...]
    nested: tuple[str, ...] = ()


def check_objects(value: Any, where: str, layer: str | None = None) -> None:
    """Reject custom objects and marshalled code anywhere in ``value`` (a serialized object).

    ``layer`` names the layer ``value`` belongs to, for the message.

    Raises:
        KerasFileError: naming the layer, the object's class, module and registered name.
    """
    if isinstance(value, list | tuple):
        for item in value:
            check_objects(item, where, layer)
        return
    if not isinstance(value, Mapping):
        return
    if isinstance(value.get("class_name"), str):
        _check_object(value, value["class_name"], where, layer)
    for item in value.values():
        check_objects(item, where, layer)


def _check_object(value: Mapping[str, Any], class_name: str, where: str, layer: str | None) -> None:
    at = f"{where}: layer {layer!r}" if layer else f"{where}:"
    if class_name in ("Lambda", "__lambda__") or (class_name == "function" and _marshalled(value)):
        raise KerasFileError(
            f"{at} holds Python code ({class_name!r}: a Lambda layer's marshalled function); "
            "bnlab never runs code from a file; replace the Lambda with built-in layers"
        )
    module = value.get("module")
    registered = value.get("registered_name")
    custom_module = (
        isinstance(module, str) and module != "keras" and not module.startswith("keras.")
    )
    custom_name = registered is not None and registered != class_name
    if custom_module or custom_name:
        raise KerasFileError(
            f"{at} uses the custom object {class_name!r} (module {module!r}, registered_name "
            f"{registered!r}); only Keras's built-in objects (module 'keras.*') can be loaded "
            "without their Python code"
        )


def _marshalled(value: Mapping[str, Any]) -> bool:
    config = value.get("config")
    return isinstance(config, Mapping) and "code" in config


def parse_model_config(model: Mapping[str, Any], where: str, prefix: str = "") -> ModelConfig:
    """Read a serialized Sequential or Functional model (see the module docstring).

    Args:
        model: ``{"class_name": "Sequential" | "Functional" | "Model", "config": {...}}``.
        where: the file, for messages.
        prefix: the weights group of a nested model (``"layers/functional/"``).

    Raises:
        KerasFileError: another model class, a malformed configuration, custom objects,
            code, or one of the unsupported structures listed in the module docstring.
    """
    class_name = model.get("class_name")
    config = model.get("config")
    check_objects({k: v for k, v in model.items() if k != "config"}, where)
    if isinstance(config, Mapping):
        check_objects({k: v for k, v in config.items() if k != "layers"}, where)
    if not isinstance(config, Mapping) or not isinstance(config.get("layers"), list):
        raise KerasFileError(
            f"{where}: the model configuration has no 'layers' list (class {class_name!r}); "
            "expected a Sequential or Functional model"
        )
    name = str(config.get("name") or ("sequential" if class_name == "Sequential" else "model"))
    if class_name == "Sequential":
        return _sequential(config, name, where, prefix)
    if class_name in ("Functional", "Model"):
        return _functional(config, name, where, prefix)
    raise KerasFileError(
        f"{where}: the model is a {class_name!r}; expected a Sequential or Functional model "
        "(subclassed models store no architecture that can be read without their code)"
    )


def _entry(raw: Any, where: str, index: int) -> LayerEntry:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("class_name"), str):
        raise KerasFileError(
            f"{where}: layers[{index}] is {type(raw).__name__} without 'class_name'; expected a "
            'serialized layer {"class_name": ..., "config": {...}}'
        )
    config = raw.get("config")
    if not isinstance(config, Mapping):
        raise KerasFileError(
            f"{where}: layers[{index}] ({raw['class_name']}) has no 'config' table"
        )
    name = raw.get("name", config.get("name"))
    if not isinstance(name, str) or not name:
        raise KerasFileError(
            f"{where}: layers[{index}] ({raw['class_name']}) has no name (got {name!r})"
        )
    check_objects(raw, where, name)
    return LayerEntry(name, raw["class_name"], raw)


def _shape(raw: Any, where: str, what: str) -> Shape:
    if (
        not isinstance(raw, list | tuple)
        or len(raw) < 2
        or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in raw
        )
    ):
        raise KerasFileError(
            f"{where}: {what} is {raw!r}; expected a batch shape such as [null, 28, 28, 1]"
        )
    return tuple(raw[1:])


def _input_shape(entry: LayerEntry, where: str) -> Shape:
    config = entry.config
    raw = config.get("batch_shape", config.get("batch_input_shape"))
    return _shape(raw, where, f"input {entry.name!r} batch_shape")


def _sequential(config: Mapping[str, Any], name: str, where: str, prefix: str = "") -> ModelConfig:
    entries = [_entry(raw, where, i) for i, raw in enumerate(config["layers"])]
    if entries and entries[0].class_name == "InputLayer":
        first, layers = entries[0], entries[1:]
        inputs = ((first.name, _input_shape(first, where)),)
    else:
        layers = entries
        raw = config.get("build_input_shape")
        if raw is None and layers:
            raw = layers[0].config.get("batch_input_shape", layers[0].config.get("batch_shape"))
        if raw is None:
            raise KerasFileError(
                f"{where}: Sequential model {name!r} records no input shape (no InputLayer, no "
                "build_input_shape); expected a model built on an input, e.g. keras.Input(shape)"
            )
        inputs = (("input_layer", _shape(raw, where, "build_input_shape")),)
    misplaced = [e.name for e in layers if e.class_name == "InputLayer"]
    if misplaced:
        raise KerasFileError(
            f"{where}: InputLayer {misplaced[0]!r} is not the first layer of the Sequential model"
        )
    if not layers:
        raise KerasFileError(f"{where}: Sequential model {name!r} has no layers")
    graph = _Graph(where)
    previous = inputs[0][0]
    graph.seen.add(previous)
    for entry, key in zip(layers, layer_keys(e.class_name for e in layers), strict=True):
        previous = graph.add(entry, (previous,), f"{prefix}layers/{key}")
    kind = "functional" if graph.aliases else "sequential"
    return ModelConfig(
        kind, name, inputs, graph.layers(), (previous,), graph.saved(), graph.nested()
    )


def _functional(config: Mapping[str, Any], name: str, where: str, prefix: str = "") -> ModelConfig:
    entries = [_entry(raw, where, i) for i, raw in enumerate(config["layers"])]
    every = {e.name: e for e in entries}
    outputs = set(_endpoints(config.get("output_layers"), every, where, "output_layers"))
    mask_ops = _mask_operations(entries, outputs)
    entries = [e for e in entries if e.name not in mask_ops]
    graph = _Graph(where)
    by_name = {e.name: e for e in entries}
    # Keras names the weight groups of its layers only: operations have none.
    layers = [e for e in entries if not e.is_operation]
    keys = dict(zip((e.name for e in layers), layer_keys(e.class_name for e in layers),
                    strict=True))
    for entry in entries:
        path = f"{prefix}layers/{keys[entry.name]}" if entry.name in keys else ""
        if entry.class_name == "InputLayer":
            graph.add(entry, (), path)
            continue
        graph.add(entry, _inbound(entry, where, mask_ops), path)
    inputs = tuple(
        (n, _input_shape(by_name[n], where))
        for n in _endpoints(config.get("input_layers"), by_name, where, "input_layers")
    )
    not_inputs = [n for n, _ in inputs if by_name[n].class_name != "InputLayer"]
    if not_inputs:
        raise KerasFileError(
            f"{where}: input_layers names {not_inputs[0]!r}, which is no InputLayer"
        )
    outputs = tuple(
        graph.resolve(n)
        for n in _endpoints(config.get("output_layers"), by_name, where, "output_layers")
    )
    return ModelConfig(
        "functional", name, inputs, graph.layers(), outputs, graph.saved(), graph.nested()
    )


class _Graph:
    """Collects a model's layers in order, flattening nested models into it."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seen: set[str] = set()
        self.entries: list[LayerEntry] = []  # layers, inputs and operations, in order
        self.aliases: dict[str, str] = {}  # nested model name -> its output layer
        self.inner: list[str] = []  # names of nested models, at any depth

    def resolve(self, name: str) -> str:
        return self.aliases.get(name, name)

    def nested(self) -> tuple[str, ...]:
        return (*self.aliases, *self.inner)

    def layers(self) -> tuple[LayerEntry, ...]:
        return tuple(e for e in self.entries if e.class_name != "InputLayer")

    def saved(self) -> tuple[LayerEntry, ...]:
        """The entries whose groups Keras writes: every one but the operations."""
        return tuple(e for e in self.entries if not e.is_operation)

    def add(self, entry: LayerEntry, inbound: tuple[str, ...], path: str) -> str:
        """Add ``entry`` fed by ``inbound``; returns the name of the tensor it outputs."""
        inbound = tuple(self.resolve(n) for n in inbound)
        unknown = [n for n in inbound if n not in self.seen]
        if unknown:
            raise KerasFileError(
                f"{self.where}: layer {entry.name!r} takes the output of {unknown[0]!r}, which "
                "is not an earlier layer of the configuration"
            )
        if entry.class_name in _MODELS:
            return self._add_model(entry, inbound, path)
        self._claim(entry.name)
        self.entries.append(LayerEntry(entry.name, entry.class_name, entry.entry, inbound, path))
        return entry.name

    def _claim(self, name: str) -> None:
        if name in self.seen or name in self.aliases:
            raise KerasFileError(
                f"{self.where}: two layers are named {name!r} (nested models included); "
                "names must be unique"
            )
        self.seen.add(name)

    def _add_model(self, entry: LayerEntry, inbound: tuple[str, ...], path: str) -> str:
        inner = parse_model_config(entry.entry, self.where, prefix=f"{path}/")
        if len(inner.inputs) != len(inbound) or len(inner.outputs) != 1:
            raise KerasFileError(
                f"{self.where}: nested model {entry.name!r} has {len(inner.inputs)} input(s) and "
                f"{len(inner.outputs)} output(s), called on {len(inbound)} tensor(s); nested "
                "models with one output called on all their inputs are supported"
            )
        sources = dict(zip((n for n, _ in inner.inputs), inbound, strict=True))
        # The inner inputs keep their groups; they are no layers of the flattened model.
        self.entries += [e for e in inner.saved if e.class_name == "InputLayer"]
        for layer in inner.layers:
            self._claim(layer.name)
            mapped = tuple(sources.get(n, n) for n in layer.inbound)
            self.entries.append(
                LayerEntry(layer.name, layer.class_name, layer.entry, mapped, layer.path)
            )
        if entry.name in self.seen:
            raise KerasFileError(f"{self.where}: two layers are named {entry.name!r}")
        self.aliases[entry.name] = sources.get(inner.outputs[0], inner.outputs[0])
        self.inner.extend(inner.nested)
        return self.aliases[entry.name]


def _endpoints(raw: Any, by_name: Mapping[str, LayerEntry], where: str, key: str) -> list[str]:
    """``[name, 0, 0]`` or ``[[name, 0, 0], ...]`` -> the names (single-output layers only)."""
    if isinstance(raw, list | tuple) and raw and isinstance(raw[0], str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not raw:
        raise KerasFileError(f"{where}: {key} is {raw!r}; expected [[layer_name, 0, 0], ...]")
    names = []
    for item in raw:
        if not (isinstance(item, list | tuple) and len(item) == 3 and item[0] in by_name):
            raise KerasFileError(
                f"{where}: {key} entry {item!r} does not name a layer of the configuration"
            )
        _single_use(by_name[item[0]].name, item[1], item[2], where)
        names.append(item[0])
    return names


def _single_use(layer: str, node: Any, tensor: Any, where: str) -> None:
    if node != 0:
        raise KerasFileError(
            f"{where}: layer {layer!r} is used at node {node!r}: shared layers (one layer called "
            "on several inputs) are not supported yet"
        )
    if tensor != 0:
        raise KerasFileError(
            f"{where}: output {tensor!r} of layer {layer!r} is used: layers with several "
            "outputs are not supported yet"
        )


def _mask_operations(entries: Sequence[LayerEntry], outputs: set[str]) -> frozenset[str]:
    """Names of the operation nodes whose outputs reach other nodes only as ``mask`` and
    are none of the model's ``outputs``."""
    operations = {e.name for e in entries if e.is_operation}
    as_data = outputs & operations
    feeds: dict[str, set[str]] = {}  # operation -> the operations its arguments read
    for entry in entries:
        for node in entry.entry.get("inbound_nodes") or []:
            if not isinstance(node, Mapping):
                continue  # tf.keras nodes have no operations
            read = {h[0] for h in _histories(node.get("args", []))} & operations
            if entry.name in operations:
                feeds.setdefault(entry.name, set()).update(read)
            else:
                as_data |= read
            kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"}
            as_data |= {h[0] for h in _histories(kwargs)} & operations
    pending = list(as_data)
    while pending:  # an operation feeding a data operation is data too
        for source in feeds.get(pending.pop(), ()):
            if source not in as_data:
                as_data.add(source)
                pending.append(source)
    return frozenset(operations - as_data)


def _histories(value: Any) -> list[list[Any]]:
    """Every ``keras_history`` found anywhere in a node's arguments."""
    if isinstance(value, Mapping):
        if value.get("class_name") == _KERAS_TENSOR:
            history = (value.get("config") or {}).get("keras_history")
            return [history] if isinstance(history, list) and history else []
        return [h for v in value.values() for h in _histories(v)]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [h for v in value for h in _histories(v)]
    return []


_SCALAR_OPERATIONS = ("Add", "Subtract", "Multiply", "TrueDivide")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def scalar_operation(entry: LayerEntry) -> tuple[float, float] | None:
    """``(scale, offset)`` for an operation between one tensor and a number, such as the
    ``x + 3.0`` and ``x * (1 / 6)`` of MobileNetV3's hard sigmoid: ``x * scale + offset``
    (a Rescaling). None for anything else.

    ``Add``: ``x + c``; ``Subtract``: ``x - c`` or ``c - x``; ``Multiply``: ``x * c``;
    ``TrueDivide``: ``x / c`` as ``x * (1 / c)``, to float32 rounding.
    """
    nodes = entry.entry.get("inbound_nodes")
    if not (entry.is_operation and entry.class_name in _SCALAR_OPERATIONS
            and isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], Mapping)):
        return None
    args = nodes[0].get("args")
    if not (isinstance(args, list) and len(args) == 2 and sum(map(_number, args)) == 1):
        return None
    c = float(args[0] if _number(args[0]) else args[1])
    tensor_first = _number(args[1])
    if entry.class_name == "Add":
        return 1.0, c
    if entry.class_name == "Subtract":
        return (1.0, -c) if tensor_first else (-1.0, c)
    if entry.class_name == "Multiply":
        return c, 0.0
    if tensor_first and c != 0:  # TrueDivide: x / c (c / x is not a rescaling)
        return 1.0 / c, 0.0
    return None


def _inbound(
    entry: LayerEntry, where: str, mask_ops: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    nodes = entry.entry.get("inbound_nodes")
    if not isinstance(nodes, list) or not nodes:
        raise KerasFileError(
            f"{where}: layer {entry.name!r} has no inbound_nodes; expected it to be called on "
            "the output of an earlier layer"
        )
    if len(nodes) > 1:
        raise KerasFileError(
            f"{where}: layer {entry.name!r} is called {len(nodes)} times: shared layers (one "
            "layer called on several inputs) are not supported yet"
        )
    node = nodes[0]
    if isinstance(node, Mapping):  # Keras 3
        args = node.get("args", [])
        if scalar_operation(entry) is not None:  # the number is the operation's argument
            args = [a for a in args if not _number(a)]
        tensors = _tensors(args, entry.name, where)
        kwargs = node.get("kwargs") or {}
    elif isinstance(node, list):  # tf.keras: [[layer, node, tensor, kwargs], ...]
        tensors, kwargs = [], {}
        for item in node:
            if not (isinstance(item, list) and len(item) in (3, 4)):
                raise KerasFileError(
                    f"{where}: layer {entry.name!r} has an inbound node {item!r}; expected "
                    "[layer_name, node_index, tensor_index, kwargs]"
                )
            tensors.append(tuple(item[:3]))
            kwargs.update(item[3] if len(item) == 4 and isinstance(item[3], Mapping) else {})
    else:
        raise KerasFileError(
            f"{where}: layer {entry.name!r} has an inbound node of type {type(node).__name__}; "
            "expected a Keras 3 or tf.keras node"
        )
    # A recorded training value gives way to the model's mode (see the module docstring).
    # A mask computed by dropped operations is derived by the layers themselves.
    fixed = {
        k: v
        for k, v in kwargs.items()
        if v is not None
        and not (k == "training" and isinstance(v, bool))
        and not (k == "mask" and _histories(v) and {h[0] for h in _histories(v)} <= mask_ops)
    }
    if fixed:
        key, value = next(iter(fixed.items()))
        raise KerasFileError(
            f"{where}: layer {entry.name!r} is called with {key}={value!r}; only tensor "
            "arguments are supported (call arguments that are not tensors are not yet)"
        )
    if not tensors:
        raise KerasFileError(f"{where}: layer {entry.name!r} is called on no tensor")
    for layer, node_index, tensor_index in tensors:
        _single_use(layer, node_index, tensor_index, where)
    return tuple(t[0] for t in tensors)


def _tensors(args: Any, layer: str, where: str) -> list[tuple[Any, Any, Any]]:
    """The ``keras_history`` of every tensor in a Keras 3 node's ``args``, in order."""
    if isinstance(args, Sequence) and not isinstance(args, str):
        return [t for item in args for t in _tensors(item, layer, where)]
    if isinstance(args, Mapping) and args.get("class_name") == _KERAS_TENSOR:
        history = (args.get("config") or {}).get("keras_history")
        if isinstance(history, list) and len(history) == 3:
            return [tuple(history)]
    raise KerasFileError(
        f"{where}: layer {layer!r} is called with the argument {args!r}; only tensors from "
        "earlier layers are supported"
    )
