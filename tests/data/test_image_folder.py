"""Class-per-sub-folder images: values, Keras's file split, resizing, errors, cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import bnlab.data.image_folder as image_folder_module
from bnlab.data import DatasetError, clear_memory_cache, load_dataset

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (pip install pillow)")

H, W = 5, 6


def _image(uid: int) -> np.ndarray:
    """A 5x6 RGB image whose red channel is the constant ``uid`` (identifies the file)."""
    g = (np.arange(H * W).reshape(H, W) * 7 + uid) % 256
    b = np.full((H, W), 255 - uid)
    r = np.full((H, W), uid)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)  # (H, W, 3)


def make_tree(
    root: Path, counts: dict[str, int], start: int = 1
) -> dict[int, tuple[str, np.ndarray]]:
    """Write ``counts[class]`` images per class (PNG and BMP, one nested); uid -> (class, pixels)."""
    written = {}
    uid = start
    for cls, n in counts.items():
        for i in range(n):
            folder = root / cls / ("nested" if i == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = _image(uid)
            ext = ".BMP" if i % 3 == 2 else ".png"
            Image.fromarray(pixels).save(folder / f"img{i:02d}{ext}")
            written[uid] = (cls, pixels)
            uid += 1
        (root / cls / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir(exist_ok=True)
    Image.fromarray(_image(250)).save(root / ".hidden" / "x.png")
    Image.fromarray(_image(251)).save(root / "loose.png")  # not in a class folder: ignored
    return written


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[int, tuple[str, np.ndarray]]]:
    root = tmp_path / "pics"
    return root, make_tree(root, {"dog": 7, "cat": 5, "emu": 3})


def _uids(x: np.ndarray) -> list[int]:
    return [round(float(v) * 255) for v in x[:, 0, 0, 0]]


def test_pixels_labels_and_class_names(tree):
    root, written = tree
    d = load_dataset("image_folder", path=str(root), image_size=[H, W])
    assert d.class_names == ("cat", "dog", "emu") and d.num_classes == 3
    assert d.x_train.shape == (12, H, W, 3) and d.x_test.shape == (3, H, W, 3)  # int(0.2 * 15) = 3
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        for uid, img, label in zip(_uids(x), x, y, strict=True):
            cls, pixels = written[uid]
            np.testing.assert_array_equal(img, pixels / np.float32(255))
            assert d.class_names[label] == cls
    assert sorted(_uids(d.x_train) + _uids(d.x_test)) == sorted(written)


def test_keras_pixel_range(tree):
    """pixels = "0..255": the decoded values as floats, as image_dataset_from_directory
    yields them; the same files in the same order as the default 0..1."""
    root, written = tree
    unit = load_dataset("image_folder", path=str(root), image_size=[H, W])
    raw = load_dataset("image_folder", path=str(root), image_size=[H, W], pixels="0..255")
    assert raw.x_train.dtype == np.float32
    for x_raw, x_unit in ((raw.x_train, unit.x_train), (raw.x_test, unit.x_test)):
        for img, uid in zip(x_raw, _uids(x_unit), strict=True):
            np.testing.assert_array_equal(img, written[uid][1].astype(np.float32))
    with pytest.raises(DatasetError, match=r"invalid pixels='0..100'; expected one of"):
        load_dataset("image_folder", path=str(root), pixels="0..100")


# Recorded from Keras 3.15 on the `tree` fixture (classes dog 7, cat 5, emu 3 images):
#   paths, labels, names = keras.src.utils.dataset_utils.index_directory(
#       root, "inferred", formats=(".bmp", ".gif", ".jpeg", ".jpg", ".png"), shuffle=True, seed=7)
#   get_training_or_validation_split(paths, labels, 0.25, "training" / "validation")
# listed as the red-channel uid of each file (importing Keras here would cost seconds).
KERAS_TRAIN_UIDS = [5, 2, 7, 11, 14, 9, 10, 13, 15, 4, 1, 12]
KERAS_TRAIN_LABELS = [1, 1, 1, 0, 2, 0, 0, 2, 2, 1, 1, 0]
KERAS_TEST_UIDS = [3, 6, 8]
KERAS_TEST_LABELS = [1, 1, 0]


def test_split_matches_keras_image_dataset_from_directory(tree):
    root, _ = tree
    d = load_dataset(
        "image_folder", path=str(root), image_size=[H, W], validation_split=0.25, seed=7
    )
    assert d.class_names == ("cat", "dog", "emu")
    assert _uids(d.x_train) == KERAS_TRAIN_UIDS
    assert d.y_train.tolist() == KERAS_TRAIN_LABELS
    assert _uids(d.x_test) == KERAS_TEST_UIDS
    assert d.y_test.tolist() == KERAS_TEST_LABELS


def test_resize_grayscale_and_interpolation(tree):
    root, written = tree
    d = load_dataset("image_folder", path=str(root), image_size=[3, 4], interpolation="nearest")
    uid = _uids(d.x_train)[0]
    expected = Image.fromarray(written[uid][1]).resize((4, 3), resample=Image.Resampling.NEAREST)
    np.testing.assert_array_equal(d.x_train[0], np.asarray(expected) / np.float32(255))
    # a constant channel stays constant under bilinear resampling
    d = load_dataset("image_folder", path=str(root), image_size=8)
    assert d.x_train.shape[1:] == (8, 8, 3)
    np.testing.assert_allclose(d.x_train[:, :, :, 0], d.x_train[:, :1, :1, 0] * np.ones((1, 8, 8)))

    g = load_dataset("image_folder", path=str(root), image_size=[H, W], color_mode="grayscale")
    assert g.x_train.shape == (12, H, W, 1)
    rgb = load_dataset("image_folder", path=str(root), image_size=[H, W]).x_train * 255
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, Pillow's "L"
    np.testing.assert_allclose(g.x_train[..., 0] * 255, luma, atol=0.51)


def test_separate_test_folder(tmp_path, tree):
    root, _ = tree
    test_root = tmp_path / "test"
    test_written = make_tree(test_root, {"cat": 1, "dog": 2, "emu": 1}, start=100)
    d = load_dataset("image_folder", path=str(root), test_path=str(test_root), image_size=[H, W])
    assert len(d.x_train) == 15
    # test set in index order: classes sorted; within a class, folders by sorted path
    # (dog/img01 before dog/nested/img00), then files by name
    assert _uids(d.x_test) == [100, 102, 101, 103]
    assert [d.class_names[i] for i in d.y_test] == [
        test_written[u][0] for u in (100, 102, 101, 103)
    ]

    with pytest.raises(DatasetError, match=r"give test_path or validation_split, not both"):
        load_dataset("image_folder", path=str(root), test_path=str(test_root), validation_split=0.5)
    odd = tmp_path / "odd"
    make_tree(odd, {"cat": 1, "cow": 1}, start=200)
    with pytest.raises(
        DatasetError,
        match=r"test_path classes \['cat', 'cow'\] differ from path classes \['cat', 'dog', 'emu'\]",
    ):
        load_dataset("image_folder", path=str(root), test_path=str(odd))


def test_folder_errors(tmp_path, tree):
    root, _ = tree
    with pytest.raises(DatasetError, match=r"validation_split=0.05 of 15 images leaves 0 test"):
        load_dataset("image_folder", path=str(root), validation_split=0.05)
    with pytest.raises(DatasetError, match=r"path='.*nowhere' is not a folder"):
        load_dataset("image_folder", path=str(tmp_path / "nowhere"))
    (tmp_path / "flat").mkdir()
    Image.fromarray(_image(1)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match=r"has no sub-folders; put the images of each class"):
        load_dataset("image_folder", path=str(tmp_path / "flat"))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"holds no image files .* \['a'\]"):
        load_dataset("image_folder", path=str(tmp_path / "empty"))
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"cannot decode image .*broken\.png"):
        load_dataset("image_folder", path=str(root))


def test_second_load_reads_the_cache_and_options_change_the_key(tree, monkeypatch):
    root, _ = tree
    first = load_dataset("image_folder", path=str(root), image_size=[H, W])
    clear_memory_cache()
    calls = []
    real = image_folder_module._decode_images

    def spy(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(image_folder_module, "_decode_images", spy)
    second = load_dataset("image_folder", path=str(root), image_size=[H, W], validation_split=0.4)
    assert calls == []  # decoded images do not depend on the split
    assert sorted(_uids(second.x_train) + _uids(second.x_test)) == sorted(
        _uids(first.x_train) + _uids(first.x_test)
    )
    load_dataset("image_folder", path=str(root), image_size=[4, 4])
    assert calls == [(4, 4)]


def _load_error(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset("image_folder", path=str(root), image_size=[4, 4])
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_symlink_to_the_folder_itself_is_no_class(tree):
    root, _ = tree
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "dog" / "up").symlink_to(root, target_is_directory=True)  # walked, never followed
    d = load_dataset("image_folder", path=str(root), image_size=[4, 4])
    assert d.class_names == ("cat", "dog", "emu")
    assert len(d.x_train) + len(d.x_test) == 15


def test_the_same_image_twice_is_refused(tree):
    root, _ = tree
    (root / "cat" / "again.png").symlink_to(root / "dog" / "img01.png")
    assert "is the same file as" in _load_error(root)


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tree):
    root, _ = tree
    os.mkfifo(root / "cat" / "f.png")
    assert "f.png is not a regular file" in _load_error(root)


def test_a_looping_file_symlink_is_one_line(tree):
    root, _ = tree
    (root / "cat" / "a.png").symlink_to(root / "cat" / "b.png")
    (root / "cat" / "b.png").symlink_to(root / "cat" / "a.png")
    assert "cannot read" in _load_error(root)


def test_a_decompression_bomb_is_refused_before_decoding(tree):
    from limits import run_capped

    root, _ = tree
    # 10000 x 8000 grayscale PNG of zeros: about 80 KB on disk, 80 MB decoded (240 MB as
    # RGB), below Pillow's own bomb limit; bnlab's limit refuses it before decoding
    import zlib

    width, height = 10000, 8000
    raw = zlib.compress(b"\x00" * (width + 1) * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct

        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    import struct

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    (root / "cat" / "bomb.png").write_bytes(png)
    code = (
        "from bnlab.data import DatasetError, load_dataset\n"
        "try:\n"
        f"    load_dataset('image_folder', path={str(root)!r}, image_size=[4, 4])\n"
        "except DatasetError as e:\n"
        "    print(e)\n"
    )
    done = run_capped(code, cap=2 * 1024**3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "bomb.png is 10000x8000 pixels; at most 50000000" in done.stdout


def test_decoded_size_is_bounded(tree):
    root, _ = tree
    with pytest.raises(DatasetError, match=r"60 images at image_size=\[4096, 4096\] need 15.1 GB"):
        image_folder_module._decode_images(
            image_folder_module.index_image_folder(root)[0] * 4, (4096, 4096), "rgb", "bilinear"
        )
