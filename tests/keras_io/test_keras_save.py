"""bnlab.save_keras -> keras.saving.load_model: same outputs, original configuration kept."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import torch
from keras_files import build, layer_names, lstm_model, predict, sequential_cnn, two_branch

import bnlab
from bnlab.keras_io import KerasFileError
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


def _ours(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", list(CASES))
def test_imported_model_round_trips_through_keras(name, suffix, tmp_path) -> None:
    factory, shape = CASES[name]
    case = build(name, factory, tmp_path, [shape], rtol=1e-5, atol=1e-5, suffix=suffix)
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


def test_failed_save_writes_nothing(tmp_path) -> None:
    case = build("cnn", sequential_cnn, tmp_path, [(2, 12, 12, 3)], rtol=1e-5, atol=1e-5)
    model = bnlab.load_keras(case.path)
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
def test_bad_target_path(name, message, tmp_path) -> None:
    case = build("cnn", sequential_cnn, tmp_path, [(2, 12, 12, 3)], rtol=1e-5, atol=1e-5)
    model = bnlab.load_keras(case.path)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(KerasFileError, match=message):
        bnlab.save_keras(model, tmp_path / name)
    assert sorted(tmp_path.iterdir()) == before


def test_weights_that_no_longer_fit_the_configuration(tmp_path) -> None:
    case = build("cnn", sequential_cnn, tmp_path, [(2, 12, 12, 3)], rtol=1e-5, atol=1e-5)
    model = bnlab.load_keras(case.path)
    edited = build_model([{"type": "Dense", "units": 7}], (54,), seed=0)
    model.layers["dense"] = edited.layer("dense")  # Keras weights (54, 7), (7,)
    with pytest.raises(
        KerasFileError, match=r"layer 'dense' \(Dense\) now has weights .*needs \[\(54, 10\)"
    ):
        bnlab.save_keras(model, tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()


def test_save_rejects_other_modules(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"from bnlab\.load_keras; got Linear"):
        bnlab.save_keras(torch.nn.Linear(2, 2), tmp_path / "m.keras")
