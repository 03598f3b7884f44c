"""The sequence models of the studies against Keras 3 (torch backend): BN after an LSTM,
BN between Conv1D layers, BN on the input channels. Outputs in both modes, moving
statistics after a training call, and the gradients of every weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import keras, randomize_batchnorm, weights_of

from bnlab.models import build_model, get_keras_weights, parse_layer, set_keras_weights
from bnlab.models.keras_weights import keras_weight_views

L = keras.layers

MODELS = {
    "bn_after_lstm": lambda: [L.LSTM(8), L.BatchNormalization(), L.Dense(3, activation="softmax")],
    "bn_between_conv1d": lambda: [
        L.Conv1D(6, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv1D(6, 3), L.BatchNormalization(), L.ReLU(), L.Dropout(0.0),
        L.GlobalAveragePooling1D(), L.Dense(3)],
    "bn_on_inputs": lambda: [L.BatchNormalization(), L.LSTM(5, return_sequences=True),
                             L.Conv1D(4, 2), L.BatchNormalization(momentum=0.9), L.Flatten(),
                             L.Dense(2)],
}


def gradients(module):
    """Gradients of the module's Keras weights, in Keras's layout and order."""
    return [view.to_keras(view.tensor.grad) for view in keras_weight_views(module)]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sequence_model_equals_keras_outputs_statistics_and_gradients(name, assert_close):
    keras.utils.set_random_seed(0)
    klayers = MODELS[name]()
    kmodel = keras.Sequential([keras.Input((9, 4)), *klayers])
    randomize_batchnorm(kmodel, np.random.default_rng(0))
    specs = [parse_layer({"type": type(k).__name__, **k.get_config()}, where=k.name)
             for k in klayers]
    model = build_model(specs, (9, 4))
    for klayer in klayers:
        set_keras_weights(model.layer(klayer.name), weights_of(klayer))
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(6, 9, 4)).astype("float32"))
    model.eval()
    assert_close(model(x).detach(), kmodel(x, training=False).detach())
    model.train()
    ours, theirs = model(x), kmodel(x, training=True)
    assert_close(ours.detach(), theirs.detach())
    (ours * torch.arange(ours.numel()).reshape(ours.shape)).sum().backward()
    (theirs * torch.arange(theirs.numel()).reshape(theirs.shape)).sum().backward()
    for klayer in klayers:
        module = model.layer(klayer.name)
        for a, b in zip(get_keras_weights(module), weights_of(klayer), strict=True):
            assert_close(torch.as_tensor(a), torch.as_tensor(b))  # moving statistics
        if isinstance(klayer, L.BatchNormalization):
            continue
        theirs_grads = [v.value.grad for v in klayer.trainable_weights]
        # relative to the layer's largest gradient: a bias before BN has a zero gradient in
        # exact arithmetic, so both frameworks return rounding noise there
        scale = max([1.0, *(float(g.abs().max()) for g in theirs_grads)])
        for a, b in zip(gradients(module), theirs_grads, strict=True):
            assert_close(a, b, atol=1e-5 * scale)
