"""Doctor on bundled studies' models: circles bn_after is healthy; the scenes collapse is cured.

The scenes check trains one seed of scenes_momentum's momentum-0.99 variant on the real
Fashion-MNIST files (installed by `.ci/run`; skipped with the reason where they are not).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bnlab.data.fashion import FASHION_MNIST_DIR
from bnlab.doctor import examine, treat
from bnlab.lab import load_experiment
from bnlab.lab.runs import load_variant_data
from bnlab.models import build_model
from bnlab.train import fit


def _trained(experiment_name: str, variant_name: str, seed: int = 0):
    variant = load_experiment(experiment_name).variant(variant_name)
    data = load_variant_data(variant)
    model = build_model(variant.layers, data.input_shape, seed=seed)
    config = variant.train_config()
    fit(model, data, config, seed=seed, progress=False)
    return model, data, config


def test_circles_bn_after_has_no_serious_finding() -> None:
    model, data, config = _trained("circles", "bn_after")
    diagnosis = examine(model, data, train_batch_size=config.batch_size, loss=config.loss)
    assert diagnosis.serious == ()
    (layer,) = diagnosis.measurements.layers
    assert layer.steps_seen == 100 * 16  # 100 epochs of 500 / 32 batches
    assert diagnosis.measurements.accuracy_gap == pytest.approx(0.0, abs=0.03)
    assert diagnosis.measurements.inference.accuracy > 0.8


@pytest.mark.skipif(
    not (Path(FASHION_MNIST_DIR) / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_scenes_momentum_collapse_is_named_and_recalibrate_closes_the_gap() -> None:
    """Momentum 0.99 after 152 steps: stale statistics, with the step count; >= 90% closed."""
    model, data, config = _trained("scenes_momentum", "bn_momentum_0_99")
    args = {"train_batch_size": config.batch_size, "loss": config.loss}
    before = examine(model, data, **args)
    assert before.codes()[0] == "stale_statistics"
    stale = next(f for f in before.findings if f.code == "stale_statistics")
    assert stale.severity == "serious"
    assert "152 updates at momentum 0.99 (299 needed" in stale.summary
    gap = before.measurements.accuracy_gap
    assert gap > 0.1  # inference mode far below batch statistics: the collapse
    treatment = treat(model, data, "recalibrate", before=before, **args)
    assert treatment.gap_closed >= 0.9
    assert treatment.after.serious == ()
