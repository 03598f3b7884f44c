"""Keras 3 (torch backend) reference models for the keras_io tests: build, randomize, save.

Every model gets non-trivial BatchNormalization weights and moving statistics before it
is saved, so inference mode (moving statistics) and training mode (batch statistics)
compute different numbers and both are checked.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
import torch

assert keras.backend.backend() == "torch"


def value(variable) -> np.ndarray:
    # Not np.array(variable): with the torch backend that warns under numpy 2.
    return variable.value.detach().cpu().numpy().copy()


def flat_layers(kmodel) -> list:
    """Every layer, nested models' layers in their place (how bnlab flattens them), and the
    arithmetic operations of a Functional graph (``x + 3.0``), which bnlab runs as layers
    (the operations that compute masks it drops; a Sequential model has only layers)."""
    out = []
    for layer in getattr(kmodel, "operations", kmodel.layers):
        if isinstance(layer, keras.Model):
            out += flat_layers(layer)
        elif isinstance(layer, keras.layers.InputLayer):
            continue
        elif isinstance(layer, keras.layers.Layer) or type(layer).__name__ in ARITHMETIC:
            out.append(layer)
    return out


ARITHMETIC = ("Add", "Subtract", "Multiply", "TrueDivide")


def batch_norm_layers(kmodel) -> dict[str, keras.layers.BatchNormalization]:
    return {
        layer.name: layer
        for layer in flat_layers(kmodel)
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def randomize_batchnorm(kmodel, seed: int = 0) -> None:
    """Gamma, beta and moving statistics away from their initial values."""
    rng = np.random.default_rng(seed)
    for layer in batch_norm_layers(kmodel).values():
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.path.endswith(("gamma", "moving_variance", "moving_stddev")):
                new = rng.uniform(0.5, 1.5, shape)
            else:
                new = rng.normal(0.0, 0.2, shape)
            variable.assign(new.astype("float32"))


def predict(kmodel, inputs: tuple[np.ndarray, ...], *, training: bool) -> np.ndarray:
    with torch.no_grad():
        out = kmodel(
            [torch.from_numpy(x) for x in inputs]
            if len(inputs) > 1
            else torch.from_numpy(inputs[0]),
            training=training,
        )
    return out.detach().cpu().numpy()


def counts(kmodel) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) as Keras's summary() reports them."""
    trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in kmodel.non_trainable_weights)
    return trainable + frozen, trainable, frozen


def layer_names(kmodel) -> list[str]:
    return [layer.name for layer in flat_layers(kmodel)]


@dataclass
class Case:
    """A saved Keras model and the inputs to compare on."""

    name: str
    kmodel: keras.Model
    path: Path
    inputs: tuple[np.ndarray, ...]
    rtol: float
    atol: float
    training_tolerance: float = 1e-5

    def snapshot(self) -> list[np.ndarray]:
        return [value(v) for v in self.kmodel.weights]

    def restore(self, saved: list[np.ndarray]) -> None:
        for variable, array in zip(self.kmodel.weights, saved, strict=True):
            variable.assign(array)


def sequential_cnn() -> keras.Model:
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Conv2D(8, 3, padding="same", use_bias=False, name="conv"),
            L.BatchNormalization(name="bn"),
            L.Activation("relu"),
            L.MaxPooling2D(),
            L.ZeroPadding2D(1),
            L.Conv2D(6, 3, strides=2, activation="relu"),
            L.BatchNormalization(momentum=0.9, epsilon=1e-2, center=False),
            L.Flatten(),
            L.Dropout(0.3),
            L.Dense(10, activation="softmax"),
        ],
        name="cnn",
    )


def dcgan_generator() -> keras.Model:
    """The generator of Keras's DCGAN tutorial, smaller: BN after every transposed conv."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(4 * 4 * 8, use_bias=False),
            L.BatchNormalization(),
            L.LeakyReLU(),
            L.Reshape((4, 4, 8)),
            L.Conv2DTranspose(8, 5, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.LeakyReLU(),
            L.Conv2DTranspose(4, 5, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(momentum=0.8),
            L.LeakyReLU(),
            L.UpSampling2D(interpolation="bilinear"),
            L.Cropping2D(1),
            L.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh"),
        ],
        name="generator",
    )


def volume_cnn() -> keras.Model:
    """A 3D CNN as medical-imaging tutorials write it: Conv3D -> BN -> ReLU -> MaxPooling3D."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 6, 1)),
            L.Conv3D(4, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.Activation("relu"),
            L.MaxPooling3D(2),
            L.ZeroPadding3D(1),
            L.Conv3D(6, 3, strides=(2, 2, 1), activation="relu"),
            L.BatchNormalization(momentum=0.9),
            L.SpatialDropout3D(0.1),
            L.UpSampling3D((1, 1, 2)),
            L.Cropping3D(((0, 0), (0, 0), (1, 1))),
            L.AveragePooling3D((1, 1, 2), padding="same"),
            L.GlobalAveragePooling3D(),
            L.Dense(3, activation="softmax"),
        ],
        name="volumes",
    )


def sequence_autoencoder() -> keras.Model:
    """An LSTM autoencoder with BN on the code: RepeatVector, Permute, Identity."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((6, 4)),
            L.LSTM(8),
            L.BatchNormalization(),
            L.RepeatVector(6),
            L.LSTM(5, return_sequences=True),
            L.Permute((2, 1)),
            L.Identity(),
            L.Dense(3),
            L.Permute((2, 1)),
        ],
        name="autoencoder",
    )


def lstm_model() -> keras.Model:
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((7, 4)),
            L.LSTM(8, return_sequences=True),
            L.BatchNormalization(),
            L.LSTM(5),
            L.Dense(3),
        ],
        name="recurrent",
    )


def two_branch() -> keras.Model:
    """Residual Add and Concatenate; the input and the stem are used twice."""
    L = keras.layers
    inputs = keras.Input((10, 10, 3), name="image")
    stem = L.Conv2D(6, 3, padding="same", name="stem")(inputs)
    left = L.BatchNormalization(name="left_bn")(stem)
    left = L.Activation("relu", name="left_relu")(left)
    left = L.Conv2D(6, 3, padding="same", name="left_conv")(left)
    right = L.Conv2D(6, 1, name="right_conv")(inputs)
    right = L.BatchNormalization(momentum=0.8, name="right_bn")(right)
    added = L.Add(name="add")([left, right])
    joined = L.Concatenate(name="concat")([added, stem])
    pooled = L.MaxPooling2D(name="pool")(joined)
    flat = L.Flatten(name="flatten")(pooled)
    outputs = L.Dense(4, name="head")(flat)
    return keras.Model(inputs, outputs, name="two_branch")


def layer_zoo() -> keras.Model:
    """A Functional model with most layer types bnlab reads, BN variants included:
    renorm, frozen (trainable=False), a BN after a depthwise convolution."""
    L = keras.layers
    inputs = keras.Input((12, 12, 3), name="pixels")
    normalization = L.Normalization(name="normalize")
    normalization.adapt(
        np.random.default_rng(2).normal(1.0, 2.0, (16, 12, 12, 3)).astype("float32")
    )
    a = L.Rescaling(0.5, offset=0.1)(inputs)
    a = normalization(a)
    a = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2)(a)
    a = L.BatchNormalization(renorm=True, name="renorm_bn")(a)
    a = L.LayerNormalization()(a)
    b = L.Conv2D(4, 1, use_bias=False)(inputs)
    b = L.GroupNormalization(2)(b)
    b = L.LeakyReLU(0.2)(b)
    m = L.Multiply()([a, b])
    m = L.SpatialDropout2D(0.2)(m)
    m = L.AveragePooling2D(2)(m)
    m = L.DepthwiseConv2D(3, padding="same")(m)
    m = L.BatchNormalization(trainable=False, name="frozen_bn")(m)
    m = L.ReLU(max_value=6.0)(m)
    both = L.Concatenate()([L.GlobalMaxPooling2D()(m), L.GlobalAveragePooling2D()(m)])
    seq = L.Reshape((2, 4))(both)
    out = L.Dense(3)(L.GlobalAveragePooling1D()(seq))
    return keras.Model(inputs, L.Softmax()(out), name="layer_zoo")


def sequence_zoo() -> keras.Model:
    """Embedding, Conv1D, BN over time, GRU, Bidirectional, TimeDistributed, SimpleRNN."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            L.Embedding(10, 4),
            L.Conv1D(3, 2, activation="tanh"),
            L.BatchNormalization(),
            L.GRU(5, return_sequences=True),
            L.Bidirectional(L.LSTM(3, return_sequences=True)),
            L.TimeDistributed(L.Dense(2)),
            L.SimpleRNN(3),
        ],
        name="sequence_zoo",
    )


def masked_sequence() -> keras.Model:
    """A Functional model with masks: Keras records the mask computation as operation nodes
    (NotEqual, Any) that feed only the later layers' ``mask`` arguments."""
    L = keras.layers
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Embedding(10, 4, mask_zero=True)(tokens)
    x = L.LSTM(5, return_sequences=True)(x)
    x = L.BatchNormalization()(x)
    pooled = L.GlobalAveragePooling1D()(x)
    masked = L.Masking(0.0)(L.Reshape((3, 2))(L.Dense(6, activation="relu")(pooled)))
    summary = L.GRU(3)(masked)
    return keras.Model(tokens, L.Dense(2)(summary), name="masked_sequence")


def transfer() -> keras.Model:
    """The transfer-learning pattern: a frozen MobileNetV2 base called with training=False,
    and a nested Sequential head with its own BatchNormalization."""
    L = keras.layers
    base = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(32, 32, 3), include_top=False
    )
    base.trainable = False
    head = keras.Sequential(
        [L.Dense(8, use_bias=False), L.BatchNormalization(), L.Activation("relu")], name="head"
    )
    inputs = keras.Input((32, 32, 3))
    x = L.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = base(x, training=False)
    x = head(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, L.Dense(3)(x), name="transfer")


def build(
    name: str,
    factory: Callable[[], keras.Model],
    folder: Path,
    shapes,
    *,
    rtol: float,
    atol: float,
    suffix: str = ".keras",
    tokens: int | None = None,
) -> Case:
    """Build, randomize BN, save; inputs are normal floats, or integers below ``tokens``."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    kmodel = factory()
    randomize_batchnorm(kmodel)
    path = folder / f"{name}{suffix}"
    kmodel.save(path)
    rng = np.random.default_rng(1)
    inputs = tuple(
        rng.normal(size=shape).astype("float32")
        if tokens is None
        else rng.integers(0, tokens, size=shape).astype("int32")
        for shape in shapes
    )
    return Case(name, kmodel, path, inputs, rtol, atol)


_TF_KERAS_DROPPED = {"module", "registered_name", "build_config", "compile_config", "shared_object_id",
                     "optional", "quantization_config", "input_axes", "output_axes"}  # fmt: skip


def _tf_keras_config(value, rank: int):
    """Keras 3's serialized form -> tf.keras 2.x's (no modules, dtype strings, list nodes)."""
    if isinstance(value, list):
        return [_tf_keras_config(v, rank) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy":
        return value["config"]["name"]
    out = {}
    for key, item in value.items():
        if key in _TF_KERAS_DROPPED:
            continue
        if key == "batch_shape":
            out["batch_input_shape"] = item
        elif key == "inbound_nodes":
            out[key] = [
                [[t["config"]["keras_history"][0], 0, 0, {}] for t in _tensors(node["args"])]
                for node in item
            ]
        elif key in ("input_layers", "output_layers") and item and isinstance(item[0], str):
            out[key] = [item]
        else:
            out[key] = _tf_keras_config(item, rank)
    if value.get("class_name") == "BatchNormalization" and out["config"]["axis"] == -1:
        out["config"]["axis"] = [rank - 1]  # tf.keras wrote the positive axis as a list
    return out


def _tensors(args):
    if isinstance(args, list):
        return [t for a in args for t in _tensors(a)]
    return [args]


def tf_keras_h5(source: Path, target: Path, rank: int) -> Path:
    """Rewrite a Keras 3 legacy .h5 as tf.keras 2.x wrote it: its model_config format and
    its weight names (``conv/kernel:0`` under ``model_weights/conv/conv``)."""
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        config = json.loads(src.attrs["model_config"])
        dst.attrs["model_config"] = json.dumps(_tf_keras_config(config, rank))
        dst.attrs["keras_version"] = "2.15.0"
        dst.attrs["backend"] = "tensorflow"
        weights = dst.create_group("model_weights")
        names = [
            n.decode() if isinstance(n, bytes) else n
            for n in src["model_weights"].attrs["layer_names"]
        ]
        weights.attrs["layer_names"] = [n.encode() for n in names]
        for layer in names:
            group = weights.create_group(layer)
            old = [
                w.decode() if isinstance(w, bytes) else w
                for w in src["model_weights"][layer].attrs["weight_names"]
            ]
            new = [f"{layer}/{w.rsplit('/', 1)[1]}:0" for w in old]
            group.attrs["weight_names"] = [w.encode() for w in new]
            for before, after in zip(old, new, strict=True):
                group.create_dataset(after, data=src["model_weights"][layer][before][()])
    return target
