"""Graph (Functional) models against Keras 3 (torch backend): branches, merges, a tensor
used twice, several inputs and outputs, masks, keras.applications graphs read from their
configs in memory; layouts per edge; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from keras_reference import copy_weights, graph_spec, keras, keras_output, randomize_batchnorm

from bnlab.models import (
    GraphNode,
    GraphSpec,
    SpecError,
    build_graph_model,
    count_params,
    get_keras_weights,
    graph_from_wiring,
    parse_layer,
    summary,
)

L = keras.layers


def n_weights(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def assert_counts_equal(kmodel, model):
    counts = count_params(model)
    assert counts.trainable == n_weights(kmodel.trainable_weights)
    assert counts.non_trainable == n_weights(kmodel.non_trainable_weights)
    for klayer in kmodel.layers:
        if not isinstance(klayer, L.InputLayer):
            assert count_params(model.layer(klayer.name)).total == klayer.count_params()
            assert (None, *model.output_shapes[klayer.name]) == tuple(klayer.output.shape)


def compare(kmodel, xs, assert_close, *, seed=0, steps=2):
    """Same outputs in inference and training mode; same moving statistics after training."""
    rng = np.random.default_rng(seed)
    randomize_batchnorm(kmodel, rng)
    model = build_graph_model(graph_spec(kmodel), seed=seed)
    copy_weights(kmodel, model)
    assert_counts_equal(kmodel, model)
    tensors = [torch.as_tensor(x) for x in xs]
    for training in (False, True) * steps:
        model.train(training)
        ours = model(*tensors)
        theirs = keras_output(kmodel, xs, training=training)
        ours = ours if isinstance(ours, tuple) else (ours,)
        theirs = theirs if isinstance(theirs, list) else [theirs]
        for a, b in zip(ours, theirs, strict=True):
            assert_close(a.detach(), b)
    for klayer in kmodel.layers:
        if isinstance(klayer, L.BatchNormalization):
            for a, b in zip(get_keras_weights(model.layer(klayer.name)),
                            [v.value.detach().numpy() for v in klayer.weights], strict=True):
                assert_close(torch.as_tensor(a), torch.as_tensor(b))
    return model


def branches_model():
    """Two inputs; residual Add; Concatenate; Multiply; a tensor used three times; two outputs."""
    image = keras.Input((6, 6, 3), name="image")
    extra = keras.Input((4,), name="extra")
    x = L.Conv2D(4, 3, padding="same", name="stem")(image)
    x = L.BatchNormalization(name="stem_bn")(x)
    stem = L.ReLU(name="stem_relu")(x)
    branch = L.Conv2D(4, 1, name="branch_conv")(stem)
    branch = L.BatchNormalization(momentum=0.9, name="branch_bn")(branch)
    residual = L.Add(name="residual")([stem, branch])
    pooled = L.MaxPooling2D(3, strides=1, padding="same", name="pool")(stem)
    joined = L.Concatenate(name="joined")([residual, pooled, stem])
    gate = L.Dense(12, activation="sigmoid", name="gate")(L.Dense(12, name="project")(extra))
    gate = L.Reshape((1, 1, 12), name="gate_shape")(gate)
    scaled = L.Multiply(name="scaled")([joined, gate])
    features = L.GlobalAveragePooling2D(name="gap")(scaled)
    logits = L.Dense(3, name="logits")(features)
    side = L.Flatten(name="flat")(L.Conv2D(2, 3, strides=2, padding="same", name="side")(scaled))
    return keras.Model([image, extra], [logits, side], name="branches")


def test_graph_with_branches_equals_keras(assert_close):
    keras.utils.set_random_seed(0)
    kmodel = branches_model()
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(4, 6, 6, 3)).astype("float32"),
          rng.normal(size=(4, 4)).astype("float32")]
    model = compare(kmodel, xs, assert_close)
    text = summary(model)
    assert 'Model: "branches"' in text and "Connected to" in text
    assert "│ image (InputLayer)" in text
    joined_row = next(line for line in text.splitlines() if "joined (Concatenate)" in line)
    assert "residual[0][0]," in joined_row
    counts = count_params(model)
    assert f"Total params: {counts.total:,}" in text


def test_layouts_are_planned_per_edge():
    keras.utils.set_random_seed(0)
    model = build_graph_model(graph_spec(branches_model()), seed=0)
    plans = {plan.name: plan for plan in model._plans}
    assert plans["stem"].permutes == ((0, 3, 1, 2),)  # the image goes channel-first once
    assert plans["stem_bn"].permutes == (None,) and plans["residual"].permutes == (None, None)
    assert model.layer("stem_bn").axis == 1
    assert model.layer("joined").dim == 1  # Keras's channel axis -1, channel-first inside
    assert plans["gate_shape"].permutes == (None,)  # vectors have one layout
    # the gate (N, 1, 1, C) arrives channel-last and meets the channel-first features
    assert plans["scaled"].permutes == (None, (0, 3, 1, 2))
    assert plans["flat"].permutes == ((0, 2, 3, 1),)  # Flatten reads Keras's order


@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum",
                                   "Minimum", "Concatenate"])
def test_merge_layers_equal_keras(merge, assert_close):
    keras.utils.set_random_seed(0)
    a = keras.Input((5, 4), name="a")
    b = keras.Input((5, 4), name="b")
    left = L.Conv1D(3, 2, padding="same", name="left")(a)  # channel-first inside
    right = L.Dense(3, name="right")(b)  # channel-last
    merged = getattr(L, merge)(name="merged")([left, right, left] if merge != "Subtract"
                                              else [left, right])
    kmodel = keras.Model([a, b], L.Conv1D(2, 1, name="head")(merged), name="merge")
    rng = np.random.default_rng(0)
    compare(kmodel, [rng.normal(size=(3, 5, 4)).astype("float32") for _ in range(2)],
            assert_close, steps=1)


def test_mobilenet_v2_from_its_config_equals_keras(assert_close):
    keras.utils.set_random_seed(0)
    kmodel = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    x = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype("float32")
    compare(kmodel, [x], assert_close, steps=1)


def test_resnet50_from_its_config_equals_keras(assert_close):
    keras.utils.set_random_seed(0)
    kmodel = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    compare(kmodel, [x], assert_close, steps=1)


def node(name, layer, *inbound):
    return GraphNode(name, parse_layer(layer, where=name), tuple(inbound))


DENSE = {"type": "Dense", "units": 2}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GraphSpec("g", (("x", (3,)),), (node("d", DENSE, "y"),), ("d",)),
         "graph 'g'.nodes[0] (d): unknown input tensor 'y'"),
        (GraphSpec("g", (("x", (3,)),), (node("a", DENSE, "b"), node("b", DENSE, "a")), ("a",)),
         "graph 'g': the nodes a, b form a cycle"),
        (GraphSpec("g", (("x", (3,)),), (node("x", DENSE, "x"),), ("x",)),
         "graph 'g': the name 'x' is used twice"),
        (GraphSpec("g", (("x", (3,)),), (node("d", DENSE, "x"),), ("z",)),
         "graph 'g': unknown output 'z'"),
        (GraphSpec("g", (("x", (3,)),), (node("d", DENSE, "x", "x"),), ("d",)),
         "graph 'g'.nodes[0] (d): Dense takes one input tensor; got 2 (x, x)"),
        (GraphSpec("g", (("x", (3,)), ("y", (4,))), (node("s", {"type": "Add"}, "x", "y"),),
                   ("s",)),
         "graph 'g'.nodes[0] (s): Add inputs have incompatible shapes (None, 3), (None, 4)"),
        (GraphSpec("g", (("x", (3,)),), (node("c", {"type": "Conv2D", "filters": 1,
                                                     "kernel_size": 1}, "x"),), ("c",)),
         "graph 'g'.nodes[0] (c): Conv2D expects input of shape (batch, height, width, "
         "channels); got (None, 3)"),
    ],
    ids=["unknown-input", "cycle", "duplicate", "unknown-output", "arity", "merge-shapes",
         "rank"],
)
def test_bad_graph_is_one_line_naming_the_node(spec, message):
    with pytest.raises(SpecError) as info:
        build_graph_model(spec)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_unsupported_layer_names_the_layer_its_class_and_the_supported_list():
    with pytest.raises(SpecError) as info:
        parse_layer({"type": "MultiHeadAttention", "num_heads": 2}, where="layers[3] (mha)")
    message = str(info.value)
    assert message.startswith("layers[3] (mha): unknown layer 'MultiHeadAttention'; choose from:")
    assert "BatchNormalization" in message and "Conv2D" in message and "\n" not in message


def test_forward_checks_input_count_and_shapes():
    model = build_graph_model(GraphSpec("g", (("x", (None, 3)),), (node("d", DENSE, "x"),),
                                        ("d",)))
    assert model(torch.zeros(2, 7, 3)).shape == (2, 7, 2)  # None: any number of steps
    with pytest.raises(ValueError, match=r"g takes 1 input\(s\) \(x\); got 2"):
        model(torch.zeros(2, 7, 3), torch.zeros(2, 7, 3))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, None, 3\)"):
        model(torch.zeros(2, 7, 4))


def test_wiring_and_layers_give_the_graph_back_and_its_outputs():
    """The JSON form a lab study stores (wiring + layers) rebuilds the same graph: same
    nodes, connections and outputs, and the same model outputs at the same seed."""
    keras.utils.set_random_seed(0)
    spec = graph_spec(branches_model())
    wiring = json.loads(json.dumps(spec.wiring()))  # through JSON, as results.json holds it
    layers = [parse_layer(n.layer.to_dict(), where=n.name) for n in spec.nodes]
    again = graph_from_wiring(wiring, layers, where="graph")
    assert again == spec
    joined = next(n for n in wiring["nodes"] if n["name"] == "joined")
    assert joined["inbound"] == ["residual", "pool", "stem_relu"]
    rng = np.random.default_rng(0)
    xs = (torch.as_tensor(rng.normal(size=(2, 6, 6, 3)).astype("float32")),
          torch.as_tensor(rng.normal(size=(2, 4)).astype("float32")))
    for a, b in zip(build_graph_model(spec, seed=3)(*xs), build_graph_model(again, seed=3)(*xs),
                    strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("wiring", "message"), [
    ({"name": "g", "inputs": [["x", [3]]], "nodes": [{"name": "d"}], "outputs": ["d"]},
     "w: expected a graph's wiring: name, inputs [[name, shape]], nodes [{name, inbound}]"),
    ({"name": "g", "inputs": [["x", [3]]], "nodes": [], "outputs": ["x"]},
     "w: the graph has 0 nodes but 1 layers"),
], ids=["no-inbound", "count"])
def test_bad_wiring_is_one_line(wiring, message):
    with pytest.raises(SpecError) as info:
        graph_from_wiring(wiring, [parse_layer(DENSE, where="d")], where="w")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_with_input_shape_replaces_the_one_input():
    spec = GraphSpec("g", (("x", (None, 3)),), (node("d", DENSE, "x"),), ("d",))
    assert build_graph_model(spec.with_input_shape((5, 3))).input_shapes == ((5, 3),)
    two = GraphSpec("g", (("x", (3,)), ("y", (3,))), (node("s", {"type": "Add"}, "x", "y"),),
                    ("s",))
    with pytest.raises(SpecError, match="graph 'g' has 2 inputs; only the shape of a graph"):
        two.with_input_shape((3,))
