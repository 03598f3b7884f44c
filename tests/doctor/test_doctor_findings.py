"""Each pitfall planted in a small model is reported by the right rule; a healthy model is not."""

from __future__ import annotations

import math

import pytest
import torch
from doctor_models import FEATURES, make_data, mlp, train
from torch import nn

from bnlab.doctor import SEVERITIES, examine, list_rules
from bnlab.models import build_model
from bnlab.models.layers import Dropout
from bnlab.nn import BatchNormalization, freeze


@pytest.fixture(scope="module")
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(512)


@pytest.fixture(scope="module")
def healthy(xy) -> nn.Module:
    """Momentum 0.9 (29 steps to fade), 150 steps of 32, no bias before BN."""
    return train(mlp(momentum=0.9), *xy, steps=150)


def above_info(diagnosis) -> list[tuple[str, str]]:
    return [(f.code, f.severity) for f in diagnosis.findings if f.severity != "info"]


@pytest.mark.parametrize("kind", ["bnlab", "torch"])
def test_healthy_model_is_not_flagged(kind: str, xy) -> None:
    model = train(mlp(kind=kind, momentum=0.9), *xy, steps=150)
    diagnosis = examine(model, xy, train_batch_size=32)
    assert above_info(diagnosis) == []
    assert diagnosis.findings == ()
    assert abs(diagnosis.measurements.accuracy_gap) < 0.03


@pytest.mark.parametrize("kind", ["bnlab", "torch"])
def test_stale_statistics_named_with_the_step_count(kind: str, xy) -> None:
    model = train(mlp(kind=kind, momentum=0.99), *xy, steps=40)
    diagnosis = examine(model, xy, train_batch_size=32)
    first = diagnosis.findings[0]
    assert (first.code, first.severity) == ("stale_statistics", "serious")
    assert "too few update steps" in first.title
    assert first.evidence["cause"] == "initial_values"
    layer = first.evidence["layers"][0]
    assert (layer["steps_seen"], layer["steps_needed"]) == (40, 299)
    assert layer["initial_weight"] == pytest.approx(0.99 ** 40)
    assert first.evidence["recommended_momentum"] == pytest.approx(0.05 ** (1 / 40))
    assert first.evidence["accuracy_gap"] > 0.2
    assert "40 updates at momentum 0.99 (299 needed" in first.summary
    assert "0.9278" in first.remedy  # 0.05 ** (1 / 40)


def test_dead_channels(healthy, xy) -> None:
    with torch.no_grad():
        healthy[1].gamma[[3, 11]] = 0.0
    try:
        finding = examine(healthy, xy).finding("dead_channels")
    finally:
        with torch.no_grad():
            healthy[1].gamma[[3, 11]] = 1.0
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["layers"]["1"] == {"channels": [3, 11], "of": 16}


def test_frozen_before_training_is_a_serious_finding(xy) -> None:
    model = mlp(momentum=0.9)
    freeze(model)
    train(model, *xy, steps=20)
    diagnosis = examine(model, xy)
    finding = diagnosis.finding("frozen_layer")
    assert finding is not None and finding.severity == "serious"
    assert finding.layers == ("1",)
    assert finding.evidence["layers"][0]["steps_seen"] == 0
    assert diagnosis.finding("stale_statistics") is None  # reported once, as frozen


def test_frozen_with_fitting_statistics_is_only_info(healthy, xy) -> None:
    freeze(healthy)
    try:
        diagnosis = examine(healthy, xy)
    finally:
        healthy[1].unfreeze()
    finding = diagnosis.finding("frozen_layer")
    assert finding is not None and finding.severity == "info"
    assert above_info(diagnosis) == []


def test_nan_statistics_are_critical_and_ranked_first(healthy, xy) -> None:
    saved = healthy[1].moving_variance.clone()
    with torch.no_grad():
        healthy[1].moving_variance[5] = math.nan
        healthy[0].weight[0, 0] += 0.0  # parameters stay finite
    try:
        diagnosis = examine(healthy, xy)
    finally:
        with torch.no_grad():
            healthy[1].moving_variance.copy_(saved)
    first = diagnosis.findings[0]
    assert (first.code, first.severity) == ("nonfinite_statistics", "critical")
    assert first.evidence["layers"]["1"]["statistics_channels"] == [5]
    assert "Recalibrate" in first.remedy


def test_bias_before_bn_counts_the_wasted_parameters(xy) -> None:
    model = train(mlp(momentum=0.9, bias=True), *xy, steps=5)
    finding = examine(model, xy).finding("bias_before_bn")
    assert finding is not None and finding.severity == "info"
    assert finding.evidence == {"pairs": [{"producer": "0", "layer": "1", "parameters": 16}],
                                "wasted_parameters": 16}


def test_bias_before_bn_in_bnlab_models_and_convolutions() -> None:
    layers = [
        {"type": "Conv2D", "filters": 4, "kernel_size": 3},  # linear, with bias: cancelled
        {"type": "BatchNormalization"},
        {"type": "Conv2D", "filters": 3, "kernel_size": 3, "activation": "relu"},  # not cancelled
        {"type": "BatchNormalization"},
        {"type": "Flatten"},
        {"type": "Dense", "units": 5, "use_bias": False},  # no bias
        {"type": "BatchNormalization"},
        {"type": "Dense", "units": 2, "activation": "softmax"},
    ]
    model = build_model(layers, (8, 8, 1), seed=0).eval()
    x = torch.rand(64, 8, 8, 1, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (64,), generator=torch.Generator().manual_seed(1))
    finding = examine(model, (x, y), batch_size=16).finding("bias_before_bn")
    assert finding is not None
    assert finding.evidence["pairs"] == [
        {"producer": "conv2d", "layer": "batch_normalization", "parameters": 4}]
    torch_model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                                nn.Linear(144, 2)).eval()
    pairs = examine(torch_model, (x.permute(0, 3, 1, 2), y)).finding("bias_before_bn")
    assert pairs is not None and pairs.evidence["wasted_parameters"] == 4


def test_batch_size_two_training(xy) -> None:
    x, y = xy
    model = train(mlp(momentum=0.9), x, y, steps=150, batch_size=2)
    diagnosis = examine(model, (x[:256], y[:256]), train_batch_size=2)
    finding = diagnosis.finding("small_batch")
    assert finding is not None and finding.severity == "serious"
    assert finding.evidence["train_batch_size"] == 2
    assert finding.evidence["batch_mean_noise"]["1"] == pytest.approx(1 / math.sqrt(2), rel=0.2)
    assert diagnosis.findings[0].code == "small_batch"
    # Told the model trained with batches of 32, the same measurement is no concern.
    assert examine(model, (x[:256], y[:256]), train_batch_size=32).finding("small_batch") is None


def test_dropout_before_bn_measures_the_variance_shift() -> None:
    """Dropout(0.5) right before BN on zero-mean data doubles the input variance."""
    x = torch.randn(1024, FEATURES, generator=torch.Generator().manual_seed(2))
    model = nn.Sequential(nn.Dropout(0.5), BatchNormalization(FEATURES, momentum=0.9)).eval()
    finding = examine(model, x).finding("dropout_before_bn")
    assert finding is not None and finding.severity == "warning"
    assert finding.evidence["dropout"] == [{"module": "0", "rate": 0.5, "layers": ["1"]}]
    assert finding.evidence["variance_ratio"]["1"] == pytest.approx(2.0, rel=0.1)


def test_dropout_before_bn_that_barely_shifts_the_variance_is_info() -> None:
    """A light dropout before BN (EfficientNet's drop-connect has rates from 0.025): the
    doctor still names it, as information, when the variance it measures moves by under
    x1.25 (1 / (1 - 0.05) in expectation on zero-mean inputs)."""
    x = torch.randn(1024, FEATURES, generator=torch.Generator().manual_seed(2))
    dropout = Dropout(0.05, noise_shape=(None, 1))  # whole samples, as (None, 1, 1, 1)
    model = nn.Sequential(dropout, BatchNormalization(FEATURES, momentum=0.9)).eval()
    finding = examine(model, x).finding("dropout_before_bn")
    assert finding is not None and finding.severity == "info"
    assert 0.9 < finding.evidence["variance_ratio"]["1"] < 1.15  # one draw of the masks
    assert "too small to matter" in finding.summary


def test_dropout_after_bn_is_fine(healthy, xy) -> None:
    model = nn.Sequential(*healthy, nn.Dropout(0.5)).eval()
    assert examine(model, xy).finding("dropout_before_bn") is None


def test_bn_left_in_training_mode(healthy, xy) -> None:
    healthy[1].train()
    try:
        diagnosis = examine(healthy, xy)
    finally:
        healthy.eval()
    finding = diagnosis.finding("wrong_mode")
    assert finding is not None and finding.severity == "serious"
    assert finding.layers == ("1",)
    as_is = diagnosis.measurements.as_is
    assert as_is is not None and finding.evidence["accuracy_as_is"] == as_is.accuracy


def test_input_bn_and_no_running_statistics(xy) -> None:
    model = nn.Sequential(nn.BatchNorm1d(FEATURES, track_running_stats=False),
                          nn.Linear(FEATURES, 2)).eval()
    diagnosis = examine(model, xy)
    assert diagnosis.finding("input_bn") is not None
    means = diagnosis.finding("input_bn").evidence["mean"]
    torch.testing.assert_close(torch.tensor(means, dtype=torch.float64), xy[0].double().mean(0),
                               rtol=1e-9, atol=1e-9)
    assert diagnosis.finding("no_running_statistics").severity == "warning"


def test_never_updated_layer(xy) -> None:
    model = train(mlp(kind="torch", momentum=1.0), *xy, steps=20)  # PyTorch momentum 0
    finding = examine(model, xy).finding("never_updated")
    assert finding is not None and finding.severity == "serious"
    assert "momentum 1 never changes" in finding.summary


def test_findings_are_ranked_by_severity(xy) -> None:
    model = train(mlp(momentum=0.99, bias=True), *xy, steps=30)
    with torch.no_grad():
        model[1].moving_mean[0] = math.inf
    diagnosis = examine(model, xy)
    ranks = [SEVERITIES.index(f.severity) for f in diagnosis.findings]
    assert ranks == sorted(ranks)
    assert diagnosis.codes()[0] == "nonfinite_statistics"
    assert diagnosis.codes()[-1] == "bias_before_bn"
    assert set(diagnosis.codes()) <= set(list_rules())
