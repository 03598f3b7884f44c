"""TrainConfig/ProbeSpec validation and round trips; History to_dict/from_dict."""

from __future__ import annotations

import json
import math

import pytest

from bnlab.train import EvalRecord, FinalMetrics, History, ProbeSpec, ProbeTrace, TrainConfig

NAN = float("nan")


def _config(**overrides):
    base = {"optimizer": "adam", "optimizer_args": {}, "loss": "binary_crossentropy", "epochs": 1, "batch_size": 8}
    return TrainConfig(**{**base, **overrides})


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"epochs": 0}, ValueError, r"TrainConfig: epochs must be >= 1; got 0"),
        ({"epochs": 2.0}, TypeError, r"TrainConfig: epochs must be an integer >= 1; got 2.0"),
        ({"batch_size": True}, TypeError, r"batch_size must be an integer >= 1; got True"),
        ({"eval_every_steps": 0}, ValueError, r"eval_every_steps must be >= 1; got 0"),
        ({"shuffle": 1}, TypeError, r"shuffle must be true or false; got 1"),
        ({"optimizer": "nadam"}, ValueError, r"unknown optimizer 'nadam'; choose from: adam, rmsprop, sgd"),
        ({"optimizer_args": {"lr": 1}}, ValueError, r"adam: unknown argument\(s\) 'lr'; allowed: learning_rate, "),
        ({"optimizer_args": [1]}, TypeError, r"optimizer_args must be a mapping .* got \[1\]"),
        ({"loss": "hinge"}, ValueError, r"unknown loss 'hinge'; choose from: "),
        ({"probes": ("dense",)}, TypeError, r"probes must be ProbeSpec objects; got 'dense'"),
        ({"probes": (ProbeSpec("d"), ProbeSpec("d", every_steps=2))}, ValueError, r"duplicated: d.output"),
    ],
    ids=["epochs-0", "epochs-float", "batch-bool", "eval-0", "shuffle-int", "optimizer", "opt-arg",
         "opt-args-type", "loss", "probe-type", "probe-dup"],
)
def test_train_config_rejects_bad_values_naming_them(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        _config(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"layer": ""}, TypeError, r"layer must be a non-empty layer name; got ''"),
        ({"layer": "d", "where": "inside"}, ValueError, r"where must be 'input' or 'output'; got 'inside'"),
        ({"layer": "d", "percentiles": (50, 101)}, ValueError, r"percentiles must be numbers in \[0, 100\]; got 101"),
        ({"layer": "d", "percentiles": ()}, ValueError, r"at least one value"),
        ({"layer": "d", "every_steps": 0}, ValueError, r"every_steps must be >= 1; got 0"),
    ],
    ids=["layer", "where", "pct-high", "pct-empty", "every"],
)
def test_probe_spec_rejects_bad_values(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ProbeSpec(**kwargs)


def test_configs_round_trip_through_dicts_and_reject_unknown_keys():
    cfg = _config(optimizer="sgd", optimizer_args={"momentum": 0.9}, eval_every_steps=5,
                  probes=(ProbeSpec("bn", "input", (5, 95), 10),))
    raw = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(raw) == cfg
    assert raw["probes"] == [{"layer": "bn", "where": "input", "percentiles": [5, 95], "every_steps": 10}]
    with pytest.raises(ValueError, match=r"TrainConfig: unknown key\(s\) 'lr'; allowed: optimizer, "):
        TrainConfig.from_dict({**raw, "lr": 0.1})
    with pytest.raises(ValueError, match=r"ProbeSpec: unknown key\(s\) 'step'; allowed: layer, where"):
        ProbeSpec.from_dict({"layer": "bn", "step": 3})


def test_config_copies_the_optimizer_args():
    args = {"learning_rate": 0.1}
    cfg = _config(optimizer_args=args)
    args["learning_rate"] = 5.0
    assert cfg.optimizer_args == {"learning_rate": 0.1}


def _history(*, diverged=False, train_mode=True):
    tm = (0.5, NAN) if train_mode else None
    return History(
        loss=(0.7, NAN) if diverged else (0.7, 0.6),
        accuracy=(0.5, 0.75),
        val_loss=(0.69, math.inf),
        val_accuracy=(0.5, 0.25),
        val_accuracy_train_mode=tm,
        evals=(
            EvalRecord(3, 1.0, 0.69, 0.5, 0.5 if train_mode else None),
            EvalRecord(6, 2.0, NAN, 0.25, NAN if train_mode else None),
        ),
        probes={"bn.output": ProbeTrace((15, 50, 85), (0, 5), ((-1.0, 0.0, 1.0), (NAN, 0.5, 2.0)))},
        final=FinalMetrics(0.6, 0.75, NAN, 0.25),
        diverged=diverged,
        steps_per_epoch=3,
        initial_loss=0.75,
        chance_accuracy=0.5,
    )


@pytest.mark.parametrize("train_mode", [True, False])
def test_history_dict_round_trip_with_non_finite_numbers_as_null(train_mode):
    history = _history(diverged=True, train_mode=train_mode)
    d = history.to_dict()
    text = json.dumps(d, allow_nan=False)  # no NaN/Infinity tokens in the JSON
    assert d["epochs"]["loss"] == [0.7, None]
    assert d["epochs"]["val_loss"] == [0.69, None]
    assert d["epochs"]["val_accuracy_train_mode"] == ([0.5, None] if train_mode else None)
    assert d["evals"][1] == {"step": 6, "epoch": 2.0, "val_loss": None, "val_accuracy": 0.25,
                             "val_accuracy_train_mode": None}
    assert d["probes"]["bn.output"] == {"percentiles": [15, 50, 85], "steps": [0, 5],
                                        "values": [[-1.0, 0.0, 1.0], [None, 0.5, 2.0]]}
    assert d["final"] == {"train_loss": 0.6, "train_accuracy": 0.75, "test_loss": None, "test_accuracy": 0.25}
    back = History.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert math.isnan(back.loss[1]) and math.isnan(back.final.test_loss)
    assert (back.evals[1].val_accuracy_train_mode is None) == (not train_mode)
    assert back.epochs == 2


def test_history_from_dict_reads_records_without_initial_loss_and_chance_accuracy_as_unknown():
    d = _history().to_dict()
    assert (d["initial_loss"], d["chance_accuracy"]) == (0.75, 0.5)
    del d["initial_loss"], d["chance_accuracy"]  # a record written before they existed
    back = History.from_dict(d)
    assert math.isnan(back.initial_loss) and math.isnan(back.chance_accuracy)
    assert back.final.to_dict() == d["final"]


def test_history_from_dict_names_missing_and_unknown_keys():
    d = _history().to_dict()
    del d["final"]["test_loss"]
    with pytest.raises(ValueError, match=r"'final' must have keys .* missing \['test_loss'\], unknown \[\]"):
        History.from_dict(d)
    d = _history().to_dict()
    d["extra"] = 1
    with pytest.raises(ValueError, match=r"the history must have keys .*unknown \['extra'\]"):
        History.from_dict(d)
    d = _history().to_dict()
    d["epochs"]["loss"] = [0.7, "x"]
    with pytest.raises(TypeError, match=r"epochs.loss must be a number or null; got 'x'"):
        History.from_dict(d)
