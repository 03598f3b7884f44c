"""Variants as edits of a base layer list."""

from __future__ import annotations

import pytest
import torch

from bnlab.models import (
    GraphNode,
    GraphSpec,
    SpecError,
    apply_edits,
    build_graph_model,
    parse_layer,
    parse_layers,
)

WHERE = "circles.toml: variants.bn.edits"

BASE_RAW = [
    {"type": "Input", "shape": [8, 8, 1]},
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "MaxPooling2D"},
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 8, "activation": "relu"},
    {"type": "Dense", "units": 2, "activation": "softmax", "name": "head"},
]
BN = {"type": "BatchNormalization"}


@pytest.fixture
def base():
    return parse_layers(BASE_RAW, where="circles.toml: layers")


def kinds(specs):
    return [s.type for s in specs]


def test_insert_after_and_before_by_index(base):
    out = apply_edits(
        base,
        [
            {"insert_after": 1, "layer": BN},
            {"insert_before": 5, "layer": {"type": "Dropout", "rate": 0.5}},
        ],
        where=WHERE,
    )
    assert kinds(out) == [
        "Input",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dropout",
        "Dense",
        "Dense",
    ]
    assert out[6].args["rate"] == 0.5
    assert kinds(base) == [s["type"] for s in BASE_RAW]  # base untouched


def test_replace_remove_and_set(base):
    out = apply_edits(
        base,
        [
            {"replace": 2, "layer": {"type": "MaxPooling2D", "pool_size": 2, "padding": "same"}},
            {"remove": 3},
            {"set": 5, "args": {"activation": "linear", "use_bias": False}},
        ],
        where=WHERE,
    )
    assert kinds(out) == ["Input", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert out[2].args["padding"] == "same"
    assert dict(out[4].args) == {"units": 8, "activation": "linear", "use_bias": False}


def test_indices_refer_to_the_base_list_whatever_the_edit_order(base):
    a = apply_edits(base, [{"remove": 1}, {"insert_after": 3, "layer": BN}], where=WHERE)
    b = apply_edits(base, [{"insert_after": 3, "layer": BN}, {"remove": 1}], where=WHERE)
    assert a == b
    assert kinds(a) == [
        "Input",
        "MaxPooling2D",
        "Conv2D",
        "BatchNormalization",
        "Flatten",
        "Dense",
        "Dense",
    ]


def test_negative_index_counts_from_the_end(base):
    out = apply_edits(base, [{"insert_before": -1, "layer": BN}], where=WHERE)
    assert kinds(out)[-3:] == ["Dense", "BatchNormalization", "Dense"]


def test_type_target_selects_every_layer_of_that_type(base):
    out = apply_edits(base, [{"insert_after": "Conv2D", "layer": BN}], where=WHERE)
    assert kinds(out) == [
        "Input",
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Conv2D",
        "BatchNormalization",
        "Flatten",
        "Dense",
        "Dense",
    ]
    out = apply_edits(base, [{"set": "Dense", "args": {"use_bias": False}}], where=WHERE)
    assert [s.args.get("use_bias") for s in out if s.type == "Dense"] == [False, False]


def test_name_targets_use_keras_auto_names_and_explicit_names(base):
    out = apply_edits(
        base,
        [
            {"set": "conv2d_1", "args": {"filters": 16}},
            {"insert_before": "head", "layer": BN},
            {"remove": ["max_pooling2d", 4]},
        ],
        where=WHERE,
    )
    assert kinds(out) == ["Input", "Conv2D", "Conv2D", "Dense", "BatchNormalization", "Dense"]
    assert out[2].args["filters"] == 16 and out[1].args["filters"] == 4


def test_several_layers_and_several_inserts_keep_edit_order(base):
    act = {"type": "Activation", "activation": "relu"}
    out = apply_edits(
        base,
        [
            {"set": 5, "args": {"activation": None, "use_bias": False}},
            {"insert_after": 5, "layers": [BN, act]},
            {"insert_after": 5, "layer": {"type": "Dropout", "rate": 0.1}},
            {"insert_before": 5, "layer": {"type": "Dropout", "rate": 0.2}},
            {"insert_before": 5, "layer": {"type": "Dropout", "rate": 0.3}},
        ],
        where=WHERE,
    )
    assert kinds(out)[5:11] == [
        "Dropout",
        "Dropout",
        "Dense",
        "BatchNormalization",
        "Activation",
        "Dropout",
    ]
    assert [out[5].args["rate"], out[6].args["rate"], out[10].args["rate"]] == [0.2, 0.3, 0.1]


def test_later_set_wins_and_replace_with_several_layers(base):
    out = apply_edits(
        base,
        [
            {"set": 5, "args": {"units": 16}},
            {"set": 5, "args": {"units": 32, "activation": "tanh"}},
            {"replace": 2, "layers": [BN, {"type": "MaxPooling2D"}]},
        ],
        where=WHERE,
    )
    assert out[6].args["units"] == 32 and out[6].args["activation"] == "tanh"
    assert kinds(out)[2:4] == ["BatchNormalization", "MaxPooling2D"]


def test_no_edits_returns_an_equal_copy(base):
    out = apply_edits(base, [], where=WHERE)
    assert out == base and out is not base


# ---------------------------------------------------------------- errors


def _error(base, edits) -> str:
    with pytest.raises(SpecError) as info:
        apply_edits(base, edits, where=WHERE)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_edits_must_be_a_list_of_tables(base):
    assert "expected a list of edit tables; got {'remove': 1} (dict)" in _error(base, {"remove": 1})
    message = _error(base, ["remove 1"])
    assert (
        message.startswith(f"{WHERE}[0]: expected an edit table") and "'remove 1' (str)" in message
    )


def test_exactly_one_operation(base):
    message = _error(base, [{"layer": BN}])
    assert message == (
        f"{WHERE}[0]: expected exactly one operation of: insert_after, insert_before, replace, "
        "remove, set; got keys ['layer']"
    )
    assert "got keys ['remove', 'replace']" in _error(base, [{"remove": 1, "replace": 1}])


def test_unknown_key_for_operation(base):
    message = _error(base, [{"remove": 1, "layer": BN}])
    assert message == f"{WHERE}[0]: unknown key(s) ['layer'] for 'remove'; allowed: nothing else"
    message = _error(base, [{"set": 1, "arg": {"filters": 2}}])
    assert "unknown key(s) ['arg'] for 'set'; allowed: args" in message


def test_index_out_of_range_lists_the_base(base):
    message = _error(base, [{"remove": 7}])
    assert message.startswith(
        f"{WHERE}[0].remove: index 7 is out of range for the base list of 7 entries"
    )
    assert "[1] conv2d (Conv2D)" in message and "[6] head (Dense)" in message
    assert "index -8" in _error(base, [{"remove": -8}])


def test_unknown_name_and_absent_type(base):
    message = _error(base, [{"set": "dense_7", "args": {"units": 2}}])
    assert "no layer named 'dense_7'" in message and "[5] dense (Dense)" in message
    message = _error(base, [{"insert_after": "LSTM", "layer": BN}])
    assert message.startswith(f"{WHERE}[0].insert_after: no LSTM layer in the base list")


def test_bad_target_type(base):
    message = _error(base, [{"remove": 1.5}])
    assert message.startswith(f"{WHERE}[0].remove: expected an index, a layer type, a layer name")
    assert "1.5 (float)" in message
    assert "got []" in _error(base, [{"remove": []}])
    assert "True (bool)" in _error(base, [{"remove": True}])


def test_layer_keys(base):
    assert "give exactly one of 'layer'" in _error(base, [{"insert_after": 1}])
    assert "got keys ['insert_after', 'layer', 'layers']" in _error(
        base, [{"insert_after": 1, "layer": BN, "layers": [BN]}]
    )
    message = _error(base, [{"insert_after": 1, "layer": {"type": "BatchNorm"}}])
    assert message.startswith(f"{WHERE}[0].layer: unknown layer 'BatchNorm'; choose from:")
    message = _error(base, [{"insert_after": 1, "layers": [BN, {"type": "Dense"}]}])
    assert message.startswith(f"{WHERE}[0].layers[1]: Dense needs the argument 'units'")
    assert "non-empty list of layer tables; got [] (list)" in _error(
        base, [{"replace": 1, "layers": []}]
    )


def test_set_arguments_are_validated(base):
    message = _error(base, [{"set": 5, "args": {"units": -3}}])
    assert message == f"{WHERE}[0].args.units: expected an integer >= 1; got -3 (int)"
    message = _error(base, [{"set": 5, "args": {"filters": 3}}])
    assert message.startswith(f"{WHERE}[0].args: unknown argument 'filters' for Dense")
    assert "'set' needs 'args'" in _error(base, [{"set": 5}])
    assert "expected a table of arguments; got 3 (int)" in _error(base, [{"set": 5, "args": 3}])


def test_conflicting_edits(base):
    message = _error(base, [{"remove": 2}, {"replace": 2, "layer": BN}])
    assert message.startswith(
        f"{WHERE}[1]: entry [2] (max_pooling2d) is already changed by {WHERE}[0]"
    )
    message = _error(base, [{"remove": 2}, {"set": 2, "args": {"pool_size": 3}}])
    assert "cannot also set its arguments" in message
    message = _error(base, [{"set": 2, "args": {"pool_size": 3}}, {"remove": "MaxPooling2D"}])
    assert f"is already changed by {WHERE}[0]" in message


def test_result_must_be_a_valid_model(base):
    message = _error(base, [{"insert_before": 0, "layer": BN}])
    assert message == f"{WHERE} (result)[1]: Input may only be the first entry; found at index 1"
    message = _error(base, [{"remove": [1, 2, 3, 4, 5, 6]}])
    assert "needs at least one layer besides Input" in message


def test_table_targets_select_by_type_or_name(base):
    out = apply_edits(base, [{"set": {"type": "Conv2D"}, "args": {"activation": "linear"}},
                             {"set": {"name": "head"}, "args": {"units": 3}}], where=WHERE)
    assert [s.args.get("activation") for s in out if s.type == "Conv2D"] == ["linear", "linear"]
    assert out[-1].args["units"] == 3
    for target, message in [
        ({"type": "Dense2"}, "unknown layer type 'Dense2'; choose from: Activation"),
        ({"name": "nope"}, "no layer named 'nope' in the base list"),
        ({"kind": "Dense"}, "a target table has one key, 'type' or 'name'"),
    ]:
        with pytest.raises(SpecError, match=message):
            apply_edits(base, [{"set": target, "args": {}}], where=WHERE)


# A small Functional graph: x -> conv -> bn -> relu -> add(relu, conv) -> gap -> dense
def graph():
    def node(name, layer, *inbound):
        return GraphNode(name, parse_layer(layer, where=name), inbound)

    return GraphSpec("g", (("x", (6, 6, 3)),), (
        node("conv", {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same"}, "x"),
        node("bn", BN, "conv"),
        node("relu", {"type": "ReLU"}, "bn"),
        node("add", {"type": "Add"}, "relu", "conv"),
        node("gap", {"type": "GlobalAveragePooling2D"}, "add"),
        node("dense", {"type": "Dense", "units": 2}, "gap"),
    ), ("dense",))


def wiring(spec):
    return [(n.name, n.layer.type, n.inbound) for n in spec.nodes]


def test_graph_set_by_type_changes_every_matching_node():
    out = apply_edits(graph(), [{"set": {"type": "BatchNormalization"},
                                 "args": {"momentum": 0.8}}], where=WHERE)
    assert out.nodes[1].layer.args["momentum"] == 0.8
    assert wiring(out) == wiring(graph())
    assert build_graph_model(out).layer("bn").momentum == 0.8


def test_graph_insert_after_rewires_every_consumer_and_the_outputs():
    out = apply_edits(graph(), [{"insert_after": "conv", "layer": BN},
                                {"insert_after": "dense", "layer": {"type": "Activation",
                                                                    "activation": "softmax"}}],
                      where=WHERE)
    assert wiring(out) == [
        ("conv", "Conv2D", ("x",)),
        ("batch_normalization", "BatchNormalization", ("conv",)),
        ("bn", "BatchNormalization", ("batch_normalization",)),
        ("relu", "ReLU", ("bn",)),
        ("add", "Add", ("relu", "batch_normalization")),
        ("gap", "GlobalAveragePooling2D", ("add",)),
        ("dense", "Dense", ("gap",)),
        ("activation", "Activation", ("dense",)),
    ]
    assert out.outputs == ("activation",)
    model = build_graph_model(out)
    assert model(torch.randn(2, 6, 6, 3)).sum(dim=1).allclose(torch.ones(2))


def test_graph_insert_before_remove_and_replace():
    out = apply_edits(graph(), [
        {"insert_before": "relu", "layer": {"type": "Dropout", "rate": 0.1}},
        {"remove": "bn"},
        {"replace": "gap", "layer": {"type": "GlobalMaxPooling2D"}},
    ], where=WHERE)
    assert wiring(out) == [
        ("conv", "Conv2D", ("x",)),
        ("dropout", "Dropout", ("conv",)),
        ("relu", "ReLU", ("dropout",)),
        ("add", "Add", ("relu", "conv")),
        ("gap", "GlobalMaxPooling2D", ("add",)),
        ("dense", "Dense", ("gap",)),
    ]
    build_graph_model(out)


def test_graph_edit_of_a_merge_node_input_is_refused():
    with pytest.raises(SpecError, match="cannot remove node 'add': it has 2 inputs"):
        apply_edits(graph(), [{"remove": "add"}], where=WHERE)
