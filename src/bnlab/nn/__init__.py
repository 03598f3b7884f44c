"""Batch-normalization layers: stateful modules over :mod:`bnlab.functional`."""

from bnlab.nn import constraints, initializers, regularizers
from bnlab.nn.act import BatchNormAct
from bnlab.nn.batchnorm import BatchNormalization
from bnlab.nn.registry import create_layer, get_layer_class, list_layers
from bnlab.nn.schedules import (
    RenormClippingScheduler,
    renorm_clipping_schedule,
    set_renorm_clipping,
)

__all__ = [
    "BatchNormAct",
    "BatchNormalization",
    "RenormClippingScheduler",
    "constraints",
    "create_layer",
    "get_layer_class",
    "initializers",
    "list_layers",
    "regularizers",
    "renorm_clipping_schedule",
    "set_renorm_clipping",
]
