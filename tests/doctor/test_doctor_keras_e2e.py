"""The student's case end to end: a CNN trained IN KERAS, diagnosed and fixed by `bnlab doctor`.

A small CNN (Rescaling(1/255), two Conv2D + BatchNormalization(momentum=0.99) blocks)
is trained in Keras (torch backend) on six Fashion-MNIST classes for 152 steps (8
epochs of 19 batches of 32), too few for momentum 0.99 (299 steps needed), and saved
with ``model.save``. The ``bnlab doctor --fix recalibrate --save fixed.keras`` command,
run as a separate process, must name stale moving statistics with its evidence (its
diagnosis before the fix) and write a file that Keras loads and that closes at least
90% of the gap between Keras's inference-mode accuracy and its batch-statistics
accuracy, both measured by Keras (see ``keras_training``) on the same test images the
doctor evaluates on.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import DatasetError, load_dataset

keras = pytest.importorskip("keras", reason="Keras 3 is a test dependency (pip install keras)")
keras_training = pytest.importorskip("keras_training")

pytestmark = [
    # Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    # A saved file keeps its compile settings but no optimizer state (weights only).
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning"),
]

DATA = '{ name = "fashion6", train_per_class = 100, test_per_class = 100 }'
EPOCHS = 8  # 8 x 19 = 152 steps at batch size 32


@pytest.fixture(scope="module")
def fashion6():
    try:
        return load_dataset("fashion6", train_per_class=100, test_per_class=100)
    except DatasetError as e:
        pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {e}")


def bnlab(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    return subprocess.run([sys.executable, "-m", "bnlab.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_keras_model_diagnosed_and_fixed_file_closes_the_gap_in_keras(fashion6, tmp_path) -> None:
    # The student's side: pixels 0..255 as image_dataset_from_directory yields them.
    x_train, x_test = (np.rint(x * 255).astype(np.float32)
                       for x in (fashion6.x_train, fashion6.x_test))
    y_train, y_test = fashion6.y_train, fashion6.y_test
    model = keras_training.train(x_train, y_train, 6, epochs=EPOCHS)
    assert int(model.optimizer.iterations) == 152
    path = tmp_path / "student.keras"
    model.save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    keras_inference = keras_training.inference_accuracy(model, x_test, y_test)
    keras_batch = keras_training.batch_statistics_accuracy(model, x_test, y_test)
    gap = keras_batch - keras_inference
    assert gap >= 0.05, f"Keras: inference {keras_inference:.3f}, batch statistics {keras_batch:.3f}"

    # One command diagnoses (the "before" diagnosis) and writes the fixed file.
    fixed = tmp_path / "fixed.keras"
    done = bnlab("doctor", path, "--data", DATA, "--fix", "recalibrate", "--save", fixed,
                 "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    treatment = json.loads(done.stdout)
    diagnosis = treatment["before"]
    stale = diagnosis["findings"][0]
    assert (stale["code"], stale["severity"]) == ("stale_statistics", "serious")
    assert set(stale["layers"]) == {"batch_normalization", "batch_normalization_1"}
    assert "152 updates at momentum 0.99 (299 needed" in stale["summary"]
    assert diagnosis["context"]["pixels"] == "0..255"  # the model's Rescaling applies once
    # bnlab's view of the file agrees with Keras's (same images, same pixels).
    assert diagnosis["metrics"]["inference"]["accuracy"] == pytest.approx(keras_inference,
                                                                         abs=2 / 600)
    assert treatment["details"]["saved"] == str(fixed)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the input is untouched

    repaired = keras.saving.load_model(fixed)
    after = keras_training.inference_accuracy(repaired, x_test, y_test)
    closed = (after - keras_inference) / gap
    print(f"\nKeras: inference {keras_inference:.3f} -> {after:.3f}, batch statistics "
          f"{keras_batch:.3f}: {closed:.1%} of the gap closed")
    assert closed >= 0.9
    # Only the moving statistics changed: batch-statistics accuracy is Keras's as before.
    assert keras_training.batch_statistics_accuracy(repaired, x_test, y_test) == keras_batch
