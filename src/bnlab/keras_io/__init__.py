"""bnlab.keras_io: Keras model files <-> bnlab models, without TensorFlow or Keras.

::

    import bnlab
    model = bnlab.load_keras("model.keras")     # or a legacy full-model "model.h5"
    model.train()                               # batch statistics, like training=True
    ...
    bnlab.save_keras(model, "fixed.keras")      # keras.saving.load_model opens it

    from bnlab.keras_io import load_keras_spec
    spec = load_keras_spec("model.keras")       # architecture only: spec.layers, spec.graph
    fresh = spec.build(seed=0)

Modules, one job each: :mod:`~bnlab.keras_io.archive` (open the file, read the raw
configuration and arrays), :mod:`~bnlab.keras_io.config` (configuration -> layers and
connections; rejects custom objects and code), :mod:`~bnlab.keras_io.layout` (where
Keras keeps each layer's weights), :mod:`~bnlab.keras_io.weights` (arrays per layer),
:mod:`~bnlab.keras_io.load` and :mod:`~bnlab.keras_io.save`. Layer semantics and the
Keras weight layouts live in :mod:`bnlab.models`.
"""

from bnlab.keras_io.errors import KerasFileError
from bnlab.keras_io.load import (
    KerasModelSpec,
    KerasOrigin,
    load_keras,
    load_keras_spec,
    read_keras_weights,
)
from bnlab.keras_io.save import save_keras

__all__ = [
    "KerasFileError",
    "KerasModelSpec",
    "KerasOrigin",
    "load_keras",
    "load_keras_spec",
    "read_keras_weights",
    "save_keras",
]
