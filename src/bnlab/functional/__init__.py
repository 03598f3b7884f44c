"""Pure batch-normalization functions: inputs in, output and new statistics out."""

from bnlab.functional.axes import kept_axes, reduced_axes
from bnlab.functional.batch_norm import (
    BatchNormResult,
    NonFiniteStatisticsWarning,
    batch_moments,
    batch_norm,
    update_moving_statistics,
)
from bnlab.functional.reference import ReferenceBatchNorm, reference_batch_norm_train

__all__ = [
    "BatchNormResult",
    "NonFiniteStatisticsWarning",
    "ReferenceBatchNorm",
    "batch_moments",
    "batch_norm",
    "kept_axes",
    "reduced_axes",
    "reference_batch_norm_train",
    "update_moving_statistics",
]
