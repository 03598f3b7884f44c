"""keras_config(spec): Keras 3 reads every entry back (keras.layers.deserialize), a Keras
config survives the round trip, and a Keras layer made from our entry computes what our
module computes (with our weights copied across)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from keras_reference import keras
from test_model_conformance import EXAMPLES, IDS, make

from bnlab.models import SpecError, get_keras_weights, get_layer_type, keras_config, parse_layer

KERAS_CONFIGS = json.loads((Path(__file__).parent / "keras_configs.json").read_text())["layers"]


def deserialize(entry):
    if entry["class_name"] == "InputLayer":
        return keras.layers.InputLayer.from_config(entry["config"])
    return keras.layers.deserialize(entry)


def plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.filterwarnings("ignore:.*rms_scaling=True.*:UserWarning")
@pytest.mark.parametrize("entry", KERAS_CONFIGS, ids=lambda e: e["config"]["name"])
def test_keras_config_round_trips_through_keras(entry):
    ours = keras_config(parse_layer(entry, where="layer"))
    assert ours["class_name"] == entry["class_name"]
    layer = deserialize(plain(ours))
    assert plain(keras.saving.serialize_keras_object(layer)["config"]) == plain(entry["config"])


@pytest.mark.parametrize("kind", sorted(k for k in EXAMPLES if k != "BatchNormAct"))
def test_keras_layer_from_our_entry_computes_what_our_module_computes(kind, assert_close):
    model, shape = make(kind, seed=0)
    model.eval()
    name, spec, module = model.named_layers()[0]
    layer = deserialize(plain(keras_config(spec, name=name)))
    x = torch.randint(0, 5, (3, *shape)) if kind in IDS else torch.randn(3, *shape)
    merge = get_layer_type(spec.type).inputs != 1
    layer([x, x] if merge else x)  # builds the Keras layer
    for variable, value in zip(layer.weights, get_keras_weights(module), strict=True):
        variable.assign(value)
    expected = layer([x, x] if merge else x, training=False)
    assert_close(model(x).detach(), expected.detach().cpu())


def test_toml_forms_become_keras_objects():
    spec = parse_layer({"type": "Dense", "units": 3, "kernel_initializer": "he_uniform",
                        "kernel_regularizer": "l2(1e-4)",
                        "bias_constraint": {"name": "max_norm", "max_value": 3.0}},
                       where="layer")
    layer = deserialize(plain(keras_config(spec, name="head")))
    assert layer.name == "head"
    assert isinstance(layer.kernel_initializer, keras.initializers.HeUniform)
    assert float(layer.kernel_regularizer.l2) == pytest.approx(1e-4)
    assert layer.bias_constraint.max_value == 3.0
    bn = parse_layer({"type": "BatchNormalization", "gamma_regularizer": "l1_l2(l1=0.1)",
                      "momentum": 0.9, "trainable": False}, where="bn")
    layer = deserialize(plain(keras_config(bn)))
    assert layer.momentum == 0.9 and not layer.trainable
    assert float(layer.gamma_regularizer.l1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "BatchNormalization", "unbiased_moving_variance": True},
         "batch_normalization (BatchNormalization): BatchNormalization.unbiased_moving_variance"
         "=True has no Keras equivalent; use unbiased_moving_variance=False"),
        ({"type": "BatchNormAct"}, "BatchNormAct is bnlab's own layer, not Keras's"),
        ({"type": "Dense", "units": 2, "kernel_initializer": lambda t: t},
         "is a Python callable and cannot be written as a Keras config"),
    ],
    ids=["bn-option", "bnlab-layer", "callable"],
)
def test_what_keras_cannot_hold_is_refused_in_one_line(raw, message):
    name = "batch_normalization" if raw["type"] == "BatchNormalization" else None
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        keras_config(parse_layer(raw, where="layer"), name=name)


def test_every_registry_initializer_regularizer_and_constraint_is_a_keras_object():
    from bnlab.nn import constraints, initializers, regularizers

    for family, module, keras_module in [
        ("initializers", initializers, keras.initializers),
        ("regularizers", regularizers, keras.regularizers),
        ("constraints", constraints, keras.constraints),
    ]:
        for name in module.REGISTRY:
            entry = module.serialize(name)
            assert keras_module.deserialize(plain(entry)) is not None, (family, name)
