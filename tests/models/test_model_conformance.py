"""Registry-driven conformance: every registered layer type, built alone in a model, gets
forward/backward, declared-vs-actual shape, state_dict round trip, float64, batch of one
and empty batch in inference."""

from __future__ import annotations

import pytest
import torch

from bnlab.models import (
    GraphNode,
    GraphSpec,
    build_graph_model,
    build_model,
    get_layer_type,
    list_layer_types,
    parse_layer,
)

# One example per layer type: (spec, Keras input shape). Adding a type to the registry
# without an example here fails test_every_type_has_an_example. Merge layers run in a
# graph on (x, x); Embedding takes integer ids.
EXAMPLES = {
    "Activation": ({"type": "Activation", "activation": "gelu"}, (3, 4, 2)),
    "Add": ({"type": "Add"}, (3, 4, 2)),
    "Average": ({"type": "Average"}, (5, 2)),
    "AveragePooling1D": ({"type": "AveragePooling1D", "pool_size": 2, "padding": "same"}, (5, 2)),
    "AveragePooling2D": ({"type": "AveragePooling2D", "pool_size": 2, "strides": 1}, (4, 3, 2)),
    "BatchNormalization": ({"type": "BatchNormalization", "momentum": 0.5}, (3, 4, 2)),
    "BatchNormAct": ({"type": "BatchNormAct", "activation": "tanh"}, (3, 4, 2)),
    "Bidirectional": ({"type": "Bidirectional", "layer": {"type": "GRU", "units": 3}}, (4, 2)),
    "Concatenate": ({"type": "Concatenate", "axis": 2}, (3, 4, 2)),
    "Conv1D": ({"type": "Conv1D", "filters": 3, "kernel_size": 2, "padding": "causal"}, (5, 2)),
    "Conv2D": (
        {"type": "Conv2D", "filters": 3, "kernel_size": 2, "strides": 2, "padding": "same"},
        (5, 4, 2),
    ),
    "Conv2DTranspose": ({"type": "Conv2DTranspose", "filters": 3, "kernel_size": 3, "strides": 2,
                         "padding": "same"}, (3, 4, 2)),
    "Cropping1D": ({"type": "Cropping1D", "cropping": [2, 1]}, (5, 2)),
    "CustomScaleLayer": ({"type": "CustomScaleLayer", "scale": 0.17}, (3, 4, 2)),
    "Cropping2D": ({"type": "Cropping2D", "cropping": [[1, 0], [0, 2]]}, (3, 4, 2)),
    "Dense": ({"type": "Dense", "units": 3, "activation": "relu"}, (5, 2)),
    "DepthwiseConv2D": ({"type": "DepthwiseConv2D", "kernel_size": 2, "depth_multiplier": 2},
                        (4, 3, 2)),
    "Dropout": ({"type": "Dropout", "rate": 0.5}, (6,)),
    "ELU": ({"type": "ELU", "alpha": 0.5}, (3, 4)),
    "Embedding": ({"type": "Embedding", "input_dim": 5, "output_dim": 3}, (4,)),
    "Flatten": ({"type": "Flatten"}, (3, 4, 2)),
    "GaussianDropout": ({"type": "GaussianDropout", "rate": 0.3}, (3, 4)),
    "GaussianNoise": ({"type": "GaussianNoise", "stddev": 0.5}, (3, 4, 2)),
    "GRU": ({"type": "GRU", "units": 3, "return_sequences": True}, (4, 2)),
    "GlobalAveragePooling1D": ({"type": "GlobalAveragePooling1D"}, (4, 2)),
    "GlobalAveragePooling2D": ({"type": "GlobalAveragePooling2D", "keepdims": True}, (3, 4, 2)),
    "GlobalMaxPooling1D": ({"type": "GlobalMaxPooling1D"}, (4, 2)),
    "GlobalMaxPooling2D": ({"type": "GlobalMaxPooling2D"}, (3, 4, 2)),
    "GroupNormalization": ({"type": "GroupNormalization", "groups": 2}, (3, 4)),
    "LSTM": ({"type": "LSTM", "units": 3, "return_sequences": True}, (4, 2)),
    "LayerNormalization": ({"type": "LayerNormalization"}, (3, 4)),
    "LeakyReLU": ({"type": "LeakyReLU"}, (3, 4)),
    "Masking": ({"type": "Masking", "mask_value": 0.5}, (4, 2)),
    "MaxPooling1D": ({"type": "MaxPooling1D", "pool_size": 2}, (5, 2)),
    "MaxPooling2D": ({"type": "MaxPooling2D", "pool_size": 2, "padding": "same"}, (5, 3, 2)),
    "Maximum": ({"type": "Maximum"}, (5, 2)),
    "Minimum": ({"type": "Minimum"}, (5, 2)),
    "Multiply": ({"type": "Multiply"}, (3, 4, 2)),
    "Normalization": ({"type": "Normalization", "mean": [1.0, 2.0], "variance": [4.0, 9.0]},
                      (3, 2)),
    "PReLU": ({"type": "PReLU", "alpha_initializer": "ones", "shared_axes": [1, 2]},
              (3, 4, 2)),
    "RandomBrightness": ({"type": "RandomBrightness", "factor": 0.2, "value_range": [-2, 2]},
                         (4, 3, 2)),
    "RandomContrast": ({"type": "RandomContrast", "factor": [0.1, 0.3]}, (4, 3, 2)),
    "RandomFlip": ({"type": "RandomFlip", "mode": "horizontal"}, (4, 3, 2)),
    "RandomRotation": ({"type": "RandomRotation", "factor": 0.1, "fill_mode": "constant"},
                       (4, 5, 2)),
    "RandomTranslation": ({"type": "RandomTranslation", "height_factor": 0.2,
                           "width_factor": [-0.1, 0.3]}, (4, 5, 2)),
    "RandomZoom": ({"type": "RandomZoom", "height_factor": [-0.3, 0.2],
                    "interpolation": "nearest"}, (5, 4, 2)),
    "ReLU": ({"type": "ReLU", "max_value": 1.0, "negative_slope": 0.1}, (3, 4)),
    "Rescaling": ({"type": "Rescaling", "scale": [0.5, 2.0], "offset": 1.0}, (3, 4, 2)),
    "Resizing": ({"type": "Resizing", "height": 5, "width": 3, "crop_to_aspect_ratio": True},
                 (4, 6, 2)),
    "Reshape": ({"type": "Reshape", "target_shape": [-1, 2]}, (3, 4, 2)),
    "SeparableConv2D": ({"type": "SeparableConv2D", "filters": 3, "kernel_size": 2}, (4, 3, 2)),
    "SimpleRNN": ({"type": "SimpleRNN", "units": 3}, (4, 2)),
    "Softmax": ({"type": "Softmax"}, (3, 4)),
    "SpatialDropout1D": ({"type": "SpatialDropout1D", "rate": 0.5}, (4, 2)),
    "SpatialDropout2D": ({"type": "SpatialDropout2D", "rate": 0.5}, (3, 4, 2)),
    "Subtract": ({"type": "Subtract"}, (5, 2)),
    "TimeDistributed": ({"type": "TimeDistributed", "layer": {"type": "Conv2D", "filters": 2,
                                                               "kernel_size": 2}}, (2, 3, 3, 2)),
    "UpSampling1D": ({"type": "UpSampling1D", "size": 3}, (4, 2)),
    "UpSampling2D": ({"type": "UpSampling2D", "size": [2, 3], "interpolation": "bilinear"},
                     (3, 4, 2)),
    "ZeroPadding1D": ({"type": "ZeroPadding1D", "padding": [0, 2]}, (4, 2)),
    "ZeroPadding2D": ({"type": "ZeroPadding2D", "padding": [[1, 0], [0, 2]]}, (3, 4, 2)),
    "AveragePooling3D": ({"type": "AveragePooling3D", "pool_size": 2, "padding": "same"},
                         (3, 4, 2, 2)),
    "Cropping3D": ({"type": "Cropping3D", "cropping": [[1, 0], [0, 1], [0, 0]]}, (3, 4, 2, 2)),
    "GlobalAveragePooling3D": ({"type": "GlobalAveragePooling3D"}, (2, 3, 4, 2)),
    "GlobalMaxPooling3D": ({"type": "GlobalMaxPooling3D", "keepdims": True}, (2, 3, 4, 2)),
    "MaxPooling3D": ({"type": "MaxPooling3D", "pool_size": [1, 2, 2], "strides": 1}, (2, 3, 4, 2)),
    "SpatialDropout3D": ({"type": "SpatialDropout3D", "rate": 0.5}, (2, 3, 4, 2)),
    "UpSampling3D": ({"type": "UpSampling3D", "size": [2, 1, 3]}, (2, 3, 2, 2)),
    "ZeroPadding3D": ({"type": "ZeroPadding3D", "padding": [1, 0, 2]}, (2, 3, 2, 2)),
    "Conv3D": ({"type": "Conv3D", "filters": 3, "kernel_size": [2, 3, 2], "padding": "same",
               "strides": [1, 2, 1]}, (3, 4, 3, 2)),
    "Identity": ({"type": "Identity"}, (4, 3)),
    "Permute": ({"type": "Permute", "dims": [3, 1, 2]}, (4, 3, 2)),
    "RepeatVector": ({"type": "RepeatVector", "n": 3}, (5,)),
}
TYPES = sorted(EXAMPLES)
IDS = {"Embedding"}  # integer inputs


def test_every_type_has_an_example():
    assert set(list_layer_types()) - {"Input"} == set(EXAMPLES)


def make(kind, seed=0):
    spec, shape = EXAMPLES[kind]
    if get_layer_type(spec["type"]).inputs == 1:
        return build_model([spec], shape, seed=seed), shape
    layer = parse_layer(spec, where=kind)
    graph = GraphSpec(kind, (("x", shape),), (GraphNode("merge", layer, ("x", "x")),), ("merge",))
    return build_graph_model(graph, seed=seed), shape


def sample(kind, *shape, dtype=torch.float32, requires_grad=False):
    if kind in IDS:
        return torch.randint(0, 5, shape)
    return torch.randn(*shape, dtype=dtype, requires_grad=requires_grad)


@pytest.mark.parametrize("kind", TYPES)
def test_forward_backward_and_declared_shape(kind):
    model, shape = make(kind)
    model.train()
    x = sample(kind, 4, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (4, *model.output_shape)
    out.square().sum().backward()
    assert kind in IDS or (x.grad is not None and torch.isfinite(x.grad).all())
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", TYPES)
def test_state_dict_round_trip(kind):
    a, shape = make(kind, seed=0)
    b, _ = make(kind, seed=1)
    x = sample(kind, 4, *shape)
    a.train()
    a(x)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", TYPES)
def test_float64(kind):
    model, shape = make(kind)
    model.double().eval()
    x = sample(kind, 2, *shape, dtype=torch.float64)
    out = model(x)
    assert out.dtype == torch.float64
    x32 = x if kind in IDS else x.float()
    torch.testing.assert_close(out.float(), model.float()(x32), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", TYPES)
def test_inference_treats_samples_independently_batch_of_one_and_empty(kind):
    model, shape = make(kind)
    model.eval()
    x = sample(kind, 3, *shape)
    full = model(x)
    torch.testing.assert_close(model(x[1:2]), full[1:2], atol=1e-6, rtol=1e-6)
    empty = model(x[:0])
    assert empty.shape == (0, *model.output_shape)
