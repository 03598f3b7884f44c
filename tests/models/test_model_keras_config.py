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

from bnlab.models import (
    SpecError,
    changed_arguments,
    get_keras_weights,
    get_layer_type,
    keras_config,
    parse_layer,
)

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


# A tf.keras 2 Sequential configuration (as legacy .h5 files hold it): the first layer
# carries batch_input_shape, BatchNormalization's axis is a one-element list, LSTM has
# time_major and implementation, LeakyReLU its alpha.
TF_KERAS = [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, 3],
                                            "dtype": "float32", "sparse": False,
                                            "ragged": False, "name": "input_1"}},
    {"class_name": "Conv2D", "config": {
        "name": "conv2d", "trainable": True, "batch_input_shape": [None, 8, 8, 3],
        "dtype": "float32", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
        "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1],
        "groups": 1, "activation": "linear", "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.0005}},
        "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None,
        "bias_constraint": None}},
    {"class_name": "BatchNormalization", "config": {
        "name": "batch_normalization", "trainable": True, "dtype": "float32", "axis": [3],
        "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True,
        "beta_initializer": {"class_name": "Zeros", "config": {}},
        "gamma_initializer": {"class_name": "Ones", "config": {}},
        "moving_mean_initializer": {"class_name": "Zeros", "config": {}},
        "moving_variance_initializer": {"class_name": "Ones", "config": {}},
        "beta_regularizer": None, "gamma_regularizer": None, "beta_constraint": None,
        "gamma_constraint": None}},
    {"class_name": "LeakyReLU", "config": {"name": "leaky_re_lu", "trainable": True,
                                           "dtype": "float32", "alpha": 0.1}},
    {"class_name": "Reshape", "config": {"name": "reshape", "trainable": True,
                                         "dtype": "float32", "target_shape": [8, 32]}},
    {"class_name": "LSTM", "config": {
        "name": "lstm", "trainable": True, "dtype": "float32", "return_sequences": False,
        "return_state": False, "go_backwards": False, "stateful": False, "unroll": False,
        "time_major": False, "units": 5, "activation": "tanh",
        "recurrent_activation": "sigmoid", "use_bias": True,
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
        "recurrent_initializer": {"class_name": "Orthogonal",
                                  "config": {"gain": 1.0, "seed": None}},
        "bias_initializer": {"class_name": "Zeros", "config": {}}, "unit_forget_bias": True,
        "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None,
        "activity_regularizer": None, "kernel_constraint": None,
        "recurrent_constraint": None, "bias_constraint": None, "dropout": 0.0,
        "recurrent_dropout": 0.0, "implementation": 2}},
]


def test_tf_keras_configs_are_specs_and_written_back_for_keras_3():
    from bnlab.models import build_model

    specs = [parse_layer(entry, where=f"layers[{i}]") for i, entry in enumerate(TF_KERAS)]
    model = build_model(specs, seed=0)
    assert model.input_shape == (8, 8, 3)
    assert model.layer("batch_normalization").axis == 1
    assert model(torch.randn(2, 8, 8, 3)).shape == (2, 5)
    layers = [deserialize(plain(keras_config(spec))) for spec in specs]
    assert layers[0].batch_shape == (None, 8, 8, 3)
    assert layers[2].axis == 3 and layers[3].negative_slope == pytest.approx(0.1)
    assert float(layers[1].kernel_regularizer.l2) == pytest.approx(5e-4)


@pytest.mark.parametrize(("layer", "expected"), [
    (lambda: keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False),
     {"filters": 16, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
      "use_bias": False}),
    (lambda: keras.layers.Dense(4, kernel_initializer="he_uniform", trainable=False),
     {"units": 4, "kernel_initializer": "he_uniform", "trainable": False}),
    (lambda: keras.layers.BatchNormalization(), {}),
    (lambda: keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
     {"momentum": 0.9, "epsilon": 1e-5}),
    (lambda: keras.layers.ReLU(max_value=6.0), {"max_value": 6.0}),
], ids=["conv", "dense", "bn", "bn-momentum", "relu6"])
def test_changed_arguments_are_what_the_keras_call_wrote(layer, expected):
    """Keras writes every argument into a file; these are the ones its call gave."""
    config = keras.saving.serialize_keras_object(layer())
    spec = parse_layer({"type": config["class_name"], **plain(config["config"])}, where="layer")
    changed = changed_arguments(spec)
    if "kernel_initializer" in changed:  # Keras's serialized form of "he_uniform"
        assert changed["kernel_initializer"]["class_name"] == "HeUniform"
        changed["kernel_initializer"] = "he_uniform"
    assert changed == expected
    assert list(changed) == list(expected)  # the type's order, trainable last


def test_changed_arguments_of_a_layer_keras_lacks_are_its_given_ones():
    spec = parse_layer({"type": "BatchNormAct", "activation": "relu", "momentum": 0.9}, where="l")
    assert changed_arguments(spec) == {"activation": "relu", "momentum": 0.9}
