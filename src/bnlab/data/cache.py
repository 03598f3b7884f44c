"""Cache of decoded arrays: an in-process memo and ``.npz`` files on disk.

Decoding MNIST's pickle or a folder of images takes seconds; reading the decoded
arrays back from an uncompressed ``.npz`` takes a fraction of that. An entry is keyed
by what was decoded and how: each source file's absolute path, size and modification
time, plus the decoding options. Editing or replacing a source file therefore
invalidates its entries; nothing else needs to be cleared by hand.

Location: ``$BNLAB_CACHE_DIR/data`` when the environment variable is set, otherwise
``~/.cache/bnlab/data``. Files are written to a temporary name and moved into place
with ``os.replace``, so a crash never leaves a half-written entry under the real name.
A cache directory that cannot be written is skipped silently (the data still loads);
an unreadable or mismatching entry is decoded again and rewritten.

Arrays handed out by `cached_arrays` are read-only and shared; loaders copy them
(scaling to float32 copies anyway) before they reach a `Dataset`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_dir", "cached_arrays", "clear_memory_cache", "file_signature"]

# Bump when the layout of cached arrays changes so old entries are not reused.
_FORMAT = 1
_KEY_FIELD = "__cache_key__"
_MEMO: dict[str, dict[str, np.ndarray]] = {}


def cache_dir() -> Path:
    """Root cache folder: ``$BNLAB_CACHE_DIR`` if set and non-empty, else ``~/.cache/bnlab``."""
    env = os.environ.get("BNLAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bnlab"


def clear_memory_cache() -> None:
    """Forget the in-process memo (the ``.npz`` files on disk stay)."""
    _MEMO.clear()


def file_signature(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a file: what a cache key needs to notice a change."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_arrays(
    kind: str,
    key: Mapping[str, Any],
    decode: Callable[[], dict[str, np.ndarray]],
    *,
    disk: bool = True,
) -> dict[str, np.ndarray]:
    """Decoded arrays for ``key``: from the memo, else from disk, else ``decode()``.

    Args:
        kind: short name of the decoder, used in the file name (``"mnist"``).
        key: JSON-serializable description of the sources and decoding options,
            typically `file_signature` results plus options.
        decode: computes the arrays; called only on a miss.
        disk: also keep an ``.npz`` file (False for sources that already are one).

    Returns:
        dict of read-only arrays (copy before handing them to users).
    """
    key_json = json.dumps({"format": _FORMAT, "kind": kind, **key}, sort_keys=True)
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:24]
    memo_key = f"{kind}-{digest}"
    if memo_key in _MEMO:
        return _MEMO[memo_key]

    arrays = None
    file = cache_dir() / "data" / f"{memo_key}.npz"
    if disk:
        arrays = _read(file, key_json)
    if arrays is None:
        arrays = {name: np.asarray(a) for name, a in decode().items()}
        if disk:
            _write(file, key_json, arrays)
    for a in arrays.values():
        a.flags.writeable = False
    _MEMO[memo_key] = arrays
    return arrays


def _read(file: Path, key_json: str) -> dict[str, np.ndarray] | None:
    try:
        with np.load(file, allow_pickle=False) as npz:
            if _KEY_FIELD not in npz.files or str(npz[_KEY_FIELD]) != key_json:
                return None
            return {name: npz[name] for name in npz.files if name != _KEY_FIELD}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def _write(file: Path, key_json: str, arrays: dict[str, np.ndarray]) -> None:
    tmp_name = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=file.parent, prefix=file.stem + ".", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            np.savez(tmp, **arrays, **{_KEY_FIELD: np.array(key_json)})
        os.replace(tmp_name, file)
        tmp_name = None
    except OSError:
        pass  # an unwritable cache only costs the next run a decode
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
