"""The student's case, reproducible: a Keras CNN on an image folder, BN momentum 0.99, few steps.

    python scripts/keras_student.py clothes student.keras

1. Writes an image folder (one sub-folder per class, PNG files) of six Fashion-MNIST
   classes, 200 images each, from Debian's ``dataset-fashion-mnist``.
2. Trains in Keras 3 (``KERAS_BACKEND=torch``; no TensorFlow needed) a small CNN with
   its own ``Rescaling(1/255)`` and ``BatchNormalization()`` (momentum 0.99) after each
   convolution: 5 epochs of 30 batches of 32 = 150 steps, fewer than the 299 that
   momentum 0.99 needs for its initial moving statistics to fade.
3. Saves it with ``model.save`` and prints Keras's own accuracies.

The folder is read the way ``keras.utils.image_dataset_from_directory(folder,
validation_split=0.2, subset="both", seed=1337, image_size=(28, 28))`` reads it
(class = sorted sub-folder, files shuffled with ``RandomState(1337)``, the last 20%
for validation, pixels 0..255); that function needs TensorFlow's ``tf.data``, so the
script takes the same files in the same order, pixels 0..255, from
``bnlab.data.load_image_folder(..., pixels="0..255")``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
from PIL import Image

from bnlab.data import load_dataset, load_image_folder


def write_folder(folder: Path) -> None:
    data = load_dataset("fashion6", train_per_class=200)
    for i, (image, label) in enumerate(zip(data.x_train, data.y_train, strict=True)):
        name = data.class_names[label].replace("/", "-").replace(" ", "_").lower()
        (folder / name).mkdir(parents=True, exist_ok=True)
        pixels = np.rint(image[..., 0] * 255).astype(np.uint8)  # (28, 28) gray
        Image.fromarray(pixels).convert("RGB").save(folder / name / f"{i:04d}.png")


def main(folder: Path, out: Path) -> None:
    if not folder.exists():
        write_folder(folder)
    split = load_image_folder(path=folder, image_size=(28, 28), validation_split=0.2, seed=1337,
                              pixels="0..255")  # what Keras's loader yields
    x_train, x_val = split.x_train, split.x_test
    y_train, y_val = split.y_train, split.y_test
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 3)),
        layers.Rescaling(1 / 255),
        layers.Conv2D(16, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Conv2D(32, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(split.num_classes, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=5, verbose=0,
                        validation_data=(x_val, y_val))
    model.save(out)
    print(f"{folder}: {len(x_train)} training and {len(x_val)} validation images of "
          f"{split.num_classes} classes ({', '.join(split.class_names)})")
    print(f"{out}: {int(model.optimizer.iterations)} steps; accuracy "
          f"{history.history['accuracy'][-1]:.3f}, val_accuracy "
          f"{history.history['val_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
