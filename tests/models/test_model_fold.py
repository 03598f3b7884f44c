"""bnlab.nn.fold on models built by bnlab.models: which BN layers fold, and the outputs."""

from __future__ import annotations

import torch

from bnlab.models import build_model
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
    folded = fold(model)
    x = torch.randn(5, 9, 8, 2)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert isinstance(folded.get_layer("batch_normalization"), torch.nn.Identity)
    assert folded.get_layer("dense").bias is not None  # created by the fold
    assert model.get_layer("dense").bias is None  # the original is untouched
