"""bnlab.nn.fold on models built by bnlab.models: which BN layers fold, and the outputs."""

from __future__ import annotations

import copy

import torch

from bnlab.models import GraphNode, GraphSpec, build_graph_model, build_model, parse_layer
from bnlab.nn.fold import fold, fold_report

BN = {"type": "BatchNormalization"}
RELU = {"type": "Activation", "activation": "relu"}

LAYERS = [
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "use_bias": False},  # folds
    BN,
    RELU,
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "strides": 2},  # folds
    BN,
    {"type": "Conv2D", "filters": 3, "kernel_size": 1, "activation": "relu"},  # BN sees the relu
    BN,
    {"type": "Flatten"},  # a permute starts a new segment
    BN,  # after Flatten: no producer
    {"type": "Dense", "units": 5, "use_bias": False},  # folds
    BN,
    {"type": "Dense", "units": 2, "activation": "softmax"},
]


def trained_model():
    model = build_model(LAYERS, (9, 8, 2), seed=0)
    model.train()
    for _ in range(3):
        model(torch.randn(16, 9, 8, 2) * 2 + 0.5)
    return model.eval()


def test_fold_report_names_the_pairs_and_the_reasons():
    report = fold_report(trained_model())
    assert report.folded == (
        ("layers.batch_normalization", "layers.conv2d"),
        ("layers.batch_normalization_1", "layers.conv2d_1"),
        ("layers.batch_normalization_4", "layers.dense"),
    )
    reasons = dict(report.unfolded)
    assert "applies ReLU after its affine map" in reasons["layers.batch_normalization_2"]
    assert "Flatten" in reasons["layers.batch_normalization_3"]


def test_folded_model_computes_the_same_function():
    model = trained_model()
    folded = copy.deepcopy(model)
    unfolded = fold(folded)
    assert [bn for bn, _ in unfolded] == ["layers.batch_normalization_2",
                                          "layers.batch_normalization_3"]
    x = torch.randn(5, 9, 8, 2)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert isinstance(folded.get_layer("batch_normalization"), torch.nn.Identity)
    assert folded.get_layer("dense").bias is not None  # created by the fold


def graph_model():
    def node(name, layer, *inbound):
        return GraphNode(name, parse_layer(layer, where=name), inbound)

    conv = {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same"}
    spec = GraphSpec("g", (("image", (8, 8, 4)), ("steps", (7, 3))), (
        node("conv", conv, "image"),
        node("conv_bn", BN, "conv"),  # folds
        node("dw", {"type": "DepthwiseConv2D", "kernel_size": 3, "padding": "same"},
             "conv_bn"),
        node("dw_bn", BN, "dw"),  # folds
        node("shared", {"type": "Conv2D", "filters": 4, "kernel_size": 1}, "dw_bn"),
        node("shared_bn", BN, "shared"),  # its input is also used by "add"
        node("add", {"type": "Add"}, "shared_bn", "shared"),
        node("add_bn", BN, "add"),  # after a merge: no producer
        node("gap", {"type": "GlobalAveragePooling2D"}, "add_bn"),
        node("seq", {"type": "Conv1D", "filters": 4, "kernel_size": 2, "use_bias": False},
             "steps"),
        node("seq_bn", BN, "seq"),  # folds
        node("seq_gap", {"type": "GlobalAveragePooling1D"}, "seq_bn"),
        node("joined", {"type": "Concatenate"}, "gap", "seq_gap"),
    ), ("joined",))
    model = build_graph_model(spec, seed=0)
    model.train()
    for _ in range(3):
        model(torch.randn(16, 8, 8, 4) + 0.5, torch.randn(16, 7, 3) * 2)
    return model.eval()


def test_graph_models_fold_along_their_chains():
    model = graph_model()
    report = fold_report(model)
    assert report.folded == (
        ("layers.conv_bn", "layers.conv"),
        ("layers.dw_bn", "layers.dw"),
        ("layers.seq_bn", "layers.seq"),
    )
    assert {name for name, _ in report.unfolded} == {"layers.shared_bn", "layers.add_bn"}
    folded = copy.deepcopy(model)
    assert {bn for bn, _ in fold(folded)} == {"layers.shared_bn", "layers.add_bn"}
    x = (torch.randn(5, 8, 8, 4), torch.randn(5, 7, 3))
    torch.testing.assert_close(folded(*x), model(*x), atol=1e-5, rtol=1e-5)


def test_conv3d_followed_by_bn_folds_to_the_same_function():
    model = build_model([{"type": "Conv3D", "filters": 3, "kernel_size": 2, "use_bias": False},
                         BN, RELU, {"type": "GlobalAveragePooling3D"}], (5, 4, 3, 2), seed=0)
    model.train()
    for _ in range(3):
        model(torch.randn(8, 5, 4, 3, 2) * 2 + 0.5)
    model.eval()
    folded = copy.deepcopy(model)
    assert fold(folded) == []
    x = torch.randn(4, 5, 4, 3, 2)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert isinstance(folded.get_layer("batch_normalization"), torch.nn.Identity)
