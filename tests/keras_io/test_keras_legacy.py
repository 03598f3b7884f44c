"""Legacy full-model .h5 files written by Keras's legacy saver (``model.save("m.h5")``)."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
import torch
from keras_files import (
    Case,
    build,
    counts,
    layer_names,
    predict,
    sequential_cnn,
    tf_keras_h5,
    two_branch,
)

import bnlab
from bnlab.models import count_params

# Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module", params=["sequential", "functional"])
def case(request, tmp_path_factory) -> Case:
    """A model saved by Keras's legacy saver."""
    factory, shape = {
        "sequential": (sequential_cnn, (3, 12, 12, 3)),
        "functional": (two_branch, (3, 10, 10, 3)),
    }[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    return build("legacy", factory, folder, [shape], rtol=1e-5, atol=1e-5, suffix=".h5")


def test_legacy_h5_loads_with_keras_outputs(case: Case) -> None:
    with h5py.File(case.path, "r") as h5:  # the legacy layout, not an archive
        assert "model_config" in h5.attrs and "model_weights" in h5
    model = bnlab.load_keras(case.path)
    assert model.keras_origin.format == "h5"
    with torch.no_grad():
        ours = model(torch.from_numpy(case.inputs[0]))
    expected = predict(case.kmodel, case.inputs, training=False)
    torch.testing.assert_close(ours, torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    assert [n for n, _, _ in model.named_layers()] == layer_names(case.kmodel)
    assert count_params(model).total == counts(case.kmodel)[0]


def test_tf_keras_2_h5_loads_with_keras_outputs(case: Case, tmp_path) -> None:
    """tf.keras 2.x's format: no modules, dtype strings, list inbound nodes, BN axis as a
    list, weight names with ':0'."""
    path = tf_keras_h5(case.path, tmp_path / "tf_keras.h5", rank=4)
    model = bnlab.load_keras(path)
    assert model.keras_origin.keras_version == "2.15.0"
    with torch.no_grad():
        ours = model(torch.from_numpy(case.inputs[0]))
    expected = predict(case.kmodel, case.inputs, training=False)
    torch.testing.assert_close(ours, torch.from_numpy(expected), rtol=1e-5, atol=1e-5)
    assert [n for n, _, _ in model.named_layers()] == layer_names(case.kmodel)
    reloaded = keras.saving.load_model(bnlab.save_keras(model, tmp_path / "from_tf.keras"))
    np.testing.assert_allclose(
        predict(reloaded, case.inputs, training=False), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file:UserWarning")
def test_compile_settings_are_read_from_both_formats(tmp_path, suffix) -> None:
    from bnlab.keras_io.archive import read_file

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    model.save(tmp_path / f"m{suffix}")
    compiled = read_file(tmp_path / f"m{suffix}", weights=False).compile
    assert compiled["optimizer"]["class_name"] == "SGD"
    assert compiled["optimizer"]["config"]["momentum"] == pytest.approx(0.9)
    assert compiled["loss"]["class_name"] == "SparseCategoricalCrossentropy"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / f"plain{suffix}")
    assert read_file(tmp_path / f"plain{suffix}", weights=False).compile == {}
