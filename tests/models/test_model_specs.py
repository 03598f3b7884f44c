"""Parsing and validating layer specs: every layer type, every error path."""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path

import pytest

from bnlab.models import (
    LayerSpec,
    SpecError,
    layer_names,
    list_layer_types,
    parse_layer,
    parse_layers,
)
from bnlab.models.activations import list_activations
from bnlab.models.arguments import freeze

WHERE = "circles.toml: variants.bn_after.layers"

ALL_TYPES = [
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "BatchNormAct",
    "BatchNormalization",
    "Bidirectional",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Conv2DTranspose",
    "Conv3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "CustomScaleLayer",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "GRU",
    "GaussianDropout",
    "GaussianNoise",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GroupNormalization",
    "Identity",
    "Input",
    "LSTM",
    "LayerNormalization",
    "LeakyReLU",
    "Masking",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "Maximum",
    "Minimum",
    "Multiply",
    "Normalization",
    "PReLU",
    "Permute",
    "RandomBrightness",
    "RandomContrast",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "ReLU",
    "RepeatVector",
    "Rescaling",
    "Reshape",
    "Resizing",
    "SeparableConv2D",
    "SimpleRNN",
    "Softmax",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "Subtract",
    "TimeDistributed",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
]

# (raw dict, expected stored args, some resolved defaults)
VALID = [
    ({"type": "Input", "shape": [28, 28, 1]}, {"shape": (28, 28, 1)}, {}),
    (
        {"type": "Dense", "units": 50, "activation": "relu", "kernel_initializer": "he_uniform"},
        {"units": 50, "activation": "relu", "kernel_initializer": "he_uniform"},
        {"use_bias": True, "bias_initializer": "zeros", "name": None},
    ),
    (
        {"type": "Dense", "units": 1},
        {"units": 1},
        {"activation": None, "kernel_initializer": "glorot_uniform"},
    ),
    ({"type": "Activation", "activation": "softmax"}, {"activation": "softmax"}, {}),
    ({"type": "Activation", "activation": None}, {"activation": None}, {}),
    (
        {"type": "BatchNormalization"},
        {},
        {"axis": -1, "momentum": 0.99, "epsilon": 1e-3, "center": True},
    ),
    (
        {
            "type": "BatchNormalization",
            "momentum": 0.9,
            "epsilon": 1e-5,
            "scale": False,
            "gamma_regularizer": "l2(1e-4)",
            "beta_constraint": "non_neg",
            "trainable": False,
        },
        {
            "momentum": 0.9,
            "epsilon": 1e-5,
            "scale": False,
            "gamma_regularizer": "l2(1e-4)",
            "beta_constraint": "non_neg",
            "trainable": False,
        },
        {"axis": -1, "center": True},
    ),
    (
        {"type": "BatchNormAct", "activation": "leaky_relu", "renorm": True},
        {"activation": "leaky_relu", "renorm": True},
        {"axis": -1, "momentum": 0.99, "activation_kwargs": None},
    ),
    ({"type": "Dropout", "rate": 0.2}, {"rate": 0.2}, {}),
    ({"type": "Dropout", "rate": 0}, {"rate": 0.0}, {}),
    ({"type": "Flatten"}, {}, {}),
    (
        {"type": "Conv2D", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"filters": 16, "kernel_size": 3, "activation": "relu"},
        {
            "strides": 1,
            "padding": "valid",
            "use_bias": True,
            "kernel_initializer": "glorot_uniform",
        },
    ),
    (
        {
            "type": "Conv2D",
            "filters": 8,
            "kernel_size": [3, 5],
            "strides": [2, 1],
            "padding": "SAME",
        },
        {"filters": 8, "kernel_size": (3, 5), "strides": (2, 1), "padding": "same"},
        {},
    ),
    ({"type": "MaxPooling2D"}, {}, {"pool_size": 2, "strides": None, "padding": "valid"}),
    (
        {"type": "MaxPooling2D", "pool_size": [3, 3], "strides": 1, "padding": "same"},
        {"pool_size": (3, 3), "strides": 1, "padding": "same"},
        {},
    ),
    ({"type": "ZeroPadding2D"}, {}, {"padding": 1}),
    ({"type": "ZeroPadding2D", "padding": [1, 2]}, {"padding": (1, 2)}, {}),
    ({"type": "ZeroPadding2D", "padding": [[1, 2], [0, 3]]}, {"padding": ((1, 2), (0, 3))}, {}),
    (
        {"type": "LSTM", "units": 32, "return_sequences": True},
        {"units": 32, "return_sequences": True},
        {
            "activation": "tanh",
            "recurrent_activation": "sigmoid",
            "recurrent_initializer": "orthogonal",
            "unit_forget_bias": True,
            "kernel_initializer": "glorot_uniform",
            "bias_initializer": "zeros",
        },
    ),
    ({"type": "dense", "units": 3, "name": "head"}, {"units": 3, "name": "head"}, {}),
    (
        {"type": "Convolution2D", "filters": 2, "kernel_size": 1},
        {"filters": 2, "kernel_size": 1},
        {},
    ),
    ({"type": "MaxPool2D"}, {}, {}),
]


def test_registry_lists_every_type():
    assert list_layer_types() == ALL_TYPES


@pytest.mark.parametrize(("raw", "args", "defaults"), VALID, ids=lambda v: str(v)[:40])
def test_parse_valid_layer(raw, args, defaults):
    spec = parse_layer(raw, where=WHERE)
    canonical = {t.lower(): t for t in ALL_TYPES} | {
        "convolution2d": "Conv2D",
        "maxpool2d": "MaxPooling2D",
    }
    assert spec.type == canonical[raw["type"].lower()]
    assert dict(spec.args) == args
    resolved = spec.resolved_args()
    for key, value in defaults.items():
        assert resolved[key] == value
    for key, value in args.items():
        assert resolved[key] == value


# Keras 3's own configs (layer.get_config() as a .keras archive stores it), one per type.
KERAS_CONFIGS = json.loads((Path(__file__).parent / "keras_configs.json").read_text())["layers"]


@pytest.mark.parametrize("entry", KERAS_CONFIGS, ids=lambda e: e["config"]["name"])
def test_keras_config_is_a_spec(entry):
    spec = parse_layer({"type": entry["class_name"], **entry["config"]}, where=WHERE)
    assert spec.type == ("Input" if entry["class_name"] == "InputLayer" else entry["class_name"])
    assert dict(spec.args) == freeze(entry["config"])  # kept, so it can be written back
    assert parse_layer(entry, where=WHERE) == spec  # Keras's serialized entry form


def test_every_registered_type_is_covered_by_a_valid_case():
    covered = {parse_layer(raw, where=WHERE).type for raw, _, _ in VALID}
    covered |= {parse_layer(e, where=WHERE).type for e in KERAS_CONFIGS}
    assert covered == set(ALL_TYPES)


def test_layer_spec_is_immutable_hashable_and_round_trips():
    spec = parse_layer({"type": "Conv2D", "filters": 4, "kernel_size": [3, 3]}, where=WHERE)
    with pytest.raises(AttributeError):
        spec.type = "Dense"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.args["filters"] = 5  # type: ignore[index]
    assert spec.to_dict() == {"type": "Conv2D", "filters": 4, "kernel_size": [3, 3]}
    assert parse_layer(spec.to_dict(), where=WHERE) == spec
    assert hash(parse_layer(spec.to_dict(), where=WHERE)) == hash(spec)
    assert LayerSpec("Conv2D", {"filters": 4, "kernel_size": (3, 3)}) == spec
    assert spec.replace_args({"filters": 8}).args["filters"] == 8
    assert spec.args["filters"] == 4


def test_layer_spec_pickles_and_copies():
    spec = parse_layer(
        {"type": "BatchNormalization", "momentum": 0.9, "gamma_regularizer": "l2"}, where=WHERE
    )
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert copy.deepcopy(spec) == spec and copy.copy(spec) is spec


def test_raw_lists_are_copied_not_shared():
    raw = {"type": "Input", "shape": [4, 2]}
    spec = parse_layer(raw, where=WHERE)
    raw["shape"].append(9)
    assert spec.args["shape"] == (4, 2)


def test_parse_layers_locates_each_entry():
    specs = parse_layers(
        [{"type": "Input", "shape": [2]}, {"type": "Dense", "units": 4}], where=WHERE
    )
    assert [s.type for s in specs] == ["Input", "Dense"]


# ---------------------------------------------------------------- errors


def _error(raw, where=WHERE) -> str:
    with pytest.raises(SpecError) as info:
        if isinstance(raw, list):
            parse_layers(raw, where=where)
        else:
            parse_layer(raw, where=where)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
    return message


def test_unknown_layer_lists_every_valid_type():
    message = _error([{"type": "Dense", "units": 1}, {"type": "Dense2", "units": 1}])
    assert message == (f"{WHERE}[1]: unknown layer 'Dense2'; choose from: " + ", ".join(ALL_TYPES))


def test_unknown_argument_names_it_suggests_and_lists_allowed():
    message = _error({"type": "Dense", "unit": 10})
    assert message.startswith(f"{WHERE}: unknown argument 'unit' for Dense (did you mean 'units'?)")
    assert (
        "allowed: activation, activity_regularizer, batch_input_shape, bias_constraint, "
        "bias_initializer, "
        "bias_regularizer, dtype, kernel_constraint, kernel_initializer, kernel_regularizer, "
        "lora_rank, name, quantization_config, trainable, units, use_bias" in message
    )


def test_unknown_batchnorm_argument_lists_the_layer_arguments():
    message = _error({"type": "BatchNormalization", "moment": 0.9})
    assert "unknown argument 'moment'" in message and "did you mean 'momentum'" in message
    for allowed in (
        "axis",
        "momentum",
        "epsilon",
        "center",
        "scale",
        "gamma_regularizer",
        "trainable",
    ):
        assert allowed in message
    # Placement belongs to the model (model.to); dtype is Keras's policy (float32 only).
    assert "device" not in message and "dtype" in message


@pytest.mark.parametrize(
    ("raw", "key", "shown", "allowed"),
    [
        ({"type": "Dense", "units": "10"}, "units", "'10' (str)", "an integer >= 1"),
        ({"type": "Dense", "units": True}, "units", "True (bool)", "an integer >= 1"),
        ({"type": "Dense", "units": 0}, "units", "0 (int)", "an integer >= 1"),
        ({"type": "Dense", "units": 2.5}, "units", "2.5 (float)", "an integer >= 1"),
        (
            {"type": "Dense", "units": 2, "use_bias": "no"},
            "use_bias",
            "'no' (str)",
            "true or false",
        ),
        (
            {"type": "Dense", "units": 2, "activation": "rellu"},
            "activation",
            "'rellu' (str)",
            ", ".join(list_activations()),
        ),
        ({"type": "Activation", "activation": 3}, "activation", "3 (int)", "relu"),
        (
            {"type": "Dense", "units": 2, "kernel_initializer": "glorot"},
            "kernel_initializer",
            "'glorot'",
            "glorot_uniform",
        ),
        ({"type": "Dropout", "rate": 1.5}, "rate", "1.5 (float)", "a number >= 0.0 and < 1.0"),
        ({"type": "Dropout", "rate": -0.1}, "rate", "-0.1 (float)", ">= 0.0"),
        ({"type": "Dropout", "rate": "0.2"}, "rate", "'0.2' (str)", "a number"),
        (
            {"type": "Conv2D", "filters": 2, "kernel_size": [3, 3, 3]},
            "kernel_size",
            "(3, 3, 3) (tuple)",
            "an integer >= 1 or a list of 2 of them",
        ),
        (
            {"type": "Conv2D", "filters": 2, "kernel_size": 3, "padding": "full"},
            "padding",
            "'full' (str)",
            "'valid', 'same'",
        ),
        (
            {"type": "Conv2D", "filters": 2, "kernel_size": 3, "strides": 0},
            "strides",
            "0 (int)",
            "an integer >= 1",
        ),
        ({"type": "MaxPooling2D", "strides": -1}, "strides", "-1 (int)", "an integer >= 1"),
        ({"type": "MaxPooling2D", "pool_size": "2"}, "pool_size", "'2' (str)", "an integer >= 1"),
        (
            {"type": "ZeroPadding2D", "padding": [[1, 2], 3]},
            "padding",
            "((1, 2), 3) (tuple)",
            "((top, bottom), (left, right))",
        ),
        ({"type": "ZeroPadding2D", "padding": -1}, "padding", "-1 (int)", "an integer >= 0"),
        ({"type": "Input", "shape": []}, "shape", "() (tuple)", "positive integers"),
        ({"type": "Input", "shape": [28, -1]}, "shape", "(28, -1) (tuple)", "e.g. [28, 28, 1]"),
        (
            {"type": "LSTM", "units": 4, "return_sequences": "yes"},
            "return_sequences",
            "'yes' (str)",
            "true or false",
        ),
        (
            {"type": "LSTM", "units": 4, "recurrent_initializer": "orthogonall"},
            "recurrent_initializer",
            "'orthogonall'",
            "orthogonal",
        ),
        ({"type": "Dense", "units": 2, "name": "1st"}, "name", "'1st' (str)", "letters, digits"),
        ({"type": "Dense", "units": 2, "name": "a.b"}, "name", "'a.b' (str)", "letters, digits"),
        ({"type": "BatchNormalization", "axis": "x"}, "axis", "'x' (str)", "an integer"),
        ({"type": "Resizing", "height": 4, "width": 4, "interpolation": "lanczos3"},
         "interpolation", "'lanczos3' (str)", "'bilinear', 'nearest', 'bicubic'"),
        ({"type": "Dropout", "rate": 0.5, "noise_shape": [None, 0]}, "noise_shape", "(None, 0)",
         "each null or a positive integer"),
        ({"type": "Conv2DTranspose", "filters": 2, "kernel_size": 3, "output_padding": -1},
         "output_padding", "-1 (int)", "an integer >= 0"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_value_names_key_received_value_and_what_is_allowed(raw, key, shown, allowed):
    message = _error(raw)
    assert message.startswith(f"{WHERE}.{key}: ")
    assert shown in message
    assert allowed in message


def test_resizing_takes_one_aspect_ratio_rule():
    message = _error({"type": "Resizing", "height": 4, "width": 4,
                      "crop_to_aspect_ratio": True, "pad_to_aspect_ratio": True})
    assert "\n" not in message and "not both" in message


@pytest.mark.parametrize(
    ("raw", "key", "shown"),
    [
        ({"type": "BatchNormalization", "momentum": 1.5}, "momentum", "1.5"),
        ({"type": "BatchNormalization", "epsilon": 0}, "epsilon", "got 0"),
        ({"type": "BatchNormalization", "gamma_regularizer": "l3"}, "gamma_regularizer", "'l3'"),
        (
            {"type": "BatchNormalization", "beta_initializer": "zeroes"},
            "beta_initializer",
            "'zeroes'",
        ),
        ({"type": "BatchNormalization", "on_nonfinite": "warn"}, "on_nonfinite", "'warn'"),
        ({"type": "BatchNormalization", "axis": 0}, "axis", "got 0 (int)"),
        ({"type": "BatchNormAct", "activation": "softmax"}, "activation", "'softmax'"),
        ({"type": "BatchNormAct", "momentum": -1}, "momentum", "-1"),
    ],
    ids=[
        "momentum",
        "epsilon",
        "regularizer",
        "initializer",
        "on_nonfinite",
        "axis0",
        "act",
        "act_momentum",
    ],
)
def test_batchnorm_values_are_checked_by_the_layer_and_located(raw, key, shown):
    message = _error(raw)
    assert message.startswith(f"{WHERE}.{key}: ")
    assert shown in message


def test_batchnorm_option_combinations_are_checked_by_the_layer():
    message = _error({"type": "BatchNormalization", "renorm": True, "virtual_batch_size": 4})
    assert message.startswith(
        f"{WHERE}: BatchNormalization: renorm=True and virtual_batch_size cannot be combined"
    )


def test_missing_required_argument_gives_an_example():
    message = _error({"type": "Conv2D", "filters": 3})
    assert message == (
        f"{WHERE}: Conv2D needs the argument 'kernel_size', e.g. "
        '{type = "Conv2D", filters = 32, kernel_size = 3}'
    )
    assert "'units'" in _error({"type": "Dense"})
    assert "'rate'" in _error({"type": "Dropout"})


def test_missing_type_and_non_table_entries():
    message = _error([{"units": 3}])
    assert message.startswith(f"{WHERE}[0]: a layer needs a 'type' key")
    assert "{'units': 3}" in message
    message = _error([3])
    assert message.startswith(f"{WHERE}[0]: expected a layer table") and "3 (int)" in message
    message = _error([{"type": 7}])
    assert "unknown layer 7" in message


def test_layer_list_must_be_a_list_with_a_real_layer():
    for raw, shown in (({"type": "Dense"}, "dict"), ("Dense", "'Dense' (str)")):
        with pytest.raises(SpecError, match=re.escape(shown)):
            parse_layers(raw, where=WHERE)  # type: ignore[arg-type]
    assert "got 0 entries" in _error([])
    assert "got 1 entries" in _error([{"type": "Input", "shape": [2]}])


def test_input_only_first():
    message = _error([{"type": "Dense", "units": 2}, {"type": "Input", "shape": [2]}])
    assert message == f"{WHERE}[1]: Input may only be the first entry; found at index 1"


def test_duplicate_names_rejected():
    message = _error(
        [{"type": "Dense", "units": 2, "name": "a"}, {"type": "Dense", "units": 2, "name": "a"}]
    )
    assert message.startswith(f"{WHERE}[1].name: layer name 'a' is already used by entry [0]")


def test_layer_spec_constructor_validates_too():
    with pytest.raises(SpecError, match=r"^LayerSpec: unknown layer 'Nope'"):
        LayerSpec("Nope", {})
    with pytest.raises(SpecError, match=r"^LayerSpec\.units: expected an integer >= 1; got -1"):
        LayerSpec("Dense", {"units": -1})
    with pytest.raises(SpecError, match=r"got \[1\] \(list\)"):
        LayerSpec("Dense", [1])  # type: ignore[arg-type]


def test_keras_auto_names():
    specs = parse_layers(
        [
            {"type": "Input", "shape": [8, 8, 1]},
            {"type": "Conv2D", "filters": 2, "kernel_size": 3},
            {"type": "BatchNormalization"},
            {"type": "Conv2D", "filters": 2, "kernel_size": 3, "name": "conv2d_1"},
            {"type": "Conv2D", "filters": 2, "kernel_size": 3},
            {"type": "MaxPooling2D"},
            {"type": "ZeroPadding2D"},
            {"type": "Flatten"},
            {"type": "Dense", "units": 3},
            {"type": "Dense", "units": 3},
            {"type": "BatchNormalization"},
            {"type": "Activation", "activation": "relu"},
            {"type": "Dropout", "rate": 0.1},
        ],
        where=WHERE,
    )
    assert layer_names(specs) == [
        None,
        "conv2d",
        "batch_normalization",
        "conv2d_1",
        "conv2d_2",  # skips the explicit conv2d_1
        "max_pooling2d",
        "zero_padding2d",
        "flatten",
        "dense",
        "dense_1",
        "batch_normalization_1",
        "activation",
        "dropout",
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "Conv2D", "filters": 2, "kernel_size": 3, "data_format": "channels_first"},
         r"layers.data_format: expected 'channels_last' \(channel-first Keras layers are not "
         r"supported; the model moves channels first inside by itself\); got 'channels_first'"),
        ({"type": "Dense", "units": 2, "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                                 "config": {"name": "float64"}}},
         "layers.dtype: expected the float32 dtype policy"),
        ({"type": "Dense", "units": 2, "dtype": "mixed_float16"},
         "layers.dtype: expected the float32 dtype policy"),
        ({"type": "Dense", "units": 2, "kernel_initializer": {
            "module": None, "class_name": "MyInit", "config": {},
            "registered_name": "Custom>MyInit"}},
         "layers.kernel_initializer: the initializer .* is a custom object"),
        ({"type": "Dense", "units": 2, "activity_regularizer": "l2"},
         "layers.activity_regularizer: expected null \\(None\\); activity regularizers are not "
         "supported; got 'l2' \\(str\\)"),
        ({"class_name": "Dense", "config": {"units": 2}, "module": "my_layers",
          "registered_name": "my_layers>Dense"},
         "layers: the layer 'Dense' is a custom object"),
    ],
    ids=["channels-first", "float64", "mixed", "custom-initializer", "activity", "custom-layer"],
)
def test_keras_values_that_cannot_be_honoured_fail_in_one_line(raw, message):
    with pytest.raises(SpecError, match=message) as info:
        parse_layer(raw, where="layers")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("types", "rescales"), [
    (["Rescaling", "Conv2D"], True),
    (["RandomFlip", "RandomRotation", "Resizing", "Rescaling", "Conv2D"], True),
    (["Rescaling", "Normalization", "Rescaling", "Conv2D"], True),  # EfficientNet's stem
    (["Conv2D", "Rescaling"], False),  # rescales features, not pixels
    (["RandomFlip", "Dense"], False),
    ([], False),
])
def test_rescales_input_is_a_rescaling_among_the_layers_that_prepare_the_input(types, rescales):
    from bnlab.models import rescales_input

    args = {"Rescaling": {"scale": 0.5}, "Conv2D": {"filters": 1, "kernel_size": 1},
            "Dense": {"units": 1}, "Resizing": {"height": 4, "width": 4},
            "RandomRotation": {"factor": 0.1}}
    specs = [parse_layer({"type": t, **args.get(t, {})}, where=t) for t in types]
    assert rescales_input(specs) is rescales
