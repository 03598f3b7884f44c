"""Measure how far bnlab.load_keras's models are from Keras 3 (torch backend), and the load time.

Run: ``python benchmarks/keras_parity.py [--batch 4]`` (needs keras; sets KERAS_BACKEND=torch).

For ResNet50 (64x64x3), MobileNetV2 (alpha 0.35, 96x96x3) and the other applications
of ``MODELS`` (``--models`` picks some), built with ``weights=None`` and
``classifier_activation=None`` (logits) and random BatchNormalization weights and moving
statistics, saved with ``model.save``, loaded
with ``bnlab.load_keras``: the largest absolute and relative output differences in
inference mode and in training mode (batch statistics; dropout off in both, its draws
differ), the largest moving-statistic
difference after one training-mode step, and the seconds Keras and bnlab take to load.
This is a script, not a test: the tests assert the tolerances.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "keras_io"))

import keras
import numpy as np
import torch
from keras_files import batch_norm_layers, predict, randomize_batchnorm, value

import bnlab
from bnlab.models import get_keras_weights

MODELS = {
    "ResNet50": lambda: keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    ),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(96, 96, 3), classifier_activation=None
    ),
    **{
        name: (lambda name=name, size=size: getattr(keras.applications, name)(
            weights=None, input_shape=(size, size, 3), classifier_activation=None))
        for name, size in (("EfficientNetB0", 64), ("EfficientNetV2B0", 64),
                           ("MobileNetV3Small", 64), ("MobileNet", 64), ("DenseNet121", 64),
                           ("ResNet50V2", 64), ("InceptionV3", 96), ("Xception", 72),
                           ("InceptionResNetV2", 96), ("VGG16", 32))
    },
}


def _differences(ours: np.ndarray, expected: np.ndarray) -> str:
    diff = np.abs(ours - expected)
    return f"max |diff| {diff.max():.2e} (max |logit| {np.abs(expected).max():.2e}, max rel {(diff / np.maximum(np.abs(expected), 1e-6)).max():.2e})"


def measure(name: str, batch: int, folder: Path) -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    kmodel = MODELS[name]()
    randomize_batchnorm(kmodel)
    path = folder / f"{name}.keras"
    kmodel.save(path)
    start = time.perf_counter()
    keras.saving.load_model(path)
    keras_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model = bnlab.load_keras(path)
    ours_seconds = time.perf_counter() - start
    x = np.random.default_rng(1).normal(size=(batch, *kmodel.input_shape[1:])).astype("float32")
    for layer in kmodel.layers:  # dropout's draws differ between frameworks: off in both
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
            model.layer(layer.name).rate = 0.0
    with torch.no_grad():
        inference = model(torch.from_numpy(x)).numpy()
        expected = predict(kmodel, (x,), training=False)
        print(f"{name} inference: {_differences(inference, expected)}")
        training = model.train()(torch.from_numpy(x)).numpy()
        expected = predict(kmodel, (x,), training=True)
        print(f"{name} training:  {_differences(training, expected)}")
    stats = 0.0
    for n, layer in batch_norm_layers(kmodel).items():  # gamma and beta are optional
        ours = dict(zip((w.path.rsplit("/", 1)[1] for w in layer.weights),
                        get_keras_weights(model.layer(n)), strict=True))
        for v in (layer.moving_mean, layer.moving_variance):
            stats = max(stats, float(np.abs(ours[v.path.rsplit("/", 1)[1]] - value(v)).max()))
    print(f"{name} moving statistics after one step: max |diff| {stats:.2e}")
    print(f"{name} load: keras {keras_seconds:.2f} s, bnlab {ours_seconds:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            measure(name, args.batch, Path(folder))


if __name__ == "__main__":
    main()
