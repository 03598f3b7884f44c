"""bnlab.models: Keras-vocabulary layer specs -> ``torch.nn.Module``, and Keras's summary().

Layer lists build a :class:`SequentialModel` (:func:`build_model`); graphs of named
nodes (Keras's Functional models) a :class:`GraphModel` (:func:`build_graph_model`).
A Keras 3 layer config is a spec (:func:`parse_layer`), :func:`keras_config` writes one
back, and :func:`get_keras_weights` / :func:`set_keras_weights` move weights in Keras's
order and layouts.

::

    from bnlab.models import parse_layers, apply_edits, build_model, summary

    base = parse_layers(
        [{"type": "Dense", "units": 50, "activation": "relu"},
         {"type": "Dense", "units": 1, "activation": "sigmoid"}],
        where="circles.toml: layers",
    )
    bn = apply_edits(base, [{"insert_after": 0, "layer": {"type": "BatchNormalization"}}],
                     where="circles.toml: variants.bn.edits")
    model = build_model(bn, input_shape=(2,), seed=0)
    print(summary(model))
"""

from bnlab.models import folding as _folding  # noqa: F401  (registers our layers with bnlab.nn.fold)
from bnlab.models.activations import get_activation, list_activations
from bnlab.models.edits import apply_edits
from bnlab.models.errors import SpecError
from bnlab.models.graph import (
    GraphModel,
    GraphNode,
    GraphSpec,
    build_graph_model,
    graph_from_wiring,
)
from bnlab.models.keras_config import changed_arguments, keras_config
from bnlab.models.keras_weights import get_keras_weights, set_keras_weights
from bnlab.models.registry import LayerType, get_layer_type, list_layer_types
from bnlab.models.sequential import SequentialModel, build_model
from bnlab.models.spec import LayerSpec, layer_names, parse_layer, parse_layers, rescales_input
from bnlab.models.summary import ParamCounts, count_params, summary

__all__ = [
    "GraphModel",
    "GraphNode",
    "GraphSpec",
    "LayerSpec",
    "LayerType",
    "ParamCounts",
    "SequentialModel",
    "SpecError",
    "apply_edits",
    "build_graph_model",
    "build_model",
    "changed_arguments",
    "count_params",
    "get_activation",
    "get_keras_weights",
    "get_layer_type",
    "graph_from_wiring",
    "keras_config",
    "layer_names",
    "list_activations",
    "list_layer_types",
    "parse_layer",
    "parse_layers",
    "rescales_input",
    "set_keras_weights",
    "summary",
]
