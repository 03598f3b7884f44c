"""Losses against keras.losses (torch backend) on the same numbers, values and gradients;
accuracy against Keras's metrics; the registry."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported

import keras
import numpy as np
import pytest
import torch

from bnlab.train import (
    binary_crossentropy,
    categorical_crossentropy,
    chance_accuracy,
    correct,
    correct_count,
    get_loss,
    list_losses,
    mse,
    sparse_categorical_crossentropy,
)

assert keras.backend.backend() == "torch"


def _binary_case():
    # Includes saturated probabilities (0, 1, 1 - 1e-9) where Keras's clipping decides.
    p = torch.tensor([[0.0], [1e-9], [0.2], [0.5], [0.7], [1 - 1e-9], [1.0], [0.999]], dtype=torch.float32)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 1])
    return p, y


def _softmax_case():
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(6, 4, generator=g), dim=1)
    p[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # a saturated row, wrong class below
    y = torch.tensor([2, 1, 0, 3, 3, 1])
    return p, y


def _keras_value_and_grad(keras_loss, y_true, p):
    p = p.clone().requires_grad_(True)
    value = keras_loss(y_true, p)
    value = torch.as_tensor(value)
    (grad,) = torch.autograd.grad(value, p)
    return value.detach(), grad


def _ours_value_and_grad(fn, y_true, p):
    p = p.clone().requires_grad_(True)
    value = fn(y_true, p)
    (grad,) = torch.autograd.grad(value, p)
    return value.detach(), grad


def _check(fn, keras_loss, keras_y, our_y, p):
    ours, ours_grad = _ours_value_and_grad(fn, our_y, p)
    theirs, theirs_grad = _keras_value_and_grad(keras_loss, keras_y, p)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_grad, theirs_grad.to(ours_grad.dtype), rtol=1e-5, atol=1e-6)


def test_binary_crossentropy_matches_keras_with_clipping():
    p, y = _binary_case()
    _check(binary_crossentropy, keras.losses.BinaryCrossentropy(), y.float().unsqueeze(1), y, p)
    # The clipped extreme: p = 0 for a positive sample costs -log(1e-7), not inf or 100.
    value = binary_crossentropy(torch.tensor([1]), torch.tensor([[0.0]]))
    assert value.item() == pytest.approx(-np.log(np.float32(1e-7)), rel=1e-5)


def test_categorical_crossentropy_matches_keras_for_one_hot_and_ids():
    p, y = _softmax_case()
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    _check(categorical_crossentropy, keras.losses.CategoricalCrossentropy(), one_hot, one_hot, p)
    _check(categorical_crossentropy, keras.losses.CategoricalCrossentropy(), one_hot, y, p)


def test_sparse_categorical_crossentropy_matches_keras():
    p, y = _softmax_case()
    _check(sparse_categorical_crossentropy, keras.losses.SparseCategoricalCrossentropy(), y, y, p)


def test_categorical_normalises_rows_like_keras():
    # Rows that do not sum to one are divided by their sum first (Keras does).
    p = torch.tensor([[0.2, 0.2], [0.9, 0.3]])
    y = torch.tensor([0, 1])
    expected = -(np.log(0.5) + np.log(0.25)) / 2
    assert categorical_crossentropy(y, p).item() == pytest.approx(expected, rel=1e-6)
    assert sparse_categorical_crossentropy(y, p).item() == pytest.approx(expected, rel=1e-6)


def test_mse_matches_keras():
    g = torch.Generator().manual_seed(2)
    p = torch.rand(5, 1, generator=g)
    y = torch.tensor([0, 1, 1, 0, 1])
    _check(mse, keras.losses.MeanSquaredError(), y.float().unsqueeze(1), y, p)
    p3 = torch.softmax(torch.randn(5, 3, generator=g), dim=1)
    y3 = torch.tensor([0, 2, 1, 1, 0])
    one_hot = torch.nn.functional.one_hot(y3, 3).float()
    _check(mse, keras.losses.MeanSquaredError(), one_hot, y3, p3)


@pytest.mark.parametrize(
    ("name", "keras_class"),
    [
        ("binary_crossentropy", keras.losses.BinaryCrossentropy),
        ("categorical_crossentropy", keras.losses.CategoricalCrossentropy),
        ("sparse_categorical_crossentropy", keras.losses.SparseCategoricalCrossentropy),
        ("mse", keras.losses.MeanSquaredError),
    ],
)
def test_per_sample_losses_match_keras_reduction_none(name, keras_class):
    binary = name in ("binary_crossentropy", "mse")
    p, y = _binary_case() if binary else _softmax_case()
    if name == "mse":
        p = p.clamp(0.05, 0.95)
    keras_y = y.float().unsqueeze(1) if binary else y
    if name == "categorical_crossentropy":
        keras_y = torch.nn.functional.one_hot(y, 4).float()
    ours = get_loss(name)(y, p, reduction="none")
    theirs = torch.as_tensor(keras_class(reduction=None)(keras_y, p))
    assert ours.shape == (len(y),)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=1e-7)
    # The mean of the per-sample losses is the default reduction.
    torch.testing.assert_close(ours.mean(), get_loss(name)(y, p), rtol=1e-6, atol=1e-7)


def test_unknown_reduction_is_a_one_line_error():
    p, y = _binary_case()
    with pytest.raises(ValueError, match=r"^loss reduction must be 'mean' or 'none'; got 'sum'$"):
        binary_crossentropy(y, p, reduction="sum")


def test_accuracy_matches_keras_metrics():
    p, y = _binary_case()
    expected = keras.metrics.BinaryAccuracy()
    expected.update_state(y.float().unsqueeze(1), p)
    assert correct_count(y, p).item() / len(y) == pytest.approx(expected.result().item())
    # Exactly 0.5 is predicted 0 (Keras uses p > 0.5).
    assert correct_count(torch.tensor([0, 1]), torch.tensor([[0.5], [0.5]])).item() == 1

    p, y = _softmax_case()
    expected = keras.metrics.SparseCategoricalAccuracy()
    expected.update_state(y, p)
    assert correct_count(y, p).item() / len(y) == pytest.approx(expected.result().item())
    one_hot = torch.nn.functional.one_hot(y, 4)
    assert correct_count(one_hot, p).item() == correct_count(y, p).item()
    # Per sample: the predicted class is the target's exactly where correct() says so.
    assert correct(y, p).tolist() == (p.argmax(dim=1) == y).tolist()


def _best_constant_accuracy(y: torch.Tensor, outputs: int) -> float:
    """The accuracy of the best input-independent prediction, scored by correct_count."""
    n = len(y)
    if outputs == 1:
        constants = [torch.full((n, 1), v) for v in (0.0, 1.0)]
    else:
        constants = [torch.nn.functional.one_hot(torch.full((n,), c), outputs).float() for c in range(outputs)]
    return max(correct_count(y, p).item() for p in constants) / n


def test_chance_accuracy_is_the_best_constant_prediction():
    y = torch.tensor([0, 2, 1, 1, 3, 1, 0, 2, 1, 1])  # class 1: 5 of 10
    assert chance_accuracy(y, 4) == 0.5 == _best_constant_accuracy(y, 4)
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    assert chance_accuracy(one_hot, 4) == 0.5
    binary = torch.tensor([[0.0], [0.0], [1.0], [0.0]])  # a (N, 1) 0/1 column: three 0s of 4
    assert chance_accuracy(binary, 1) == 0.75 == _best_constant_accuracy(binary, 1)
    assert chance_accuracy(torch.tensor([1, 1, 1]), 1) == 1.0
    with pytest.raises(ValueError, match=r"got outputs=0, 3 targets"):
        chance_accuracy(torch.tensor([1, 1, 1]), 0)


def test_losses_are_float64_formulas_too():
    p = torch.tensor([[0.25], [0.9]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    expected = -(np.log(0.75) + np.log(0.9)) / 2
    assert binary_crossentropy(y, p).item() == pytest.approx(expected, rel=1e-12)
    assert mse(y, p).item() == pytest.approx((0.25**2 + 0.1**2) / 2, rel=1e-12)


def test_registry():
    assert list_losses() == [
        "binary_crossentropy", "categorical_crossentropy", "mse", "sparse_categorical_crossentropy",
    ]
    assert get_loss("mse") is mse
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; choose from: binary_crossentropy, "):
        get_loss("hinge")


def test_shape_mismatch_messages_name_the_shapes():
    with pytest.raises(ValueError, match=r"targets of shape \(3, 2\) do not fit predictions of shape \(3, 4\)"):
        categorical_crossentropy(torch.zeros(3, 2), torch.full((3, 4), 0.25))
    with pytest.raises(ValueError, match=r"expects int class ids \(N,\).*got targets \(3, 4\)"):
        sparse_categorical_crossentropy(torch.zeros(3, 4), torch.full((3, 4), 0.25))


def test_binary_crossentropy_of_a_nan_prediction_is_nan_not_an_error():
    """PyTorch's kernel refuses NaN; a diverged run's NaN must still come out as a NaN loss
    (per sample: the other samples keep their values), with its gradient where defined."""
    p = torch.tensor([[0.2], [float("nan")], [0.7]], requires_grad=True)
    y = torch.tensor([0, 1, 1])
    per_sample = binary_crossentropy(y, p, reduction="none")
    assert torch.isnan(per_sample[1]) and torch.isfinite(per_sample[[0, 2]]).all()
    expected = -torch.log(torch.tensor([0.8, 0.7]))
    torch.testing.assert_close(per_sample[[0, 2]].detach(), expected)
    assert torch.isnan(binary_crossentropy(y, p))
    (grad,) = torch.autograd.grad(per_sample[[0, 2]].sum(), p)
    torch.testing.assert_close(grad[[0, 2], 0], torch.tensor([1 / 0.8, -1 / 0.7]))


def test_binary_crossentropy_differentiates_soft_targets_too():
    """Targets that require a gradient (the kernel has no derivative for them): d/dt of
    -(t log p + (1 - t) log(1 - p)) is log(1 - p) - log(p)."""
    p = torch.tensor([[0.2], [0.9]])
    t = torch.tensor([[0.3], [0.6]], requires_grad=True)
    (grad,) = torch.autograd.grad(binary_crossentropy(t, p, reduction="none").sum(), t)
    torch.testing.assert_close(grad, torch.log(1 - p) - torch.log(p))
