"""The decode cache: memo, .npz files written atomically, invalidation, failure tolerance."""

from __future__ import annotations

import os

import numpy as np

import bnlab.data.idx as idx_module
from bnlab.data import cache_dir, clear_memory_cache, load_dataset
from bnlab.data.cache import cached_arrays, file_signature


class Decoder:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "y": np.array([3, 4])}


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BNLAB_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "bnlab"


def test_memo_then_disk_then_decode(isolated_cache):
    decode = Decoder()
    first = cached_arrays("t", {"k": 1}, decode)
    again = cached_arrays("t", {"k": 1}, decode)
    assert again["x"] is first["x"] and decode.calls == 1
    files = list((isolated_cache / "data").iterdir())
    assert [f.suffix for f in files] == [".npz"] and files[0].name.startswith("t-")  # no temp left
    clear_memory_cache()
    from_disk = cached_arrays("t", {"k": 1}, decode)
    assert decode.calls == 1
    np.testing.assert_array_equal(from_disk["y"], [3, 4])
    assert not from_disk["x"].flags.writeable
    cached_arrays("t", {"k": 2}, decode)  # other options, other entry
    assert decode.calls == 2 and len(list((isolated_cache / "data").iterdir())) == 2


def test_corrupt_entry_is_decoded_again_and_rewritten(isolated_cache):
    decode = Decoder()
    cached_arrays("t", {"k": 1}, decode)
    (entry,) = (isolated_cache / "data").iterdir()
    entry.write_bytes(b"half written")
    clear_memory_cache()
    np.testing.assert_array_equal(cached_arrays("t", {"k": 1}, decode)["x"], [[0, 1, 2], [3, 4, 5]])
    assert decode.calls == 2
    clear_memory_cache()
    cached_arrays("t", {"k": 1}, decode)
    assert decode.calls == 2  # the rewritten entry is good


def test_unwritable_cache_dir_still_loads(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(blocker))
    decode = Decoder()
    assert cached_arrays("t", {"k": 1}, decode)["y"].tolist() == [3, 4]
    assert list(tmp_path.iterdir()) == [blocker]


def test_changed_source_file_invalidates_the_entry(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    decode = Decoder()
    cached_arrays("t", {"source": file_signature(src)}, decode)
    src.write_bytes(b"abcd")
    os.utime(src, ns=(1, 1))
    clear_memory_cache()
    cached_arrays("t", {"source": file_signature(src)}, decode)
    assert decode.calls == 2


def test_idx_dataset_second_run_reads_the_cache(
    tmp_path, monkeypatch, isolated_cache, write_idx_split
):
    """A new process (empty memo) reuses the .npz and never calls the IDX decoder."""
    arrays = write_idx_split(tmp_path / "set", gz=True)
    first = load_dataset("idx", path=str(tmp_path / "set"))
    assert any((isolated_cache / "data").glob("idx-*.npz"))
    clear_memory_cache()

    def fail(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(idx_module, "read_idx", fail)
    second = load_dataset("idx", path=str(tmp_path / "set"), flatten=True)
    np.testing.assert_array_equal(second.x_train, first.x_train.reshape(12, -1))
    np.testing.assert_array_equal(second.y_test, arrays["y_test"])
    second.x_train[:] = 0  # users get writable copies, never the cached arrays
    assert load_dataset("idx", path=str(tmp_path / "set")).x_train.max() > 0
