"""bnlab.save_keras -> keras.saving.load_model: same outputs, original configuration kept."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import torch
from keras_files import (
    build,
    layer_names,
    lstm_model,
    predict,
    sequence_zoo,
    sequential_cnn,
    two_branch,
)

import bnlab
from bnlab.keras_io import KerasFileError, load_keras_spec
from bnlab.models import build_model

# Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

CASES = {
    "sequential_cnn": (sequential_cnn, (4, 12, 12, 3)),
    "lstm": (lstm_model, (4, 7, 4)),
    "two_branch": (two_branch, (4, 10, 10, 3)),
}


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    return build(
        "cnn",
        sequential_cnn,
        tmp_path_factory.mktemp("cnn"),
        [(2, 12, 12, 3)],
        rtol=1e-5,
        atol=1e-5,
    ).path


def _ours(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_imported_legacy_h5_round_trips_through_keras(name, tmp_path) -> None:
    """Saved as .keras with its file's configuration (gaining Keras 3's module); the
    .keras archives' round trips are in test_keras_load.py."""
    factory, shape = CASES[name]
    case = build(name, factory, tmp_path, [shape], rtol=1e-5, atol=1e-5, suffix=".h5")
    model = bnlab.load_keras(case.path)
    x = case.inputs[0]
    model.train()
    _ours(model, x)  # one training-mode step: new moving statistics to carry over
    model.eval()
    expected = _ours(model, x)
    out = bnlab.save_keras(model, tmp_path / "out.keras")
    reloaded = keras.saving.load_model(out)
    np.testing.assert_allclose(
        predict(reloaded, (x,), training=False), expected, rtol=1e-5, atol=1e-5
    )
    assert layer_names(reloaded) == layer_names(case.kmodel)
    config = json.loads(zipfile.ZipFile(out).read("config.json"))
    original = model.keras_origin.config
    assert config["config"] == original["config"]  # the file's configuration, unchanged
    assert config["class_name"] in (original["class_name"], "Functional")  # + Keras 3's module


LAB_LAYERS = [
    {"type": "Conv2D", "filters": 4, "kernel_size": 3, "padding": "same", "use_bias": False},
    {"type": "BatchNormalization", "momentum": 0.9, "epsilon": 1e-2, "renorm": True},
    {"type": "Activation", "activation": "relu"},
    {"type": "MaxPooling2D"},
    {"type": "Flatten"},
    {"type": "Dropout", "rate": 0.2},
    {"type": "Dense", "units": 5, "activation": "softmax", "kernel_regularizer": "l2(1e-4)"},
]


def _round_trip(model: torch.nn.Module, inputs: np.ndarray, path) -> keras.Model:
    """One training step in bnlab, save, load in Keras: same inference outputs and names."""
    model.train()
    _ours(model, inputs)  # new moving statistics must reach the file
    model.eval()
    expected = _ours(model, inputs)
    reloaded = keras.saving.load_model(bnlab.save_keras(model, path))
    np.testing.assert_allclose(
        predict(reloaded, (inputs,), training=False), expected, rtol=1e-5, atol=1e-5
    )
    assert layer_names(reloaded) == [name for name, _, _ in model.named_layers()]
    again = bnlab.load_keras(path)  # and bnlab reads its own file
    np.testing.assert_allclose(_ours(again, inputs), expected, rtol=1e-6, atol=1e-6)
    return reloaded


def test_lab_sequential_model_round_trips_through_keras(tmp_path) -> None:
    model = build_model(LAB_LAYERS, (8, 8, 3), seed=0, name="lab")
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype("float32")
    reloaded = _round_trip(model, x, tmp_path / "lab.keras")
    bn = reloaded.get_layer("batch_normalization")
    assert (bn.momentum, bn.epsilon, bn.renorm) == (pytest.approx(0.9), pytest.approx(1e-2), True)


def test_lab_sequence_model_with_wrappers_round_trips(tmp_path) -> None:
    case = build("seq", sequence_zoo, tmp_path, [(3, 6)], rtol=1e-5, atol=1e-5, tokens=10)
    model = load_keras_spec(case.path).build(seed=1)  # a fresh model: no file configuration
    assert not hasattr(model, "keras_origin")
    _round_trip(model, case.inputs[0], tmp_path / "fresh.keras")


def test_graph_model_from_a_spec_round_trips_through_keras(tmp_path) -> None:
    case = build("branch", two_branch, tmp_path, [(3, 10, 10, 3)], rtol=1e-5, atol=1e-5)
    model = load_keras_spec(case.path).build(seed=1)
    reloaded = _round_trip(model, case.inputs[0], tmp_path / "fresh.keras")
    assert [n.name for n in reloaded.inputs] == ["image"]


def test_a_layer_without_keras_equivalent_is_refused(tmp_path) -> None:
    layers = [{"type": "Dense", "units": 3}, {"type": "BatchNormAct", "activation": "relu"}]
    model = build_model(layers, (4,), seed=0)
    with pytest.raises(KerasFileError, match="cannot write layer 'batch_norm_act' for Keras"):
        bnlab.save_keras(model, tmp_path / "m.keras")
    assert list(tmp_path.iterdir()) == []


def test_failed_save_writes_nothing(cnn_file, tmp_path) -> None:
    model = bnlab.load_keras(cnn_file)
    target = tmp_path / "out.keras"
    target.write_bytes(b"previous")
    model.layers["dense"] = torch.nn.Linear(54, 10)  # no Keras weight layout
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KerasFileError, match="layer 'dense' \\(Dense\\): no Keras weight layout"):
        bnlab.save_keras(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file left
    assert target.read_bytes() == b"previous"


@pytest.mark.parametrize(
    ("name", "message"),
    [("model.h5", "must end in '.keras'.*got suffix '.h5'"), ("missing/m.keras", "does not exist")],
)
def test_bad_target_path(name, message, cnn_file, tmp_path) -> None:
    model = bnlab.load_keras(cnn_file)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(KerasFileError, match=message):
        bnlab.save_keras(model, tmp_path / name)
    assert sorted(tmp_path.iterdir()) == before


def test_weights_that_no_longer_fit_the_configuration(cnn_file, tmp_path) -> None:
    model = bnlab.load_keras(cnn_file)
    edited = build_model([{"type": "Dense", "units": 7}], (54,), seed=0)
    model.layers["dense"] = edited.layer("dense")  # Keras weights (54, 7), (7,)
    with pytest.raises(
        KerasFileError, match=r"layer 'dense' \(Dense\) now has weights .*needs \[\(54, 10\)"
    ):
        bnlab.save_keras(model, tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()


def test_save_rejects_other_modules(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"\(SequentialModel, GraphModel\); got Linear"):
        bnlab.save_keras(torch.nn.Linear(2, 2), tmp_path / "m.keras")


def test_compiled_model_keeps_its_optimizer_state(tmp_path) -> None:
    """A trained, compiled file saved back by bnlab: Keras restores the same optimizer
    (step count and Adam's moments) without warning that it skipped the state."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    kmodel = sequential_cnn()
    kmodel.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 12, 3)).astype("float32")
    kmodel.fit(x, rng.normal(size=(8, 10)).astype("float32"), epochs=2, batch_size=4, verbose=0)
    source = tmp_path / "trained.keras"
    kmodel.save(source)
    target = bnlab.save_keras(bnlab.load_keras(source), tmp_path / "back.keras")
    reloaded = keras.saving.load_model(target)  # a skipped-state warning fails this test
    assert int(reloaded.optimizer.iterations.numpy()) == 4
    restored = [np.array(v.numpy()) for v in reloaded.optimizer.variables]
    saved = [np.array(v.numpy()) for v in kmodel.optimizer.variables]
    assert len(restored) == len(saved) > 2
    for ours, theirs in zip(restored, saved, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(
        predict(reloaded, (x,), training=False),
        predict(kmodel, (x,), training=False),
        rtol=1e-6,
        atol=1e-6,
    )
