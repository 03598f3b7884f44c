"""Batch-normalization layers: stateful modules over :mod:`bnlab.functional`."""

from bnlab.nn import constraints, initializers, regularizers
from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["BatchNormalization", "constraints", "initializers", "regularizers"]
