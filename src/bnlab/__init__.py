"""bnlab: batch normalization for PyTorch in Keras's vocabulary, and a lab to measure it.

The names below are imported on first use (PEP 562), so that ``import bnlab.cli`` and
commands that need no tensors (``bnlab --help``, ``bnlab list``) do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnlab import convert, functional, nn
    from bnlab.keras_io import load_keras, save_keras
    from bnlab.nn import BatchNormalization, fold, recalibrate

__version__ = "0.1.0"

#: public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "BatchNormalization": ("bnlab.nn", "BatchNormalization"),
    "convert": ("bnlab.convert", None),
    "fold": ("bnlab.nn", "fold"),
    "functional": ("bnlab.functional", None),
    "load_keras": ("bnlab.keras_io", "load_keras"),
    "nn": ("bnlab.nn", None),
    "recalibrate": ("bnlab.nn", "recalibrate"),
    "save_keras": ("bnlab.keras_io", "save_keras"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__all__ = [
    "BatchNormalization",
    "__version__",
    "convert",
    "fold",
    "functional",
    "load_keras",
    "nn",
    "recalibrate",
    "save_keras",
]
