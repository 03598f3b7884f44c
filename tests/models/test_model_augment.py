"""Random image augmentation layers against Keras 3 (torch backend).

Keras draws its transformations from its own RNG and bnlab from torch's, so the
training-mode outputs are compared draw for draw: Keras's layer makes a transformation
(``get_random_transformation``) and transforms the images with it (``transform_images``);
the same draws go to bnlab's layer (``apply``), built from the Keras layer's config.
Inference is the identity in both (also in test_model_keras_layers.py). The noise layers
(GaussianNoise, GaussianDropout) are checked for the distribution Keras draws from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import keras

import bnlab
from bnlab.models import build_model, parse_layer
from bnlab.models.augment import FILL_MODES, INTERPOLATIONS, affine_transform
from bnlab.train.config import TrainConfig
from bnlab.train.vectorized import vectorization_blocker

L = keras.layers


def images(n=5, h=7, w=9, c=3, seed=0):
    """Channel-last images in [0, 255] with a strong gradient, so fill modes show."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, h * w).reshape(1, h, w, 1)
    return torch.as_tensor((base + rng.uniform(0, 55, size=(n, h, w, c))).astype("float32"))


def ours_from_keras(klayer, shape):
    config = keras.saving.serialize_keras_object(klayer)
    spec = parse_layer({"type": config["class_name"], **config["config"]}, where="test")
    return build_model([spec], shape, seed=0).layer(klayer.name)


def draws_of(kind, transformation, n):
    """Keras's transformation dict as bnlab's draws (one row per image)."""
    t = {k: v for k, v in transformation.items() if isinstance(v, torch.Tensor)}
    if kind == "RandomFlip":
        return t["flips"].reshape(n)
    if kind == "RandomRotation":
        return t["angle"].reshape(n)
    if kind == "RandomZoom":
        return torch.cat([t["width_zoom"].reshape(n, 1), t["height_zoom"].reshape(n, 1)], dim=1)
    if kind == "RandomTranslation":
        return t["translations"].reshape(n, 2)
    if kind == "RandomContrast":
        return t["contrast_factor"].reshape(n)
    return t["rgb_delta"].reshape(n)


CASES = {
    "flip_horizontal": lambda: L.RandomFlip("horizontal"),
    "flip_vertical": lambda: L.RandomFlip("vertical"),
    "flip_both": lambda: L.RandomFlip(),
    "rotation_reflect": lambda: L.RandomRotation(0.3),
    "rotation_wrap_nearest": lambda: L.RandomRotation((-0.5, 0.2), fill_mode="wrap",
                                                      interpolation="nearest"),
    "rotation_constant": lambda: L.RandomRotation(1.0, fill_mode="constant", fill_value=7.0),
    "rotation_nearest_fill": lambda: L.RandomRotation(0.25, fill_mode="nearest"),
    "zoom_in_and_out": lambda: L.RandomZoom((-0.5, 0.6)),
    "zoom_width_constant": lambda: L.RandomZoom(0.4, (-0.2, 0.7), fill_mode="constant"),
    "zoom_nearest_wrap": lambda: L.RandomZoom(0.3, interpolation="nearest", fill_mode="wrap"),
    "translation_reflect": lambda: L.RandomTranslation(0.4, 0.3),
    "translation_constant": lambda: L.RandomTranslation((-0.6, 0.1), 0.5, fill_mode="constant",
                                                         fill_value=-3.0),
    "translation_nearest": lambda: L.RandomTranslation(0.5, (0.2, 0.9), fill_mode="nearest",
                                                        interpolation="nearest"),
    "contrast": lambda: L.RandomContrast(0.5),
    "contrast_pair": lambda: L.RandomContrast((0.3, 0.8), value_range=(20, 230)),
    "brightness": lambda: L.RandomBrightness(0.4),
    "brightness_range": lambda: L.RandomBrightness((-0.5, 0.2), value_range=(0, 1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_training_transform_equals_keras_for_the_same_draws(case, seed, assert_close):
    keras.utils.set_random_seed(seed)
    klayer = CASES[case]()
    x = images(seed=seed)
    if case == "brightness_range":
        x = x / 255.0
    transformation = klayer.get_random_transformation(x, training=True)
    expected = klayer.transform_images(x.clone(), transformation, training=True)  # it adds in place
    ours = ours_from_keras(klayer, tuple(x.shape[1:]))
    draws = draws_of(type(klayer).__name__, transformation, x.shape[0])
    got = ours.apply(x.permute(0, 3, 1, 2), draws).permute(0, 2, 3, 1)
    assert_close(got, torch.as_tensor(expected).float(), atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_affine_transform_equals_keras_ops(fill_mode, interpolation, assert_close):
    """Arbitrary affine maps (rotation, shear, scale, shift, far outside the image)."""
    rng = np.random.default_rng(3)
    x = images(n=4, h=6, w=11, c=2)
    matrices = np.concatenate([
        rng.uniform(-1.5, 1.5, size=(4, 2)), rng.uniform(-15, 15, size=(4, 1)),
        rng.uniform(-1.5, 1.5, size=(4, 2)), rng.uniform(-10, 10, size=(4, 1)),
    ], axis=1).astype("float32")
    keras_transform = np.concatenate([matrices, np.zeros((4, 2), "float32")], axis=1)
    expected = keras.ops.image.affine_transform(
        x, torch.as_tensor(keras_transform), interpolation=interpolation, fill_mode=fill_mode,
        fill_value=-1.0,
    )
    got = affine_transform(x.permute(0, 3, 1, 2), torch.as_tensor(matrices), interpolation,
                           fill_mode, -1.0).permute(0, 2, 3, 1)
    assert_close(got, torch.as_tensor(expected).float(), atol=2e-4, rtol=1e-5)


def test_identity_maps_leave_images_unchanged():
    x = images().permute(0, 3, 1, 2)
    eye = torch.tensor([[1.0, 0, 0, 0, 1.0, 0]]).expand(x.shape[0], 6)
    for fill_mode in FILL_MODES:
        for interpolation in INTERPOLATIONS:
            assert torch.equal(affine_transform(x, eye, interpolation, fill_mode), x)


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        ({"type": "RandomRotation", "factor": 0.25}, -90.0, 90.0),  # degrees
        ({"type": "RandomRotation", "factor": [0.5, -0.1]}, -36.0, 180.0),
        ({"type": "RandomContrast", "factor": 0.4}, 1.0, 1.4),  # Keras 3 reads f as (0, f)
        ({"type": "RandomContrast", "factor": [0.2, 0.5]}, 0.8, 1.5),
        ({"type": "RandomBrightness", "factor": 0.1, "value_range": [0, 2]}, -0.2, 0.2),
        ({"type": "RandomZoom", "height_factor": [-0.5, 0.25]}, 0.5, 1.25),
        ({"type": "RandomTranslation", "height_factor": 0.5, "width_factor": 0.5}, -4.5, 4.5),
    ],
)
def test_draws_cover_the_range_keras_documents(spec, low, high):
    torch.manual_seed(0)
    (_, _, layer), = build_model([spec], (9, 9, 1), seed=0).named_layers()
    draws = layer.draw(torch.zeros(4000, 1, 9, 9))
    assert draws.min() >= low - 1e-5 and draws.max() <= high + 1e-5
    span = high - low
    assert draws.min() < low + 0.01 * span and draws.max() > high - 0.01 * span


def test_flip_draws_half_of_the_images_and_each_output_is_the_image_or_its_mirror():
    torch.manual_seed(0)
    model = build_model([{"type": "RandomFlip", "mode": "horizontal"}], (3, 4, 2), seed=0)
    model.train()
    x = torch.randn(400, 3, 4, 2)
    y = model(x)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(2)).flatten(1).all(1)  # channel-last: width is axis 2
    assert bool((same | mirrored).all())
    assert 150 < int(mirrored.sum()) < 250
    model.eval()
    assert torch.equal(model(x), x)


@pytest.mark.parametrize(
    ("spec", "key", "message"),
    [
        ({"type": "RandomRotation", "factor": 1.5}, "factor", "a number >= -1 and <= 1"),
        ({"type": "RandomZoom", "height_factor": -1.0}, "height_factor", "> -1"),
        ({"type": "RandomContrast", "factor": -0.2}, "factor", ">= 0"),
        ({"type": "RandomFlip", "mode": "diagonal"}, "mode", "'horizontal'"),
        ({"type": "RandomRotation", "factor": 0.1, "fill_mode": "mirror"}, "fill_mode",
         "'reflect'"),
        ({"type": "RandomBrightness", "factor": 0.1, "value_range": [1, 0]}, "value_range",
         "low < high"),
    ],
)
def test_bad_arguments_are_one_line_errors(spec, key, message):
    with pytest.raises(ValueError) as error:
        parse_layer(spec, where="layers[0]")
    text = str(error.value)
    assert "\n" not in text and key in text and message in text


def test_rank_other_than_images_is_refused_when_built():
    with pytest.raises(ValueError, match=r"RandomFlip expects input of shape \(batch, height"):
        build_model([{"type": "RandomFlip"}], (5, 2), seed=0)


# Keras saves its augmentation layers' seed state through numpy's deprecated __array__ path.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_a_keras_file_with_augmentation_loads_runs_and_saves(tmp_path, assert_close):
    keras.utils.set_random_seed(0)
    kmodel = keras.Sequential([
        keras.Input((12, 10, 3)),
        L.RandomFlip("horizontal", name="flip"), L.RandomRotation(0.1, name="rotation"),
        L.RandomZoom(0.1, name="zoom"), L.RandomTranslation(0.1, 0.1, name="shift"),
        L.RandomContrast(0.2, name="contrast"), L.RandomBrightness(0.1, name="brightness"),
        L.Rescaling(1 / 255.0), L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(),
        L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax"),
    ])
    path = tmp_path / "augmented.keras"
    kmodel.save(path)
    model = bnlab.load_keras(path)
    x = images(n=6, h=12, w=10)
    assert_close(model(x).detach(), torch.as_tensor(kmodel(x, training=False)).detach())
    model.train()
    torch.manual_seed(0)
    moved = model.layer("rotation")(x.permute(0, 3, 1, 2))
    assert not torch.allclose(moved, x.permute(0, 3, 1, 2))  # augmentation acts in training
    model.eval()
    saved = tmp_path / "saved.keras"
    bnlab.save_keras(model, saved)
    again = keras.saving.load_model(saved)
    assert [type(layer).__name__ for layer in again.layers] == [
        type(layer).__name__ for layer in kmodel.layers]
    assert_close(torch.as_tensor(again(x, training=False)).detach(), model(x).detach())


def test_augmented_models_train_with_the_process_executor_not_stacked():
    model = build_model([{"type": "RandomFlip"}, {"type": "Flatten"},
                         {"type": "Dense", "units": 2}], (4, 4, 1), seed=0)
    reason = vectorization_blocker(model, TrainConfig(
        optimizer="sgd", optimizer_args={}, loss="categorical_crossentropy", epochs=1,
        batch_size=4))
    assert reason == "layer random_flip: RandomFlip layers are not supported"


@pytest.mark.parametrize(
    ("spec", "mean", "std"),
    [
        ({"type": "GaussianNoise", "stddev": 0.5}, 0.0, 0.5),  # x + N(0, 0.5^2)
        ({"type": "GaussianDropout", "rate": 0.2}, 1.0, 0.5),  # x * N(1, 0.2 / 0.8)
    ],
)
def test_gaussian_noise_layers_draw_keras_distribution_in_training_only(spec, mean, std):
    torch.manual_seed(0)
    model = build_model([spec], (50, 40), seed=0)
    x = torch.full((20, 50, 40), 2.0)
    model.train()
    noise = model(x) - x if spec["type"] == "GaussianNoise" else model(x) / x
    assert abs(noise.mean().item() - mean) < 0.01
    assert abs(noise.std().item() - std) < 0.01
    model.eval()
    assert torch.equal(model(x), x)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_a_functional_model_records_training_true_for_augmentation_and_follows_its_mode(
        tmp_path, assert_close):
    """Keras 3 records ``training=True`` for a functional call of an augmentation layer (its
    call's default) and of ``Dropout(...)(x, training=True)``; Keras's ``predict`` and
    ``model(x, training=False)`` override it, and so does the bnlab model's mode."""
    inputs = keras.Input((6, 5, 3))
    x = L.RandomFlip("horizontal", name="flip")(inputs)
    x = L.Conv2D(4, 3, name="conv")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.Dropout(0.5, name="drop")(x, training=True)
    kmodel = keras.Model(inputs, L.GlobalAveragePooling2D()(x))
    recorded = [layer["inbound_nodes"][0]["kwargs"]
                for layer in kmodel.get_config()["layers"] if layer["inbound_nodes"]]
    assert {"training": True} in recorded
    path = tmp_path / "functional.keras"
    kmodel.save(path)
    model = bnlab.load_keras(path)
    x = images(n=4, h=6, w=5)
    expected = torch.as_tensor(kmodel.predict(x.numpy(), verbose=0))
    assert_close(model(x).detach(), expected)
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model(x).detach(), expected)  # flips and drops in training
