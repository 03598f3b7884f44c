"""Differential tests against Keras 3 (torch backend): the same layer dicts build a Keras
model and ours; names, shapes, parameter counts, the summary text and, with Keras's
weights copied across, the outputs must agree."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.models import (
    SpecError,
    build_model,
    count_params,
    get_activation,
    list_activations,
    summary,
)
from bnlab.models.keras_weights import set_keras_weights
from bnlab.nn import BatchNormalization

assert keras.backend.backend() == "torch"

ATOL = 1e-5


def to_keras(value):
    return tuple(to_keras(v) for v in value) if isinstance(value, list | tuple) else value


def keras_model(layers, input_shape, *, seed=0):
    """The Keras Sequential model for our layer dicts (our vocabulary is Keras's)."""
    keras.backend.clear_session()  # fresh auto names: dense, dense_1, ...
    keras.utils.set_random_seed(seed)
    built = [keras.Input(shape=input_shape)]
    for raw in layers:
        args = {k: to_keras(v) for k, v in raw.items() if k != "type"}
        built.append(getattr(keras.layers, raw["type"])(**args))
    return keras.Sequential(built)


def weights_of(layer) -> list[np.ndarray]:
    # Not layer.get_weights() nor keras.ops.convert_to_numpy: both call np.array(tensor),
    # which warns under numpy 2. With the torch backend a variable's value is a tensor.
    return [v.value.detach().cpu().numpy().copy() for v in layer.weights]


def randomize_batchnorm(kmodel, rng):
    """Non-trivial gamma, beta and moving statistics in every Keras BN layer."""
    for layer in kmodel.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.weights
            gamma.assign(rng.uniform(0.5, 1.5, gamma.shape).astype("float32"))
            beta.assign(rng.normal(0, 0.5, beta.shape).astype("float32"))
            mean.assign(rng.normal(0, 0.3, mean.shape).astype("float32"))
            var.assign(rng.uniform(0.5, 2, var.shape).astype("float32"))


def copy_weights(kmodel, model):
    """Keras weights -> ours, through set_keras_weights (Keras's layouts and order)."""
    assert len(kmodel.layers) == len(model.layers)
    for klayer, module in zip(kmodel.layers, model.layers.values(), strict=True):
        set_keras_weights(module, weights_of(klayer))


def keras_output(kmodel, x, *, training):
    return kmodel(x, training=training).detach().cpu()


def n_weights(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def assert_same_structure(kmodel, model):
    assert list(model.layers) == [layer.name for layer in kmodel.layers]
    for klayer, (name, module) in zip(kmodel.layers, model.layers.items(), strict=True):
        assert (None, *model.output_shapes[name]) == tuple(klayer.output.shape), name
        assert count_params(module).total == klayer.count_params(), name
    counts = count_params(model)
    assert counts.trainable == n_weights(kmodel.trainable_weights)
    assert counts.non_trainable == n_weights(kmodel.non_trainable_weights)


def conv(filters, kernel=3, **kw):
    return {"type": "Conv2D", "filters": filters, "kernel_size": kernel, **kw}


BN = {"type": "BatchNormalization"}

IMAGE_CNN_BN = [
    {"type": "ZeroPadding2D"},
    conv(16, activation="relu"),
    BN,
    {"type": "MaxPooling2D", "pool_size": 2, "strides": 2},
    conv(32, activation="relu"),
    BN,
    {"type": "MaxPooling2D", "pool_size": 2, "strides": 1},
    conv(16),
    BN,
    {"type": "MaxPooling2D", "pool_size": 2, "strides": 2},
    {"type": "Flatten"},
    {"type": "Dropout", "rate": 0.2},
    {"type": "Dense", "units": 6, "activation": "softmax"},
]

MNIST_CNN = [
    conv(32, activation="relu"),
    {"type": "MaxPooling2D", "pool_size": 2},
    conv(64, activation="relu"),
    {"type": "MaxPooling2D", "pool_size": 2},
    conv(64, activation="relu"),
    {"type": "Flatten"},
    {"type": "Dense", "units": 64, "activation": "relu"},
    {"type": "Dense", "units": 10, "activation": "softmax"},
]

MNIST_CNN_BN = [
    conv(32, use_bias=False),
    BN,
    {"type": "Activation", "activation": "relu"},
    {"type": "MaxPooling2D", "pool_size": 2},
    conv(64, use_bias=False),
    BN,
    {"type": "Activation", "activation": "relu"},
    {"type": "MaxPooling2D", "pool_size": 2},
    conv(64, use_bias=False),
    BN,
    {"type": "Activation", "activation": "relu"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 64, "use_bias": False},
    BN,
    {"type": "Activation", "activation": "relu"},
    {"type": "Dense", "units": 10, "use_bias": False},
    BN,
    {"type": "Activation", "activation": "softmax"},
]

# Asymmetric 'same' padding in Conv2D and MaxPooling2D, asymmetric ZeroPadding2D, BN on
# a non-channel axis, Flatten order, Dense softmax.
PADDING_CNN = [
    {"type": "ZeroPadding2D", "padding": [[1, 0], [2, 1]]},  # (9, 10) -> (10, 13)
    conv(
        4, 3, strides=2, padding="same", activation="relu"
    ),  # 10 -> 5 pads (0, 1); 13 -> 7 pads (1, 1)
    BN,
    {"type": "MaxPooling2D", "pool_size": 2, "strides": 2, "padding": "same"},  # 5 -> 3, 7 -> 4
    conv(
        5,
        [2, 3],
        activation="tanh",
        kernel_initializer="he_uniform",
        bias_initializer="random_normal",
    ),
    {"type": "BatchNormalization", "axis": 1, "momentum": 0.9, "epsilon": 1e-2},
    {"type": "Flatten"},
    {"type": "Dense", "units": 6, "activation": "softmax", "bias_initializer": "random_normal"},
]

SEQUENCE_MODEL = [
    {"type": "Dense", "units": 5, "activation": "elu"},  # on (N, T, F): the last axis
    BN,  # per feature over (N, T)
    {"type": "LSTM", "units": 4, "return_sequences": True},
    {"type": "LSTM", "units": 3, "bias_initializer": "random_normal"},
    {"type": "Dense", "units": 2, "activation": "sigmoid"},
]

# Dense on a 4D image (Keras: the last axis), then back to convolutions.
MIXED_LAYOUTS = [
    conv(3, 1, activation="relu"),
    {"type": "Dense", "units": 4},
    BN,
    conv(2, 3, strides=2, padding="same"),
    {"type": "Activation", "activation": "softmax"},
    {"type": "Flatten"},
    {"type": "Dense", "units": 2},
]

SEQUENCE_FLATTEN = [
    {"type": "LSTM", "units": 4, "return_sequences": True, "unit_forget_bias": False},
    {"type": "Flatten"},
    {"type": "Dense", "units": 3},
]


@pytest.mark.parametrize(
    ("layers", "shape"),
    [
        (IMAGE_CNN_BN, (224, 224, 3)),
        (MNIST_CNN, (28, 28, 1)),
        (MNIST_CNN_BN, (28, 28, 1)),
        (PADDING_CNN, (9, 10, 3)),
        (SEQUENCE_MODEL, (6, 3)),
        (MIXED_LAYOUTS, (6, 5, 3)),
    ],
    ids=["image_cnn_bn", "mnist_cnn", "mnist_cnn_bn", "padding_cnn", "sequence", "mixed"],
)
def test_names_shapes_and_parameter_counts_match_keras(layers, shape):
    assert_same_structure(keras_model(layers, shape), build_model(layers, shape))


def test_published_totals_are_keras_totals():
    for layers, shape, total in (
        (IMAGE_CNN_BN, (224, 224, 3), 279_638),
        (MNIST_CNN_BN, (28, 28, 1), 94_024),
    ):
        kmodel = keras_model(layers, shape)
        assert kmodel.count_params() == total
        assert count_params(build_model(layers, shape)).total == total


def test_summary_text_equals_keras():
    kmodel = keras_model(MNIST_CNN, (28, 28, 1))
    lines: list[str] = []
    kmodel.summary(print_fn=lambda line, line_break=True: lines.append(line))
    expected = "\n".join(lines).rstrip("\n")
    assert summary(build_model(MNIST_CNN, (28, 28, 1))) == expected


def test_frozen_batchnorm_counts_like_keras():
    layers = [{"type": "Dense", "units": 4}, {"type": "BatchNormalization", "trainable": False}]
    assert_same_structure(keras_model(layers, (3,)), build_model(layers, (3,)))


@pytest.mark.parametrize(
    ("layers", "shape"),
    [
        (PADDING_CNN, (9, 10, 3)),
        (MNIST_CNN_BN, (28, 28, 1)),
        (SEQUENCE_MODEL, (6, 3)),
        (SEQUENCE_FLATTEN, (5, 2)),
        (MIXED_LAYOUTS, (6, 5, 3)),
    ],
    ids=["padding_cnn", "mnist_cnn_bn", "sequence", "sequence_flatten", "mixed"],
)
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_outputs_match_keras_with_copied_weights(layers, shape, training):
    rng = np.random.default_rng(0)
    kmodel = keras_model(layers, shape)
    randomize_batchnorm(kmodel, rng)
    model = build_model(layers, shape)
    copy_weights(kmodel, model)
    x = torch.as_tensor(rng.normal(0, 1, (4, *shape)), dtype=torch.float32)
    model.train(training)
    ours = model(x).detach()
    theirs = keras_output(kmodel, x, training=training)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-4)


def test_moving_statistics_after_a_training_step_match_keras():
    rng = np.random.default_rng(1)
    kmodel = keras_model(PADDING_CNN, (9, 10, 3))
    model = build_model(PADDING_CNN, (9, 10, 3))
    copy_weights(kmodel, model)
    x = torch.as_tensor(rng.normal(0, 1, (4, 9, 10, 3)), dtype=torch.float32)
    model.train()
    model(x)
    kmodel(x, training=True)
    for klayer, module in zip(kmodel.layers, model.layers.values(), strict=True):
        if isinstance(module, BatchNormalization):
            for ours, theirs in zip(module.get_keras_weights(), weights_of(klayer), strict=True):
                np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", list_activations())
def test_activations_match_keras(name):
    x = torch.linspace(-30, 30, 240, dtype=torch.float32).reshape(-1, 4)
    ours = get_activation(name)(x)
    theirs = keras.activations.get(name)(x).detach().cpu()
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["Conv2D", "MaxPooling2D"]),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    window=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    strides=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    padding=st.sampled_from(["valid", "same"]),
)
def test_window_output_shapes_match_keras(kind, size, window, strides, padding):
    if kind == "Conv2D":
        raw = {
            "type": kind,
            "filters": 2,
            "kernel_size": list(window),
            "strides": list(strides),
            "padding": padding,
        }
        klayer = keras.layers.Conv2D(2, window, strides=strides, padding=padding)
    else:
        raw = {
            "type": kind,
            "pool_size": list(window),
            "strides": list(strides),
            "padding": padding,
        }
        klayer = keras.layers.MaxPooling2D(window, strides=strides, padding=padding)
    try:
        expected = tuple(klayer.compute_output_shape((None, *size, 3)))
    except ValueError:  # Keras: "Computed output size would be zero or negative"
        with pytest.raises(SpecError, match="does not fit input"):
            build_model([raw], (*size, 3))
        return
    model = build_model([raw], (*size, 3))
    assert (None, *model.output_shape) == expected
    assert model(torch.zeros(1, *size, 3)).shape == (1, *expected[1:])
