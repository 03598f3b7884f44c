"""IDX files, the format MNIST and Fashion-MNIST ship in: reader, writer, dataset loader.

Layout (all integers big-endian)::

    byte 0-1   0x00 0x00          magic
    byte 2     dtype code         0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                  0x0D float32, 0x0E float64
    byte 3     ndim               number of dimensions (>= 1)
    4 * ndim   dims               uint32 size of each dimension
    rest       data               prod(dims) values, row-major, big-endian

``train-images-idx3-ubyte`` is ``(60000, 28, 28)`` uint8, ``train-labels-idx1-ubyte``
``(60000,)`` uint8. Files may be gzip-compressed (detected from their first bytes,
not their name).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bnlab.data.arrays import raw_to_dataset
from bnlab.data.cache import cached_arrays, file_signature
from bnlab.data.dataset import Dataset, DatasetError

__all__ = ["IDX_FILES", "decode_idx_files", "find_idx_files", "load_idx", "read_idx", "write_idx"]

_CODE_TO_DTYPE = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}
_GZIP_MAGIC = b"\x1f\x8b"

# Role -> file stem of the standard MNIST distribution; "<stem>" or "<stem>.gz".
IDX_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


MAX_IDX_BYTES = 4_000_000_000
"""Largest data part an IDX header may declare (bytes, after decompression)."""
_EXTRA_COUNTED = 1 << 20  # bytes past the declared data counted for the message


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = f.read(min(n - got, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a native-byte-order array.

    The file is read as a stream and never beyond what its header declares (plus a
    little, to report extra bytes), so a small gzip file that inflates to gigabytes
    costs no more than its declared shape, and a header may declare at most
    `MAX_IDX_BYTES`.

    Returns:
        A fresh writable array with the file's shape and dtype (e.g. ``(60000, 28, 28)`` uint8).

    Raises:
        DatasetError: when the file is missing, not gzip-readable, or its header or
            length is not valid IDX (the message says which and what was found).
    """
    p = Path(path)
    try:
        raw_file = p.open("rb")
    except FileNotFoundError:
        raise DatasetError(f"IDX file not found: {p}; check the path") from None
    except OSError as e:
        raise DatasetError(f"IDX file {p} cannot be read: {e.strerror or e}") from None
    with raw_file:
        try:
            gzipped = raw_file.read(2) == _GZIP_MAGIC
            raw_file.seek(0)
            if not gzipped:
                return _parse_idx(p, raw_file)
            with gzip.GzipFile(fileobj=raw_file, mode="rb") as f:  # leaves raw_file open
                return _parse_idx(p, f)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"IDX file {p} is not a readable gzip file: {e}") from None


def _parse_idx(p: Path, f: BinaryIO) -> np.ndarray:
    head = _read_exactly(f, 4)
    if len(head) < 4:
        raise DatasetError(f"IDX file {p} is too short for a header: {len(head)} bytes")
    if head[:2] != b"\x00\x00":
        raise DatasetError(
            f"IDX file {p} has magic bytes {head[:2].hex()}, expected 0000; not an IDX file"
        )
    code, ndim = head[2], head[3]
    if code not in _CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _CODE_TO_DTYPE)
        raise DatasetError(
            f"IDX file {p} has unknown dtype code 0x{code:02X}; expected one of {known}"
        )
    if ndim == 0:
        raise DatasetError(f"IDX file {p} declares 0 dimensions; expected at least 1")
    header = 4 + 4 * ndim
    dims_raw = _read_exactly(f, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DatasetError(
            f"IDX file {p} is truncated inside its header: {4 + len(dims_raw)} bytes, need "
            f"{header} for {ndim} dimensions"
        )
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = _CODE_TO_DTYPE[code]
    expected = math.prod(dims) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DatasetError(
            f"IDX file {p} declares shape {dims} of {dtype.name}, {expected} bytes; at most "
            f"{MAX_IDX_BYTES} are read"
        )
    data = _read_exactly(f, expected)
    extra = len(_read_exactly(f, _EXTRA_COUNTED))
    if len(data) != expected or extra:
        found = f"{len(data) + extra}" if extra < _EXTRA_COUNTED else f"more than {expected + extra}"
        raise DatasetError(
            f"IDX file {p} has {found} data bytes but its header {dims} of {dtype.name} "
            f"needs {expected}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when the name ends in ``.gz``.

    Raises:
        DatasetError: for dtypes IDX cannot hold (allowed: uint8, int8, int16, int32,
            float32, float64) or arrays with 0 or more than 255 dimensions.
    """
    a = np.asarray(array)
    code = _KIND_TO_CODE.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise DatasetError(
            f"write_idx cannot store dtype {a.dtype}; use uint8, int8, int16, int32, "
            f"float32 or float64"
        )
    if not 1 <= a.ndim <= 255:
        raise DatasetError(f"write_idx needs 1 to 255 dimensions; got shape {a.shape}")
    payload = (
        bytes([0, 0, code, a.ndim])
        + struct.pack(f">{a.ndim}I", *a.shape)
        + np.ascontiguousarray(a, dtype=_CODE_TO_DTYPE[code]).tobytes()
    )
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    Path(path).write_bytes(payload)


def find_idx_files(folder: str | os.PathLike[str], *, dataset: str, hint: str) -> dict[str, Path]:
    """The four standard IDX files in ``folder`` (``<stem>`` or ``<stem>.gz``, see `IDX_FILES`).

    A dot instead of the last dash (``train-images.idx3-ubyte``, as some mirrors name
    them) is accepted too.

    Raises:
        DatasetError: naming the folder, the missing files and ``hint`` (how to get them).
    """
    base = Path(folder)
    found: dict[str, Path] = {}
    missing = []
    for role, stem in IDX_FILES.items():
        dotted = stem.replace("-idx", ".idx")
        candidates = [base / name for s in (stem, dotted) for name in (f"{s}.gz", s)]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[role] = hit
    if not base.is_dir():
        raise DatasetError(f"dataset {dataset!r}: folder {base} does not exist; {hint}")
    if missing:
        raise DatasetError(f"dataset {dataset!r}: folder {base} lacks {', '.join(missing)}; {hint}")
    return found


def decode_idx_files(kind: str, files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Read the four IDX files of a split (cached) and check they belong together."""
    key = {role: file_signature(p) for role, p in sorted(files.items())}

    def decode() -> dict[str, np.ndarray]:
        arrays = {role: read_idx(p) for role, p in files.items()}
        for part in ("train", "test"):
            n_x, n_y = len(arrays[f"x_{part}"]), len(arrays[f"y_{part}"])
            if n_x != n_y:
                raise DatasetError(
                    f"IDX {part} images {files[f'x_{part}']} hold {n_x} samples but labels "
                    f"{files[f'y_{part}']} hold {n_y}; the files do not belong together"
                )
        return arrays

    return cached_arrays(kind, key, decode)


def load_idx(
    *,
    path: str | os.PathLike[str] | None = None,
    train_images: str | os.PathLike[str] | None = None,
    train_labels: str | os.PathLike[str] | None = None,
    test_images: str | os.PathLike[str] | None = None,
    test_labels: str | os.PathLike[str] | None = None,
    flatten: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Your own MNIST-style IDX files as a `Dataset`.

    Give either ``path``, a folder holding the four standard names
    (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``),
    or all four of ``train_images``, ``train_labels``, ``test_images``, ``test_labels``.
    The train files are the training set, the test files the test set.

    Images ``(N, H, W)`` uint8 become ``(N, H, W, 1)`` float32 ``k / 255`` in ``[0, 1]``
    (``(N, H*W)`` with ``flatten=True``); float images are kept as they are. Labels
    become int64.

    Args:
        path: folder with the four standard files.
        train_images, train_labels, test_images, test_labels: explicit file paths.
        flatten: one row per sample, for MLPs.
        limit_train, limit_test: keep only the first k rows of each split.
        class_names: names of classes 0, 1, ...; default ``"0", "1", ...``.

    Raises:
        DatasetError: when files are missing, corrupt or inconsistent, or when both or
            neither of ``path`` and the four file options are given.
    """
    explicit = {
        "x_train": train_images,
        "y_train": train_labels,
        "x_test": test_images,
        "y_test": test_labels,
    }
    given = [k for k, v in explicit.items() if v is not None]
    options = {
        "x_train": "train_images",
        "y_train": "train_labels",
        "x_test": "test_images",
        "y_test": "test_labels",
    }
    if path is not None and given:
        raise DatasetError(
            "dataset 'idx': give either path=<folder> or the four file options, not both; "
            f"got path={os.fspath(path)!r} and {', '.join(options[k] for k in given)}"
        )
    if path is not None:
        files = find_idx_files(
            path,
            dataset="idx",
            hint="rename the files or give train_images, train_labels, test_images, test_labels",
        )
    elif len(given) == 4:
        files = {k: Path(v) for k, v in explicit.items() if v is not None}
    else:
        absent = [options[k] for k in explicit if explicit[k] is None]
        raise DatasetError(
            "dataset 'idx' needs path=<folder with the four MNIST-named files> or all of "
            f"train_images, train_labels, test_images, test_labels; missing: {', '.join(absent)}"
        )
    for role, p in files.items():
        if not p.is_file():
            raise DatasetError(f"dataset 'idx': {options[role]}={str(p)!r} is not a file")
    raw = decode_idx_files("idx", files)
    return raw_to_dataset(
        "idx",
        raw,
        flatten=flatten,
        limit_train=limit_train,
        limit_test=limit_test,
        class_names=class_names,
    )
