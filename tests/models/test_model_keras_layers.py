"""Every layer type against Keras 3 (torch backend): the Keras layer's own config is our
spec, its weights go across with set_keras_weights, and the outputs agree to 1e-5
(float32) in inference and in training mode on random inputs; parameter counts equal
Keras's count_params; BatchNormalization's moving statistics after a training-mode
call equal Keras's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import keras, randomize_batchnorm, weights_of

from bnlab.models import (
    GraphNode,
    GraphSpec,
    build_graph_model,
    build_model,
    count_params,
    get_keras_weights,
    list_layer_types,
    parse_layer,
    set_keras_weights,
)

L = keras.layers


def spec_of(klayer):
    """Our spec from the Keras layer's config (what a .keras archive holds)."""
    config = keras.saving.serialize_keras_object(klayer)
    return parse_layer({"type": config["class_name"], **config["config"]}, where=klayer.name)


def single(klayer, shape):
    """Our one-layer graph for ``klayer`` applied to channel-last ``shape``."""
    graph = GraphSpec("one", (("x", shape),), (GraphNode(klayer.name, spec_of(klayer), ("x",)),),
                      (klayer.name,))
    return build_graph_model(graph, seed=0)


def inputs_for(shape, rng, *, ids=None, batch=3):
    if ids is not None:
        return rng.integers(0, ids, size=(batch, *shape)).astype("int64")
    return rng.normal(size=(batch, *shape)).astype("float32")


def check_layer(klayer, shape, assert_close, *, training=(False, True), ids=None, seed=0):
    """Build the Keras layer on ``shape``, copy its weights, compare outputs and counts."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = inputs_for(shape, rng, ids=ids)
    klayer(torch.as_tensor(x))  # builds the Keras layer
    randomize_batchnorm_layer(klayer, rng)
    model = single(klayer, shape)
    module = model.layer(klayer.name)
    set_keras_weights(module, weights_of(klayer))
    assert count_params(module).total == klayer.count_params()
    for mode in training:
        model.train(mode)
        ours = model(torch.as_tensor(x)).detach()
        theirs = klayer(torch.as_tensor(x), training=mode).detach().cpu()
        assert ours.shape == theirs.shape
        assert_close(ours, theirs)
    for ours, theirs in zip(get_keras_weights(module), weights_of(klayer), strict=True):
        assert_close(torch.as_tensor(ours), torch.as_tensor(theirs))  # moving statistics too
    return model


def randomize_batchnorm_layer(klayer, rng):
    container = keras.Sequential([klayer]) if not isinstance(klayer, keras.Model) else klayer
    randomize_batchnorm(container, rng)


CASES = {
    "dense_3d": (lambda: L.Dense(4, activation="tanh"), (5, 3)),
    "dense_no_bias": (lambda: L.Dense(2, use_bias=False), (6,)),
    "conv1d_valid_strides": (lambda: L.Conv1D(4, 3, strides=2), (9, 3)),
    "conv1d_same_dilation": (lambda: L.Conv1D(4, 3, padding="same", dilation_rate=2), (8, 2)),
    "conv1d_causal": (lambda: L.Conv1D(3, 2, padding="causal", dilation_rate=2), (7, 2)),
    "conv1d_groups": (lambda: L.Conv1D(4, 1, groups=2, activation="relu"), (5, 4)),
    "conv2d_same_asymmetric": (lambda: L.Conv2D(4, 3, strides=2, padding="same"), (8, 7, 3)),
    "conv2d_dilation": (lambda: L.Conv2D(3, 3, dilation_rate=2, padding="same"), (7, 6, 2)),
    "conv2d_groups_no_bias": (lambda: L.Conv2D(4, (3, 1), groups=2, use_bias=False), (5, 4, 4)),
    "conv_transpose_valid": (lambda: L.Conv2DTranspose(3, 3), (4, 5, 2)),
    "conv_transpose_same_stride2": (lambda: L.Conv2DTranspose(4, 3, strides=2, padding="same",
                                                             activation="relu"), (4, 5, 3)),
    "conv_transpose_even_kernel_same": (lambda: L.Conv2DTranspose(2, (4, 2), strides=(2, 3),
                                                                 padding="same"), (3, 4, 2)),
    "conv_transpose_valid_stride_over_kernel": (lambda: L.Conv2DTranspose(2, 2, strides=3),
                                                (3, 4, 2)),
    "conv_transpose_output_padding": (lambda: L.Conv2DTranspose(
        2, 3, strides=2, padding="same", output_padding=1, use_bias=False), (3, 4, 2)),
    "conv_transpose_valid_output_padding": (lambda: L.Conv2DTranspose(
        2, (3, 2), strides=(2, 3), output_padding=(1, 0)), (3, 4, 2)),
    "conv_transpose_dilation": (lambda: L.Conv2DTranspose(2, 3, dilation_rate=2, padding="same"),
                                (5, 4, 2)),
    "depthwise": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", strides=2),
                  (7, 6, 3)),
    "depthwise_no_bias": (lambda: L.DepthwiseConv2D(2, use_bias=False), (5, 4, 2)),
    "separable": (lambda: L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same"), (6, 5, 3)),
    "zero_padding_int": (lambda: L.ZeroPadding2D(2), (3, 4, 2)),
    "cropping_int": (lambda: L.Cropping2D(1), (4, 5, 2)),
    "cropping1d": (lambda: L.Cropping1D((2, 1)), (6, 3)),
    "zero_padding1d": (lambda: L.ZeroPadding1D((1, 3)), (4, 2)),
    "zero_padding1d_int": (lambda: L.ZeroPadding1D(2), (4, 2)),
    "up_sampling1d": (lambda: L.UpSampling1D(3), (4, 2)),
    "cropping_pairs": (lambda: L.Cropping2D(((2, 0), (1, 3))), (5, 6, 2)),
    "up_sampling_nearest": (lambda: L.UpSampling2D((2, 3)), (3, 4, 2)),
    "up_sampling_bilinear": (lambda: L.UpSampling2D(3, interpolation="bilinear"), (3, 4, 2)),
    "elu": (lambda: L.ELU(0.7), (4, 3)),
    "prelu": (lambda: L.PReLU(keras.initializers.RandomUniform(0.1, 0.9)), (4, 3)),
    "prelu_shared_images": (lambda: L.PReLU(keras.initializers.RandomUniform(-0.5, 0.5),
                                            shared_axes=[1, 2]), (4, 5, 3)),
    "resizing_bilinear_up": (lambda: L.Resizing(7, 9), (4, 5, 2)),
    "resizing_nearest_down": (lambda: L.Resizing(3, 2, interpolation="nearest"), (7, 5, 2)),
    "resizing_bicubic_antialias": (lambda: L.Resizing(4, 3, interpolation="bicubic",
                                                      antialias=True), (9, 8, 2)),
    "resizing_crop_to_aspect": (lambda: L.Resizing(4, 4, crop_to_aspect_ratio=True),
                                (6, 9, 2)),
    "resizing_pad_to_aspect": (lambda: L.Resizing(6, 3, pad_to_aspect_ratio=True,
                                                  fill_value=2.0), (5, 6, 2)),
    "zero_padding_pairs": (lambda: L.ZeroPadding2D(((1, 0), (2, 3))), (3, 4, 2)),
    "max_pool1d": (lambda: L.MaxPooling1D(2), (7, 3)),
    "max_pool2d_same": (lambda: L.MaxPooling2D(3, strides=2, padding="same"), (7, 6, 2)),
    "avg_pool1d_same": (lambda: L.AveragePooling1D(3, strides=1, padding="same"), (6, 2)),
    "avg_pool2d_valid": (lambda: L.AveragePooling2D(2), (6, 5, 2)),
    "avg_pool2d_same_symmetric": (lambda: L.AveragePooling2D(3, strides=1, padding="same"),
                                  (5, 4, 2)),
    "avg_pool2d_same_asymmetric": (lambda: L.AveragePooling2D(2, strides=1, padding="same"),
                                   (5, 4, 2)),
    "gap1d": (lambda: L.GlobalAveragePooling1D(), (5, 3)),
    "gap2d_keepdims": (lambda: L.GlobalAveragePooling2D(keepdims=True), (4, 3, 2)),
    "gmp1d": (lambda: L.GlobalMaxPooling1D(), (5, 3)),
    "gmp2d": (lambda: L.GlobalMaxPooling2D(), (4, 3, 2)),
    "bn_images": (lambda: L.BatchNormalization(), (4, 3, 5)),
    "bn_sequence_axis1": (lambda: L.BatchNormalization(axis=1, momentum=0.9), (4, 3)),
    "bn_no_affine": (lambda: L.BatchNormalization(center=False, scale=False, epsilon=1e-2),
                     (6,)),
    "bn_frozen": (lambda: L.BatchNormalization(trainable=False), (3, 3, 4)),
    "bn_renorm": (lambda: L.BatchNormalization(renorm=True, renorm_momentum=0.9,
                                               renorm_clipping={"rmax": 1.5, "dmax": 0.5}),
                  (4, 4, 3)),
    "activation_softmax": (lambda: L.Activation("softmax"), (3, 4, 5)),
    "activation_hard_silu": (lambda: L.Activation("hard_silu"), (4, 3)),
    "relu6": (lambda: L.ReLU(6.0), (4, 3)),
    "relu_all_options": (lambda: L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2),
                         (4, 3)),
    "relu_negative_slope": (lambda: L.ReLU(negative_slope=0.2), (5,)),
    "leaky_relu": (lambda: L.LeakyReLU(0.1), (3, 2, 3)),
    "softmax_axis": (lambda: L.Softmax(axis=1), (3, 4, 2)),
    "softmax_axes": (lambda: L.Softmax(axis=[1, 2]), (3, 4, 2)),
    "flatten": (lambda: L.Flatten(), (3, 4, 2)),
    "reshape": (lambda: L.Reshape((-1, 4)), (2, 3, 4)),
    "rescaling": (lambda: L.Rescaling(1 / 255.0, offset=-1.0), (3, 2, 3)),
    "rescaling_per_channel": (lambda: L.Rescaling([0.5, 2.0, 1.5], offset=[0.0, 1.0, -1.0]),
                              (3, 2, 3)),
    "normalization_fixed": (lambda: L.Normalization(mean=[1.0, 2.0], variance=[4.0, 0.25]),
                            (3, 2)),
    "normalization_invert": (lambda: L.Normalization(mean=3.0, variance=2.0, invert=True),
                             (4,)),
    "layer_norm": (lambda: L.LayerNormalization(), (4, 5)),
    "layer_norm_axes": (lambda: L.LayerNormalization(axis=[-2, -1], center=False), (3, 4, 2)),
    "group_norm_images": (lambda: L.GroupNormalization(groups=2), (3, 4, 6)),
    "group_norm_sequence": (lambda: L.GroupNormalization(groups=3, epsilon=1e-5), (5, 6)),
    "lstm": (lambda: L.LSTM(4), (5, 3)),
    "lstm_sequences_backwards": (lambda: L.LSTM(3, return_sequences=True, go_backwards=True),
                                 (4, 2)),
    "gru": (lambda: L.GRU(4, return_sequences=True), (5, 3)),
    "gru_reset_before": (lambda: L.GRU(3, reset_after=False), (4, 2)),
    "gru_no_bias": (lambda: L.GRU(3, use_bias=False), (4, 2)),
    "simple_rnn": (lambda: L.SimpleRNN(3, activation="relu", return_sequences=True), (4, 2)),
    "bidirectional_lstm": (lambda: L.Bidirectional(L.LSTM(3)), (4, 2)),
    "bidirectional_gru_sum": (lambda: L.Bidirectional(L.GRU(3, return_sequences=True),
                                                      merge_mode="sum"), (4, 2)),
    "bidirectional_mul_ave": (lambda: L.Bidirectional(L.SimpleRNN(2, return_sequences=True),
                                                      merge_mode="ave"), (3, 2)),
    "time_distributed_dense": (lambda: L.TimeDistributed(L.Dense(3)), (4, 2)),
    "time_distributed_conv": (lambda: L.TimeDistributed(L.Conv2D(2, 2, padding="same")),
                              (3, 4, 4, 2)),
    "conv3d_same_strides": (lambda: L.Conv3D(4, (3, 2, 2), strides=(1, 2, 1), padding="same"),
                            (4, 6, 5, 2)),
    "conv3d_dilation_no_bias": (lambda: L.Conv3D(3, 2, dilation_rate=(2, 1, 1), use_bias=False),
                                (5, 4, 4, 2)),
    "max_pool3d_same_asymmetric": (lambda: L.MaxPooling3D((1, 2, 2), padding="same"),
                                   (3, 5, 4, 2)),
    "avg_pool3d_valid": (lambda: L.AveragePooling3D(2), (4, 4, 5, 2)),
    "avg_pool3d_same": (lambda: L.AveragePooling3D(3, strides=1, padding="same"), (3, 4, 4, 2)),
    "gap3d_keepdims": (lambda: L.GlobalAveragePooling3D(keepdims=True), (2, 3, 4, 2)),
    "gmp3d": (lambda: L.GlobalMaxPooling3D(), (2, 3, 4, 2)),
    "zero_padding3d_pairs": (lambda: L.ZeroPadding3D(((1, 0), (0, 2), (1, 1))), (2, 3, 2, 2)),
    "cropping3d_per_axis": (lambda: L.Cropping3D((1, 0, 2)), (4, 3, 5, 2)),
    "up_sampling3d": (lambda: L.UpSampling3D((2, 1, 3)), (2, 3, 2, 2)),
    "bn_volumes": (lambda: L.BatchNormalization(momentum=0.9), (3, 4, 2, 5)),
    "permute_sequence": (lambda: L.Permute((2, 1)), (4, 3)),
    "permute_images": (lambda: L.Permute((3, 1, 2)), (4, 5, 2)),
    "repeat_vector": (lambda: L.RepeatVector(3), (5,)),
    "identity": (lambda: L.Identity(), (4, 3, 2)),
    "dropout_inference": (lambda: L.Dropout(0.5), (4, 3)),
    "spatial_dropout_inference": (lambda: L.SpatialDropout2D(0.5), (3, 3, 2)),
    "spatial_dropout3d_inference": (lambda: L.SpatialDropout3D(0.5), (2, 3, 3, 2)),
    # Random augmentation: the identity in inference here; the training-mode transforms
    # are compared draw for draw in test_model_augment.py.
    "gaussian_noise_inference": (lambda: L.GaussianNoise(0.5), (4, 3)),
    "gaussian_dropout_inference": (lambda: L.GaussianDropout(0.3), (3, 3, 2)),
    "random_flip_inference": (lambda: L.RandomFlip(), (4, 3, 2)),
    "random_rotation_inference": (lambda: L.RandomRotation(0.2), (4, 3, 2)),
    "random_zoom_inference": (lambda: L.RandomZoom(0.2, 0.1), (4, 3, 2)),
    "random_translation_inference": (lambda: L.RandomTranslation(0.2, 0.1), (4, 3, 2)),
    "random_contrast_inference": (lambda: L.RandomContrast(0.3), (4, 3, 2)),
    "random_brightness_inference": (lambda: L.RandomBrightness(0.3), (4, 3, 2)),
}
RANDOM_IN_TRAINING = {case for case in CASES if case.endswith("_inference")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_keras(case, assert_close):
    factory, shape = CASES[case]
    training = (False,) if case in RANDOM_IN_TRAINING else (False, True)
    check_layer(factory(), shape, assert_close, training=training)


@pytest.mark.filterwarnings("ignore:.*rms_scaling=True.*:UserWarning")
def test_layer_normalization_rms_scaling_matches_keras(assert_close):
    # Keras deprecates it (it scales by the centered variance); files may still hold it.
    check_layer(L.LayerNormalization(rms_scaling=True), (3, 6), assert_close)


def test_embedding_matches_keras(assert_close):
    check_layer(L.Embedding(7, 3), (5,), assert_close, ids=7)


def test_every_layer_type_has_a_keras_case():
    covered = {spec_of(factory()).type for factory, _ in CASES.values()}

    merges = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
              "CustomScaleLayer"}  # in graphs: test_model_graph.py, keras_io
    others = {"Input", "Embedding", "Masking", "BatchNormAct", "SpatialDropout1D"}
    assert set(list_layer_types()) - merges - others == covered


def test_weight_regularizers_and_constraints_equal_keras(assert_close):
    keras.utils.set_random_seed(0)
    klayers = [
        L.Conv2D(3, 2, kernel_regularizer=keras.regularizers.L2(0.1),
                 kernel_constraint=keras.constraints.MaxNorm(0.5, axis=[0, 1, 2]),
                 name="conv"),
        L.Flatten(name="flat"),
        L.Dense(2, bias_regularizer=keras.regularizers.L1L2(0.2, 0.3),
                kernel_constraint=keras.constraints.UnitNorm(axis=0), name="dense"),
        L.BatchNormalization(gamma_regularizer="l2", name="bn"),
    ]
    kmodel = keras.Sequential([keras.Input((4, 4, 2)), *klayers])
    kmodel(torch.zeros(1, 4, 4, 2))
    for variable in kmodel.weights:  # non-zero biases, so every penalty counts
        variable.assign(np.random.default_rng(0).normal(size=tuple(variable.shape))
                        .astype("float32"))
    model = build_model([spec_of(k) for k in klayers], (4, 4, 2))
    for klayer in klayers:
        set_keras_weights(model.layer(klayer.name), weights_of(klayer))
    expected = sum(float(loss.detach()) for loss in kmodel.losses)
    assert_close(model.regularization_loss().detach(), torch.tensor(expected))
    model.apply_constraints()
    for klayer in klayers[:3:2]:
        for variable in klayer.trainable_weights:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable.value))
        for ours, theirs in zip(get_keras_weights(model.layer(klayer.name)),
                                weights_of(klayer), strict=True):
            assert_close(torch.as_tensor(ours), torch.as_tensor(theirs))
