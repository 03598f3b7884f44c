"""bnlab.train: Keras-like training for the lab.

``fit(model, data, config, seed=..., progress=...) -> History`` with Keras's optimizers
(``sgd``, ``adam``, ``rmsprop``: same defaults and update equations), Keras's losses on
probabilities, per-epoch and every-k-steps evaluation, train-mode (batch statistics)
validation accuracy for models with BN, layer percentile probes, and clean handling of
divergence. ``seeded(seed)`` makes model construction reproducible.
"""

from bnlab.train.batchnorm import (
    apply_constraints,
    batch_norm_layers,
    batch_statistics,
    regularization_loss,
)
from bnlab.train.config import ProbeSpec, TrainConfig
from bnlab.train.evaluation import evaluate
from bnlab.train.fit import EpochCallback, TrainTestArrays, fit, seeded
from bnlab.train.history import EvalRecord, FinalMetrics, History, ProbeTrace
from bnlab.train.losses import (
    LOSSES,
    binary_crossentropy,
    categorical_crossentropy,
    get_loss,
    list_losses,
    mse,
    sparse_categorical_crossentropy,
)
from bnlab.train.metrics import chance_accuracy, correct, correct_count
from bnlab.train.optimizers import (
    OPTIMIZERS,
    SGD,
    Adam,
    RMSprop,
    get_optimizer,
    list_optimizers,
    validate_optimizer_args,
)
from bnlab.train.probes import find_layer, percentiles

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "EpochCallback",
    "EvalRecord",
    "FinalMetrics",
    "History",
    "ProbeSpec",
    "ProbeTrace",
    "RMSprop",
    "TrainConfig",
    "TrainTestArrays",
    "apply_constraints",
    "batch_norm_layers",
    "batch_statistics",
    "binary_crossentropy",
    "categorical_crossentropy",
    "chance_accuracy",
    "correct",
    "correct_count",
    "evaluate",
    "find_layer",
    "fit",
    "get_loss",
    "get_optimizer",
    "list_losses",
    "list_optimizers",
    "mse",
    "percentiles",
    "regularization_loss",
    "seeded",
    "sparse_categorical_crossentropy",
    "validate_optimizer_args",
]
