"""Doctor on a bundled study's model: the circles MLP with BN after the activation is healthy."""

from __future__ import annotations

import pytest

from bnlab.doctor import examine
from bnlab.lab import load_experiment
from bnlab.lab.runs import load_variant_data
from bnlab.models import build_model
from bnlab.train import fit


def test_circles_bn_after_has_no_serious_finding() -> None:
    experiment = load_experiment("circles")
    variant = next(v for v in experiment.variants if v.name == "bn_after")
    data = load_variant_data(variant)
    model = build_model(variant.layers, data.input_shape, seed=0)
    config = variant.train_config()
    fit(model, data, config, seed=0, progress=False)
    diagnosis = examine(model, data, train_batch_size=config.batch_size, loss=config.loss)
    assert diagnosis.serious == ()
    (layer,) = diagnosis.measurements.layers
    assert layer.steps_seen == 100 * 16  # 100 epochs of 500 / 32 batches
    assert diagnosis.measurements.accuracy_gap == pytest.approx(0.0, abs=0.03)
    assert diagnosis.measurements.inference.accuracy > 0.8
