"""bnlab.load_keras against Keras 3 (torch backend): files saved by Keras, loaded by bnlab.

For each model (a CNN, an LSTM, branches, most other layer types, a DCGAN generator
with transposed convolutions, the applications): outputs in inference mode (moving statistics) and in training mode
(batch statistics), the moving statistics after one training-mode step, the summary
counts, the layer names and the BatchNormalization arguments equal Keras's. The small
models agree at float32's 1e-5. The applications (ResNet50: 53 BN layers, MobileNetV2:
52) compare pre-softmax logits: at rtol = atol = 1e-4 in inference mode (measured:
ResNet50 2e-6, MobileNetV2 4e-7) and 1e-3 in training mode (measured: 5e-4 and 5e-5).
In training mode each BN layer divides by the standard deviation of its batch, down to
2 x 2 x 2 values per channel in ResNet50's last stage, which amplifies float32
rounding (Keras's torch backend also computes the variance as E[x^2] - E[x]^2): a
float64 run of the same bnlab model is as far from Keras's float32 logits (ResNet50:
4.8e-4) as from bnlab's (4.8e-4), so the test also holds bnlab's float32 logits to
that float64 run within the same tolerance.
"""

from __future__ import annotations

import copy
import json
import zipfile

import keras
import numpy as np
import pytest
import torch
from keras_files import (
    Case,
    batch_norm_layers,
    build,
    counts,
    dcgan_generator,
    layer_names,
    layer_zoo,
    lstm_model,
    masked_sequence,
    predict,
    sequence_autoencoder,
    sequence_zoo,
    sequential_cnn,
    transfer,
    two_branch,
    value,
    volume_cnn,
)

import bnlab
from bnlab.keras_io import KerasOrigin, load_keras_spec
from bnlab.models import count_params, get_keras_weights, summary

# Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def _resnet50() -> keras.Model:
    return keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )


def _mobilenet_v2() -> keras.Model:
    return keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(96, 96, 3), classifier_activation=None
    )


def _efficientnet_b0() -> keras.Model:  # drop-connect: Dropout with noise_shape (N, 1, 1, 1)
    return keras.applications.EfficientNetB0(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )


def _mobilenet_v3_small() -> keras.Model:  # hard sigmoid: x + 3.0 and x * (1 / 6)
    return keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )


# name -> (factory, input shapes with the batch axis, inference tolerance, training tolerance)
CASES = {
    "sequential_cnn": (sequential_cnn, [(4, 12, 12, 3)], 1e-5, 1e-5),
    "lstm": (lstm_model, [(4, 7, 4)], 1e-5, 1e-5),
    "dcgan_generator": (dcgan_generator, [(4, 6)], 1e-5, 1e-5),
    "volume_cnn": (volume_cnn, [(4, 8, 8, 6, 1)], 1e-5, 1e-5),
    "sequence_autoencoder": (sequence_autoencoder, [(4, 6, 4)], 1e-5, 1e-5),
    "two_branch": (two_branch, [(4, 10, 10, 3)], 1e-5, 1e-5),
    "layer_zoo": (layer_zoo, [(4, 12, 12, 3)], 1e-5, 1e-5),
    "sequence_zoo": (sequence_zoo, [(4, 6)], 1e-5, 1e-5),
    "masked_sequence": (masked_sequence, [(4, 6)], 1e-5, 1e-5),
    "resnet50": (_resnet50, [(2, 64, 64, 3)], 1e-4, 1e-3),
    "mobilenet_v2": (_mobilenet_v2, [(2, 96, 96, 3)], 1e-4, 1e-3),
    "efficientnet_b0": (_efficientnet_b0, [(2, 64, 64, 3)], 1e-4, 1e-3),
    "mobilenet_v3_small": (_mobilenet_v3_small, [(2, 64, 64, 3)], 1e-4, 1e-3),
    "transfer": (transfer, [(4, 32, 32, 3)], 1e-4, 1e-4),
}
APPLICATIONS = ("resnet50", "mobilenet_v2", "efficientnet_b0", "mobilenet_v3_small")


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory) -> Case:
    factory, shapes, inference, training = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    tokens = 10 if request.param in ("sequence_zoo", "masked_sequence") else None
    case = build(
        request.param, factory, folder, shapes, rtol=inference, atol=inference, tokens=tokens
    )
    case.training_tolerance = training
    return case


@pytest.fixture(scope="module")
def loaded(case: Case) -> torch.nn.Module:
    """The case's file loaded by bnlab once (tests that change it work on a copy)."""
    return bnlab.load_keras(case.path)


def _run(model: torch.nn.Module, case: Case) -> torch.Tensor:
    with torch.no_grad():
        return model(*(torch.from_numpy(x) for x in case.inputs))


def _dropout_off(model: torch.nn.Module, case: Case) -> list[tuple[keras.layers.Dropout, float]]:
    """Dropout draws differ between frameworks: switch it off in both for training mode."""
    changed = []
    for layer in case.kmodel.layers:
        if isinstance(layer, keras.layers.Dropout):
            changed.append((layer, layer.rate))
            layer.rate = 0.0
            model.layer(layer.name).eval()
    return changed


def test_inference_outputs_equal_keras(case: Case, loaded: torch.nn.Module) -> None:
    model = loaded
    assert not model.training  # a Keras call is inference unless training=True
    expected = predict(case.kmodel, case.inputs, training=False)
    torch.testing.assert_close(
        _run(model, case), torch.from_numpy(expected), rtol=case.rtol, atol=case.atol
    )


def test_training_mode_outputs_and_moving_statistics_equal_keras(
    case: Case, loaded: torch.nn.Module
) -> None:
    model = copy.deepcopy(loaded).train()
    changed = _dropout_off(model, case)
    saved = case.snapshot()
    try:
        expected = predict(case.kmodel, case.inputs, training=True)  # updates Keras's stats
        stats = {
            name: {w.path.rsplit("/", 1)[1]: value(w) for w in layer.weights}
            for name, layer in batch_norm_layers(case.kmodel).items()
        }
    finally:
        case.restore(saved)
        for layer, rate in changed:
            layer.rate = rate
    ours = _run(model, case)
    tol = case.training_tolerance
    torch.testing.assert_close(ours, torch.from_numpy(expected), rtol=tol, atol=tol)
    if case.name in APPLICATIONS:
        exact = copy.deepcopy(loaded).double().train()
        _dropout_off(exact, case)
        with torch.no_grad():
            reference = exact(*(torch.from_numpy(x).double() for x in case.inputs)).float()
        ours_error = (ours - reference).abs().max()
        keras_error = (torch.from_numpy(expected) - reference).abs().max()
        assert ours_error <= tol, (ours_error, keras_error)
    assert stats, "every case has BatchNormalization layers"
    for name, expected_weights in stats.items():
        ours = dict(zip(expected_weights, get_keras_weights(model.layer(name)), strict=True))
        for key in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(
                ours[key], expected_weights[key], rtol=1e-5, atol=1e-5, err_msg=f"{name}.{key}"
            )


def test_summary_counts_names_and_batch_norm_arguments(case: Case, loaded: torch.nn.Module) -> None:
    model = loaded
    total, trainable, frozen = counts(case.kmodel)
    ours = count_params(model)
    assert (ours.total, ours.trainable, ours.non_trainable) == (total, trainable, frozen)
    assert [name for name, _, _ in model.named_layers()] == layer_names(case.kmodel)
    text = summary(model)
    assert f"Total params: {total:,}" in text
    assert f"Non-trainable params: {frozen:,}" in text
    for name, layer in batch_norm_layers(case.kmodel).items():
        module = model.layer(name)
        assert isinstance(module, bnlab.BatchNormalization), name
        assert (module.momentum, module.epsilon) == pytest.approx((layer.momentum, layer.epsilon))
        assert (module.center, module.scale) == (layer.center, layer.scale)
    assert isinstance(model.keras_origin, KerasOrigin)
    assert model.keras_origin.config["config"]["name"] == case.kmodel.name


def test_spec_gives_the_architecture_with_fresh_weights(
    case: Case, loaded: torch.nn.Module
) -> None:
    spec = load_keras_spec(case.path)
    assert spec.name == case.kmodel.name  # nested models are flattened into a graph
    assert spec.input_shape == tuple(case.inputs[0].shape[1:])
    assert [s.args["name"] for s in spec.layers] == layer_names(case.kmodel)
    assert (spec.graph is None) == isinstance(case.kmodel, keras.Sequential)
    if case.name in APPLICATIONS:
        return  # initializing 25M fresh weights adds seconds and nothing the others lack
    fresh = spec.build(seed=0)
    assert count_params(fresh).total == counts(case.kmodel)[0]
    first = next(n for n, _, m in loaded.named_layers() if list(m.parameters()))
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            get_keras_weights(fresh.layer(first)),
            get_keras_weights(loaded.layer(first)),
            strict=True,
        )
    )


def test_save_keras_round_trips_through_keras(case: Case, loaded, tmp_path) -> None:
    """The imported model, after a training step, written back: Keras computes bnlab's outputs."""
    if case.name in APPLICATIONS:
        pytest.skip("a 25M-weight round trip costs seconds; 'transfer' has a MobileNetV2 base")
    model = copy.deepcopy(loaded).train()
    _dropout_off(model, case)
    _run(model, case)  # new moving statistics must reach the file
    expected = _run(model.eval(), case)
    reloaded = keras.saving.load_model(bnlab.save_keras(model, tmp_path / "out.keras"))
    np.testing.assert_allclose(
        predict(reloaded, case.inputs, training=False), expected.numpy(), rtol=1e-5, atol=1e-5
    )
    assert layer_names(reloaded) == layer_names(case.kmodel)
    written = json.loads(zipfile.ZipFile(tmp_path / "out.keras").read("config.json"))
    assert written == loaded.keras_origin.config  # the file's configuration, unchanged


def test_operations_with_a_number_run_as_rescaling_and_save_back(tmp_path) -> None:
    """``x + c``, ``c - x``, ``x * c``, ``x / c`` in a Functional graph (MobileNetV3's hard
    sigmoid is ``(relu6(x + 3.0)) * (1 / 6)``) load as Rescaling layers, equal Keras's
    outputs, and the file written back keeps Keras's operations."""
    inputs = keras.Input((3, 4))
    x = keras.layers.Dense(4, name="dense")(inputs)
    branches = [x + 3.0, 2.5 - x, x - 1.5, x * (1 / 6), 4.0 * x, x / 8.0]
    kmodel = keras.Model(inputs, keras.layers.Concatenate()(branches), name="scalars")
    path = tmp_path / "scalars.keras"
    kmodel.save(path)
    model = bnlab.load_keras(path)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    expected = predict(kmodel, (x,), training=False)
    torch.testing.assert_close(model(torch.from_numpy(x)).detach(), torch.from_numpy(expected),
                               rtol=1e-6, atol=1e-6)
    kinds = [type(m).__name__ for _, _, m in model.named_layers()]
    assert kinds.count("Rescaling") == len(branches)
    saved = tmp_path / "saved.keras"
    bnlab.save_keras(model, saved)
    again = keras.saving.load_model(saved)
    assert [type(op).__name__ for op in again.operations] == [
        type(op).__name__ for op in kmodel.operations]
    torch.testing.assert_close(torch.from_numpy(predict(again, (x,), training=False)),
                               torch.from_numpy(expected))


def test_inception_resnet_scaled_residual_equals_keras(tmp_path) -> None:
    """keras.applications' CustomScaleLayer (InceptionResNetV2's residual x + r * scale)."""
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    inputs = keras.Input((6, 6, 4))
    residual = keras.layers.Conv2D(4, 3, padding="same", name="branch")(inputs)
    scaled = CustomScaleLayer(0.17, name="scaled")([inputs, residual])
    kmodel = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(scaled))
    path = tmp_path / "residual.keras"
    kmodel.save(path)
    model = bnlab.load_keras(path)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    for training in (False, True):
        expected = predict(kmodel, (x,), training=training)
        got = model.train(training)(torch.from_numpy(x)).detach()
        torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-5, atol=1e-5)


def test_an_operation_between_tensors_and_as_the_output_runs_as_its_layer(tmp_path) -> None:
    """``a + b * 2.0 - a / 4.0``: Add and Subtract of two tensors run as the merge layers,
    and the last operation is the model's output (it was taken for a mask computation)."""
    inputs = keras.Input((3,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    kmodel = keras.Model(inputs, a + b * 2.0 - a / 4.0)
    path = tmp_path / "ops.keras"
    kmodel.save(path)
    model = bnlab.load_keras(path)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    torch.testing.assert_close(model(torch.from_numpy(x)).detach(),
                               torch.from_numpy(predict(kmodel, (x,), training=False)))
