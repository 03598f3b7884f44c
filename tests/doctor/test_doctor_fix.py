"""`treat(..., "recalibrate")`: measured before and after, without retraining."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from doctor_models import make_data, mlp, train
from rich.console import Console

from bnlab.doctor import examine, list_fixes, render, to_json, treat


@pytest.fixture(scope="module")
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(512)


@pytest.mark.parametrize("kind", ["bnlab", "torch"])
def test_recalibrate_closes_the_gap_of_stale_statistics(kind: str, xy) -> None:
    model = train(mlp(kind=kind, momentum=0.99), *xy, steps=40)
    treatment = treat(model, xy, "recalibrate", train_batch_size=32)
    before, after = treatment.before.measurements, treatment.after.measurements
    assert treatment.before.finding("stale_statistics").severity == "serious"
    assert treatment.after.finding("stale_statistics") is None
    assert treatment.gap_closed >= 0.9
    assert treatment.gap_closed == pytest.approx(
        (after.inference.accuracy - before.inference.accuracy) / before.accuracy_gap)
    assert after.train_mode.accuracy == before.train_mode.accuracy  # batch statistics: untouched
    layer = after.layers[0]
    np.testing.assert_allclose(layer.moving_mean, layer.population_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, layer.population_variance,
                               rtol=1e-5, atol=1e-6)
    assert treatment.details["values_per_channel"] == {"1": 512}
    assert layer.steps_seen == 40  # recalibration is not a training step


def test_recalibrate_repairs_nan_statistics(xy) -> None:
    model = train(mlp(momentum=0.9), *xy, steps=60)
    with torch.no_grad():
        model[1].moving_mean[2] = math.nan
    treatment = treat(model, xy, "recalibrate")
    assert treatment.before.codes()[0] == "nonfinite_statistics"
    assert treatment.after.finding("nonfinite_statistics") is None
    assert math.isfinite(treatment.after.measurements.inference.accuracy)


def test_unknown_fix_lists_the_valid_ones(xy) -> None:
    model = mlp()
    with pytest.raises(ValueError, match=r"unknown fix 'retrain'; choose from: recalibrate"):
        treat(model, xy, "retrain")
    assert list_fixes() == ["recalibrate"]


def test_json_and_tables(xy) -> None:
    model = train(mlp(momentum=0.99, bias=True), *xy, steps=20)
    treatment = treat(model, xy, train_batch_size=32)
    data = json.loads(to_json(treatment))
    assert set(data) == {"fix", "details", "gap_closed", "before", "after"}
    before = data["before"]
    assert before["schema"] == "bnlab.doctor/1"
    assert set(before) == {"schema", "context", "metrics", "layers", "findings"}
    assert set(before["metrics"]) >= {"inference", "train_mode", "accuracy_gap", "batch_size"}
    assert before["layers"][0]["steps_seen"] == 20
    assert [f["code"] for f in before["findings"]] == ["stale_statistics", "bias_before_bn"]
    assert set(before["findings"][0]) == {"code", "severity", "title", "summary", "remedy",
                                          "layers", "evidence"}
    diagnosis = examine(model, xy)
    assert json.loads(to_json(diagnosis))["findings"][0]["code"] == "bias_before_bn"

    console = Console(record=True, width=120)
    render(treatment, console)
    text = console.export_text()
    for expected in ("Stale moving statistics", "Before and after recalibrate",
                     "Bias before BN", "inference accuracy"):
        assert expected in text
    assert f"closed {treatment.gap_closed:.1%}" in text


def test_update_steps_given_for_layers_that_keep_no_count(xy) -> None:
    """A model from a Keras file: its BN layers count 0 updates; the file's step count rules."""
    model = train(mlp(momentum=0.99), *xy, steps=20)
    model[1].num_batches_tracked.zero_()  # as loaded from a Keras file: no count
    assert examine(model, xy).finding("never_updated") is not None
    told = examine(model, xy, update_steps=152)
    assert [layer.steps_seen for layer in told.measurements.layers] == [152]
    assert told.finding("never_updated") is None
    assert "152 updates at momentum 0.99" in told.finding("stale_statistics").summary
    unknown = examine(model, xy, update_steps=None)
    assert unknown.measurements.layers[0].steps_seen is None
    assert unknown.finding("never_updated") is None
    with pytest.raises(ValueError, match=r"update_steps must be 'counted', an int >= 0 or None; "
                                         r"got -1"):
        examine(model, xy, update_steps=-1)
