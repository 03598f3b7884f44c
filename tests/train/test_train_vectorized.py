"""fit_replicas: every replica's history equals fit's run of the same seed (float32, 1e-5)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from tests.conftest import tolerance_for

from bnlab.data import Dataset
from bnlab.models import build_model
from bnlab.train import ProbeSpec, TrainConfig, fit, vectorized
from bnlab.train.vectorized import fit_replicas, multiply_adds, stack_bytes, vectorization_blocker

SEEDS = [0, 3, 11]


def _dataset(x: np.ndarray, y: np.ndarray, n_train: int, classes: int) -> Dataset:
    return Dataset(
        name="synthetic",
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train:],
        y_test=y[n_train:],
        num_classes=classes,
        class_names=tuple(str(c) for c in range(classes)),
    )


def rings(n: int = 136, n_train: int = 96) -> Dataset:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = np.where(y == 1, 0.5, 1.0) + rng.normal(0, 0.1, size=n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return _dataset(x, y.astype(np.int64), n_train, 2)


def sequences(n: int = 60, n_train: int = 40) -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 5, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    return _dataset(x, y, n_train, 2)


def images(n: int = 48, n_train: int = 32) -> Dataset:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) + y[:, None, None, None]
    return _dataset(x.astype(np.float32), y.astype(np.int64), n_train, 3)


MLP = [{"type": "Dense", "units": 8, "activation": "relu"}]
OUT1 = [{"type": "Dense", "units": 1, "activation": "sigmoid"}]
BN = {"type": "BatchNormalization"}

CASES: dict[str, dict[str, Any]] = {
    "sgd-no-bn": dict(layers=MLP + OUT1, optimizer={"name": "sgd", "learning_rate": 0.1}),
    "sgd-momentum-bn": dict(
        layers=[*MLP, BN, *OUT1], optimizer={"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}
    ),
    "sgd-nesterov-bn-dropout": dict(
        layers=[*MLP, BN, {"type": "Dropout", "rate": 0.3}, *OUT1],
        optimizer={"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    "adam-renorm": dict(
        layers=[{**BN, "renorm": True, "renorm_clipping": {"rmax": 2.0, "dmax": 1.0}}, *MLP, *OUT1],
        optimizer={"name": "adam", "learning_rate": 0.01},
    ),
    "rmsprop-ghost-batches": dict(
        layers=[*MLP, {**BN, "virtual_batch_size": 8}, *OUT1],
        optimizer={"name": "rmsprop", "learning_rate": 0.005, "momentum": 0.5, "centered": True},
    ),
    # No bias before BN under Adam: its gradient is zero up to rounding, which Adam's
    # normalization would turn into steps of the learning rate's size in any direction.
    "adam-cumulative-bn-act-dropout": dict(
        layers=[{"type": "Dense", "units": 8, "use_bias": False}, {"type": "BatchNormAct", "activation": "relu", "momentum": None}, {"type": "Dropout", "rate": 0.5}, *OUT1],
        optimizer={"name": "adam", "learning_rate": 0.01, "amsgrad": True},
    ),
    "lstm-adam": dict(
        layers=[{"type": "LSTM", "units": 6}, BN, *OUT1],
        optimizer={"name": "adam", "learning_rate": 0.01},
        data=sequences,
    ),
    "gru-spatial-dropout-rmsprop": dict(
        layers=[{"type": "SpatialDropout1D", "rate": 0.3}, {"type": "GRU", "units": 5}, *OUT1],
        optimizer={"name": "rmsprop", "learning_rate": 0.01},
        data=sequences,
    ),
    "conv2d-bn-sgd": dict(
        layers=[
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same"},
            BN,
            {"type": "Activation", "activation": "relu"},
            {"type": "MaxPooling2D", "pool_size": 2},
            {"type": "Dropout", "rate": 0.2},
            {"type": "Flatten"},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ],
        optimizer={"name": "sgd", "learning_rate": 0.05, "momentum": 0.9},
        loss="sparse_categorical_crossentropy",
        data=images,
    ),
    "conv2d-drop-connect-adam": dict(  # EfficientNet's per-sample dropout, then per channel
        layers=[
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "use_bias": False},
            BN,
            {"type": "Dropout", "rate": 0.3, "noise_shape": [None, 1, 1, 1]},
            {"type": "Dropout", "rate": 0.2, "noise_shape": [None, 1, 1, None]},
            {"type": "Flatten"},
            {"type": "Dense", "units": 3, "activation": "softmax"},
        ],
        optimizer={"name": "adam", "learning_rate": 0.01},
        loss="sparse_categorical_crossentropy",
        data=images,
    ),
}


def _config(case: dict[str, Any], **extra: Any) -> TrainConfig:
    optimizer = dict(case["optimizer"])
    return TrainConfig(
        optimizer=optimizer.pop("name"),
        optimizer_args=optimizer,
        loss=case.get("loss", "binary_crossentropy"),
        epochs=extra.pop("epochs", 3),
        batch_size=extra.pop("batch_size", 16),
        **extra,
    )


def _models(case: dict[str, Any], data: Dataset, seeds: list[int]) -> list[torch.nn.Module]:
    return [build_model(case["layers"], data.input_shape, seed=s) for s in seeds]


def _assert_same(actual: Any, expected: Any, where: str = "history") -> None:
    """Equal structure; numbers equal to float32's 1e-5 (NaN == NaN)."""
    tol = tolerance_for(torch.float32)
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        a = math.nan if actual is None else actual
        if math.isnan(expected):
            assert math.isnan(a), f"{where}: {a} != nan"
        else:
            assert abs(a - expected) <= tol["atol"] + tol["rtol"] * abs(expected), f"{where}: {a} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _check_against_fit(case: dict[str, Any], config: TrainConfig, seeds: list[int] = SEEDS) -> list[Any]:
    data = case.get("data", rings)()
    expected_models = _models(case, data, seeds)
    expected = [fit(m, data, config, seed=s) for m, s in zip(expected_models, seeds, strict=True)]
    models = _models(case, data, seeds)
    actual = fit_replicas(models, data, config, seeds=seeds)
    for seed, a, e in zip(seeds, actual, expected, strict=True):
        _assert_same(a.to_dict(), e.to_dict(), f"seed {seed}")
    # Final weights and statistics too, at 1e-3: a ReLU input within rounding of 0 can
    # switch a unit's gradient on in one computation and off in the other, a difference the
    # histories above (1e-5) have not reached yet after a few epochs.
    for m, e in zip(models, expected_models, strict=True):
        assert not m.training
        for (name, value), (_, ref) in zip(m.state_dict().items(), e.state_dict().items(), strict=True):
            torch.testing.assert_close(value, ref, rtol=1e-3, atol=1e-3, equal_nan=True, msg=name)
    return actual


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_each_replica_equals_its_sequential_run(name: str) -> None:
    case = CASES[name]
    histories = _check_against_fit(case, _config(case))
    # The replicas really differ (own init, order, masks): the stack is not one run three times.
    assert len({h.loss[-1] for h in histories}) == len(SEEDS)


def test_evaluations_every_steps_probes_and_no_shuffle_equal_fit() -> None:
    case = CASES["sgd-nesterov-bn-dropout"]
    probes = (
        ProbeSpec("batch_normalization", where="input", every_steps=2),
        ProbeSpec("dense", percentiles=(0, 50, 100), every_steps=3),
    )
    histories = _check_against_fit(case, _config(case, eval_every_steps=4, probes=probes))
    assert len(histories[0].evals) > 3 and histories[0].probes["dense.output"].steps[:2] == (0, 3)
    _check_against_fit(case, _config(case, shuffle=False, batch_size=13))


def test_evaluation_passes_of_any_size_give_the_same_history() -> None:
    """Evaluation passes of one batch each (as a big stack makes them) and of three."""
    case = CASES["sgd-nesterov-bn-dropout"]
    data = rings(n=200)  # 104 test samples: 6 full batches of 16 and 8 more
    config = _config(case, epochs=2)
    one_pass = fit_replicas(_models(case, data, SEEDS), data, config, seeds=SEEDS)
    for chunk in (16, 48):
        split = fit_replicas(_models(case, data, SEEDS), data, config, seeds=SEEDS, eval_chunk=chunk)
        for a, e in zip(split, one_pass, strict=True):
            _assert_same(a.to_dict(), e.to_dict())


def test_a_diverging_replica_stops_alone() -> None:
    # A linear output, the squared error and a large learning rate: some seeds blow up,
    # the others train on, each stopped at the evaluation that finds its loss non-finite.
    case = dict(
        layers=[{"type": "Dense", "units": 16, "activation": "relu", "kernel_initializer": "he_uniform"},
                {"type": "Dense", "units": 1}],
        optimizer={"name": "sgd", "learning_rate": 4.0, "momentum": 0.9},
        loss="mse",
        data=_float_targets,
    )
    config = _config(case, epochs=4, eval_every_steps=3, probes=(ProbeSpec("dense", every_steps=2),))
    histories = _check_against_fit(case, config, list(range(8)))
    diverged = [h.diverged for h in histories]
    assert any(diverged) and not all(diverged), diverged


def test_diverging_bn_replicas_count_the_batches_they_folded_in() -> None:
    """BN replicas that blow up: a batch with non-finite statistics is skipped and, as in
    a run alone, not counted (the stack then normalizes replica by replica); histories
    equal, and each model's batch count is its count alone."""
    case = dict(
        layers=[{"type": "Dense", "units": 16, "activation": "relu", "kernel_initializer": "he_uniform"},
                {**BN, "momentum": 0.5}, {"type": "Dense", "units": 1}],
        optimizer={"name": "sgd", "learning_rate": 8.0, "momentum": 0.9},
        loss="mse",
        data=_float_targets,
    )
    config = _config(case, epochs=4, eval_every_steps=3)
    data, seeds = _float_targets(), list(range(8))
    alone = _models(case, data, seeds)
    expected = [fit(m, data, config, seed=s) for m, s in zip(alone, seeds, strict=True)]
    models = _models(case, data, seeds)
    actual = fit_replicas(models, data, config, seeds=seeds)
    for seed, a, e in zip(seeds, actual, expected, strict=True):
        _assert_same(a.to_dict(), e.to_dict(), f"seed {seed}")
    counts = [m.layers["batch_normalization"].num_batches_tracked.item() for m in models]
    assert counts == [m.layers["batch_normalization"].num_batches_tracked.item() for m in alone]
    assert all(h.diverged for h in actual) and len(set(counts)) > 1  # they stopped apart


def _stacked_and_alone(
    layers: list[list[dict[str, Any]]], seeds: list[int], data: Any, config: TrainConfig
) -> tuple[list[Any], list[Any], list[Any]]:
    """Models of ``layers[r]`` with ``seeds[r]`` trained in one stack and each alone; asserts
    that every history is the one alone. Returns the stacked models, the models trained
    alone and the stack's histories."""
    alone = [build_model(spec, data.input_shape, seed=s) for spec, s in zip(layers, seeds, strict=True)]
    expected = [fit(m, data, config, seed=s) for m, s in zip(alone, seeds, strict=True)]
    models = [build_model(spec, data.input_shape, seed=s) for spec, s in zip(layers, seeds, strict=True)]
    actual = fit_replicas(models, data, config, seeds=seeds)
    for a, e in zip(actual, expected, strict=True):
        _assert_same(a.to_dict(), e.to_dict())
    return models, alone, actual


@pytest.mark.parametrize("poisoned", [False, True], ids=["training", "non-finite-batch"])
def test_replicas_may_differ_in_bn_momentum(poisoned: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each replica folds its batches in with its own momentum, as it would alone. With a
    NaN training sample, each replica meets it at its own step (its own shuffle): those
    steps take the one-replica-at-a-time path, each replica with its own layer."""
    momenta = [0.99, 0.0, 0.5, 0.9]
    seeds = [0, 1, 2, 3]
    layers = [[*MLP, {**BN, "momentum": m}, *OUT1] for m in momenta]
    data = rings()
    if poisoned:
        data.x_train[40] = np.nan
    one_by_one = []
    original = vectorized._Stack._bn_one_by_one

    def counted(*args: Any, **kwargs: Any) -> Any:
        one_by_one.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(vectorized._Stack, "_bn_one_by_one", counted)
    config = TrainConfig(optimizer="sgd", optimizer_args={"learning_rate": 0.05, "momentum": 0.9},
                         loss="binary_crossentropy", epochs=3, batch_size=16, eval_every_steps=4)
    models, alone, actual = _stacked_and_alone(layers, seeds, data, config)
    assert bool(one_by_one) == poisoned
    if poisoned:
        assert all(h.diverged for h in actual)
        return
    for m, e in zip(models, alone, strict=True):
        for (name, value), (_, ref) in zip(m.state_dict().items(), e.state_dict().items(), strict=True):
            torch.testing.assert_close(value, ref, rtol=1e-3, atol=1e-3, msg=name)
    # momentum 0 keeps the last batch's statistics; 0.99 has barely left its start (0)
    stats = [m.layers["batch_normalization"].moving_mean.abs().max() for m in models]
    assert stats[0] < stats[1]


@pytest.mark.parametrize(
    "optimizer",
    [
        {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        {"name": "adam", "learning_rate": 0.01, "amsgrad": True},
        {"name": "rmsprop", "learning_rate": 0.005, "momentum": 0.5, "centered": True},
    ],
    ids=["sgd", "adam", "rmsprop"],
)
def test_replicas_may_differ_in_bn_center_and_scale(optimizer: dict[str, Any]) -> None:
    """A replica without BN's offset or scale runs with a constant 0 or 1 in the stack,
    which no optimizer moves: each equals its run alone."""
    affine = [(True, True), (False, False), (True, False), (False, True)]
    seeds = [0, 1, 2, 3]
    layers = [[*MLP, {**BN, "center": c, "scale": g, "momentum": 0.9}, *OUT1] for c, g in affine]
    data = rings()
    config = TrainConfig(optimizer=optimizer["name"], optimizer_args={k: v for k, v in optimizer.items() if k != "name"},
                         loss="binary_crossentropy", epochs=3, batch_size=16, eval_every_steps=4)
    models, alone, _ = _stacked_and_alone(layers, seeds, data, config)
    for m, e in zip(models, alone, strict=True):
        assert m.state_dict().keys() == e.state_dict().keys()
        for (name, value), (_, ref) in zip(m.state_dict().items(), e.state_dict().items(), strict=True):
            torch.testing.assert_close(value, ref, rtol=1e-3, atol=1e-3, msg=name)
    # the learned offsets and scales moved; the bare replicas have none
    bn = [m.layers["batch_normalization"] for m in models]
    assert bn[0].beta.abs().max() > 1e-3 and (bn[0].gamma - 1).abs().max() > 1e-3
    assert bn[1].gamma is None and bn[1].beta is None


def test_only_a_plain_bn_may_differ_between_replicas() -> None:
    data = rings()
    renorm = [[*MLP, {**BN, "renorm": True, "momentum": m}, *OUT1] for m in (0.9, 0.5)]
    models = [build_model(spec, data.input_shape, seed=0) for spec in renorm]
    with pytest.raises(ValueError, match="model 1 differs from model 0"):
        fit_replicas(models, data, _config(CASES["sgd-no-bn"]), seeds=[0, 1])
    renorm_bare = [[*MLP, {**BN, "renorm": True, "center": c}, *OUT1] for c in (True, False)]
    models = [build_model(spec, data.input_shape, seed=0) for spec in renorm_bare]
    with pytest.raises(ValueError, match="model 1 differs from model 0"):
        fit_replicas(models, data, _config(CASES["sgd-no-bn"]), seeds=[0, 1])
    epsilons = [[*MLP, {**BN, "epsilon": e}, *OUT1] for e in (1e-3, 1e-5)]
    models = [build_model(spec, data.input_shape, seed=0) for spec in epsilons]
    with pytest.raises(ValueError, match="model 1 differs from model 0"):
        fit_replicas(models, data, _config(CASES["sgd-no-bn"]), seeds=[0, 1])


def _float_targets() -> SimpleNamespace:
    d = rings()
    return SimpleNamespace(
        x_train=d.x_train,
        x_test=d.x_test,
        y_train=(3.0 * d.y_train[:, None]).astype(np.float32),
        y_test=(3.0 * d.y_test[:, None]).astype(np.float32),
        input_shape=d.input_shape,
    )


def test_single_replica_and_one_model_per_seed_checks() -> None:
    case = CASES["sgd-momentum-bn"]
    _check_against_fit(case, _config(case, epochs=2), seeds=[5])
    data = rings()
    models = _models(case, data, [0, 1])
    with pytest.raises(ValueError, match="got 2 models but 1 seeds"):
        fit_replicas(models, data, _config(case), seeds=[0])
    other = build_model(MLP + OUT1, data.input_shape, seed=1)
    with pytest.raises(ValueError, match="model 1 differs from model 0"):
        fit_replicas([models[0], other], data, _config(case), seeds=[0, 1])
    with pytest.raises(ValueError, match="seed must be a non-negative integer; got -1"):
        fit_replicas(models, data, _config(case), seeds=[0, -1])


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        ({**BN, "synchronized": True}, "synchronized"),
        ({**BN, "on_nonfinite": "raise"}, "on_nonfinite='raise'"),
        ({**BN, "gamma_regularizer": "l2"}, "regularizers and constraints"),
        ({**BN, "trainable": False}, "frozen BN layer"),
    ],
    ids=["synchronized", "raise", "regularizer", "frozen"],
)
def test_blockers_name_what_cannot_be_stacked(layer: dict[str, Any], reason: str) -> None:
    data = rings()
    model = build_model([*MLP, layer, *OUT1], data.input_shape, seed=0)
    config = _config(CASES["sgd-no-bn"])
    assert reason in (vectorization_blocker(model, config) or "")
    with pytest.raises(ValueError, match="cannot stack this model"):
        fit_replicas([model], data, config, seeds=[0])
    assert vectorization_blocker(torch.nn.Sequential(torch.nn.Linear(2, 1)), config) is not None


def test_size_estimates() -> None:
    data = rings()
    model = build_model(MLP + OUT1, data.input_shape, seed=0)
    assert multiply_adds(model) == 2 * 8 + 8 * 1
    config = _config(CASES["sgd-no-bn"])
    one, ten = stack_bytes(model, config, 1), stack_bytes(model, config, 10)
    assert 0 < one < ten
    conv = build_model(CASES["conv2d-bn-sgd"]["layers"], (8, 8, 1), seed=0)
    assert multiply_adds(conv) == 8 * 8 * 4 * 1 * 9 + 4 * 4 * 4 * 3
