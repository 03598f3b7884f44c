"""A folder of images with one sub-folder per class, like Keras's ``image_dataset_from_directory``.

::

    path/
      cats/  a.jpg  b.png  ...
      dogs/  c.jpg  ...

Indexing follows Keras (``keras.utils.image_dataset_from_directory`` with
``labels="inferred"``): class names are the sorted names of the sub-folders (hidden
ones skipped) and class ``i`` is ``class_names[i]``; each class folder is walked
recursively in sorted order for ``.bmp .gif .jpeg .jpg .png`` files (any case).
The file list is shuffled with ``numpy.random.RandomState(seed)`` and the last
``int(validation_split * N)`` files become the test set, the others the training
set: the same files Keras puts in ``subset="validation"`` / ``"training"`` for the
same ``seed`` and ``validation_split``.

Images are decoded with Pillow, converted to RGB (or grayscale), resized to
``image_size`` (Pillow's resampling, which antialiases when shrinking, so pixels are
close to but not identical with TensorFlow's ``tf.image.resize``), and scaled to
``[0, 1]``, or left in ``[0, 255]`` as Keras yields them with ``pixels="0..255"`` (for
a model that rescales its input itself, such as a Keras file with a ``Rescaling``
layer). Decoded images are cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from bnlab.data.arrays import images_to_float
from bnlab.data.cache import cached_arrays
from bnlab.data.dataset import Dataset, DatasetError

__all__ = ["IMAGE_EXTENSIONS", "INTERPOLATIONS", "index_image_folder", "load_image_folder"]

DEFAULT_VALIDATION_SPLIT = 0.2
"""The fraction held out as the test set when neither ``validation_split`` nor
``test_path`` is given."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "nearest", "bicubic", "area", "lanczos")
_PILLOW_HINT = "install Pillow with `pip install pillow`"
MAX_IMAGE_PIXELS = 50_000_000
"""Largest image decoded (width x height); larger ones are refused before decoding."""
MAX_DECODED_BYTES = 4_000_000_000
"""Most memory the decoded images of one folder may take (uint8 and float32 copies)."""


def index_image_folder(
    folder: str | os.PathLike[str], *, option: str = "path"
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """Image files of a class-per-sub-folder tree, in Keras's (unshuffled) order.

    Returns:
        ``(files, labels, class_names)``: files sorted by class, then by walk order;
        labels int64 ``(N,)``; class names the sorted sub-folder names.

    Raises:
        DatasetError: when the folder does not exist, has no class sub-folders, or
            holds no image files.
    """
    base = Path(folder)
    if not base.is_dir():
        raise DatasetError(
            f"dataset 'image_folder': {option}={str(base)!r} is not a folder; give a folder "
            "with one sub-folder of images per class"
        )
    try:
        class_names = tuple(
            sorted(
                d.name
                for d in base.iterdir()
                if d.is_dir() and not d.name.startswith(".") and not _loops(d, base)
            )
        )
    except OSError as e:
        raise DatasetError(
            f"dataset 'image_folder': {option}={str(base)!r} cannot be listed: {e.strerror or e}"
        ) from None
    if not class_names:
        raise DatasetError(
            f"dataset 'image_folder': {option}={str(base)!r} has no sub-folders; put the "
            "images of each class in their own sub-folder (path/<class>/<image>)"
        )
    files: list[Path] = []
    labels: list[int] = []
    seen: dict[tuple[int, int], Path] = {}
    for label, name in enumerate(class_names):
        # os.walk does not follow symlinked sub-folders (no loops); a symlinked class
        # folder itself is followed once, its contents checked against the others.
        for root, _, names in sorted(os.walk(base / name, onerror=_raise), key=lambda w: w[0]):
            for fname in sorted(names):
                f = Path(root) / fname
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                try:
                    st = f.stat()
                except OSError as e:  # a dangling or looping symlink
                    raise DatasetError(
                        f"dataset 'image_folder': cannot read {f}: {e.strerror or e}"
                    ) from None
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader forever
                    raise DatasetError(
                        f"dataset 'image_folder': {f} is not a regular file; remove it"
                    )
                if (st.st_dev, st.st_ino) in seen:
                    raise DatasetError(
                        f"dataset 'image_folder': {f} is the same file as "
                        f"{seen[(st.st_dev, st.st_ino)]} (a link); each image must appear once"
                    )
                seen[(st.st_dev, st.st_ino)] = f
                files.append(f)
                labels.append(label)
    if not files:
        raise DatasetError(
            f"dataset 'image_folder': {option}={str(base)!r} holds no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders {list(class_names)}"
        )
    return files, np.asarray(labels, dtype=np.int64), class_names


def _loops(folder: Path, base: Path) -> bool:
    """Whether `folder` is a symlink to `base` or one of its ancestors (a walk would loop)."""
    if not folder.is_symlink():
        return False
    try:
        target, root = folder.resolve(strict=True), base.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling or a loop of links
        return True
    return target == root or target in root.parents


def _raise(error: OSError) -> None:
    raise DatasetError(
        f"dataset 'image_folder': cannot list {error.filename}: {error.strerror or error}"
    )


def _decode_images(
    files: list[Path], image_size: tuple[int, int], color_mode: str, interpolation: str
) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "bicubic": Image.Resampling.BICUBIC,
        "area": Image.Resampling.BOX,
        "lanczos": Image.Resampling.LANCZOS,
    }[interpolation]
    height, width = image_size
    channels = 3 if color_mode == "rgb" else 1
    needed = len(files) * height * width * channels * 5  # uint8 decoded + float32 copy
    if needed > MAX_DECODED_BYTES:
        raise DatasetError(
            f"dataset 'image_folder': {len(files)} images at image_size=[{height}, {width}] "
            f"need {needed / 1e9:.1f} GB in memory; at most {MAX_DECODED_BYTES / 1e9:.0f} GB "
            "(give a smaller image_size or fewer images)"
        )
    out = np.empty((len(files), height, width, channels), dtype=np.uint8)  # (N, H, W, C)
    for i, f in enumerate(files):
        try:
            with warnings.catch_warnings():
                # the size check below refuses huge images; Pillow's warning adds nothing
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img_file = Image.open(f)
            with img_file as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise DatasetError(
                        f"dataset 'image_folder': image {f} is {img.width}x{img.height} pixels; "
                        f"at most {MAX_IMAGE_PIXELS} pixels are decoded (shrink it first)"
                    )
                img = img.convert("RGB" if color_mode == "rgb" else "L")
                if img.size != (width, height):
                    img = img.resize((width, height), resample=resample)
                out[i] = np.asarray(img, dtype=np.uint8).reshape(height, width, channels)
        except DatasetError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(
                f"dataset 'image_folder': cannot decode image {f}: {type(e).__name__}: {e}"
            ) from None
    return {"x": out}


def _decoded(
    files: list[Path], image_size: tuple[int, int], color_mode: str, interpolation: str
) -> np.ndarray:
    listing = []
    for f in files:
        st = f.stat()
        listing.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    key = {
        "files": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
        "count": len(files),
        "image_size": list(image_size),
        "color_mode": color_mode,
        "interpolation": interpolation,
    }
    return cached_arrays(
        "image_folder", key, lambda: _decode_images(files, image_size, color_mode, interpolation)
    )["x"]


def load_image_folder(
    *,
    path: str | os.PathLike[str],
    image_size: tuple[int, int] = (64, 64),
    validation_split: float | None = None,
    seed: int = 1337,
    test_path: str | os.PathLike[str] | None = None,
    color_mode: Literal["rgb", "grayscale"] = "rgb",
    interpolation: Literal["bilinear", "nearest", "bicubic", "area", "lanczos"] = "bilinear",
    pixels: Literal["0..1", "0..255"] = "0..1",
) -> Dataset:
    """Your own images, one sub-folder per class, as a `Dataset` (see the module docstring).

    Without ``test_path`` the files of ``path`` are split by ``validation_split``
    (default 0.2): shuffled with ``RandomState(seed)``, the last
    ``int(validation_split * N)`` are the test set. With ``test_path`` (a second
    folder with the same class sub-folders, e.g. ``seg_train``/``seg_test``) all of
    ``path`` is the training set (shuffled the same way) and all of ``test_path``,
    in index order, is the test set; ``validation_split`` must then be left out.

    Args:
        path: folder with one sub-folder of images per class.
        image_size: ``(height, width)`` every image is resized to; default ``(64, 64)``
            (Keras's default is ``(256, 256)``, slow for CPU training).
        validation_split: fraction of the files held out as the test set, in (0, 1).
        seed: shuffling seed; the default 1337 is the one Keras's examples use.
        test_path: separate folder for the test set.
        color_mode: ``"rgb"`` (3 channels) or ``"grayscale"`` (1 channel).
        interpolation: Pillow resampling used when resizing.
        pixels: ``"0..1"`` (``k / 255``) or ``"0..255"`` (``k``, Keras's
            ``image_dataset_from_directory``).

    Shape:
        x: ``(N, H, W, 3)`` float32 in ``[0, 1]`` or ``[0, 255]`` (``(N, H, W, 1)`` for grayscale);
        y: ``(N,)`` int64 in ``[0, len(class_names))``.

    Raises:
        DatasetError: when Pillow is missing, the folders are empty or mismatch, an
            image cannot be decoded, or the split leaves a part empty.
    """
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DatasetError(
            f"dataset 'image_folder' needs Pillow, which is not installed; {_PILLOW_HINT}"
        ) from None
    files, labels, class_names = index_image_folder(path)
    order = np.arange(len(files))
    np.random.RandomState(seed).shuffle(order)  # Keras shuffles with RandomState(seed) too
    x_all = _decoded(files, image_size, color_mode, interpolation)
    if test_path is None:
        fraction = DEFAULT_VALIDATION_SPLIT if validation_split is None else validation_split
        num_test = int(fraction * len(files))
        if not 1 <= num_test <= len(files) - 1:
            raise DatasetError(
                f"dataset 'image_folder': validation_split={fraction} of {len(files)} images "
                f"leaves {num_test} test and {len(files) - num_test} training images; "
                "give a split that leaves both non-empty, or add images"
            )
        train_rows, test_rows = order[: len(files) - num_test], order[len(files) - num_test :]
        x_train, y_train = x_all[train_rows], labels[train_rows]
        x_test, y_test = x_all[test_rows], labels[test_rows]
    else:
        if validation_split is not None:
            raise DatasetError(
                f"dataset 'image_folder': give test_path or validation_split, not both; got "
                f"test_path={os.fspath(test_path)!r} and validation_split={validation_split}"
            )
        test_files, y_test, test_classes = index_image_folder(test_path, option="test_path")
        if test_classes != class_names:
            raise DatasetError(
                f"dataset 'image_folder': test_path classes {list(test_classes)} differ from "
                f"path classes {list(class_names)}; both folders need the same sub-folders"
            )
        x_train, y_train = x_all[order], labels[order]
        x_test = _decoded(test_files, image_size, color_mode, interpolation)

    def floats(x: np.ndarray, what: str) -> np.ndarray:
        if pixels == "0..255":
            return x.astype(np.float32)  # Keras's float pixels, 0..255
        return images_to_float(x, what=f"dataset 'image_folder' {what}")

    return Dataset(
        name="image_folder",
        x_train=floats(x_train, "training images"),
        y_train=y_train.copy(),
        x_test=floats(x_test, "test images"),
        y_test=y_test.copy(),
        num_classes=len(class_names),
        class_names=class_names,
    )
