"""IDX reader/writer against hand-built bytes, corrupt-file errors, and the `idx` dataset."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from bnlab.data import DatasetError, load_dataset, read_idx, write_idx

STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)  # the standard MNIST names


def test_header_and_payload_bytes_follow_the_idx_layout(tmp_path):
    a = np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8)
    write_idx(tmp_path / "a", a)
    assert (tmp_path / "a").read_bytes() == bytes(
        [0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255]
    )
    f = np.array([1.5, -2.0], dtype=np.float32)
    write_idx(tmp_path / "f", f)
    assert (tmp_path / "f").read_bytes() == bytes([0, 0, 0x0D, 1]) + struct.pack(
        ">I2f", 2, 1.5, -2.0
    )


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"], ids=["plain", "gzip"])
def test_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 4) * 7 - 20).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / f"a{suffix}"
    write_idx(p, a)
    if suffix:
        assert p.read_bytes()[:2] == b"\x1f\x8b"
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(b, a)
    b[0, 0, 0] = 1  # writable


def test_compression_is_detected_from_content_not_name(tmp_path):
    a = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "x.gz", a)
    (tmp_path / "x.gz").rename(tmp_path / "x-idx1-ubyte")
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx1-ubyte"), a)


def test_write_rejects_dtypes_idx_cannot_hold(tmp_path):
    with pytest.raises(DatasetError, match=r"cannot store dtype int64"):
        write_idx(tmp_path / "a", np.arange(3))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x00\x00", "too short for a header: 2 bytes"),
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "magic bytes 0102, expected 0000"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown dtype code 0x07"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated inside its header: 8 bytes, need 16"),
        (
            b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02",
            r"has 2 data bytes but its header \(5,\) of uint8 needs 5",
        ),
        (
            b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02",
            r"has 2 data bytes but its header \(1,\) of uint8 needs 1",
        ),
        (b"\x1f\x8b\x08\x00garbage", "not a readable gzip file"),
    ],
    ids=["short", "magic", "dtype", "ndim0", "header", "truncated", "extra", "gzip"],
)
def test_corrupt_files_raise_one_line_errors_naming_the_file(tmp_path, payload, message):
    p = tmp_path / "bad-idx"
    p.write_bytes(payload)
    with pytest.raises(DatasetError, match=message) as e:
        read_idx(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_gzip_stream_is_reported(tmp_path):
    p = tmp_path / "t.gz"
    write_idx(p, np.zeros((50, 50), np.uint8))
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DatasetError, match=r"not a readable gzip file"):
        read_idx(p)


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_idx_dataset_from_folder(tmp_path, gz, write_idx_split):
    arrays = write_idx_split(tmp_path / "mine", gz=gz)
    d = load_dataset("idx", path=str(tmp_path / "mine"))
    assert d.x_train.shape == (12, 5, 4, 1) and d.x_test.shape == (6, 5, 4, 1)
    np.testing.assert_array_equal(
        d.x_train[..., 0], arrays["x_train"].astype(np.float32) / np.float32(255)
    )
    assert d.x_train.max() <= 1.0 and d.x_train.min() >= 0.0
    np.testing.assert_array_equal(d.y_test, arrays["y_test"].astype(np.int64))
    assert d.num_classes == 3 and d.class_names == ("0", "1", "2")


def test_idx_dataset_from_explicit_files_with_options(tmp_path, write_idx_split):
    arrays = write_idx_split(tmp_path, gz=False)
    d = load_dataset(
        "idx",
        train_images=str(tmp_path / STEMS[0]),
        train_labels=str(tmp_path / STEMS[1]),
        test_images=str(tmp_path / STEMS[2]),
        test_labels=str(tmp_path / STEMS[3]),
        flatten=True,
        limit_train=5,
        limit_test=2,
        class_names=["a", "b", "c", "d"],
    )
    assert d.x_train.shape == (5, 20) and d.x_test.shape == (2, 20)
    np.testing.assert_array_equal(d.x_train, arrays["x_train"][:5].reshape(5, 20) / np.float32(255))
    np.testing.assert_array_equal(d.y_train, [0, 1, 2, 0, 1])
    assert d.class_names == ("a", "b", "c", "d") and d.num_classes == 4


def test_dotted_file_names_are_accepted(tmp_path, write_idx_split):
    arrays = write_idx_split(tmp_path / "src", gz=False)
    (tmp_path / "dst").mkdir()
    for stem in STEMS:
        (tmp_path / "src" / stem).rename(tmp_path / "dst" / stem.replace("-idx", ".idx"))
    d = load_dataset("idx", path=str(tmp_path / "dst"))
    np.testing.assert_array_equal(d.y_train, arrays["y_train"])


def test_idx_dataset_errors(tmp_path, write_idx_split):
    write_idx_split(tmp_path / "ok", gz=True)
    with pytest.raises(DatasetError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]"):
        (tmp_path / "ok" / "t10k-labels-idx1-ubyte.gz").unlink()
        load_dataset("idx", path=str(tmp_path / "ok"))
    with pytest.raises(DatasetError, match=r"missing: test_images, test_labels"):
        load_dataset("idx", train_images="a", train_labels="b")
    with pytest.raises(DatasetError, match=r"not both; got path='p' and train_images"):
        load_dataset("idx", path="p", train_images="a")
    with pytest.raises(DatasetError, match=r"limit_train=99 exceeds the 12 available rows"):
        write_idx_split(tmp_path / "ok2", gz=False)
        load_dataset("idx", path=str(tmp_path / "ok2"), limit_train=99)
    with pytest.raises(DatasetError, match=r"labels go up to 2 but class_names has only 2 names"):
        load_dataset("idx", path=str(tmp_path / "ok2"), class_names=["a", "b"])


def test_mismatched_image_and_label_counts_are_reported(tmp_path, write_idx_split):
    write_idx_split(tmp_path, gz=False)
    write_idx(tmp_path / STEMS[1], np.zeros(11, np.uint8))
    with pytest.raises(
        DatasetError, match=r"train images .* hold 12 samples but labels .* hold 11"
    ):
        load_dataset("idx", path=str(tmp_path))


def test_gzip_of_the_reference_bytes_reads_back(tmp_path):
    raw = bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9])
    (tmp_path / "r.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "r.gz"), [7, 8, 9])


def test_a_gzip_bomb_inflates_no_further_than_its_header_declares(tmp_path):
    import gzip
    import struct

    from limits import run_capped

    # header: (10,) uint8; data: 1.6 GB of zeros in about 1.6 MB (gzip members concatenated)
    p = tmp_path / "bomb.gz"
    zeros = gzip.compress(bytes(1 << 24), compresslevel=9)
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 10)) + zeros * 100)
    code = (
        "from bnlab.data import DatasetError, read_idx\n"
        "try:\n"
        f"    read_idx({str(p)!r})\n"
        "except DatasetError as e:\n"
        "    print(e)\n"
    )
    done = run_capped(code, cap=2 * 1024**3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "has more than" in done.stdout and "needs 10; the file is truncated or corrupt" in done.stdout


def test_a_header_declaring_more_than_the_bound_is_refused(tmp_path):
    import struct

    p = tmp_path / "huge"
    p.write_bytes(b"\x00\x00\x0e\x03" + struct.pack(">III", 60000, 60000, 60000))
    with pytest.raises(DatasetError, match=r"declares shape \(60000, 60000, 60000\) of float64"):
        read_idx(p)
