"""``--data DATA`` for a model file: folders, .npz, datasets; pixel range; mismatches refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import DatasetError, clear_memory_cache, load_dataset
from bnlab.doctor import DoctorError, ModelInterface, resolve_data

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (pip install pillow)")

H, W = 6, 5
CLASSES = ("cat", "dog", "emu")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three class folders of 4 RGB images each; pixel (0, 0, red) = a file's unique id."""
    root = tmp_path / "images"
    uid = 1
    for cls in ("dog", "cat", "emu"):  # written unsorted: labels follow sorted folder names
        (root / cls).mkdir(parents=True)
        for i in range(4):
            pixels = np.full((H, W, 3), 7 * uid % 256, dtype=np.uint8)
            pixels[0, 0, 0] = uid
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
            uid += 1
    return root


def model(shape: tuple[int | None, ...] = (H, W, 3), units: int = 3, *,
          rescales: bool = True) -> ModelInterface:
    return ModelInterface("model.keras", shape, units, rescales)


def test_image_folder_feeds_keras_pixels_to_a_model_that_rescales(folder: Path) -> None:
    data, described = resolve_data(str(folder), model(rescales=True))
    assert data.class_names == CLASSES and data.name == "images"  # "images test split"
    # No split: every image serves evaluation and statistics, like Keras without a split.
    assert len(data.x_test) == len(data.x_train) == 12
    x = data.x_test
    assert x.dtype == np.float32 and x.max() > 1
    np.testing.assert_array_equal(x, np.rint(x))  # the integers image_dataset_from_directory gives
    uids = x[:, 0, 0, 0].astype(int)
    assert sorted(uids) == list(range(1, 13))
    # dog images are uids 1-4 and sorted class 1; cat 5-8 -> 0; emu 9-12 -> 2
    expected = {u: (1 if u <= 4 else 0 if u <= 8 else 2) for u in range(1, 13)}
    assert data.y_test.tolist() == [expected[u] for u in uids]
    assert described["pixels"] == "0..255"
    assert "Rescaling" in described["pixel_rule"]
    assert described["options"]["image_size"] == [H, W]  # the model's own input size


def test_model_without_rescaling_gets_unit_pixels_unless_told(folder: Path) -> None:
    data, described = resolve_data(str(folder), model(rescales=False))
    assert data.x_test.min() >= 0 and data.x_test.max() <= 1 and described["pixels"] == "0..1"
    raw, described = resolve_data(str(folder), model(rescales=False), pixel_scale="255")
    np.testing.assert_array_equal(raw.x_test, np.rint(data.x_test * 255))
    assert described["pixel_rule"] == "--pixel-scale 255"
    unit, _ = resolve_data(str(folder), model(rescales=True), pixel_scale="1")
    np.testing.assert_array_equal(unit.x_test, data.x_test)


def test_validation_split_is_keras_subsets(folder: Path) -> None:
    data, _ = resolve_data(str(folder), model(), validation_split=0.25, split_seed=7)
    reference = load_dataset("image_folder", path=str(folder), image_size=[H, W],
                             validation_split=0.25, seed=7)
    np.testing.assert_array_equal(data.x_test, np.rint(reference.x_test * 255))
    np.testing.assert_array_equal(data.y_train, reference.y_train)
    assert (len(data.x_train), len(data.x_test)) == (9, 3)  # int(0.25 * 12) = 3 validation


def test_grayscale_model_gets_one_channel_and_open_sizes_take_the_option(folder: Path) -> None:
    data, _ = resolve_data(str(folder), model((None, None, 1)), image_size=(3, 4))
    assert data.x_test.shape == (12, 3, 4, 1)


@pytest.mark.parametrize(("interface", "options", "message"), [
    (model(), {"image_size": (8, 8)},
     "--image-size 8 8 does not fit model.keras: it takes images of height 6 "
     "(input (None, 6, 5, 3)); give --image-size 6 5 or leave it out"),
    (model((H, W, 4)), {},
     "model.keras takes images with 4 channels (input (None, 6, 5, 4)); an image folder "
     "gives 1 (grayscale) or 3 (RGB)"),
    (model(units=6), {},
     "has 3 classes (cat, dog, emu) but model.keras's output has 6 units; give the data the "
     "model was trained on"),
    (model((30,)), {}, "model.keras takes input (None, 30), not images"),
], ids=["image-size", "channels", "classes", "not-images"])
def test_mismatches_are_one_line_with_the_numbers(folder, interface, options, message) -> None:
    with pytest.raises(DoctorError) as e:
        resolve_data(str(folder), interface, **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_npz_and_dataset_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (10, 4, 4, 1), dtype=np.uint8),
              "y_train": np.arange(10) % 2, "x_test": rng.integers(0, 256, (6, 4, 4, 1),
                                                                  dtype=np.uint8),
              "y_test": np.arange(6) % 2}
    path = tmp_path / "small.npz"
    np.savez(path, **arrays)
    data, described = resolve_data(str(path), model((4, 4, 1), units=2))
    np.testing.assert_array_equal(data.x_test, arrays["x_test"].astype(np.float32))
    assert described["dataset"] == "npz"
    data, _ = resolve_data(f'{{ name = "npz", path = "{path}", limit_test = 2 }}',
                           model((4, 4, 1), units=1, rescales=False))  # one sigmoid unit: binary
    assert data.x_test.shape == (2, 4, 4, 1) and data.x_test.max() <= 1
    with pytest.raises(DoctorError, match=r"gives samples of shape 4x4x1 but model.keras takes "
                                          r"input \(None, 4, 4, 3\); it has 1 channel"):
        resolve_data(str(path), model((4, 4, 3), units=2))


def test_bad_data_arguments(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'fashion7'; choose from: .*fashion6"):
        resolve_data("fashion7", model())
    with pytest.raises(DoctorError, match=r"--image-size, --validation-split apply to an image "
                                          r"folder; DATA 'circles' is dataset 'circles'"):
        resolve_data("circles", model(), image_size=(2, 2), validation_split=0.5)
    with pytest.raises(DatasetError, match=r"DATA 'no/such/dir' is not a folder"):
        resolve_data("no/such/dir", model())
    with pytest.raises(DatasetError, match=r"the table needs name = a registered dataset"):
        resolve_data("{ path = 'x' }", model())
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "notes.txt").write_text("no image")
    with pytest.raises(DatasetError, match=r"holds no image files"):
        resolve_data(str(empty), model())
