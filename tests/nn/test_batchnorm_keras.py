"""``BatchNormalization`` against ``keras.layers.BatchNormalization`` (Keras 3, torch backend).

Both layers start from the same weights and see the same batches: training steps
(outputs, gradients w.r.t. input, gamma and beta, moving statistics after each
step), then inference, then frozen (``trainable=False``, which Keras runs in
inference mode even with ``training=True``). Agreement to 1e-5 in float32 and
1e-10 in float64 (tolerances in conftest). Keras takes one int axis; tuples of
axes are checked against the float64 reference in tests/functional.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is imported anywhere

import keras
import numpy as np
import pytest
import torch
from keras.src.backend.common import dtypes as keras_dtypes

from bnlab import BatchNormalization

# Keras's Variable.numpy() (inside get_weights) calls np.array on an object whose
# __array__ lacks numpy 2's `copy` keyword; numpy warns. Not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

DTYPES = {"f32": torch.float32, "f64": torch.float64}
STEPS = 3


@pytest.fixture(autouse=True)
def keras_computes_in_float64(monkeypatch):
    """Let Keras's layer really compute in float64 under a float64 policy.

    Off TensorFlow, Keras's type promotion maps every 64-bit result to 32 bits
    (``BIT64_TO_BIT32_DTYPE``, "aligned with JAX"), and the layer computes in
    ``result_type(inputs.dtype, "float32")``: a float64 Keras layer normalizes in
    float32 and agrees with a float64 computation only to ~1e-7. Lifting that one
    entry for the test makes the float64 comparison a real 1e-10 one.
    """
    monkeypatch.setitem(keras_dtypes.BIT64_TO_BIT32_DTYPE, "float64", "float64")


def test_keras_runs_on_torch():
    assert keras.backend.backend() == "torch", "KERAS_BACKEND must be set before importing keras"


class Case:
    def __init__(self, shape, axis, keras_axis, *, momentum=0.99, center=True, scale=True):
        self.shape, self.axis, self.keras_axis = shape, axis, keras_axis
        self.momentum, self.center, self.scale = momentum, center, scale

    @property
    def channels(self) -> int:
        return self.shape[self.axis]


CASES = {
    "rank2-axis1-m0.99": Case((16, 4), 1, 1),
    "rank2-axis-1-m0.5": Case((16, 4), -1, -1, momentum=0.5),
    "rank3-axis1-m0.0": Case((4, 3, 5), 1, 1, momentum=0.0),
    "rank3-axis-1-m0.5": Case((4, 5, 3), -1, -1, momentum=0.5),
    "rank4-axis1-m0.5": Case((3, 4, 3, 5), 1, 1, momentum=0.5),
    "rank4-axis-1-m0.99": Case((3, 3, 5, 4), -1, -1),
    "rank4-axis2-m0.5": Case((3, 2, 4, 5), 2, 2, momentum=0.5),
    "rank4-axis-2-m0.0": Case((3, 2, 4, 5), -2, -2, momentum=0.0),
    "rank5-axis1-m0.5": Case((2, 3, 2, 3, 4), 1, 1, momentum=0.5),
    "rank5-axis-1-m0.99": Case((2, 2, 3, 4, 3), -1, -1),
    "rank4-axis1-no-center": Case((3, 4, 3, 5), 1, 1, momentum=0.5, center=False),
    "rank4-axis1-no-scale": Case((3, 4, 3, 5), 1, 1, momentum=0.5, scale=False),
    "rank3-axis1-neither": Case((4, 3, 5), 1, 1, momentum=0.5, center=False, scale=False),
}


def keras_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def make_pair(case: Case, dtype: torch.dtype, seed: int = 0):
    """A Keras layer and a bnlab layer with the same random (non-default) weights."""
    keras_layer = keras.layers.BatchNormalization(
        axis=case.keras_axis, momentum=case.momentum, epsilon=1e-3, center=case.center,
        scale=case.scale, dtype=keras_dtype(dtype),
    )
    keras_layer.build(case.shape)
    ours = BatchNormalization(
        case.channels, axis=case.axis, momentum=case.momentum, epsilon=1e-3,
        center=case.center, scale=case.scale, dtype=dtype,
    )
    g = torch.Generator().manual_seed(seed)
    c = case.channels
    weights = {
        "gamma": 0.5 + torch.rand(c, generator=g, dtype=torch.float64),
        "beta": torch.randn(c, generator=g, dtype=torch.float64),
        "moving_mean": torch.randn(c, generator=g, dtype=torch.float64),
        "moving_variance": 0.5 + torch.rand(c, generator=g, dtype=torch.float64),
    }
    ordered = [weights[v.name].numpy().astype(keras_dtype(dtype)) for v in keras_layer.weights]
    keras_layer.set_weights(ordered)
    ours.set_keras_weights(ordered)
    return keras_layer, ours


def batch(case: Case, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=g, dtype=torch.float64)
    bshape = [1] * len(case.shape)
    bshape[case.axis] = case.channels
    shift = torch.randn(case.channels, generator=g, dtype=torch.float64).reshape(bshape)
    return (2 * x + shift).to(dtype)


def keras_params(layer) -> list[torch.Tensor]:
    return [v.value for v in layer.trainable_weights]


def our_params(layer: BatchNormalization) -> list[torch.Tensor]:
    return [p for p in (layer.gamma, layer.beta) if p is not None]


def keras_moving(layer) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.moving_mean.value.detach(), layer.moving_variance.value.detach()


def forward_and_grads(layer, x, params, upstream, **kwargs):
    x = x.clone().requires_grad_(True)
    y = layer(x, **kwargs)
    wrt = [x, *[p for p in params if p.requires_grad]]
    return y.detach(), torch.autograd.grad(y, wrt, upstream)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_training_inference_frozen_match_keras(case, dtype, assert_close):
    keras_layer, ours = make_pair(case, dtype)
    ours.train()
    # Training: outputs, gradients and moving statistics after every step.
    for step in range(STEPS):
        x = batch(case, dtype, seed=10 + step)
        up = batch(case, dtype, seed=20 + step)
        y_k, grads_k = forward_and_grads(keras_layer, x, keras_params(keras_layer), up,
                                         training=True)
        y, grads = forward_and_grads(ours, x, our_params(ours), up)
        assert y.dtype == dtype
        assert_close(y, y_k, msg=lambda m, s=step: f"training output, step {s}: {m}")
        assert len(grads) == 1 + case.center + case.scale
        assert_close(grads, grads_k)
        mean_k, var_k = keras_moving(keras_layer)
        assert_close(ours.moving_mean, mean_k)
        assert_close(ours.moving_variance, var_k)
    assert int(ours.num_batches_tracked) == STEPS

    # Inference (eval): the moving statistics, no change.
    ours.eval()
    x = batch(case, dtype, seed=30)
    up = batch(case, dtype, seed=31)
    y_k, grads_k = forward_and_grads(keras_layer, x, keras_params(keras_layer), up,
                                     training=False)
    y, grads = forward_and_grads(ours, x, our_params(ours), up)
    assert_close(y, y_k)
    assert_close(grads, grads_k)

    # Frozen: trainable=False means inference behaviour even while training.
    keras_layer.trainable = False
    ours.train()
    ours.trainable = False
    before = [t.clone() for t in (ours.moving_mean, ours.moving_variance)]
    y_k, grads_k = forward_and_grads(keras_layer, x, keras_params(keras_layer), up,
                                     training=True)
    y, grads = forward_and_grads(ours, x, our_params(ours), up)
    assert len(grads) == len(grads_k) == 1  # only the input: gamma/beta are frozen
    assert_close(y, y_k)
    assert_close(grads, grads_k)
    assert torch.equal(ours.moving_mean, before[0])
    assert torch.equal(ours.moving_variance, before[1])
    assert_close(ours.moving_mean, keras_moving(keras_layer)[0])
    assert int(ours.num_batches_tracked) == STEPS


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_mask_matches_keras(dtype, assert_close):
    """Keras's mask has one dimension less than the input: (N, T) for (N, T, C), axis=-1."""
    case = Case((4, 6, 3), -1, -1, momentum=0.5)
    keras_layer, ours = make_pair(case, dtype)
    lengths = torch.tensor([6, 3, 5, 1])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    # Keras divides the masked sums by (count + 1e-7); we divide by the count. The
    # relative difference, 1e-7 / count, is far below float32's tolerance but not
    # below float64's 1e-10.
    keras_slack = {"rtol": 1e-7, "atol": 1e-7} if dtype == torch.float64 else {}
    for step in range(STEPS):
        x = batch(case, dtype, seed=40 + step)
        up = batch(case, dtype, seed=50 + step)
        y_k, grads_k = forward_and_grads(keras_layer, x, keras_params(keras_layer), up,
                                         training=True, mask=mask)
        y, grads = forward_and_grads(ours, x, our_params(ours), up, mask=mask)
        assert_close(y, y_k, **keras_slack)
        assert_close(grads, grads_k, **keras_slack)
        mean_k, var_k = keras_moving(keras_layer)
        assert_close(ours.moving_mean, mean_k, **keras_slack)
        assert_close(ours.moving_variance, var_k, **keras_slack)


@pytest.mark.parametrize(("center", "scale"), [(True, True), (False, True), (True, False),
                                               (False, False)],
                         ids=["center+scale", "scale-only", "center-only", "neither"])
def test_keras_weights_order_and_loading(center, scale, assert_close):
    """Keras-trained statistics load with set_keras_weights and give the same inference."""
    case = Case((8, 4, 3), 1, 1, momentum=0.5, center=center, scale=scale)
    keras_layer, _ = make_pair(case, torch.float32, seed=3)
    for step in range(STEPS):
        keras_layer(batch(case, torch.float32, seed=60 + step), training=True)
    keras_weights = keras_layer.get_weights()
    expected_names = (["gamma"] if scale else []) + (["beta"] if center else []) + [
        "moving_mean", "moving_variance"]
    assert [v.name for v in keras_layer.weights] == expected_names

    unbuilt = BatchNormalization(axis=1, center=center, scale=scale)
    unbuilt.set_keras_weights(keras_weights)  # builds from the first array's shape
    assert unbuilt.built and unbuilt.features == (4,)
    for ours_w, keras_w in zip(unbuilt.get_keras_weights(), keras_weights, strict=True):
        np.testing.assert_array_equal(ours_w, keras_w)
    assert [t.shape for t in unbuilt.get_keras_weights()] == [w.shape for w in keras_weights]

    unbuilt.eval()
    x = batch(case, torch.float32, seed=70)
    assert_close(unbuilt(x), keras_layer(x, training=False))

    # And the other way round: Keras loads our weights.
    fresh = keras.layers.BatchNormalization(axis=1, center=center, scale=scale)
    fresh.build(case.shape)
    fresh.set_weights(unbuilt.get_keras_weights())
    assert_close(fresh(x, training=False), unbuilt(x))


def test_set_keras_weights_rejects_wrong_count_and_shape():
    layer = BatchNormalization(4)
    with pytest.raises(ValueError, match=r"expected 4 arrays .*got 3"):
        layer.set_keras_weights([np.ones(4)] * 3)
    with pytest.raises(ValueError, match=r"gamma must have shape \(4,\); got \(5,\)"):
        layer.set_keras_weights([np.ones(5)] * 4)
    # A bad last array leaves every weight as it was (nothing is copied before all fit).
    with pytest.raises(ValueError, match=r"moving_variance must have shape \(4,\); got \(5,\)"):
        layer.set_keras_weights([np.full(4, 2.0)] * 3 + [np.ones(5)])
    assert torch.equal(layer.gamma, torch.ones(4)) and torch.equal(layer.moving_mean, torch.zeros(4))
