"""build_model and summary: shapes, layouts, names, initial weights, Keras's parameter counts."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.models import (
    SequentialModel,
    SpecError,
    apply_edits,
    build_model,
    count_params,
    parse_layers,
    summary,
)
from bnlab.nn import BatchNormalization


def conv(filters, kernel=3, **kw):
    return {"type": "Conv2D", "filters": filters, "kernel_size": kernel, **kw}


def pool(size=2, **kw):
    return {"type": "MaxPooling2D", "pool_size": size, **kw}


BN = {"type": "BatchNormalization"}
FLAT = {"type": "Flatten"}


def dense(units, **kw):
    return {"type": "Dense", "units": units, **kw}


# The 6-class image CNN of the momentum study (224x224x3), and the MNIST CNN.
IMAGE_CNN = [
    {"type": "ZeroPadding2D"},
    conv(16, activation="relu"),
    pool(2, strides=2),
    conv(32, activation="relu"),
    pool(2, strides=1),
    FLAT,
    {"type": "Dropout", "rate": 0.2},
    dense(6, activation="softmax"),
]
IMAGE_CNN_3 = [*IMAGE_CNN[:5], conv(16), pool(2, strides=2), *IMAGE_CNN[5:]]
MNIST_CNN = [
    conv(32, activation="relu"),
    pool(2),
    conv(64, activation="relu"),
    pool(2),
    conv(64, activation="relu"),
    FLAT,
    dense(64, activation="relu"),
    dense(10, activation="softmax"),
]


def mnist_bn():
    layers = []
    for entry in MNIST_CNN:
        if entry["type"] in ("Conv2D", "Dense"):
            activation = entry.get("activation")
            plain = {k: v for k, v in entry.items() if k != "activation"}
            layers += [
                {**plain, "use_bias": False},
                BN,
                {"type": "Activation", "activation": activation},
            ]
        else:
            layers.append(entry)
    return layers


def totals(text: str) -> tuple[str, str, str]:
    lines = text.splitlines()
    return lines[-3], lines[-2], lines[-1]


@pytest.mark.parametrize(
    ("layers", "shape", "total", "trainable", "non_trainable"),
    [
        (IMAGE_CNN, (224, 224, 3), "2,286,246", "2,286,246", "0"),
        (IMAGE_CNN_3, (224, 224, 3), "279,382", "279,382", "0"),
        (
            apply_edits(
                parse_layers(IMAGE_CNN_3, where="l"),
                [{"insert_after": "Conv2D", "layer": BN}],
                where="e",
            ),
            (224, 224, 3),
            "279,638",
            "279,510",
            "128",
        ),
        (MNIST_CNN, (28, 28, 1), "93,322", "93,322", "0"),
        (mnist_bn(), (28, 28, 1), "94,024", "93,556", "468"),
    ],
    ids=["image_cnn", "image_cnn_3conv", "image_cnn_3conv_bn", "mnist_cnn", "mnist_cnn_bn"],
)
def test_summary_totals_match_keras(layers, shape, total, trainable, non_trainable):
    model = build_model(layers, shape)
    text = summary(model)
    lines = totals(text)
    assert lines[0].startswith(f" Total params: {total} (")
    assert lines[1].startswith(f" Trainable params: {trainable} (")
    assert lines[2].startswith(f" Non-trainable params: {non_trainable} (")
    counts = count_params(model)
    assert counts.total == int(total.replace(",", ""))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts.trainable


def test_summary_rows_of_the_bn_image_cnn():
    specs = apply_edits(
        parse_layers(IMAGE_CNN_3, where="l"), [{"insert_after": "Conv2D", "layer": BN}], where="e"
    )
    text = summary(build_model(specs, (224, 224, 3)))
    rows = [line for line in text.splitlines() if line.startswith("│")]
    cells = [[c.strip() for c in row.strip("│").split("│")] for row in rows]
    assert cells == [
        ["zero_padding2d (ZeroPadding2D)", "(None, 226, 226, 3)", "0"],
        ["conv2d (Conv2D)", "(None, 224, 224, 16)", "448"],
        ["batch_normalization (BatchNormalization)", "(None, 224, 224, 16)", "64"],
        ["max_pooling2d (MaxPooling2D)", "(None, 112, 112, 16)", "0"],
        ["conv2d_1 (Conv2D)", "(None, 110, 110, 32)", "4,640"],
        ["batch_normalization_1 (BatchNormalization)", "(None, 110, 110, 32)", "128"],
        ["max_pooling2d_1 (MaxPooling2D)", "(None, 109, 109, 32)", "0"],
        ["conv2d_2 (Conv2D)", "(None, 107, 107, 16)", "4,624"],
        ["batch_normalization_2 (BatchNormalization)", "(None, 107, 107, 16)", "64"],
        ["max_pooling2d_2 (MaxPooling2D)", "(None, 53, 53, 16)", "0"],
        ["flatten (Flatten)", "(None, 44944)", "0"],
        ["dropout (Dropout)", "(None, 44944)", "0"],
        ["dense (Dense)", "(None, 6)", "269,670"],
    ]
    assert text.splitlines()[0] == 'Model: "sequential"'
    assert totals(text) == (
        " Total params: 279,638 (1.07 MB)",
        " Trainable params: 279,510 (1.07 MB)",
        " Non-trainable params: 128 (512.00 B)",
    )
    widths = {len(line) for line in text.splitlines()[1:-3]}
    assert len(widths) == 1  # a rectangular table


def test_frozen_batchnorm_counts_all_four_weights_as_non_trainable():
    model = build_model([dense(4), {"type": "BatchNormalization", "trainable": False}], (2,))
    assert count_params(model).trainable == 12
    assert count_params(model).non_trainable == 16
    assert " Non-trainable params: 16 (64.00 B)" in summary(model)
    model.get_layer("batch_normalization").unfreeze()
    assert (count_params(model).trainable, count_params(model).non_trainable) == (20, 8)


def test_summary_counts_scale_and_center_off():
    model = build_model(
        [dense(4, use_bias=False), {"type": "BatchNormalization", "scale": False}], (3,)
    )
    assert (count_params(model).trainable, count_params(model).non_trainable) == (12 + 4, 8)


# ---------------------------------------------------------------- names, API


def test_layers_names_and_get_layer():
    model = build_model(mnist_bn(), (28, 28, 1))
    assert isinstance(model, SequentialModel) and isinstance(model, nn.Module)
    names = list(model.layers)
    assert names[:4] == ["conv2d", "batch_normalization", "activation", "max_pooling2d"]
    assert names[-3:] == ["dense_1", "batch_normalization_4", "activation_4"]
    bn = model.get_layer("batch_normalization_3")
    assert isinstance(bn, BatchNormalization) and bn.features == (64,)
    assert list(model.batch_norm_layers()) == [
        f"batch_normalization{s}" for s in ("", "_1", "_2", "_3", "_4")
    ]
    assert "layers.conv2d.weight" in model.state_dict()
    assert "layers.batch_normalization.moving_variance" in model.state_dict()
    with pytest.raises(
        KeyError, match="no layer named 'dense_9'; layers: conv2d, batch_normalization"
    ):
        model.get_layer("dense_9")


def test_explicit_names_are_used():
    model = build_model(
        [dense(4, name="hidden"), {"type": "BatchNormalization", "name": "bn"}, dense(1)], (2,)
    )
    assert list(model.layers) == ["hidden", "bn", "dense"]
    assert model.get_layer("bn").name == "bn"  # the layer's own label for its messages


def test_input_layer_gives_the_shape():
    model = build_model([{"type": "Input", "shape": [5]}, dense(2)])
    assert model.input_shape == (5,) and model.output_shape == (2,)
    assert build_model([{"type": "Input", "shape": [5]}, dense(2)], (5,)).input_shape == (5,)


def test_input_shape_errors():
    with pytest.raises(SpecError, match=r"^layers: no input shape: pass input_shape"):
        build_model([dense(2)])
    with pytest.raises(
        SpecError,
        match=r"^layers\[0\]\.shape: the Input layer declares \[5\] but the data has shape \[4\]",
    ):
        build_model([{"type": "Input", "shape": [5]}, dense(2)], (4,))
    with pytest.raises(SpecError, match=r"got \(28, 0\) \(tuple\)"):
        build_model([dense(2)], (28, 0))
    with pytest.raises(SpecError, match=r"got '28' \(str\)"):
        build_model([dense(2)], "28")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layers", "shape", "message"),
    [
        (
            [dense(3), conv(2)],
            (4,),
            "layers[1] (conv2d): Conv2D expects input of shape (batch, height, width, channels); got (None, 3)",
        ),
        (
            [{"type": "LSTM", "units": 2}],
            (4, 4, 1),
            "layers[0] (lstm): LSTM expects input of shape (batch, timesteps, features); got (None, 4, 4, 1)",
        ),
        (
            [pool(2)],
            (4, 4),
            "layers[0] (max_pooling2d): MaxPooling2D expects input of shape (batch, height, width, channels); got (None, 4, 4)",
        ),
        (
            [conv(2, 5)],
            (4, 4, 1),
            "layers[0] (conv2d): Conv2D window 5x5 with padding 'valid' does not fit input (None, 4, 4, 1); use padding 'same' or a smaller window",
        ),
        (
            [{"type": "BatchNormalization", "axis": 3}],
            (4, 2),
            "layers[0] (batch_normalization): BatchNormalization axis 3 is out of range for input (None, 4, 2); use -1 (the channel axis) or 1..2",
        ),
        (
            [dense(2, name="keys")],
            (4,),
            "layers[0].name: 'keys' is reserved by torch.nn.ModuleDict; choose another name",
        ),
    ],
    ids=[
        "conv_on_vector",
        "lstm_on_image",
        "pool_on_sequence",
        "kernel_too_big",
        "bn_axis",
        "reserved_name",
    ],
)
def test_shape_errors_name_the_layer(layers, shape, message):
    with pytest.raises(SpecError) as info:
        build_model(layers, shape)
    assert str(info.value) == message


def test_forward_rejects_wrong_input_shape_with_a_fix():
    model = build_model([conv(2), FLAT, dense(1)], (6, 6, 3))
    with pytest.raises(
        ValueError,
        match=r"expects input of shape \(N, 6, 6, 3\) channel-last like Keras; got \(2, 3, 6, 6\); permute",
    ):
        model(torch.zeros(2, 3, 6, 6))
    with pytest.raises(ValueError, match=r"got \(2, 5, 6, 3\); reshape"):
        model(torch.zeros(2, 5, 6, 3))


def test_dict_layers_are_parsed_with_locations():
    with pytest.raises(
        SpecError, match=r"^model\.layers\[1\]\.units: expected an integer >= 1; got 0 \(int\)"
    ):
        build_model([dense(2), dense(0)], (3,), where="model.layers")


# ---------------------------------------------------------------- initial weights


def test_seed_reproduces_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(MNIST_CNN, (28, 28, 1), seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = build_model(MNIST_CNN, (28, 28, 1), seed=7)
    c = build_model(MNIST_CNN, (28, 28, 1), seed=8)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q), name
        if name.endswith("weight"):
            assert not torch.equal(p, r), name


def test_keras_default_initializers():
    model = build_model([conv(8, 3), FLAT, dense(300), BN], (10, 10, 2), seed=0)
    kernel = model.get_layer("conv2d").weight  # fan_in 2*9, fan_out 8*9
    limit = math.sqrt(6 / (2 * 9 + 8 * 9))
    assert kernel.abs().max() <= limit and kernel.abs().max() > 0.9 * limit
    assert torch.count_nonzero(model.get_layer("conv2d").bias) == 0
    weight = model.get_layer("dense").weight  # (300, 512): glorot over fan_in + fan_out
    limit = math.sqrt(6 / (512 + 300))
    assert weight.abs().max() <= limit and weight.abs().max() > 0.99 * limit
    # uniform on [-limit, limit]: variance limit^2 / 3
    assert abs(weight.var().item() - limit**2 / 3) < 0.02 * limit**2
    bn = model.get_layer("batch_normalization")
    assert torch.equal(bn.gamma, torch.ones(300)) and torch.equal(
        bn.moving_variance, torch.ones(300)
    )


def test_transposed_convolution_kernel_has_keras_fans():
    # Keras's kernel (3, 3, filters=8, in=2): fan_in = 9 * 8, fan_out = 9 * 2.
    spec = {"type": "Conv2DTranspose", "filters": 8, "kernel_size": 3,
            "kernel_initializer": "he_normal"}
    kernel = build_model([spec], (6, 6, 2), seed=0).get_layer("conv2d_transpose").weight
    assert abs(kernel.std().item() - math.sqrt(2 / 72)) < 0.1 * math.sqrt(2 / 72)
    spec["kernel_initializer"] = "glorot_uniform"
    kernel = build_model([spec], (6, 6, 2), seed=0).get_layer("conv2d_transpose").weight
    limit = math.sqrt(6 / (72 + 18))
    assert limit * 0.95 < kernel.abs().max() <= limit


def test_initializer_arguments_are_honoured():
    model = build_model(
        [
            dense(3, kernel_initializer="zeros", bias_initializer="constant(0.5)"),
            dense(2, kernel_initializer="he_normal"),
        ],
        (4,),
        seed=0,
    )
    assert torch.equal(model.get_layer("dense").weight, torch.zeros(3, 4))
    assert torch.equal(model.get_layer("dense").bias, torch.full((3,), 0.5))
    assert model.get_layer("dense_1").bias is not None


def test_lstm_initial_weights_follow_keras():
    model = build_model([{"type": "LSTM", "units": 6}], (5, 3), seed=0)
    lstm = model.get_layer("lstm")
    assert lstm.weight_ih.shape == (24, 3) and lstm.weight_hh.shape == (24, 6)
    expected_bias = torch.zeros(24)
    expected_bias[6:12] = 1.0  # unit_forget_bias: the forget gate's slice is ones
    assert torch.equal(lstm.bias, expected_bias)
    # orthogonal recurrent kernel: Keras's (6, 24) has orthonormal rows -> ours has orthonormal columns
    torch.testing.assert_close(lstm.weight_hh.T @ lstm.weight_hh, torch.eye(6), atol=1e-5, rtol=0)
    limit = math.sqrt(6 / (3 + 24))
    assert lstm.weight_ih.abs().max() <= limit
    assert count_params(model).total == 4 * (6 * (3 + 6) + 6)  # one bias, like Keras
    no_forget = build_model([{"type": "LSTM", "units": 6, "unit_forget_bias": False}], (5, 3))
    assert torch.count_nonzero(no_forget.get_layer("lstm").bias) == 0


# ---------------------------------------------------------------- computation


def test_flatten_uses_keras_channel_last_order():
    # ZeroPadding2D(0) is the identity but makes the model go channel-first; Flatten must undo it.
    model = build_model([{"type": "ZeroPadding2D", "padding": 0}, FLAT], (3, 4, 2))
    x = torch.randn(2, 3, 4, 2)
    assert torch.equal(model(x), x.reshape(2, -1))


def test_conv_same_padding_is_asymmetric_like_tensorflow():
    model = build_model(
        [conv(3, 3, strides=2, padding="same", activation="relu")], (8, 7, 2), seed=0
    )
    layer = model.get_layer("conv2d")
    x = torch.randn(2, 8, 7, 2)
    # TF: height 8, k 3, s 2 -> out 4, pad total 1 -> (top 0, bottom 1); width 7 -> out 4, total 2 -> (1, 1)
    ref = F.relu(
        F.conv2d(F.pad(x.permute(0, 3, 1, 2), (1, 1, 0, 1)), layer.weight, layer.bias, stride=2)
    )
    out = model(x)
    assert out.shape == (2, 4, 4, 3) and model.output_shape == (4, 4, 3)
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 1))


def test_max_pooling_same_never_takes_the_padding():
    model = build_model([pool(3, strides=2, padding="same")], (4, 4, 1))
    x = -1.0 - torch.rand(1, 4, 4, 1)  # all negative: a zero pad would win the max
    out = model(x)
    assert out.shape == (1, 2, 2, 1)
    # TF: size 4, k 3, s 2 -> out 2, pad total 1 -> (0, 1); windows rows/cols {0,1,2} and {2,3}
    img = x[0, :, :, 0]
    expected = torch.stack(
        [
            torch.stack([img[r][:, c].max() for c in (slice(0, 3), slice(2, 4))])
            for r in (slice(0, 3), slice(2, 4))
        ]
    )
    torch.testing.assert_close(out[0, :, :, 0], expected)


def test_zero_padding_forms():
    x = torch.ones(1, 2, 3, 1)
    for padding, shape in ((1, (4, 5)), ((1, 2), (4, 7)), (((0, 2), (3, 1)), (4, 7))):
        model = build_model([{"type": "ZeroPadding2D", "padding": padding}], (2, 3, 1))
        out = model(x)
        assert out.shape == (1, *shape, 1) and model.output_shape == (*shape, 1)
        assert out.sum() == 6
    out = build_model([{"type": "ZeroPadding2D", "padding": [[0, 2], [3, 1]]}], (2, 3, 1))(x)[
        0, :, :, 0
    ]
    assert (
        torch.equal(out[0:2, 3:6], torch.ones(2, 3))
        and out[2:].sum() == 0
        and out[:, :3].sum() == 0
    )


def test_softmax_activation_normalizes_the_channel_axis_in_both_layouts():
    model = build_model(
        [conv(4, 1, activation="softmax"), {"type": "Activation", "activation": "softmax"}],
        (3, 3, 2),
    )
    out = model(torch.randn(2, 3, 3, 2))
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 3, 3))


@pytest.mark.parametrize(
    ("layers", "shape", "keras_axis", "features", "internal_axis"),
    [
        ([conv(3, 1), BN], (5, 4, 2), -1, 3, 1),  # after a conv: channel-first inside, axis 1
        ([BN], (5, 4, 2), -1, 2, -1),  # no conv: the image stays channel-last
        ([conv(3, 1), {"type": "BatchNormalization", "axis": 1}], (5, 4, 2), 1, 5, -2),  # height
        ([conv(3, 1), {"type": "BatchNormalization", "axis": 2}], (5, 4, 2), 2, 4, -1),  # width
        ([{"type": "BatchNormalization", "axis": 2}], (5, 4, 2), 2, 4, -2),  # width, channel-last
        ([dense(3), BN], (6,), -1, 3, 1),
        ([dense(3), BN], (7, 6), -1, 3, -1),  # a sequence (N, T, F)
        ([dense(3), {"type": "BatchNormalization", "axis": 1}], (7, 6), 1, 7, -2),  # time axis
    ],
    ids=[
        "conv_then_bn",
        "bn_only",
        "height_axis",
        "width_axis_channel_first",
        "width_axis_channel_last",
        "vector",
        "sequence",
        "time_axis",
    ],
)
def test_batchnorm_normalizes_the_keras_axis(layers, shape, keras_axis, features, internal_axis):
    model = build_model(layers, shape, seed=0)
    bn = model.get_layer("batch_normalization")
    assert bn.features == (features,) and bn.axis == internal_axis
    model.train()
    out = model(torch.randn(8, *shape) * 3 + 1)  # Keras layout whatever the inside
    axis = keras_axis % (len(shape) + 1)
    reduce = [d for d in range(len(shape) + 1) if d != axis]
    torch.testing.assert_close(out.mean(reduce), torch.zeros(features), atol=1e-5, rtol=0)
    var = out.var(reduce, unbiased=False)
    assert torch.all(var < 1) and torch.all(var > 0.9)  # x^2 / (x^2 + eps) with eps = 1e-3


def test_batch_norm_act_equals_batch_normalization_then_activation():
    conv_bn = [
        conv(4, 3, use_bias=False),
        {"type": "BatchNormAct", "activation": "relu", "momentum": 0.5},
    ]
    split = [
        conv(4, 3, use_bias=False),
        {"type": "BatchNormalization", "momentum": 0.5},
        {"type": "Activation", "activation": "relu"},
    ]
    fused, plain = build_model(conv_bn, (6, 6, 2), seed=3), build_model(split, (6, 6, 2), seed=3)
    assert list(fused.layers) == ["conv2d", "batch_norm_act"]
    x = torch.randn(5, 6, 6, 2)
    for training in (True, False):
        fused.train(training), plain.train(training)
        torch.testing.assert_close(fused(x), plain(x))
    act, bn = fused.get_layer("batch_norm_act"), plain.get_layer("batch_normalization")
    torch.testing.assert_close(act.moving_variance, bn.moving_variance)
    assert count_params(fused) == count_params(plain)
    assert fused.batch_norm_layers().keys() == {"batch_norm_act"}


def test_lstm_matches_torch_nn_lstm_with_one_bias():
    model = build_model([{"type": "LSTM", "units": 4, "return_sequences": True}], (6, 3), seed=0)
    ours = model.get_layer("lstm")
    ref = nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.weight_ih)
        ref.weight_hh_l0.copy_(ours.weight_hh)
        ref.bias_ih_l0.copy_(ours.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 6, 3)
    expected, (h, _) = ref(x)
    torch.testing.assert_close(model(x), expected)
    last = build_model([{"type": "LSTM", "units": 4}], (6, 3), seed=0)
    torch.testing.assert_close(last(x), h[0])


def test_dropout_trains_and_infers_like_keras():
    model = build_model([{"type": "Dropout", "rate": 0.5}], (1000,))
    x = torch.ones(4, 1000)
    model.eval()
    assert torch.equal(model(x), x)
    model.train()
    out = model(x)
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    assert 0.4 < (out == 0).float().mean() < 0.6


@pytest.mark.parametrize(
    ("noise_shape", "shared"),
    [([None, 1, 1, 1], (1, 2, 3)),  # EfficientNet's drop-connect: whole samples
     ([None, 1, 1, None], (1, 2)),  # whole channels, as SpatialDropout2D
     ([None, 5, 1, 1], (2, 3))],  # whole rows of every channel
)
def test_dropout_noise_shape_drops_along_its_size_one_axes(noise_shape, shared):
    torch.manual_seed(0)
    model = build_model([{"type": "Conv2D", "filters": 3, "kernel_size": 1,
                          "kernel_initializer": "ones"},  # keeps the tensor channel-first
                         {"type": "Dropout", "rate": 0.5, "noise_shape": noise_shape}],
                        (5, 4, 1), seed=0)
    model.train()
    out = model(torch.ones(400, 5, 4, 1))  # Keras order (N, H, W, C): axes 1, 2, 3
    assert set(out.unique().tolist()) <= {0.0, 2.0}
    kept = out != 0
    assert torch.equal(kept, kept.amax(dim=shared, keepdim=True).expand_as(kept))
    assert 0.4 < kept.float().mean() < 0.6
    model.eval()
    assert torch.equal(model(torch.ones(2, 5, 4, 1)), torch.ones(2, 5, 4, 3))


@pytest.mark.parametrize(("rank", "spatial"), [(1, (6,)), (2, (5, 4)), (3, (3, 4, 2))])
def test_spatial_dropout_drops_whole_channels_of_each_sample(rank, spatial):
    torch.manual_seed(0)
    model = build_model([{"type": f"SpatialDropout{rank}D", "rate": 0.5}], (*spatial, 8), seed=0)
    model.train()
    out = model(torch.ones(200, *spatial, 8))  # Keras order (N, *spatial, C)
    kept = out != 0
    axes = tuple(range(1, rank + 1))  # one draw per sample and channel
    assert torch.equal(kept, kept.amax(dim=axes, keepdim=True).expand_as(kept))
    assert set(out.unique().tolist()) <= {0.0, 2.0} and 0.4 < kept.float().mean() < 0.6


def test_dropout_noise_shape_that_does_not_fit_the_input_is_refused():
    with pytest.raises(ValueError, match=r"noise_shape \[None, 3\] does not fit input"):
        build_model([{"type": "Dropout", "rate": 0.5, "noise_shape": [None, 3]}], (4,))


def test_regularization_loss_and_constraints():
    model = build_model(
        [
            dense(3),
            {
                "type": "BatchNormalization",
                "gamma_regularizer": "l2(0.1)",
                "gamma_constraint": "non_neg",
            },
            dense(2),
            {"type": "BatchNormalization", "beta_regularizer": "l1(0.5)"},
        ],
        (4,),
    )
    bn1, bn2 = model.batch_norm_layers().values()
    with torch.no_grad():
        bn1.gamma.copy_(torch.tensor([1.0, -2.0, 3.0]))
        bn2.beta.copy_(torch.tensor([0.5, -1.5]))
    loss = model.regularization_loss()
    torch.testing.assert_close(loss, torch.tensor(0.1 * (1 + 4 + 9) + 0.5 * (0.5 + 1.5)))
    model.apply_constraints()
    assert torch.equal(bn1.gamma, torch.tensor([1.0, 0.0, 3.0]))
    plain = build_model([dense(2)], (3,))
    assert plain.regularization_loss().item() == 0.0 and plain.regularization_loss().shape == ()
    plain.apply_constraints()


def test_model_deepcopies_and_pickles():
    model = build_model(mnist_bn(), (28, 28, 1), seed=0).eval()
    x = torch.rand(2, 28, 28, 1)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.specs == model.specs and list(clone.layers) == list(model.layers)
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_state_dict_round_trip_and_gradients():
    a = build_model(mnist_bn(), (28, 28, 1), seed=1)
    b = build_model(mnist_bn(), (28, 28, 1), seed=2)
    x = torch.rand(4, 28, 28, 1)
    a.train()
    a(x)  # moves the moving statistics
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x))
    a.train()
    a(x).log().sum().backward()
    missing = [
        n for n, p in a.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing
