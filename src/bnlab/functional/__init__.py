"""Pure batch-normalization functions: inputs in, output and new statistics out."""

from bnlab.functional.act import activate, batch_norm_act
from bnlab.functional.axes import kept_axes, reduced_axes
from bnlab.functional.batch_norm import (
    BatchNormResult,
    NonFiniteStatisticsWarning,
    batch_moments,
    batch_norm,
    batch_norm_update_,
    update_moving_statistics,
)
from bnlab.functional.ghost import ghost_batch_norm
from bnlab.functional.moments import Moments, merge_moments, moments_of, stack_merge
from bnlab.functional.reference import ReferenceBatchNorm, reference_batch_norm_train
from bnlab.functional.renorm import BatchRenormResult, batch_renorm
from bnlab.functional.sync import SynchronizationError, sync_batch_norm

__all__ = [
    "BatchNormResult",
    "BatchRenormResult",
    "Moments",
    "NonFiniteStatisticsWarning",
    "ReferenceBatchNorm",
    "SynchronizationError",
    "activate",
    "batch_moments",
    "batch_norm",
    "batch_norm_act",
    "batch_norm_update_",
    "batch_renorm",
    "ghost_batch_norm",
    "kept_axes",
    "merge_moments",
    "moments_of",
    "reduced_axes",
    "reference_batch_norm_train",
    "stack_merge",
    "sync_batch_norm",
    "update_moving_statistics",
]
