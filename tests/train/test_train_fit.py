"""fit(): reproducibility, what each reported number means, evaluation without side effects,
step evaluations, probes, regularization and constraints, divergence."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.models import apply_edits, build_model, parse_layers
from bnlab.train import (
    History,
    ProbeSpec,
    TrainConfig,
    batch_statistics,
    binary_crossentropy,
    evaluate,
    fit,
    percentiles,
    seeded,
)
from bnlab.train.fit import derive_streams
from bnlab.train.losses import LOSSES
from bnlab.train.probes import MAX_PROBE_VALUES


def config(**overrides) -> TrainConfig:
    base = {
        "optimizer": "sgd",
        "optimizer_args": {"learning_rate": 0.1},
        "loss": "binary_crossentropy",
        "epochs": 2,
        "batch_size": 32,
    }
    return TrainConfig(**{**base, **overrides})


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ reproducibility
@pytest.mark.parametrize("bn", [None, "bnlab", "torch"])
def test_same_seed_gives_the_same_history_bit_for_bit(rings, mlp, bn):
    cfg = config(eval_every_steps=2, probes=(ProbeSpec("0", "output", every_steps=3),))
    runs = []
    for _ in range(2):
        model = mlp(bn, seed=3)
        history = fit(model, rings, cfg, seed=7)
        runs.append((json.dumps(history.to_dict()), state_of(model)))
    assert runs[0][0] == runs[1][0]
    assert_same_state(runs[0][1], runs[1][1])
    other = fit(mlp(bn, seed=3), rings, cfg, seed=8)
    assert json.dumps(other.to_dict()) != runs[0][0]  # the seed drives the shuffling


def test_fit_leaves_the_callers_random_state_alone(rings, mlp):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fit(mlp("bnlab"), rings, config(), seed=0)
    assert torch.equal(torch.get_rng_state(), before)


def test_seeded_builds_the_same_weights_and_restores_the_generator():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    with seeded(11):
        a = nn.Linear(3, 4)
    with seeded(11):
        b = nn.Linear(3, 4)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(11)
    c = nn.Linear(3, 4)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.weight, c.weight)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer; got -1"), seeded(-1):
        pass


# ---------------------------------------------------------------- history shape
def test_history_dict_has_the_contract_shape(rings, mlp):
    cfg = config(epochs=3, eval_every_steps=2, probes=(ProbeSpec("2", "output", every_steps=4),))
    history = fit(mlp("bnlab"), rings, cfg, seed=0)
    d = history.to_dict()
    assert set(d) == {"epochs", "evals", "probes", "final", "diverged", "steps_per_epoch",
                      "initial_loss", "chance_accuracy"}
    assert set(d["epochs"]) == {"loss", "accuracy", "val_loss", "val_accuracy", "val_accuracy_train_mode"}
    assert all(len(v) == 3 for v in d["epochs"].values())
    assert d["steps_per_epoch"] == 3  # 96 samples / 32
    # every 2 steps, plus the epoch ends 3, 6, 9
    assert [e["step"] for e in d["evals"]] == [2, 3, 4, 6, 8, 9]
    assert [e["epoch"] for e in d["evals"]] == pytest.approx([2 / 3, 1, 4 / 3, 2, 8 / 3, 3])
    assert set(d["evals"][0]) == {"step", "epoch", "val_loss", "val_accuracy", "val_accuracy_train_mode"}
    assert d["probes"]["2.output"]["percentiles"] == [15, 50, 85]
    assert d["probes"]["2.output"]["steps"] == [0, 4, 8]
    assert all(len(row) == 3 for row in d["probes"]["2.output"]["values"])
    assert set(d["final"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert d["diverged"] is False
    assert all(0.0 <= a <= 1.0 for a in d["epochs"]["accuracy"] + d["epochs"]["val_accuracy_train_mode"])
    text = json.dumps(d, allow_nan=False)
    assert History.from_dict(json.loads(text)).to_dict() == d


def test_model_without_bn_has_no_train_mode_accuracy(rings, mlp):
    d = fit(mlp(None), rings, config(eval_every_steps=2), seed=0).to_dict()
    assert d["epochs"]["val_accuracy_train_mode"] is None
    assert all(e["val_accuracy_train_mode"] is None for e in d["evals"])


def test_epoch_end_evaluations_repeat_the_epoch_numbers(rings, mlp):
    history = fit(mlp("torch"), rings, config(epochs=2, eval_every_steps=2), seed=0)
    ends = [e for e in history.evals if e.step % history.steps_per_epoch == 0]
    assert [e.val_loss for e in ends] == list(history.val_loss)
    assert [e.val_accuracy for e in ends] == list(history.val_accuracy)
    assert [e.val_accuracy_train_mode for e in ends] == list(history.val_accuracy_train_mode)


# ------------------------------------------------------------ what numbers mean
def test_epoch_loss_is_the_batch_size_weighted_mean(make_rings, mlp):
    # With a vanishing learning rate the weights stay put, so the epoch's running loss
    # must equal the loss of the whole training set; 100 = 32 + 32 + 32 + 4 tells a
    # weighted mean from an unweighted one.
    data = make_rings(n_train=100)
    model = mlp(None)
    expected = evaluate(model, data.x_train, data.y_train, loss="binary_crossentropy")
    history = fit(model, data, config(epochs=1, optimizer_args={"learning_rate": 1e-30}), seed=0)
    assert history.steps_per_epoch == 4
    assert history.loss[0] == pytest.approx(expected["loss"], rel=1e-6)
    assert history.accuracy[0] == expected["accuracy"]


@pytest.mark.parametrize("bn", [None, "bnlab"])
def test_initial_loss_is_the_first_batch_loss_before_any_update(rings, mlp, bn):
    # Without shuffling the first batch is x_train[:32]; the loss is measured in training
    # mode (batch statistics) on the initial weights, like every later training loss.
    reference = mlp(bn, seed=4).train()
    with torch.no_grad():
        out = reference(torch.as_tensor(rings.x_train[:32]))
    expected = binary_crossentropy(torch.as_tensor(rings.y_train[:32]), out).item()
    history = fit(mlp(bn, seed=4), rings, config(epochs=1, shuffle=False), seed=0)
    assert history.initial_loss == pytest.approx(expected, rel=1e-6)
    assert history.initial_loss != pytest.approx(history.loss[0], rel=1e-3)  # the weights moved


def test_chance_accuracy_is_the_test_share_of_the_most_frequent_class(make_rings, make_blobs, mlp):
    rings = make_rings()
    assert (int(rings.y_test.sum()), len(rings.y_test)) == (22, 40)  # the fixture's draw
    assert fit(mlp(None), rings, config(epochs=1), seed=0).chance_accuracy == 22 / 40
    blobs = make_blobs(n_test=30, classes=3)
    counts = np.bincount(blobs.y_test, minlength=3)
    model = mlp(None, inputs=4, outputs=3)
    history = fit(model, blobs, config(epochs=1, loss="sparse_categorical_crossentropy"), seed=0)
    assert history.chance_accuracy == counts.max() / 30
    assert history.to_dict()["chance_accuracy"] == counts.max() / 30


def test_val_metrics_are_inference_mode_on_the_test_set(rings, mlp):
    model = mlp("bnlab")
    history = fit(model, rings, config(epochs=2), seed=0)
    model.eval()
    with torch.no_grad():
        p = model(torch.from_numpy(rings.x_test))
    y = torch.from_numpy(rings.y_test)
    loss = binary_crossentropy(y, p).item()
    accuracy = ((p[:, 0] > 0.5).long() == y).double().mean().item()
    assert history.val_loss[-1] == pytest.approx(loss, rel=1e-6)
    assert history.val_accuracy[-1] == pytest.approx(accuracy)
    assert history.final.test_loss == pytest.approx(loss, rel=1e-6)
    assert history.final.test_accuracy == pytest.approx(accuracy)
    with torch.no_grad():
        p_train = model(torch.from_numpy(rings.x_train))
    assert history.final.train_loss == pytest.approx(
        binary_crossentropy(torch.from_numpy(rings.y_train), p_train).item(), rel=1e-6
    )


@pytest.mark.parametrize("bn", ["bnlab", "torch"])
def test_train_mode_accuracy_uses_batch_statistics_in_training_batches(make_rings, mlp, bn):
    data = make_rings(n_test=33)  # batches of 16, 16 and a lone sample that is skipped
    model = mlp(bn)
    history = fit(model, data, config(epochs=1, batch_size=16), seed=4)
    # Recompute on a copy in training mode with the same (seeded) order and batch size.
    order = derive_streams(4)[1].permutation(len(data.x_test))
    replica = copy.deepcopy(model).train()
    correct = 0
    with torch.no_grad():
        for start in (0, 16):
            idx = order[start : start + 16]
            p = replica(torch.from_numpy(data.x_test[idx]))
            correct += int(((p[:, 0] > 0.5).long() == torch.from_numpy(data.y_test[idx])).sum())
    assert history.val_accuracy_train_mode[0] == pytest.approx(correct / 32)


@pytest.mark.parametrize("bn", ["bnlab", "torch"])
def test_batch_statistics_changes_no_buffer_and_restores_modes(mlp, bn):
    model = mlp(bn)
    model.train()
    model[2].eval()  # a submodule in a different mode must get it back
    before = state_of(model)
    modes = [m.training for m in model.modules()]
    x = torch.randn(16, 2)
    with torch.no_grad(), batch_statistics(model):
        assert model[1].training and not model[0].training
        inside = model(x)
    assert_same_state(before, state_of(model))
    assert [m.training for m in model.modules()] == modes
    # The output is the batch-statistics output of a training-mode copy.
    replica = copy.deepcopy(model).train()
    with torch.no_grad():
        torch.testing.assert_close(inside, replica(x))


@pytest.mark.parametrize("bn", ["bnlab", "torch"])
def test_evaluations_do_not_perturb_training(rings, mlp, bn):
    # Evaluating after every step (inference and train-mode passes) must leave training
    # exactly as without evaluations: same weights, same moving statistics.
    quiet, busy = mlp(bn), mlp(bn)
    a = fit(quiet, rings, config(epochs=2), seed=1)
    b = fit(busy, rings, config(epochs=2, eval_every_steps=1), seed=1)
    assert_same_state(state_of(quiet), state_of(busy))
    assert a.loss == b.loss and a.final == b.final
    assert len(b.evals) == 2 * b.steps_per_epoch


def test_multiclass_with_each_loss(mlp, make_blobs):
    data = make_blobs()
    for loss in ("categorical_crossentropy", "sparse_categorical_crossentropy", "mse"):
        model = mlp("bnlab", inputs=4, outputs=3)
        history = fit(model, data, config(loss=loss, epochs=3, optimizer="adam", optimizer_args={"learning_rate": 0.05}), seed=0)
        assert history.final.train_accuracy > 0.6, loss
        assert history.loss[-1] < history.loss[0], loss


def test_sequential_model_from_specs_and_keras_probe_names():
    from bnlab.data import load_dataset

    data = load_dataset("circles")
    base = parse_layers(
        [{"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dense", "units": 1, "activation": "sigmoid"}],
        where="test",
    )
    layers = apply_edits(base, [{"insert_after": 0, "layer": {"type": "BatchNormalization"}}], where="test")
    model = build_model(layers, data.input_shape, seed=0)
    cfg = config(epochs=1, probes=(ProbeSpec("batch_normalization", "output", every_steps=5),))
    d = fit(model, data, cfg, seed=0).to_dict()
    assert d["probes"]["batch_normalization.output"]["steps"][:2] == [0, 5]
    with pytest.raises(ValueError, match=r"unknown probe layer 'dense_9'; choose from: dense, batch_normalization, dense_1"):
        fit(model, data, config(probes=(ProbeSpec("dense_9"),)), seed=0)


def test_a_float64_model_trains_in_float64(rings, mlp):
    model = mlp("bnlab", dtype=torch.float64).double()
    history = fit(model, rings, config(epochs=2), seed=0)
    assert model[0].weight.dtype == torch.float64
    assert all(math.isfinite(v) for v in history.loss) and not history.diverged


# ------------------------------------------------------------------ batches
@pytest.mark.parametrize(("bn", "steps"), [("bnlab", 2), ("torch", 2), (None, 3)])
def test_a_trailing_batch_of_one_is_dropped_only_with_bn(make_rings, mlp, bn, steps):
    data = make_rings(n_train=65)
    history = fit(mlp(bn), data, config(epochs=1), seed=0)
    assert history.steps_per_epoch == steps
    assert not history.diverged


def test_a_single_training_sample_with_bn_is_refused(make_rings, mlp):
    data = make_rings(n_train=1)
    with pytest.raises(ValueError, match=r"cannot train on a single sample per batch \(training set of 1, batch_size 32\)"):
        fit(mlp("bnlab"), data, config(), seed=0)


# ------------------------------------------------------------------ probes
def test_probe_percentiles_match_numpy_on_the_training_batches(rings, mlp):
    model = mlp("bnlab")
    seen: dict[str, list[np.ndarray]] = {"linear": [], "relu": []}

    def capture(key):
        def hook(module, inputs, output):
            if module.training:  # training steps only (not the evaluation passes)
                seen[key].append(output.detach().numpy().copy())

        return hook

    model[0].register_forward_hook(capture("linear"))
    model[2].register_forward_hook(capture("relu"))
    probes = (
        ProbeSpec("1", "input", percentiles=(0, 15, 50, 85, 100), every_steps=2),
        ProbeSpec("2", "output", percentiles=(10, 90), every_steps=3),
    )
    history = fit(model, rings, config(epochs=2, probes=probes), seed=0)
    bn_in, relu_out = history.probes["1.input"], history.probes["2.output"]
    assert bn_in.steps == (0, 2, 4) and relu_out.steps == (0, 3)
    for step, row in zip(bn_in.steps, bn_in.values, strict=True):
        np.testing.assert_allclose(row, np.percentile(seen["linear"][step], [0, 15, 50, 85, 100]), rtol=1e-6)
    for step, row in zip(relu_out.steps, relu_out.values, strict=True):
        np.testing.assert_allclose(row, np.percentile(seen["relu"][step], [10, 90]), rtol=1e-6, atol=1e-7)


def test_percentiles_subsample_large_tensors_with_a_fixed_stride():
    x = torch.randn(3 * MAX_PROBE_VALUES + 7, generator=torch.Generator().manual_seed(0))
    stride = math.ceil(x.numel() / MAX_PROBE_VALUES)
    expected = np.percentile(x.numpy()[::stride].astype(np.float64), [15, 50, 85])
    np.testing.assert_allclose(percentiles(x, (15, 50, 85)).numpy(), expected, rtol=1e-12)


# --------------------------------------------------- regularization, constraints
def test_gamma_regularizer_enters_the_loss_and_the_gradient(make_rings, mlp):
    # One full-batch SGD step: gamma moves by -lr * (data gradient + 2 * 0.5 * gamma).
    data = make_rings(n_train=32)
    cfg = config(epochs=1, batch_size=32, shuffle=False, optimizer_args={"learning_rate": 0.5})
    model = mlp("bnlab", gamma_regularizer="l2(0.5)", gamma_initializer="constant(1.5)")
    reference = copy.deepcopy(model).train()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    data_loss = binary_crossentropy(y, reference(x))
    penalty = 0.5 * (reference[1].gamma**2).sum()
    (grad_data,) = torch.autograd.grad(data_loss, reference[1].gamma)
    gamma0 = reference[1].gamma.detach().clone()

    history = fit(model, data, cfg, seed=0)
    expected = gamma0 - 0.5 * (grad_data + 1.0 * gamma0)
    torch.testing.assert_close(model[1].gamma.detach(), expected, rtol=1e-5, atol=1e-6)
    assert history.loss[0] == pytest.approx((data_loss + penalty).item(), rel=1e-6)


def test_non_neg_constraint_keeps_gamma_non_negative(rings, mlp):
    model = mlp("bnlab", gamma_constraint="non_neg", gamma_initializer="constant(-0.5)")
    fit(model, rings, config(epochs=1), seed=0)
    gamma = model[1].gamma.detach()
    assert (gamma >= 0).all()
    assert (gamma == 0).any()  # projected, not merely lucky


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize(
    ("bn", "bn_args"),
    [(None, {}), ("bnlab", {}), ("bnlab", {"on_nonfinite": "raise"}), ("torch", {})],
    ids=["plain", "bnlab", "bnlab-raise", "torch"],
)
def test_divergence_stops_cleanly_with_nan_for_the_rest(rings, mlp, bn, bn_args):
    cfg = config(epochs=4, eval_every_steps=2, optimizer_args={"learning_rate": 1e30}, loss="mse",
                 probes=(ProbeSpec("0", every_steps=1),))
    logs: list[int] = []
    model = mlp(bn, **bn_args)
    model[-1] = nn.Identity()  # unbounded outputs so that the loss can overflow
    history = fit(model, rings, cfg, seed=0, on_epoch_end=lambda epoch, _: logs.append(epoch))
    assert history.diverged
    d = history.to_dict()
    json.dumps(d, allow_nan=False)
    assert len(d["epochs"]["loss"]) == 4 and d["epochs"]["loss"][-1] is None
    assert d["final"] == {"train_loss": None, "train_accuracy": None, "test_loss": None, "test_accuracy": None}
    assert [e["step"] for e in d["evals"]] == [2, 3, 4, 6, 8, 9, 10, 12]
    assert d["evals"][-1]["val_loss"] is None
    assert d["probes"]["0.output"]["steps"] == list(range(12))
    assert d["probes"]["0.output"]["values"][-1] == [None, None, None]
    assert d["initial_loss"] is not None and math.isfinite(d["initial_loss"])  # before the update
    first_nan = d["epochs"]["loss"].index(None)
    assert all(v is None for v in d["epochs"]["loss"][first_nan:])
    assert logs == list(range(first_nan + 1))  # called up to the epoch that diverged


# --------------------------------------------------------------- callbacks, io
def test_on_epoch_end_gets_the_epoch_logs_and_progress_is_silent_off_a_terminal(rings, mlp, capsys):
    calls = []
    history = fit(mlp("torch"), rings, config(epochs=2), seed=0, progress=True,
                  on_epoch_end=lambda epoch, logs: calls.append((epoch, logs)))
    assert [c[0] for c in calls] == [0, 1]
    assert calls[1][1] == {
        "loss": history.loss[1],
        "accuracy": history.accuracy[1],
        "val_loss": history.val_loss[1],
        "val_accuracy": history.val_accuracy[1],
        "val_accuracy_train_mode": history.val_accuracy_train_mode[1],
    }
    assert capsys.readouterr().out == ""


def test_data_that_do_not_fit_the_model_fail_with_one_line(mlp, make_rings, make_blobs):
    data = make_blobs()  # 4 features, 3 classes
    with pytest.raises(ValueError, match=r"cannot take the training data \(samples of shape \(4,\)\): mat1 and mat2"):
        fit(mlp(None), data, config(), seed=0)  # Linear(2, ...) on 4 features
    with pytest.raises(ValueError, match=r"one output unit \(binary\) but the targets hold class ids up to 2"):
        fit(mlp(None, inputs=4), data, config(), seed=0)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer; got 1.5"):
        fit(mlp(None), make_rings(), config(), seed=1.5)


@pytest.mark.parametrize(
    "loss", ["binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy", "mse"]
)
@pytest.mark.parametrize("cause", ["lr-1e30", "nan-pixel"])
def test_every_loss_turns_nan_or_inf_into_a_diverged_run(make_rings, mlp, loss, cause):
    # binary_crossentropy raised "all elements of input should be between 0 and 1" here
    data = make_rings()
    lr = 0.1
    if cause == "nan-pixel":
        data.x_train[5, 0] = np.nan
    else:
        lr = 1e30
    outputs = 1 if loss in ("binary_crossentropy", "mse") else 2
    history = fit(mlp(outputs=outputs), data, config(loss=loss, optimizer_args={"learning_rate": lr}), seed=0)
    assert history.diverged
    assert history.to_dict()["final"]["test_accuracy"] is None


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_return_nan_for_nan_predictions_instead_of_raising(loss):
    p = torch.tensor([[0.2, 0.8], [float("nan"), 0.5]])
    y = torch.tensor([1, 0])
    if loss == "binary_crossentropy":
        p, y = p[:, :1], y
    value = LOSSES[loss](y, p)
    assert torch.isnan(value)
