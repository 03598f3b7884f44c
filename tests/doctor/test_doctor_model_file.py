"""`bnlab doctor MODEL.keras --data DATA`: findings, the fixed file, and bad input (exit 2)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlab.cli import main
from bnlab.data import clear_memory_cache

keras = pytest.importorskip("keras", reason="Keras 3 is a test dependency (pip install keras)")
keras_training = pytest.importorskip("keras_training")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (pip install pillow)")

pytestmark = [
    # Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    # A saved file keeps its compile settings but no optimizer state (weights only).
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning"),
]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Keras CNN trained 24 steps at momentum 0.99 on quadrant images, its data as .npz."""
    root = tmp_path_factory.mktemp("student")
    x_train, y_train = keras_training.quadrant_images(384, seed=1)
    x_test, y_test = keras_training.quadrant_images(192, seed=2)
    model = keras_training.train(x_train.astype(np.float32), y_train, 3, epochs=2)
    model.save(root / "student.keras")
    model.save(root / "student.h5")  # Keras's legacy full-model format
    np.savez(root / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    folder = root / "images"
    for i, (image, label) in enumerate(zip(x_test, y_test, strict=True)):
        (folder / f"class_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"class_{label}" / f"{i:03d}.png")
    return {"model": root / "student.keras", "h5": root / "student.h5", "npz": root / "data.npz", "folder": folder,
            "root": root}


def doctor(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["doctor", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_names_stale_statistics_with_the_files_step_count(student, capsys) -> None:
    code, out, err = doctor(capsys, student["model"], "--data", student["npz"], "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["context"]["train_steps"] == 24  # the optimizer's iterations in the file
    assert data["context"]["pixels"] == "0..255" and data["context"]["loss"] == (
        "sparse_categorical_crossentropy")
    assert [layer["name"] for layer in data["layers"]] == ["batch_normalization",
                                                         "batch_normalization_1"]
    assert [layer["steps_seen"] for layer in data["layers"]] == [24, 24]
    stale = data["findings"][0]
    assert stale["code"] == "stale_statistics"
    assert "24 updates at momentum 0.99 (299 needed" in stale["summary"]


def test_fix_writes_a_keras_file_that_keras_opens(student, tmp_path, capsys) -> None:
    fixed = tmp_path / "fixed.keras"
    code, out, err = doctor(capsys, student["model"], "--data", student["npz"], "--fix",
                            "recalibrate", "--save", fixed)
    assert (code, err) == (0, "")
    assert f"Fixed model written to {fixed}" in out and "Before and after recalibrate" in out
    repaired = keras.saving.load_model(fixed)
    original = keras.saving.load_model(student["model"])
    bn = repaired.get_layer("batch_normalization")
    # The moving statistics now equal the population statistics of the layer's input
    # over the training images (Keras's own forward pass up to the BN layer).
    x_train = np.load(student["npz"])["x_train"].astype(np.float32)
    rescaled = original.get_layer("rescaling")(x_train)
    h = keras.ops.convert_to_numpy(original.get_layer("conv2d")(rescaled))  # (N, 10, 10, 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               h.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance),
                               h.var(axis=(0, 1, 2)), rtol=1e-3, atol=1e-4)
    for name in ("conv2d", "dense"):  # every other weight as it was
        for a, b in zip(repaired.get_layer(name).get_weights(),
                        original.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_legacy_h5_file_is_diagnosed_and_saved_as_keras(student, tmp_path, capsys) -> None:
    fixed = tmp_path / "fixed.keras"
    code, out, err = doctor(capsys, student["h5"], "--data", student["npz"], "--fix",
                            "recalibrate", "--save", fixed, "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["before"]["context"]["train_steps"] == 24  # optimizer_weights' iterations
    assert data["before"]["findings"][0]["code"] == "stale_statistics"
    assert data["gap_closed"] is None or data["gap_closed"] >= 0.9
    from_h5 = keras.saving.load_model(fixed)
    code, out, _ = doctor(capsys, student["model"], "--data", student["npz"], "--fix",
                          "recalibrate", "--save", tmp_path / "from_keras.keras", "--json")
    from_keras = keras.saving.load_model(tmp_path / "from_keras.keras")
    for name in ("batch_normalization", "batch_normalization_1"):  # the same fix either way
        for a, b in zip(from_h5.get_layer(name).get_weights(),
                        from_keras.get_layer(name).get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_image_folder_and_its_split(student, capsys) -> None:
    code, out, err = doctor(capsys, student["model"], "--data", student["folder"],
                            "--validation-split", "0.25", "--split-seed", "3", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["metrics"]["evaluation"]["samples"] == 48  # int(0.25 * 192)
    assert data["context"]["options"]["image_size"] == [12, 12]


@pytest.mark.parametrize(("args", "message"), [
    (("--image-size", "16", "16"), "--image-size 16 16 does not fit student.keras: it takes "
     "images of height 12 (input (None, 12, 12, 3)); give --image-size 12 12 or leave it out"),
], ids=["image-size"])
def test_folder_mismatch(student, tmp_path, capsys, args, message) -> None:
    code, out, err = doctor(capsys, student["model"], "--data", student["folder"], *args,
                            "--fix", "recalibrate", "--save", tmp_path / "f.keras")
    assert code == 2 and out == "" and message in err and err.count("\n") == 1
    assert not (tmp_path / "f.keras").exists()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(student, tmp_path, capsys) -> None:
    model, npz = student["model"], student["npz"]
    target = tmp_path / "fixed.keras"
    x = np.zeros((4, 12, 12, 3), np.uint8)
    np.savez(tmp_path / "six.npz", x_train=x, y_train=np.arange(4), x_test=x,
             y_test=np.array([0, 1, 2, 5]))
    np.savez(tmp_path / "small.npz", x_train=x[:, :8], y_train=np.arange(4) % 3,
             x_test=x[:, :8], y_test=np.arange(4) % 3)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is no zip archive")
    no_config = tmp_path / "no_config.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("model.weights.h5", b"")
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    existing = tmp_path / "exists.keras"
    existing.write_bytes(b"keep me")
    fix = ("--fix", "recalibrate", "--save", target)  # would write target if it got that far
    cases = [
        ((model, "--data", tmp_path / "six.npz", *fix),
         "has 6 classes (0, 1, 2, 3, 4, 5) but student.keras's output has 3 units"),
        ((model, "--data", tmp_path / "small.npz", *fix),
         "gives samples of shape 8x12x3 but student.keras takes input (None, 12, 12, 3)"),
        ((corrupt, "--data", npz, *fix), str(corrupt)),
        ((no_config, "--data", npz, *fix), str(no_config)),
        ((model, "--data", empty, *fix), "holds no image files"),
        ((model, "--data", npz, "--fix", "recalibrate", "--save", existing),
         f"{existing} exists; give another file name or --overwrite"),
        ((model, "--data", npz, "--fix", "recalibrate", "--save", model),
         "is the input model; give another file name"),
        ((model, "--data", npz, "--save", target), "writes the fixed model; give --fix"),
        ((model, "--data", npz, "--fix", "recalibrate", "--save", tmp_path / "f.h5"),
         "give a file name ending in .keras"),
        ((model, *fix), "give --data with the data the model was trained on"),
        ((model, "--data", npz, "--variant", "bn"), "--variant applies to a `bnlab run` folder"),
        ((tmp_path, "--data", npz), "--data applies to a Keras model file"),
        ((tmp_path / "nothing.keras", "--data", npz), "no such file or folder"),
    ]
    for args, message in cases:
        code, out, err = doctor(capsys, *args)
        assert code == 2, (args, err)
        assert out == "" and message in err and err.count("\n") == 1, (args, err)
        assert not target.exists() and not (tmp_path / "f.h5").exists(), args
    assert existing.read_bytes() == b"keep me"


def test_bnlab_model_after_fix_equals_keras_on_the_fixed_file(student, tmp_path) -> None:
    """The file written is what bnlab measured: Keras's outputs equal bnlab's model's."""
    from bnlab import load_keras

    fixed = tmp_path / "fixed.keras"
    assert main(["doctor", str(student["model"]), "--data", str(student["npz"]), "--fix",
                 "recalibrate", "--save", str(fixed), "--json"]) == 0
    x = np.load(student["npz"])["x_test"][:16].astype(np.float32)
    ours = load_keras(fixed)
    with torch.no_grad():
        mine = ours(torch.from_numpy(x)).numpy()
    theirs = keras.ops.convert_to_numpy(keras.saving.load_model(fixed)(x, training=False))
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_functional_model_with_branches(tmp_path, capsys) -> None:
    """A Functional file (two branches joined by Add) is examined like a Sequential one."""
    layers = keras.layers
    inputs = keras.Input((12, 12, 3), name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    a = layers.BatchNormalization(name="bn_a")(layers.Conv2D(4, 3, padding="same",
                                                             name="conv_a")(x))
    b = layers.BatchNormalization(name="bn_b")(layers.Conv2D(4, 1, name="conv_b")(x))
    x = layers.Add(name="join")([a, b])
    outputs = layers.Dense(3, activation="softmax", name="head")(
        layers.GlobalAveragePooling2D(name="pool")(x))
    keras.Model(inputs, outputs).save(tmp_path / "branches.keras")
    x_data, y_data = keras_training.quadrant_images(96, seed=3)
    np.savez(tmp_path / "data.npz", x_train=x_data, y_train=y_data, x_test=x_data,
             y_test=y_data)
    code, out, err = doctor(capsys, tmp_path / "branches.keras", "--data",
                            tmp_path / "data.npz", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert [layer["name"] for layer in data["layers"]] == ["bn_a", "bn_b"]
    assert data["context"]["pixels"] == "0..255"  # Rescaling found in a graph too
    assert data["context"]["train_steps"] is None  # never compiled: no optimizer state
    # Untrained: the moving statistics are the initial 0 and 1, far from the features;
    # with no step count in the file, "never updated" cannot be claimed.
    codes = [f["code"] for f in data["findings"]]
    assert "stale_statistics" in codes and "never_updated" not in codes

    two = keras.Input((12, 12, 3), name="other")
    merged = layers.Add(name="sum")([inputs, two])
    keras.Model([inputs, two], layers.Dense(3, name="out")(layers.Flatten(name="flat")(merged))
                ).save(tmp_path / "two_inputs.keras")
    code, _, err = doctor(capsys, tmp_path / "two_inputs.keras", "--data", tmp_path / "data.npz")
    assert code == 2 and "the doctor feeds one input and scores one output; the model has 2 " \
        "input(s) (pixels, other)" in err
