"""bnlab: batch normalization for PyTorch in Keras's vocabulary, and a lab to measure it."""

from bnlab import convert, functional, nn
from bnlab.keras_io import load_keras, save_keras
from bnlab.nn import BatchNormalization, fold, recalibrate

__version__ = "0.1.0"

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
