"""Batch-normalization layers: stateful modules over :mod:`bnlab.functional`."""

from bnlab.nn import constraints, initializers, regularizers
from bnlab.nn.act import BatchNormAct
from bnlab.nn.batchnorm import BatchNormalization
from bnlab.nn.fold import FoldReport, Unfolded, fold, fold_report
from bnlab.nn.freeze import freeze, is_frozen, unfreeze
from bnlab.nn.recalibrate import recalibrate
from bnlab.nn.registry import create_layer, get_layer_class, list_layers
from bnlab.nn.schedules import (
    RenormClippingScheduler,
    renorm_clipping_schedule,
    set_renorm_clipping,
)
from bnlab.nn.sync import SyncBatchNorm, convert_sync

__all__ = [
    "BatchNormAct",
    "BatchNormalization",
    "FoldReport",
    "RenormClippingScheduler",
    "SyncBatchNorm",
    "Unfolded",
    "constraints",
    "convert_sync",
    "create_layer",
    "fold",
    "fold_report",
    "freeze",
    "get_layer_class",
    "initializers",
    "is_frozen",
    "list_layers",
    "recalibrate",
    "regularizers",
    "renorm_clipping_schedule",
    "set_renorm_clipping",
    "unfreeze",
]
