"""The student's Keras side of the doctor's end-to-end test: train, save, evaluate — in Keras.

Keras 3 on the torch backend (``KERAS_BACKEND=torch``, set by ``tests/conftest.py``).
Accuracies are measured by Keras itself:

- **inference mode**: ``model.predict`` (BN uses its moving statistics);
- **batch statistics**: ``model(x_batch, training=True)`` on shuffled batches of the
  training batch size, so every BN layer normalizes each batch with the batch's own
  mean and variance (the model has no Dropout, so nothing else changes with
  ``training=True``). Keras's BN updates its moving statistics in such a call; they are
  saved before and assigned back after, so the model leaves the measurement unchanged.
"""

from __future__ import annotations

import keras
import numpy as np

STEPS_PER_EPOCH_OF_600 = 19  # ceil(600 / 32)


def small_cnn(input_shape: tuple[int, int, int], classes: int, *,
              momentum: float = 0.99) -> keras.Model:
    """Rescaling(1/255) -> [Conv2D(relu) -> BN -> MaxPooling2D] x 2 -> Flatten -> Dense(softmax)."""
    layers = keras.layers
    # Explicit names: Keras's automatic ones count per session, i.e. depend on test order.
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Rescaling(1 / 255, name="rescaling"),
        layers.Conv2D(16, 3, activation="relu", name="conv2d"),
        layers.BatchNormalization(momentum=momentum, name="batch_normalization"),
        layers.MaxPooling2D(name="max_pooling2d"),
        layers.Conv2D(32, 3, activation="relu", name="conv2d_1"),
        layers.BatchNormalization(momentum=momentum, name="batch_normalization_1"),
        layers.MaxPooling2D(name="max_pooling2d_1"),
        layers.Flatten(name="flatten"),
        layers.Dense(classes, activation="softmax", name="dense"),
    ], name="student_cnn")


def train(x: np.ndarray, y: np.ndarray, classes: int, *, epochs: int, momentum: float = 0.99,
          seed: int = 0) -> keras.Model:
    """Compile (Adam 1e-3, sparse categorical cross-entropy) and fit with batches of 32."""
    keras.utils.set_random_seed(seed)
    model = small_cnn(tuple(x.shape[1:]), classes, momentum=momentum)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return model


def inference_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Keras's inference-mode accuracy (moving statistics)."""
    predicted = model.predict(x, batch_size=256, verbose=0).argmax(axis=1)
    return float((predicted == y).mean())


def batch_statistics_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, *,
                              batch_size: int = 32, seed: int = 0) -> float:
    """Accuracy with every BN layer on its batch's statistics (see the module docstring)."""
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [[keras.ops.convert_to_numpy(v).copy() for v in (bn.moving_mean, bn.moving_variance)]
             for bn in bns]
    order = np.random.default_rng(seed).permutation(len(x))
    correct = 0
    try:
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            out = keras.ops.convert_to_numpy(model(x[rows], training=True))
            correct += int((out.argmax(axis=1) == y[rows]).sum())
    finally:
        for bn, (mean, variance) in zip(bns, saved, strict=True):
            bn.moving_mean.assign(mean)
            bn.moving_variance.assign(variance)
    return correct / len(x)


def quadrant_images(n: int, *, seed: int, size: int = 12,
                    classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: uint8 RGB images ``(n, size, size, 3)`` whose class brightens one quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(90, 25, (n, size, size, 3))
    half = size // 2
    for k in range(classes):
        rows = slice(half * (k // 2), half * (k // 2) + half)
        cols = slice(half * (k % 2), half * (k % 2) + half)
        x[(y == k), rows, cols, :] += 80
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64)
