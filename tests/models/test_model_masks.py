"""Keras masks (Masking, Embedding(mask_zero=True)) through bnlab models, against Keras 3:
recurrent layers hold their state over masked steps, BatchNormalization leaves masked steps
out of its training statistics, GlobalAveragePooling1D averages the real steps only."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from keras_reference import (
    copy_weights,
    graph_spec,
    keras,
    keras_output,
    randomize_batchnorm,
    weights_of,
)

from bnlab.models import (
    SpecError,
    build_graph_model,
    build_model,
    get_keras_weights,
    parse_layer,
    set_keras_weights,
)

L = keras.layers


def padded(rng, batch=4, steps=6, features=3, value=0.0):
    """Random sequences, each padded at the end (or start) with ``value`` to ``steps``."""
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    for i, length in enumerate(rng.integers(2, steps, size=batch)):
        x[i, length:] = value
    x[0, :2] = value  # a sequence with padding in front too
    return x


def equal_to_keras(kmodel, x, assert_close, *, modes=(False, True, False)):
    randomize_batchnorm(kmodel, np.random.default_rng(1))
    model = build_graph_model(graph_spec(kmodel), seed=0)
    copy_weights(kmodel, model)
    for training in modes:
        model.train(training)
        assert_close(model(torch.as_tensor(x)).detach(),
                     keras_output(kmodel, [x], training=training))
    for klayer in kmodel.layers:
        if isinstance(klayer, L.BatchNormalization):  # statistics of the real steps only
            for a, b in zip(get_keras_weights(model.layer(klayer.name)),
                            [v.value.detach().numpy() for v in klayer.weights], strict=True):
                assert_close(torch.as_tensor(a), torch.as_tensor(b))
    return model


@pytest.mark.parametrize("rnn", ["LSTM", "GRU", "SimpleRNN"])
def test_masking_through_rnn_batchnorm_and_average_pooling(rnn, assert_close):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    x = L.Masking(mask_value=0.0)(inputs)
    x = getattr(L, rnn)(4, return_sequences=True)(x)
    x = L.BatchNormalization(momentum=0.5)(x)
    x = L.Dropout(0.0)(x)
    x = L.GlobalAveragePooling1D()(x)
    kmodel = keras.Model(inputs, L.Dense(2)(x))
    equal_to_keras(kmodel, padded(np.random.default_rng(0)), assert_close)


@pytest.mark.parametrize("zero_output", [False, True])
def test_masked_steps_repeat_or_zero_the_output(zero_output, assert_close):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 3))
    x = L.Masking(mask_value=-1.0)(inputs)
    kmodel = keras.Model(inputs, L.LSTM(3, return_sequences=True, go_backwards=True,
                                        zero_output_for_mask=zero_output)(x))
    equal_to_keras(kmodel, padded(np.random.default_rng(2), value=-1.0), assert_close,
                   modes=(False,))


def test_embedding_mask_zero_through_bidirectional_and_last_state(assert_close):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7,), dtype="int64")
    x = L.Embedding(9, 4, mask_zero=True)(inputs)
    x = L.Bidirectional(L.GRU(3, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(2), merge_mode="sum")(x)
    kmodel = keras.Model(inputs, x)
    ids = np.random.default_rng(3).integers(1, 9, size=(4, 7))
    ids[0, 4:] = 0
    ids[2, 1:] = 0
    model = equal_to_keras(kmodel, ids, assert_close, modes=(False,))
    assert model.output_shape == (2,)


def test_sequential_masking_equals_keras(assert_close):
    layers = [{"type": "Masking"}, {"type": "LSTM", "units": 3, "return_sequences": True},
              {"type": "BatchNormalization"}, {"type": "GlobalAveragePooling1D"}]
    model = build_model(layers, (None, 3), seed=0)
    keras.utils.set_random_seed(0)
    kmodel = keras.Sequential([keras.Input((None, 3)), L.Masking(),
                               L.LSTM(3, return_sequences=True), L.BatchNormalization(),
                               L.GlobalAveragePooling1D()])
    for klayer, module in zip(kmodel.layers, model.layers.values(), strict=True):
        set_keras_weights(module, weights_of(klayer))
    x = padded(np.random.default_rng(4), steps=5)
    for training in (True, False):
        model.train(training)
        assert_close(model(torch.as_tensor(x)).detach(),
                     keras_output(kmodel, [x], training=training))


def test_a_layer_without_mask_support_ends_the_mask_with_keras_warning():
    layers = [{"type": "Masking"}, {"type": "Conv1D", "filters": 2, "kernel_size": 2},
              {"type": "LSTM", "units": 2}]
    with pytest.warns(UserWarning, match=r"layers\[1\] \(conv1d\): Conv1D does not support "
                                         "masking; the mask of its input ends here"):
        build_model(layers, (5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(layers[1:], (5, 3))  # no mask, no warning


def test_unsupported_recurrent_options_fail_in_one_line():
    with pytest.raises(SpecError, match=r"lstm.return_state: expected false; return_state is "
                                        r"not supported; got True \(bool\)"):
        parse_layer({"type": "LSTM", "units": 2, "return_state": True}, where="lstm")
    with pytest.raises(SpecError, match=r"lstm.stateful: expected false"):
        parse_layer({"type": "LSTM", "units": 2, "stateful": True}, where="lstm")
