"""What doctor measures, against float64 formulas and direct computations."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from doctor_models import make_data, mlp, train
from torch import nn

from bnlab.data import Dataset
from bnlab.doctor import examine, fade_steps, momentum_for
from bnlab.doctor.measure import initial_weight
from bnlab.nn import BatchNormalization


@pytest.mark.parametrize(
    ("momentum", "steps"),
    [(0.99, 299), (0.9, 29), (0.8, 14), (0.5, 5), (0.0, 1), (None, 1), (1.0, math.inf)],
    ids=["0.99", "0.9", "0.8", "0.5", "0", "None", "1"],
)
def test_fade_steps_is_the_first_step_below_five_percent(momentum, steps) -> None:
    assert fade_steps(momentum) == steps
    if momentum is not None and 0 < momentum < 1:
        assert momentum ** steps < 0.05 <= momentum ** (steps - 1)


def test_momentum_for_fades_exactly_within_the_steps() -> None:
    for steps in (1, 19, 152, 190, 1000):
        m = momentum_for(steps)
        assert m ** steps == pytest.approx(0.05, rel=1e-12)
        assert fade_steps(m) == steps
    assert initial_weight(0.99, 152) == pytest.approx(0.99 ** 152)
    assert initial_weight(None, 0) == 1.0 and initial_weight(None, 3) == 0.0
    with pytest.raises(ValueError, match="got 0"):
        momentum_for(0)


@pytest.mark.parametrize("kind", ["bnlab", "torch"])
def test_population_statistics_and_distances_match_float64_formulas(kind: str) -> None:
    x, y = make_data(300)
    model = train(mlp(kind=kind, momentum=0.99, bias=True).double(), x.double(), y, steps=12)
    diagnosis = examine(model, (x.double(), y), batch_size=32)
    layer = diagnosis.measurements.layer("1")

    with torch.no_grad():
        z = model[0](x.double())  # the BN layer's input (the first layer sees no BN before it)
    mean = z.mean(0).numpy()
    variance = z.var(0, correction=1 if kind == "torch" else 0).numpy()  # as each layer stores it
    np.testing.assert_allclose(layer.population_mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.population_variance, variance, rtol=1e-12, atol=1e-12)
    assert layer.values_per_channel == 300

    bn = model[1]
    moving_mean = (bn.moving_mean if kind == "bnlab" else bn.running_mean).numpy()
    moving_var = (bn.moving_variance if kind == "bnlab" else bn.running_var).numpy()
    eps = 1e-3 if kind == "bnlab" else 1e-5
    np.testing.assert_allclose(layer.mean_distance,
                               np.abs(mean - moving_mean) / np.sqrt(variance + eps), rtol=1e-12)
    np.testing.assert_allclose(layer.log_variance_ratio,
                               np.log((moving_var + eps) / (variance + eps)), rtol=1e-12)
    assert layer.momentum == pytest.approx(0.99)
    assert layer.steps_seen == 12 and layer.steps_needed == 299
    assert layer.initial_weight == pytest.approx(0.99 ** 12)
    # Which share of the offset the unfaded initial values (0 and 1) explain.
    w = 0.99 ** 12
    predicted_mean, predicted_ratio = layer.predicted_by_initial()
    np.testing.assert_allclose(predicted_mean, w * np.abs(mean) / np.sqrt(variance + eps),
                               rtol=1e-10)
    np.testing.assert_allclose(
        predicted_ratio, np.log((w + (1 - w) * variance + eps) / (variance + eps)), rtol=1e-10)


def test_metrics_in_both_modes_match_direct_computation() -> None:
    x, y = make_data(256)
    model = train(mlp(momentum=0.99), x, y, steps=20)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 256, 64)]
    m = examine(model, batches).measurements

    with torch.no_grad():
        logits = model.eval()(x)
        expected_inference = (logits.argmax(1) == y).double().mean().item()
        expected_loss = F.cross_entropy(logits.double(), y).item()
        probe = copy.deepcopy(model).train()  # batch statistics, one batch at a time
        correct = sum((probe(bx).argmax(1) == by).sum().item() for bx, by in batches)
    assert m.inference.accuracy == pytest.approx(expected_inference)
    assert m.inference.loss == pytest.approx(expected_loss, rel=1e-6)
    assert m.train_mode.accuracy == pytest.approx(correct / 256)
    assert m.accuracy_gap == pytest.approx(correct / 256 - expected_inference)
    assert m.inference.samples == m.train_mode.samples == 256


def test_probabilities_are_scored_like_keras_losses() -> None:
    """A bnlab-style model ending in softmax: -log p_y, clipped at 1e-7."""
    x, y = make_data(128)
    model = nn.Sequential(*mlp(), nn.Softmax(dim=1)).eval()
    m = examine(model, (x, y)).measurements
    with torch.no_grad():
        p = model(x).double().clamp(1e-7, 1 - 1e-7)
    assert m.inference.loss == pytest.approx(-p[torch.arange(128), y].log().mean().item(), rel=1e-6)
    named = examine(model, (x, y), loss="sparse_categorical_crossentropy").measurements
    assert named.inference.loss == pytest.approx(m.inference.loss, rel=1e-6)


def test_examine_leaves_the_model_as_it_was() -> None:
    x, y = make_data(256)
    model = train(mlp(momentum=0.99, dropout=0.2), x, y, steps=10)
    model[2].train()  # a BN layer left in training mode: examine must not change a thing
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    examine(model, (x, y))
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_batch_noise_of_a_mean_is_one_over_sqrt_batch_size() -> None:
    """BN on standard normal inputs: the batch mean's spread is 1/sqrt(B) population σ."""
    x = torch.randn(1024, 8, generator=torch.Generator().manual_seed(1))
    model = nn.Sequential(BatchNormalization(8)).eval()
    for size in (2, 32):
        layer = examine(model, x, batch_size=size).measurements.layers[0]
        assert layer.batch_size == size
        assert layer.batch_mean_noise == pytest.approx(1 / math.sqrt(size), rel=0.1)


def test_accepted_data_forms() -> None:
    x, y = make_data(200)
    model = train(mlp(), x, y, steps=5)
    dataset = Dataset("toy", x[:150].numpy(), y[:150].numpy(), x[150:].numpy(), y[150:].numpy(),
                      2, ("a", "b"))
    m = examine(model, dataset).measurements
    assert (m.evaluation["samples"], m.calibration["samples"]) == (50, 150)
    assert m.layers[0].values_per_channel == 150
    unlabeled = examine(model, x).measurements
    assert unlabeled.inference.accuracy is None and unlabeled.accuracy_gap is None
    tensor_dataset = examine(model, torch.utils.data.TensorDataset(x, y)).measurements
    generator = examine(model, ((x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)))
    for m in (tensor_dataset, generator.measurements):
        assert m.inference.accuracy == pytest.approx(unlabeled_accuracy(model, x, y))
        assert m.layers[0].values_per_channel == 200
    with pytest.raises(TypeError, match="got str"):
        examine(model, "data.csv")
    with pytest.raises(ValueError, match="x has 200 samples but y has 3"):
        examine(model, (x, y[:3]))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 or None; got 0"):
        examine(model, (x, y), batch_size=0)


def unlabeled_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).double().mean().item()
