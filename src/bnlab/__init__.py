"""bnlab: batch normalization for PyTorch in Keras's vocabulary, and a lab to measure it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
