"""Experiment files: parsing, every validation error, grid expansion, edits, overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bnlab.data import DatasetError
from bnlab.lab import (
    Experiment,
    LabError,
    PublishedRun,
    Variant,
    list_experiments,
    load_experiment,
    parse_experiment,
)
from bnlab.models import SpecError

BASE: dict[str, Any] = {
    "name": "tiny",
    "description": "a small study",
    "seeds": 3,
    "data": {"name": "circles", "n_samples": 200, "train_size": 100},
    "model": {
        "layers": [
            {"type": "Dense", "units": 8, "activation": "relu"},
            {"type": "Dense", "units": 1, "activation": "sigmoid"},
        ]
    },
    "train": {
        "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        "loss": "binary_crossentropy",
        "epochs": 2,
    },
    "variants": {
        "base": {},
        "bn": {"edits": [{"insert_after": "dense", "layer": {"type": "BatchNormalization"}}]},
    },
}


def doc(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-key changes; a value of ``DELETE`` removes the key."""
    d = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = d
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
    return d


DELETE = object()


def parse(d: dict[str, Any]) -> Experiment:
    return parse_experiment(d, source="tiny.toml")


# --------------------------------------------------------------------------- bundled


def test_bundled_circles_matches_the_study() -> None:
    assert "circles" in [info.name for info in list_experiments()]
    exp = load_experiment("circles")
    assert exp.source == "circles.toml"
    assert exp.seeds == tuple(range(10))
    assert [v.name for v in exp.variants] == [
        "baseline",
        "bn_after",
        "bn_before",
        "no_beta_gamma",
        "no_momentum",
        "input_bn",
    ]
    by_name = {v.name: v for v in exp.variants}
    base = by_name["baseline"]
    assert base.data == {
        "name": "circles",
        "n_samples": 1000,
        "noise": 0.1,
        "factor": 0.8,
        "random_state": 1,
        "train_size": 500,
    }
    assert [s.to_dict() for s in base.layers] == [
        {"type": "Dense", "units": 50, "activation": "relu", "kernel_initializer": "he_uniform"},
        {"type": "Dense", "units": 1, "activation": "sigmoid"},
    ]
    assert base.train["optimizer"] == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9}
    assert (base.train["epochs"], base.train["batch_size"]) == (100, 32)
    assert base.train["loss"] == "binary_crossentropy"
    types = {name: [s.type for s in v.layers] for name, v in by_name.items()}
    assert types["bn_after"] == ["Dense", "BatchNormalization", "Dense"]
    assert types["bn_before"] == ["Dense", "BatchNormalization", "Activation", "Dense"]
    assert by_name["bn_before"].layers[0].args["activation"] == "linear"
    assert by_name["bn_before"].layers[2].args["activation"] == "relu"
    assert types["input_bn"] == ["BatchNormalization", "Dense", "Dense"]
    assert dict(by_name["no_beta_gamma"].layers[1].args) == {"center": False, "scale": False}
    assert dict(by_name["no_momentum"].layers[1].args) == {"momentum": 0.0}
    assert exp.report.threshold_metric == "val_accuracy"
    assert exp.report.threshold == 0.8
    assert exp.report.comparisons[0] == ("bn_after", "baseline")
    assert len({v.config_hash for v in exp.variants}) == 6


def test_unknown_bundled_name_lists_the_bundled_ones() -> None:
    with pytest.raises(LabError, match=r"unknown experiment 'circlez'; bundled experiments: .*circles"):
        load_experiment("circlez")


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(LabError, match=r"nope\.toml.*does not exist"):
        load_experiment(missing)


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nseeds = = 3\n')
    with pytest.raises(LabError, match=r"broken\.toml: not valid TOML: .*line 2"):
        load_experiment(path)


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    src = Path(list_experiments()[0].path)
    exp = load_experiment(src, overrides={"train.batch_size": 64, "seeds": 2})
    assert exp.seeds == (0, 1)
    assert all(v.train["batch_size"] == 64 for v in exp.variants)
    with pytest.raises(LabError, match=r"unknown key; allowed here: optimizer, loss"):
        load_experiment(src, overrides={"train.batchsize": 64})
    with pytest.raises(LabError, match=r"--set seeds\.x: .*seeds is not a table"):
        load_experiment(src, overrides={"seeds.x": 1})


# --------------------------------------------------------------------------- errors

PUB = {"train_accuracy": 0.838, "test_accuracy": 0.846}

# (changes to BASE, error type, regex the one-line message must match)
ERROR_CASES = [
    ("unknown top key", {"seed": 3}, LabError, r"^tiny\.toml: seed: unknown key; allowed here: name, description, seeds"),
    ("bad name", {"name": "a b"}, LabError, r"^tiny\.toml: name: expected a name .* got 'a b' \(str\)"),
    ("description type", {"description": 3}, LabError, r"tiny\.toml: description: expected a string, got 3 \(int\)"),
    ("zero seeds", {"seeds": 0}, LabError, r"tiny\.toml: seeds: expected a number of seeds >= 1, got 0"),
    ("seeds type", {"seeds": "3"}, LabError, r"tiny\.toml: seeds: .*got '3' \(str\)"),
    ("repeated seeds", {"seeds": [1, 1]}, LabError, r"tiny\.toml: seeds: .*distinct.*got \[1, 1\]"),
    ("no data", {"data": DELETE}, LabError, r"tiny\.toml: data: missing table; give \[data\] with name"),
    ("data not table", {"data": "circles"}, LabError, r"tiny\.toml: data: expected a table, got 'circles' \(str\)"),
    ("unknown dataset", {"data__name": "circlez"}, DatasetError, r"tiny\.toml: data: unknown dataset 'circlez'; choose from: .*circles"),
    ("unknown data option", {"data__noize": 0.1}, DatasetError, r"tiny\.toml: data: dataset 'circles' has no option 'noize' \(got noize=0\.1\); allowed: n_samples, noise"),
    ("bad data value", {"data__noise": -1}, DatasetError, r"tiny\.toml: data: dataset 'circles': invalid noise=-1; expected a number >= 0"),
    ("dataset name type", {"data__name": 3}, LabError, r"tiny\.toml: data\.name: expected a registered dataset name, got 3 \(int\)"),
    ("unknown model key", {"model__inputs": [2]}, LabError, r"tiny\.toml: model\.inputs: unknown key; allowed here: input_shape, layers"),
    ("bad input_shape", {"model__input_shape": [0]}, LabError, r"tiny\.toml: model\.input_shape: expected a list of positive integers.*got \[0\] \(list\)"),
    ("no layers", {"model__layers": DELETE}, LabError, r"tiny\.toml: model\.layers: missing; variant 'base' uses the \[model\] layers"),
    ("bad layer arg", {"model__layers": [{"type": "Dense", "units": "fifty"}]}, SpecError, r"tiny\.toml: model\.layers\[0\]\.units: .*'fifty'"),
    ("unknown layer", {"model__layers": [{"type": "Dense2", "units": 1}]}, SpecError, r"tiny\.toml: model\.layers\[0\]: .*Dense2.*Dense"),
    ("no train", {"train": DELETE}, LabError, r"tiny\.toml: train: missing table; give \[train\] with optimizer, loss and epochs"),
    ("unknown train key", {"train__epoch": 3}, LabError, r"tiny\.toml: train\.epoch: unknown key; allowed here: optimizer, loss, epochs, batch_size"),
    ("missing epochs", {"train__epochs": DELETE}, LabError, r"tiny\.toml: train: missing key 'epochs'"),
    ("zero epochs", {"train__epochs": 0}, LabError, r"tiny\.toml: train\.epochs: expected an integer >= 1, got 0 \(int\)"),
    ("batch size type", {"train__batch_size": "32"}, LabError, r"tiny\.toml: train\.batch_size: expected an integer >= 1, got '32' \(str\)"),
    ("eval every zero", {"train__eval_every_steps": 0}, LabError, r"tiny\.toml: train\.eval_every_steps: expected an integer >= 1, got 0"),
    ("shuffle type", {"train__shuffle": "yes"}, LabError, r"tiny\.toml: train\.shuffle: expected true or false, got 'yes' \(str\)"),
    ("optimizer type", {"train__optimizer": 3}, LabError, r"tiny\.toml: train\.optimizer: expected a table like .*got 3 \(int\)"),
    ("unknown optimizer", {"train__optimizer": {"name": "sgdd"}}, LabError, r"tiny\.toml: train\.optimizer\.name: unknown optimizer 'sgdd'; choose from: adam, rmsprop, sgd"),
    ("unknown optimizer arg", {"train__optimizer": {"name": "sgd", "lr": 0.1}}, LabError, r"tiny\.toml: train\.optimizer: sgd: unknown argument\(s\) 'lr'; allowed: learning_rate"),
    ("unknown loss", {"train__loss": "bce"}, LabError, r"tiny\.toml: train\.loss: unknown loss 'bce'; choose from: binary_crossentropy"),
    ("loss type", {"train__loss": 1}, LabError, r"tiny\.toml: train\.loss: expected a loss name string, got 1 \(int\)"),
    ("optimizer value", {"train__optimizer": {"name": "sgd", "learning_rate": -1}}, LabError, r"tiny\.toml: train\.optimizer: .*learning_rate.*-1"),
    ("probe bad where", {"train__probes": [{"layer": "dense", "where": "inside"}]}, LabError, r"tiny\.toml: train\.probes\[0\]: ProbeSpec: where must be 'input' or 'output'; got 'inside'"),
    ("probes type", {"train__probes": "dense"}, LabError, r"tiny\.toml: train\.probes: expected a list of tables, got 'dense' \(str\)"),
    ("probe unknown key", {"train__probes": [{"layer": "dense", "at": "input"}]}, LabError, r"tiny\.toml: train\.probes\[0\]: ProbeSpec: unknown key\(s\) 'at'"),
    ("probe unknown layer", {"train__probes": [{"layer": "dense_9"}]}, LabError, r"tiny\.toml: train\.probes\[0\]\.layer: variant 'base' has no layer 'dense_9'; its layers: dense, dense_1"),
    ("variants empty", {"variants": {}}, LabError, r"tiny\.toml: variants: expected one or more \[variants\.NAME\] tables, got \{\}"),
    ("variant bad name", {"variants": {"b n": {}}}, LabError, r"tiny\.toml: variants\.b n: expected a name"),
    ("unknown variant key", {"variants__bn__edit": []}, LabError, r"tiny\.toml: variants\.bn\.edit: unknown key; allowed here: description, input_shape, layers, edits, train, data"),
    ("layers and edits", {"variants__bn__layers": [{"type": "Dense", "units": 1}]}, LabError, r"tiny\.toml: variants\.bn: give either layers .* or edits"),
    ("edits not list", {"variants__bn__edits": {"remove": 0}}, LabError, r"tiny\.toml: variants\.bn\.edits: expected a list of edits, got \{'remove': 0\} \(dict\)"),
    ("bad edit target", {"variants__bn__edits": [{"remove": "dense_7"}]}, SpecError, r"tiny\.toml: variants\.bn\.edits\[0\]\.remove: no layer named 'dense_7'"),
    ("variant train key", {"variants__bn__train": {"epoch": 1}}, LabError, r"tiny\.toml: variants\.bn\.train\.epoch: unknown key"),
    ("variant train value", {"variants__bn__train": {"epochs": -2}}, LabError, r"tiny\.toml: train \+ variants\.bn\.train\.epochs: expected an integer >= 1, got -2"),
    ("variant data value", {"variants__bn__data": {"noise": "x"}}, DatasetError, r"tiny\.toml: data \+ variants\.bn\.data: dataset 'circles': invalid noise='x'"),
    ("grid not table", {"grid": [1]}, LabError, r"tiny\.toml: grid: expected a table of axis = \[values\], got \[1\] \(list\)"),
    ("grid empty axis", {"grid": {"lr": []}}, LabError, r"tiny\.toml: grid\.lr: expected a non-empty list .*got \[\] \(list\)"),
    ("grid repeated", {"grid": {"lr": [0.1, 0.1]}, "train__optimizer": {"name": "sgd", "learning_rate": "$lr"}}, LabError, r"tiny\.toml: grid\.lr: values must be distinct, got \[0\.1, 0\.1\]"),
    ("grid unused", {"grid": {"lr": [0.1, 0.2]}}, LabError, r"tiny\.toml: grid\.lr: no variant uses this axis; write \"\$lr\""),
    ("unknown axis", {"train__optimizer": {"name": "sgd", "learning_rate": "$lr"}}, LabError, r"tiny\.toml: train\.optimizer\.learning_rate: '\$lr' names no grid axis; axes: none declared"),
    ("unknown report key", {"report": {"metric": "loss"}}, LabError, r"tiny\.toml: report\.metric: unknown key; allowed here: threshold_metric, threshold, reference, comparisons"),
    ("threshold metric", {"report": {"threshold_metric": "acc"}}, LabError, r"tiny\.toml: report\.threshold_metric: unknown metric 'acc'; choose from: val_accuracy"),
    ("threshold type", {"report": {"threshold": "80%"}}, LabError, r"tiny\.toml: report\.threshold: expected a number like 0\.8, got '80%' \(str\)"),
    ("unknown reference", {"report": {"reference": "bm"}}, LabError, r"tiny\.toml: report\.reference: unknown variant 'bm'; variants: base, bn"),
    ("comparisons shape", {"report": {"comparisons": ["bn"]}}, LabError, r"tiny\.toml: report\.comparisons: expected a list of \[variant, reference\] pairs .*got \['bn'\]"),
    ("comparisons name", {"report": {"comparisons": [["bn", "bass"]]}}, LabError, r"tiny\.toml: report\.comparisons\[0\]: unknown variant 'bass'"),
    ("self comparison", {"report": {"comparisons": [["bn", "bn"]]}}, LabError, r"tiny\.toml: report\.comparisons\[0\]: compares 'bn' with itself"),
    ("published not table", {"report": {"published": ["base"]}}, LabError, r"tiny\.toml: report\.published: expected a table of \[report\.published\.VARIANT\] tables, got \['base'\] \(list\)"),
    ("published unknown variant", {"report": {"published": {"bn_after": PUB}}}, LabError, r"tiny\.toml: report\.published\.bn_after: unknown variant 'bn_after'; variants: base, bn$"),
    ("published unknown key", {"report": {"published": {"bn": {**PUB, "val_accuracy": 0.8}}}}, LabError, r"tiny\.toml: report\.published\.bn\.val_accuracy: unknown key; allowed here: train_accuracy, test_accuracy, epochs_to_threshold, source, epochs$"),
    ("published epochs", {"report": {"published": {"bn": {**PUB, "epochs": 2.5}}}}, LabError, r"tiny\.toml: report\.published\.bn\.epochs: expected a whole number of epochs >= 1 like 100, got 2\.5 \(float\)"),
    ("published not a table", {"report": {"published": {"bn": 0.846}}}, LabError, r"tiny\.toml: report\.published\.bn: expected a table, got 0\.846 \(float\)"),
    ("report doctor not a bool", {"report": {"doctor": "yes"}}, LabError, r"tiny\.toml: report\.doctor: expected true or false, got 'yes' \(str\)$"),
    ("published accuracy type", {"report": {"published": {"bn": {**PUB, "test_accuracy": "0.846"}}}}, LabError, r"tiny\.toml: report\.published\.bn\.test_accuracy: expected a fraction between 0 and 1 like 0\.846, got '0\.846' \(str\)"),
    ("published accuracy percent", {"report": {"published": {"bn": {**PUB, "train_accuracy": 83.8}}}}, LabError, r"tiny\.toml: report\.published\.bn\.train_accuracy: expected a fraction between 0 and 1 like 0\.846, got 83\.8 \(float\)"),
    ("published accuracy bool", {"report": {"published": {"bn": {**PUB, "test_accuracy": True}}}}, LabError, r"tiny\.toml: report\.published\.bn\.test_accuracy: expected a fraction .*got True \(bool\)"),
    ("published missing accuracy", {"report": {"published": {"bn": {"test_accuracy": 0.8}}}}, LabError, r"tiny\.toml: report\.published\.bn: missing key 'train_accuracy'; give train_accuracy and test_accuracy"),
    ("published epochs type", {"report": {"published": {"bn": {**PUB, "epochs_to_threshold": "~20"}}}}, LabError, r"tiny\.toml: report\.published\.bn\.epochs_to_threshold: expected a number of epochs > 0 like 20, got '~20' \(str\)"),
    ("published epochs zero", {"report": {"published": {"bn": {**PUB, "epochs_to_threshold": 0}}}}, LabError, r"tiny\.toml: report\.published\.bn\.epochs_to_threshold: expected a number of epochs > 0 like 20, got 0 \(int\)"),
    ("published source type", {"report": {"published": {"bn": {**PUB, "source": 1}}}}, LabError, r"tiny\.toml: report\.published\.bn\.source: expected a string, got 1 \(int\)"),
]


@pytest.mark.parametrize(
    ("changes", "error", "pattern"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_invalid_input_is_one_line_naming_file_key_and_value(
    changes: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error) as info:
        parse(doc(**changes))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("tiny.toml"), message
    assert type(info.value) is error
    assert isinstance(info.value, ValueError)
    import re

    assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


# --------------------------------------------------------------------------- grid


def grid_doc() -> dict[str, Any]:
    return doc(
        grid={"learning_rate": [0.001, 0.01], "activation": ["sigmoid", "relu"]},
        train__optimizer={"name": "adam", "learning_rate": "$learning_rate"},
        model__layers=[
            {"type": "Dense", "units": 8, "activation": "$activation"},
            {"type": "Dense", "units": 1, "activation": "sigmoid"},
        ],
        variants={
            "base": {},
            "bn": {"edits": [{"insert_after": "dense", "layer": {"type": "BatchNormalization"}}]},
            "fixed": {"layers": [{"type": "Dense", "units": 1, "activation": "sigmoid"}]},
        },
    )


def test_grid_expands_each_variant_over_the_axes_it_uses() -> None:
    exp = parse(grid_doc())
    names = [v.name for v in exp.variants]
    assert names == [
        "base[learning_rate=0.001,activation=sigmoid]",
        "base[learning_rate=0.001,activation=relu]",
        "base[learning_rate=0.01,activation=sigmoid]",
        "base[learning_rate=0.01,activation=relu]",
        "bn[learning_rate=0.001,activation=sigmoid]",
        "bn[learning_rate=0.001,activation=relu]",
        "bn[learning_rate=0.01,activation=sigmoid]",
        "bn[learning_rate=0.01,activation=relu]",
        # its own layers do not use $activation; the base [train] still uses $learning_rate
        "fixed[learning_rate=0.001]",
        "fixed[learning_rate=0.01]",
    ]
    v = exp.variant("bn[learning_rate=0.01,activation=sigmoid]")
    assert v.base == "bn"
    assert dict(v.grid) == {"learning_rate": 0.01, "activation": "sigmoid"}
    assert v.train["optimizer"] == {"name": "adam", "learning_rate": 0.01}
    assert [s.type for s in v.layers] == ["Dense", "BatchNormalization", "Dense"]
    assert v.layers[0].args["activation"] == "sigmoid"
    assert exp.variant("fixed[learning_rate=0.001]").grid == {"learning_rate": 0.001}
    assert len({v.config_hash for v in exp.variants}) == len(exp.variants)
    # resolved record: grid values and the display name travel with each variant
    d = exp.to_dict()
    assert d["grid"] == {"learning_rate": [0.001, 0.01], "activation": ["sigmoid", "relu"]}
    assert d["variants"][4]["grid"] == {"learning_rate": 0.001, "activation": "sigmoid"}
    assert d["report"]["comparisons"] == [["bn", "base"], ["fixed", "base"]]


def test_grid_value_in_a_variant_override_and_in_edits() -> None:
    d = doc(
        grid={"momentum": [0.99, 0.8]},
        variants={
            "base": {"train": {"batch_size": 16}},
            "bn": {
                "edits": [
                    {
                        "insert_after": "dense",
                        "layer": {"type": "BatchNormalization", "momentum": "$momentum"},
                    }
                ]
            },
        },
    )
    exp = parse(d)
    assert [v.name for v in exp.variants] == ["base", "bn[momentum=0.99]", "bn[momentum=0.8]"]
    assert exp.variants[0].train["batch_size"] == 16
    assert exp.variants[1].train["batch_size"] == 32
    assert exp.variants[2].layers[1].args["momentum"] == 0.8


def test_grid_error_names_the_grid_point() -> None:
    d = doc(
        grid={"units": [4, 0]},
        model__layers=[{"type": "Dense", "units": "$units"}, {"type": "Dense", "units": 1}],
    )
    with pytest.raises(SpecError, match=r"model\.layers \(grid point base\[units=0\]\)\[0\]\.units"):
        parse(d)


# --------------------------------------------------------------------------- overrides, hashes


def test_variant_overrides_merge_into_train_and_data() -> None:
    d = doc(
        variants={
            "base": {},
            "fast": {"train": {"optimizer": {"learning_rate": 0.1}, "batch_size": 64}},
            "noisy": {"data": {"noise": 0.3}},
            "moons": {"data": {"name": "moons"}},
        }
    )
    exp = parse(d)
    fast, noisy, moons = exp.variants[1:]
    assert fast.train["optimizer"] == {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}
    assert fast.train["batch_size"] == 64
    assert noisy.data["noise"] == 0.3 and noisy.data["n_samples"] == 200
    # another dataset replaces [data] instead of inheriting circles' options
    assert moons.data == {
        "name": "moons",
        "n_samples": 1000,
        "noise": 0.1,
        "random_state": 1,
        "train_size": None,
    }


def test_config_hash_covers_settings_but_not_names() -> None:
    a = parse(doc())
    b = parse(doc(name="other", description="x", seeds=7))
    assert [v.config_hash for v in a.variants] == [v.config_hash for v in b.variants]
    c = parse(doc(train__batch_size=16))
    assert a.variants[0].config_hash != c.variants[0].config_hash
    e = a.with_epochs(5)
    assert e.variants[0].train["epochs"] == 5
    assert e.variants[0].config_hash != a.variants[0].config_hash
    assert a.with_seeds(2).seeds == (0, 1)
    assert a.with_seeds([4, 9]).seeds == (4, 9)
    with pytest.raises(LabError, match=r"--seeds: expected a number of seeds >= 1, got 0"):
        a.with_seeds(0)
    with pytest.raises(LabError, match=r"--epochs: expected an integer >= 1, got 0"):
        a.with_epochs(0)


def test_variant_round_trips_through_its_dict() -> None:
    exp = parse(grid_doc())
    for v in exp.variants:
        again = Variant.from_dict(v.to_dict())
        assert again.config_hash == v.config_hash
        assert again.name == v.name and dict(again.grid) == dict(v.grid)
        assert list(again.layers) == list(v.layers)


def test_unknown_variant_lookup_lists_the_names() -> None:
    with pytest.raises(LabError, match=r"experiment 'tiny' has no variant 'bm'; variants: base, bn"):
        parse(doc()).variant("bm")


def test_defaults_single_variant_and_name_from_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(
        """
[data]
name = "moons"
[model]
layers = [{ type = "Dense", units = 1, activation = "sigmoid" }]
[train]
optimizer = "adam"
loss = "binary_crossentropy"
epochs = 1
"""
    )
    exp = load_experiment(path)
    assert exp.name == "plain"
    assert exp.seeds == (0,)
    assert [v.name for v in exp.variants] == ["base"]
    assert exp.variants[0].train == {
        "optimizer": {"name": "adam"},
        "loss": "binary_crossentropy",
        "epochs": 1,
        "batch_size": 32,
        "eval_every_steps": None,
        "shuffle": True,
        "probes": [],
    }
    assert exp.report.to_dict() == {
        "threshold_metric": "val_accuracy",
        "threshold": 0.8,
        "reference": "base",
        "comparisons": [],
        "published": {},
        "doctor": False,
    }


# --------------------------------------------------------------------------- published


def test_published_numbers_are_validated_and_carried_into_the_resolved_experiment() -> None:
    exp = parse(
        doc(
            report={
                "published": {
                    "bn": {**PUB, "epochs_to_threshold": 20, "source": "a tutorial", "epochs": 50},
                    "base": {"train_accuracy": 1, "test_accuracy": 0},
                }
            }
        )
    )
    assert exp.report.published["bn"] == PublishedRun(0.838, 0.846, 20.0, "a tutorial", 50)
    assert exp.report.published["base"] == PublishedRun(1.0, 0.0, None, "")
    assert exp.to_dict()["report"]["published"] == {
        "bn": {
            "train_accuracy": 0.838,
            "test_accuracy": 0.846,
            "epochs_to_threshold": 20.0,
            "source": "a tutorial",
            "epochs": 50,
        },
        "base": {
            "train_accuracy": 1.0,
            "test_accuracy": 0.0,
            "epochs_to_threshold": None,
            "source": "",
            "epochs": None,
        },
    }
    assert parse(doc()).report.published == {}


def test_published_numbers_of_a_grid_variant_are_keyed_by_its_base_name() -> None:
    exp = parse(grid_doc() | {"report": {"published": {"bn": PUB}}})
    assert list(exp.report.published) == ["bn"]
    with pytest.raises(LabError, match=r"report\.published\.bn\[learning_rate=0\.01.*unknown variant"):
        parse(grid_doc() | {"report": {"published": {"bn[learning_rate=0.01]": PUB}}})


def test_circles_carries_the_tutorial_single_runs() -> None:
    published = load_experiment("circles").report.published
    source = "Keras tutorial single run"
    assert published == {
        "baseline": PublishedRun(0.838, 0.846, 35.0, source, 100),
        "bn_after": PublishedRun(0.846, 0.848, 20.0, source, 100),
        "bn_before": PublishedRun(0.826, 0.830, None, source, 100),
    }
