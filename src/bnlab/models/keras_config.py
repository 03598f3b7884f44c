"""``keras_config(spec)``: the Keras 3 layer entry of a spec, for writing ``.keras`` files.

The entry is what a ``.keras`` archive's ``config.json`` holds for a layer and what
``keras.layers.deserialize`` reads::

    {"module": "keras.layers", "class_name": "Dense",
     "config": {"name": "dense", "units": 10, "activation": "linear", ...,
                "kernel_initializer": {"module": "keras.initializers",
                                       "class_name": "GlorotUniform", "config": {}, ...}},
     "registered_name": None}

Every argument is written, defaults filled; initializers, regularizers and
constraints in Keras's serialized form (``"l2(1e-4)"`` -> ``L2`` with ``l2=1e-4``);
``activation=None`` as ``"linear"``; the dtype as the float32 policy; wrapped layers
(Bidirectional, TimeDistributed) as their own entries. bnlab's own options that Keras
lacks are left out when at their default and refused otherwise, in one line naming
the option (``BatchNormalization.unbiased_moving_variance=True has no Keras
equivalent``); so is a layer type that is no Keras layer (BatchNormAct).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bnlab.models.errors import SpecError
from bnlab.models.layer_type import COMMON
from bnlab.models.spec import LayerSpec, parse_layer
from bnlab.models.types_core import input_shape
from bnlab.nn import constraints, get_layer_class, initializers, list_layers, regularizers

__all__ = ["changed_arguments", "keras_config"]

_ANY = object()
#: Per type, arguments that are no Keras 3 constructor argument: the value they may have
#: (written nowhere) or _ANY (bookkeeping from older files, dropped).
_NOT_KERAS: dict[str, dict[str, Any]] = {
    "LSTM": {"time_major": False, "implementation": _ANY},
    "GRU": {"time_major": False, "implementation": _ANY},
    "SimpleRNN": {"time_major": False, "implementation": _ANY},
    "Embedding": {"input_length": _ANY, "sparse": False, "lora_rank": None},
    "Dense": {"lora_rank": None},
    "Bidirectional": {"weights": None},
    "LeakyReLU": {"alpha": None},  # written as negative_slope
    # Keras's SpatialDropout takes no trainable (nothing to train)
    "SpatialDropout1D": {"trainable": _ANY},
    "SpatialDropout2D": {"trainable": _ANY},
    "SpatialDropout3D": {"trainable": _ANY},
}
#: Keras 3's BatchNormalization arguments; the others of bnlab's class have no equivalent.
_KERAS_BN = frozenset({
    "batch_input_shape", "name", "trainable", "dtype", "axis", "momentum", "epsilon", "center", "scale",
    "beta_initializer", "gamma_initializer", "moving_mean_initializer",
    "moving_variance_initializer", "beta_regularizer", "gamma_regularizer",
    "beta_constraint", "gamma_constraint", "synchronized", "renorm", "renorm_clipping",
    "renorm_momentum",
})
#: bnlab's BN variants (every class of bnlab.nn's registry but BatchNormalization itself).
_BNLAB_ONLY = frozenset(get_layer_class(key).__name__ for key in list_layers()) - {
    "BatchNormalization"}
_FLOAT32 = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}
_SERIALIZERS = {
    "_initializer": initializers.serialize,
    "_regularizer": regularizers.serialize,
    "_constraint": constraints.serialize,
}
#: Layers of keras.applications that are not in keras.layers: their modules.
_APPLICATION_LAYERS = {"CustomScaleLayer": "keras.src.applications.inception_resnet_v2"}


def _plain(value: Any) -> Any:
    """Tuples -> lists, mappings -> dicts (JSON's forms), recursively."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _value(key: str, value: Any, where: str) -> Any:
    for suffix, serialize in _SERIALIZERS.items():
        if key.endswith(suffix):
            try:
                return serialize(_plain(value))
            except (ValueError, TypeError) as error:
                raise SpecError(f"{where}.{key}: {error}") from None
    if key == "dtype":
        return _FLOAT32 if value is None else _plain(value)
    if key == "activation" and value is None:
        return "linear"
    if key in ("layer", "backward_layer") and value is not None:
        return keras_config(parse_layer(value, where=f"{where}.{key}"))
    return _plain(value)


def _input_entry(spec: LayerSpec, args: dict[str, Any]) -> dict[str, Any]:
    shape = input_shape(args)
    declared = args["batch_shape"] or args["batch_input_shape"]
    batch = None if declared is None else declared[0]
    config = {"batch_shape": [batch if batch is not None else args["batch_size"], *shape],
              "dtype": "float32" if args["dtype"] is None else args["dtype"],
              "sparse": False, "ragged": False, "optional": args["optional"]}
    if args["name"] is not None:
        config["name"] = args["name"]
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config,
            "registered_name": None}


def keras_config(spec: LayerSpec, *, name: str | None = None) -> dict[str, Any]:
    """The Keras 3 ``{"module", "class_name", "config", "registered_name"}`` entry of ``spec``.

    Args:
        spec: a parsed layer spec (a Keras config parsed by :func:`parse_layer` comes
            back as Keras wrote it, defaults added).
        name: the layer name to write (default: the spec's ``name``, if any; Keras names
            unnamed layers itself).

    Raises:
        SpecError: a layer type or an option with no Keras equivalent (one line naming
            the layer, the option and its value).
    """
    args = dict(spec.resolved_args())
    if name is not None:
        args["name"] = name
    where = f"{args.get('name') or spec.type} ({spec.type})"
    if spec.type == "Input":
        return _input_entry(spec, args)
    if spec.type in _BNLAB_ONLY:
        raise SpecError(
            f"{where}: {spec.type} is bnlab's own layer, not Keras's; write its parts "
            "(e.g. BatchNormalization and Activation) to save it for Keras"
        )
    not_keras = dict(_NOT_KERAS.get(spec.type, {}))
    if spec.type == "BatchNormalization":
        not_keras = {k: spec.layer_type.args[k].default for k in args if k not in _KERAS_BN}
    if spec.type == "LeakyReLU" and args["alpha"] is not None:
        args["negative_slope"] = args["alpha"]
    config = {}
    for key, value in args.items():
        if key in not_keras:
            allowed = not_keras[key]
            if spec.type != "LeakyReLU" and allowed is not _ANY and value != allowed:
                raise SpecError(
                    f"{where}: {spec.type}.{key}={value!r} has no Keras equivalent; use "
                    f"{key}={allowed!r} to write this layer for Keras"
                )
            continue
        if (key == "name" and value is None) or key == "batch_input_shape":
            continue  # Keras names the layer itself; the model holds the input shape
        config[key] = _value(key, value, where)
    if spec.type in _APPLICATION_LAYERS:  # Keras's own, registered under its class name
        return {"module": _APPLICATION_LAYERS[spec.type], "class_name": spec.type,
                "config": config, "registered_name": spec.type}
    return {"module": "keras.layers", "class_name": spec.type, "config": config,
            "registered_name": None}


def changed_arguments(spec: LayerSpec) -> dict[str, Any]:
    """The arguments that make ``spec`` what it is, as given: the required ones and those
    whose value differs from its type's default once both are in Keras's form
    (``"glorot_uniform"`` and Keras's serialized ``GlorotUniform`` are the same), name
    left out. A Keras file writes every argument of every layer; this is what a person
    would have written. A layer with no Keras form (BatchNormAct) gives all it was given.
    """
    given = {k: v for k, v in spec.to_dict().items() if k not in ("type", "name")}
    required = {k for k, arg in spec.layer_type.args.items() if arg.required}
    try:
        ours = keras_config(spec, name="layer")["config"]
        defaults = keras_config(parse_layer(
            {"type": spec.type, **{k: v for k, v in given.items() if k in required}},
            where=spec.type), name="layer")["config"]
    except SpecError:
        return given
    # the type's own order (units before activation), Keras's bookkeeping (trainable) last
    order = [k for k in spec.layer_type.args if k not in COMMON] + list(COMMON)
    changed = {k: v for k, v in given.items()
               if k in required or k not in ours or not _same(ours[k], defaults.get(k, ours[k]))}
    return dict(sorted(changed.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _same(a: Any, b: Any) -> bool:
    """Equal Keras values; Keras spells an int size or stride ``1`` as ``[1, 1]`` too."""
    if isinstance(a, list) and isinstance(b, int) and not isinstance(b, bool):
        a, b = b, a
    if isinstance(b, list) and isinstance(a, int) and not isinstance(a, bool):
        return all(v == a for v in b)
    return a == b
