"""Where Keras keeps each layer's weights: our paths equal those Keras writes."""

from __future__ import annotations

import io
import zipfile

import h5py
import keras
import pytest
from keras.src.utils import naming

from bnlab.keras_io.layout import layer_keys, snake_case, weight_groups

# Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

CLASSES = [
    "BatchNormalization", "Conv2D", "Conv1D", "DepthwiseConv2D", "SeparableConv2D",
    "MaxPooling2D", "GlobalAveragePooling2D", "ZeroPadding2D", "LSTM", "GRU", "SimpleRNN",
    "ReLU", "LeakyReLU", "InputLayer", "TimeDistributed", "Bidirectional", "Dense",
    "LayerNormalization", "SpatialDropout2D",
]  # fmt: skip


@pytest.mark.parametrize("class_name", CLASSES)
def test_snake_case_is_keras_s(class_name) -> None:
    assert snake_case(class_name) == naming.to_snake_case(class_name)


def test_layer_keys_count_per_class() -> None:
    assert layer_keys(["Conv2D", "Dense", "Conv2D", "Conv2D"]) == [
        "conv2d", "dense", "conv2d_1", "conv2d_2",
    ]  # fmt: skip


def test_weight_groups_match_the_file_keras_writes(tmp_path) -> None:
    keras.backend.clear_session()
    L = keras.layers
    inputs = keras.Input((5, 3))
    both = L.Bidirectional(L.LSTM(4), backward_layer=L.GRU(4, go_backwards=True))(inputs)
    each = L.Flatten()(L.TimeDistributed(L.Dense(2))(inputs))
    model = keras.Model(inputs, L.Concatenate()([both, each]))
    path = tmp_path / "wrappers.keras"
    model.save(path)
    with (
        zipfile.ZipFile(path) as archive,
        h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5,
    ):
        saved = {name for name, obj in h5["layers"].items() if isinstance(obj, h5py.Group)}
        for layer, key in zip(
            model.layers,
            layer_keys(type(each_layer).__name__ for each_layer in model.layers),
            strict=True,
        ):
            assert key in saved
            entry = keras.saving.serialize_keras_object(layer)
            groups = weight_groups(entry)
            arrays = [
                h5["layers"][key][g][str(i)].shape
                for g in groups
                for i in range(len(h5["layers"][key][g]))
            ]
            assert arrays == [tuple(w.shape) for w in layer.weights], layer.name
    bidirectional = next(x for x in model.layers if isinstance(x, keras.layers.Bidirectional))
    groups = weight_groups(keras.saving.serialize_keras_object(bidirectional))
    assert groups == [
        "forward_layer/cell/vars",
        "backward_layer/cell/vars",
    ]  # file sorts backward first
