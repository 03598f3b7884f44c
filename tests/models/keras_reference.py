"""Keras 3 (torch backend) as the reference in differential tests: Keras models, their
weights, and a Functional model's config read as a GraphSpec (in memory)."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import numpy as np
import torch

from bnlab.models import GraphNode, GraphSpec, parse_layer, set_keras_weights

assert keras.backend.backend() == "torch"


def weights_of(layer) -> list[np.ndarray]:
    # Not layer.get_weights() nor keras.ops.convert_to_numpy: both call np.array(tensor),
    # which warns under numpy 2. With the torch backend a variable's value is a tensor.
    return [v.value.detach().cpu().numpy().copy() for v in layer.weights]


def graph_spec(kmodel) -> GraphSpec:
    """A Functional model's get_config() -> GraphSpec (what a .keras archive holds)."""
    config = kmodel.get_config()
    inputs, nodes = [], []
    for entry in config["layers"]:
        if str(entry.get("module", "")).startswith("keras.src.ops"):
            continue  # NotEqual/Any computing a mask for kwargs["mask"]: bnlab derives masks
        if entry["class_name"] == "InputLayer":
            inputs.append((entry["name"], tuple(entry["config"]["batch_shape"][1:])))
            continue
        (call,) = entry["inbound_nodes"]
        tensors = call["args"][0]
        tensors = tensors if isinstance(tensors, list) else [tensors]
        inbound = tuple(t["config"]["keras_history"][0] for t in tensors)
        layer = parse_layer({"type": entry["class_name"], **entry["config"]},
                            where=f"layers[{entry['name']}]")
        nodes.append(GraphNode(entry["name"], layer, inbound))
    order = [name for name, _, _ in _history_list(config["input_layers"])]
    inputs.sort(key=lambda item: order.index(item[0]))
    outputs = _history_list(config["output_layers"])
    return GraphSpec(config["name"], tuple(inputs), tuple(nodes),
                     tuple(name for name, _, _ in outputs))


def _history_list(value):
    """Keras writes one ``[name, 0, 0]`` or a list of them."""
    return [value] if isinstance(value[0], str) else value


def copy_weights(kmodel, model) -> None:
    """Every Keras layer's weights into the module of the same name."""
    for klayer in kmodel.layers:
        if isinstance(klayer, keras.layers.InputLayer):
            continue
        set_keras_weights(model.layer(klayer.name), weights_of(klayer))


def randomize_batchnorm(kmodel, rng) -> None:
    """Non-trivial gamma, beta and moving statistics in every Keras BN layer."""
    for layer in kmodel.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                shape = tuple(variable.shape)
                if variable.path.endswith("variance") or variable.path.endswith("gamma"):
                    value = rng.uniform(0.5, 1.5, shape)
                else:
                    value = rng.normal(0, 0.3, shape)
                variable.assign(value.astype("float32"))


def keras_output(kmodel, xs, *, training):
    out = kmodel([torch.as_tensor(x) for x in xs] if len(xs) > 1 else torch.as_tensor(xs[0]),
                 training=training)
    if isinstance(out, list | tuple):
        return [o.detach().cpu() for o in out]
    return out.detach().cpu()
