"""Bad Keras files: one KerasFileError line naming the file, what is wrong (with the received
value) and what is expected; never a traceback from zipfile/h5py/json, never unpickling."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import h5py
import keras
import pytest
import torch
from keras_files import build, sequential_cnn, two_branch

import bnlab
from bnlab.keras_io import KerasFileError, load_keras_spec

# Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cnn")
    return build("cnn", sequential_cnn, folder, [(2, 12, 12, 3)], rtol=1e-5, atol=1e-5).path


@pytest.fixture(scope="module")
def branch_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("branch")
    return build("branch", two_branch, folder, [(2, 10, 10, 3)], rtol=1e-5, atol=1e-5).path


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def _with_config(source: Path, target: Path, edit) -> Path:
    entries = _entries(source)
    config = json.loads(entries["config.json"])
    edit(config)
    entries["config.json"] = json.dumps(config).encode()
    return _write_zip(target, entries)


def _layer(config: dict, name: str) -> dict:
    return next(e for e in config["config"]["layers"] if e["config"].get("name") == name)


def _fails(path: Path, *fragments: str) -> str:
    with pytest.raises(KerasFileError) as info:
        bnlab.load_keras(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path) -> None:
    _fails(tmp_path / "nope.keras", "does not exist", "expected a Keras 3 .keras archive")


def test_neither_zip_nor_hdf5(tmp_path) -> None:
    path = tmp_path / "model.keras"
    path.write_bytes(b"hello, not a model")
    _fails(path, "neither a zip archive nor HDF5", "b'hello, n'")


def test_pickle_in_disguise_is_never_unpickled(tmp_path) -> None:
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "model.keras"
    path.write_bytes(pickle.dumps(Boom(), protocol=4))
    _fails(path, "is a Python pickle", "never unpickles")


def test_torch_save_zip_is_named_a_pickle(tmp_path) -> None:
    path = tmp_path / "model.keras"
    torch.save({"w": torch.zeros(2)}, path)
    _fails(path, "zip of pickled Python objects", "data.pkl")


def test_damaged_zip(cnn_file, tmp_path) -> None:
    data = bytearray(cnn_file.read_bytes())
    path = tmp_path / "damaged.keras"
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated: no central directory
    _fails(path, "damaged zip archive")


def test_corrupt_member_crc(tmp_path) -> None:
    entries = {"config.json": b'{"class_name": "Sequential"}', "model.weights.h5": b""}
    path = _write_zip(tmp_path / "crc.keras", entries)
    data = bytearray(path.read_bytes())
    start = data.index(b'{"class_name"')
    data[start + 3] ^= 0xFF  # stored (not compressed): a changed byte fails the CRC check
    path.write_bytes(bytes(data))
    with pytest.raises(KerasFileError, match=re.escape(str(path)) + ".*damaged zip archive"):
        bnlab.load_keras(path)


def test_missing_config(cnn_file, tmp_path) -> None:
    entries = _entries(cnn_file)
    del entries["config.json"]
    _fails(_write_zip(tmp_path / "m.keras", entries), "has no config.json", "'model.weights.h5'")


def test_missing_weights(cnn_file, tmp_path) -> None:
    entries = _entries(cnn_file)
    del entries["model.weights.h5"]
    _fails(_write_zip(tmp_path / "m.keras", entries), "has no model.weights.h5", "'config.json'")


def test_config_not_json(cnn_file, tmp_path) -> None:
    entries = {**_entries(cnn_file), "config.json": b"{not json"}
    _fails(_write_zip(tmp_path / "m.keras", entries), "config.json is not valid JSON")


def test_weights_not_hdf5(cnn_file, tmp_path) -> None:
    entries = {**_entries(cnn_file), "model.weights.h5": b"garbage"}
    _fails(_write_zip(tmp_path / "m.keras", entries), "model.weights.h5 is not a readable HDF5")


def test_weights_of_another_layer(cnn_file, tmp_path) -> None:
    def rename(config):
        _layer(config, "bn")["config"]["name"] = "renamed_bn"

    path = _with_config(cnn_file, tmp_path / "m.keras", rename)
    _fails(path, "belong to layer 'bn'", "'renamed_bn'")


def test_weights_with_other_shapes(cnn_file, tmp_path) -> None:
    def widen(config):
        _layer(config, "dense")["config"]["units"] = 11

    _fails(_with_config(cnn_file, tmp_path / "m.keras", widen), "layer 'dense' (Dense)", "(10,)")


def test_weights_with_another_count(cnn_file, tmp_path) -> None:
    def no_bias(config):
        _layer(config, "dense")["config"]["use_bias"] = False

    _fails(_with_config(cnn_file, tmp_path / "m.keras", no_bias), "layer 'dense' (Dense)")


def test_weights_of_a_layer_the_configuration_lacks(cnn_file, tmp_path) -> None:
    entries = _entries(cnn_file)
    buffer = io.BytesIO()
    with (
        h5py.File(io.BytesIO(entries["model.weights.h5"]), "r") as src,
        h5py.File(buffer, "w") as dst,
    ):
        for key in src:
            src.copy(key, dst)
        dst.create_dataset("layers/dense_7/vars/0", data=[1.0, 2.0])
    entries["model.weights.h5"] = buffer.getvalue()
    _fails(
        _write_zip(tmp_path / "m.keras", entries), "'layers/dense_7/vars/0'", "belongs to no layer"
    )


def test_custom_object(cnn_file, tmp_path) -> None:
    def custom(config):
        entry = _layer(config, "dense")
        entry["module"], entry["registered_name"] = "my_package.layers", "my_package>MyDense"

    path = _with_config(cnn_file, tmp_path / "m.keras", custom)
    _fails(path, "layer 'dense'", "custom object 'Dense'", "'my_package>MyDense'", "'keras.*'")


def test_custom_initializer(cnn_file, tmp_path) -> None:
    def custom(config):
        _layer(config, "conv")["config"]["kernel_initializer"] = {
            "module": "acme.init",
            "class_name": "Smart",
            "config": {},
            "registered_name": "acme>Smart",
        }

    _fails(_with_config(cnn_file, tmp_path / "m.keras", custom), "layer 'conv'", "'acme>Smart'")


def test_lambda_layer_is_rejected_without_running_its_code(tmp_path) -> None:
    keras.backend.clear_session()
    inputs = keras.Input((3,))
    outputs = keras.layers.Lambda(lambda t: t * 2, name="double")(keras.layers.Dense(2)(inputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    _fails(path, "layer 'double'", "Python code", "never runs code")


def test_unsupported_layer_names_it_and_lists_the_supported(tmp_path) -> None:
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((6, 2)), keras.layers.Conv1DTranspose(2, 2, name="up")])
    path = tmp_path / "conv1d_transpose.keras"
    model.save(path)
    message = _fails(path, "'up'", "Conv1DTranspose", "Dense")
    assert "BatchNormalization" in message


def test_weights_only_h5(tmp_path) -> None:
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    _fails(path, "without a 'model_config' attribute", "full-model .h5")


def test_shared_layer_is_not_supported_yet(tmp_path) -> None:
    keras.backend.clear_session()
    a, b = keras.Input((3,)), keras.Input((3,))
    dense = keras.layers.Dense(2, name="shared")
    path = tmp_path / "shared.keras"
    keras.Model([a, b], keras.layers.Add()([dense(a), dense(b)])).save(path)
    _fails(path, "'shared'", "shared layers")


def test_spec_reader_gives_the_same_errors(branch_file, tmp_path) -> None:
    def custom(config):
        _layer(config, "head")["module"] = "evil"

    path = _with_config(branch_file, tmp_path / "m.keras", custom)
    with pytest.raises(KerasFileError, match="custom object 'Dense'"):
        load_keras_spec(path)


def test_nested_model_in_a_legacy_h5(tmp_path) -> None:
    keras.backend.clear_session()
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="inner")
    path = tmp_path / "nested.h5"
    keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)]).save(path)
    _fails(path, "layer 'inner' is a nested model", "model.save('model.keras')")


def test_legacy_weights_of_another_layer(tmp_path) -> None:
    case = build(
        "legacy", sequential_cnn, tmp_path, [(2, 12, 12, 3)], rtol=1e-5, atol=1e-5, suffix=".h5"
    )
    with h5py.File(case.path, "r+") as h5:  # rename a layer in the configuration only
        h5.attrs["model_config"] = h5.attrs["model_config"].replace(
            '"name": "bn"', '"name": "bn_2"'
        )
    _fails(case.path, "weights for layer 'bn'", "model_config does not have")
