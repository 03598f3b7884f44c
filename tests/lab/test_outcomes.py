"""The lab's verdicts on a run: diverged (non-finite or a blown-up loss) and did not learn."""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.data import Dataset
from bnlab.lab.outcomes import DIVERGENCE_FACTOR, outcome_table, run_outcome
from bnlab.models import build_model
from bnlab.train import TrainConfig, fit


def history(
    *,
    initial: float | None = 2.30,
    last: float | None = 0.40,
    test_accuracy: float | None = 0.90,
    chance: float | None = 0.117,
    diverged: bool = False,
) -> dict:
    h = {
        "epochs": {
            "loss": [1.0, last],
            "accuracy": [0.5, 0.6],
            "val_loss": [1.1, 1.0],
            "val_accuracy": [0.5, test_accuracy],
            "val_accuracy_train_mode": None,
        },
        "evals": [],
        "probes": {},
        "final": {
            "train_loss": 0.5,
            "train_accuracy": 0.6,
            "test_loss": 0.6,
            "test_accuracy": test_accuracy,
        },
        "diverged": diverged,
        "steps_per_epoch": 4,
        "initial_loss": initial,
        "chance_accuracy": chance,
    }
    return h


def test_loss_above_twice_the_initial_loss_is_a_divergence():
    assert DIVERGENCE_FACTOR == 2.0
    up = run_outcome(history(initial=2.30, last=4.61))
    assert (up.non_finite, up.blew_up, up.diverged) == (False, True, True)
    assert up.diverged_words() == "loss 4.61 > 2 × initial 2.3"
    at = run_outcome(history(initial=2.30, last=4.60))  # exactly 2x: not above it
    assert (at.blew_up, at.diverged) == (False, False)
    saturated = run_outcome(history(initial=2.30, last=14.54))  # lr_range's mlp at lr 1
    assert saturated.diverged and saturated.last_loss == 14.54


def test_non_finite_loss_or_null_final_metric_is_a_divergence():
    nan = run_outcome(history(last=None, diverged=True))
    assert (nan.non_finite, nan.blew_up, nan.diverged) == (True, None, True)
    assert nan.diverged_words() == "NaN/inf loss"
    h = history()
    h["final"]["train_loss"] = None
    assert run_outcome(h).diverged is True


def test_accuracy_no_better_than_the_most_frequent_class_did_not_learn():
    assert run_outcome(history(test_accuracy=0.117, chance=0.117)).did_not_learn is True
    assert run_outcome(history(test_accuracy=0.0875, chance=0.117)).did_not_learn is True
    assert run_outcome(history(test_accuracy=0.1175, chance=0.117)).did_not_learn is False
    no_output = run_outcome(history(test_accuracy=None, chance=0.117))
    assert no_output.did_not_learn is True
    assert no_output.did_not_learn_words() == "no test accuracy (non-finite outputs)"
    words = run_outcome(history(test_accuracy=0.102, chance=0.117)).did_not_learn_words()
    assert words == "test accuracy 0.102 ≤ chance 0.117"


def test_the_verdicts_are_independent():
    # blew up, yet ended above chance (lr_range's cnn_bn at lr 0.1, seed 0: loss 7.06, 0.515)
    spiky = run_outcome(history(initial=2.30, last=7.06, test_accuracy=0.515, chance=0.117))
    assert (spiky.diverged, spiky.did_not_learn) == (True, False)
    # stalled at chance without the loss rising (dead units: loss stays near ln 10)
    stalled = run_outcome(history(initial=2.30, last=2.31, test_accuracy=0.102, chance=0.117))
    assert (stalled.diverged, stalled.did_not_learn) == (False, True)


def test_records_without_initial_loss_or_chance_accuracy_are_unknown_not_flagged():
    old = history(last=14.0, test_accuracy=0.10)
    del old["initial_loss"], old["chance_accuracy"]
    outcome = run_outcome(old)
    assert (outcome.diverged, outcome.did_not_learn) == (None, None)
    old_nan = history(last=None, test_accuracy=None, diverged=True)
    del old_nan["initial_loss"], old_nan["chance_accuracy"]
    assert (run_outcome(old_nan).diverged, run_outcome(old_nan).did_not_learn) == (True, True)


def run(seed: int, h: dict | None, lr: float, variant: str = "mlp") -> dict:
    return {
        "experiment": "x",
        "variant": variant,
        "seed": seed,
        "status": "completed" if h else "failed",
        "history": h,
        "seconds": 1.0,
        "error": None if h else "boom",
        "grid": {"learning_rate": lr},
    }


def test_outcome_table_counts_per_variant_and_grid_point():
    old = history()
    del old["initial_loss"]
    runs = [
        run(0, history(last=14.0, test_accuracy=0.10), 1.0),
        run(1, history(last=None, test_accuracy=None, diverged=True), 1.0),
        run(2, history(last=2.3, test_accuracy=0.11), 1.0),
        run(3, None, 1.0),
        run(0, history(), 0.01),
        run(1, old, 0.01),
    ]
    table = outcome_table(runs)
    assert table == [
        {
            "variant": "mlp",
            "grid": {"learning_rate": 1.0},
            "runs": 4,
            "completed": 3,
            "diverged": 2,
            "non_finite": 1,
            "did_not_learn": 3,
            "unknown": 0,
            "diverged_seeds": [0, 1],
            "did_not_learn_seeds": [0, 1, 2],
        },
        {
            "variant": "mlp",
            "grid": {"learning_rate": 0.01},
            "runs": 2,
            "completed": 2,
            "diverged": 0,
            "non_finite": 0,
            "did_not_learn": 0,
            "unknown": 1,
            "diverged_seeds": [],
            "did_not_learn_seeds": [],
        },
    ]


def blobs() -> Dataset:
    """Four well-separated Gaussian blobs in 8 dimensions, 320 training and 80 test points."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=400)
    x = (rng.normal(0, 3, size=(4, 8))[y] + rng.normal(0, 1, size=(400, 8))).astype(np.float32)
    return Dataset(
        name="blobs",
        x_train=x[:320],
        y_train=y[:320],
        x_test=x[320:],
        y_test=y[320:],
        num_classes=4,
        class_names=("a", "b", "c", "d"),
    )


def train(data: Dataset, learning_rate: float) -> dict:
    layers = [
        {"type": "Dense", "units": 16, "activation": "relu"},
        {"type": "Dense", "units": 4, "activation": "softmax"},
    ]
    model = build_model(layers, data.input_shape, seed=0)
    config = TrainConfig(
        optimizer="sgd",
        optimizer_args={"learning_rate": learning_rate, "momentum": 0.9},
        loss="sparse_categorical_crossentropy",
        epochs=2,
        batch_size=32,
    )
    return fit(model, data, config, seed=0).to_dict()


def test_a_saturated_loss_is_a_divergence_although_it_stays_finite():
    # The clipped cross-entropy keeps the loss finite at learning rate 10: the history's own
    # non-finite flag stays false; the lab's rule sees the loss end far above its start.
    data = blobs()
    counts = np.bincount(data.y_test, minlength=4)
    h = train(data, 10.0)
    assert h["diverged"] is False and all(v is not None for v in h["epochs"]["loss"])
    assert h["chance_accuracy"] == counts.max() / 80 == 0.3625
    assert h["initial_loss"] == pytest.approx(2.197, abs=0.01)
    assert h["epochs"]["loss"][-1] == pytest.approx(12.49, abs=0.1)
    assert h["final"]["test_accuracy"] == pytest.approx(0.2125, abs=0.02)
    outcome = run_outcome(h)
    assert (outcome.non_finite, outcome.diverged, outcome.did_not_learn) == (False, True, True)
    good = run_outcome(train(data, 0.1))
    assert good.last_loss < 0.01 and good.test_accuracy == 1.0
    assert (good.diverged, good.did_not_learn) == (False, False)
