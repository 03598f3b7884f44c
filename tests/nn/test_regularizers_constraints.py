"""Regularizer penalties vs their formulas, constraints vs ``keras.constraints``."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import pytest
import torch

from bnlab.nn import constraints, regularizers

W = torch.tensor([0.5, -2.0, 3.0, -0.25, 1.5], dtype=torch.float64)
L1 = W.abs().sum().item()  # 7.25
L2 = W.square().sum().item()  # 15.875


@pytest.mark.parametrize(("spec", "value"), [
    ("l1", 0.01 * L1),
    ("l2", 0.01 * L2),  # Keras has no 1/2 in front
    ("l1(0.3)", 0.3 * L1),
    ("l2(l2=1e-4)", 1e-4 * L2),
    ("l1_l2", 0.01 * L1 + 0.01 * L2),
    ("l1_l2(l1=0.2, l2=0.5)", 0.2 * L1 + 0.5 * L2),
    ({"name": "l1_l2", "l1": 0.0, "l2": 2.0}, 2.0 * L2),
])
def test_penalties(spec, value, assert_close):
    penalty = regularizers.get(spec)(W)
    assert penalty.shape == () and penalty.dtype == torch.float64
    assert_close(penalty, torch.tensor(value, dtype=torch.float64))


@pytest.mark.parametrize(("ours", "theirs"), [
    ("l1(0.3)", keras.regularizers.L1(0.3)),
    ("l2(0.3)", keras.regularizers.L2(0.3)),
    ("l1_l2(l1=0.2, l2=0.5)", keras.regularizers.L1L2(l1=0.2, l2=0.5)),
])
def test_penalties_match_keras(ours, theirs, assert_close):
    w = W.float()
    assert_close(regularizers.get(ours)(w), theirs(w))


def test_penalty_gradient(assert_close):
    w = W.clone().requires_grad_(True)
    regularizers.get("l1_l2(l1=0.1, l2=0.2)")(w).backward()
    assert_close(w.grad, 0.1 * W.sign() + 0.4 * W)


def test_regularizer_none_and_errors():
    assert regularizers.get(None) is None
    with pytest.raises(ValueError, match=r"factors must be >= 0; got l1=-1"):
        regularizers.get("l1(-1)")
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3'; choose from: l1, l1_l2, l2"):
        regularizers.get("l3")


CONSTRAINTS = {
    "non_neg": ("non_neg", keras.constraints.NonNeg()),
    "unit_norm": ("unit_norm", keras.constraints.UnitNorm(axis=0)),
    "max_norm-default": ("max_norm", keras.constraints.MaxNorm()),
    "max_norm(3)-clipped": ("max_norm(3)", keras.constraints.MaxNorm(max_value=3)),
    "max_norm(10)-untouched": ("max_norm(max_value=10)", keras.constraints.MaxNorm(10)),
    "min_max_norm-default": ("min_max_norm", keras.constraints.MinMaxNorm()),
    "min_max_norm(5,8)-raised": ("min_max_norm(5.0, 8.0)", keras.constraints.MinMaxNorm(5, 8)),
    "min_max_norm-rate": ({"name": "min_max_norm", "min_value": 0.5, "max_value": 2.0,
                           "rate": 0.25}, keras.constraints.MinMaxNorm(0.5, 2.0, rate=0.25)),
}


@pytest.mark.parametrize(("ours", "theirs"), CONSTRAINTS.values(), ids=CONSTRAINTS.keys())
def test_constraints_match_keras(ours, theirs, assert_close):
    w = W.float()
    expected = theirs(w.clone())
    assert_close(constraints.get(ours)(w), expected)
    # And in place, as a trainer applies them after a step.
    p = torch.nn.Parameter(w.clone())
    constraints.apply_(p, constraints.get(ours))
    assert_close(p.detach(), expected)


def test_constraint_none_and_errors():
    assert constraints.get(None) is None
    p = torch.nn.Parameter(W.clone())
    constraints.apply_(p, None)
    assert torch.equal(p.detach(), W)
    with pytest.raises(ValueError, match=r"0 <= min_value <= max_value; got 3\.0, 1\.0"):
        constraints.get("min_max_norm(3.0, 1.0)")
    with pytest.raises(ValueError, match=r"unknown constraint 'positive'; choose from: max_norm, "
                                         r"min_max_norm, non_neg, unit_norm"):
        constraints.get("positive")


# Keras's serialized forms (Keras 3 archive entries and legacy tf.keras ones) resolve like names.
@pytest.mark.parametrize(
    ("family", "spec", "check"),
    [
        ("regularizer", {"module": "keras.regularizers", "class_name": "L2",
                         "config": {"l2": 1e-4}, "registered_name": None},
         lambda r: (r.l1, r.l2) == (0.0, 1e-4)),
        ("regularizer", {"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}},
         lambda r: (r.l1, r.l2) == (0.1, 0.2)),
        ("constraint", {"class_name": "MaxNorm", "config": {"max_value": 3.0, "axis": 0}},
         lambda c: (c.max_value, c.axis) == (3.0, 0)),
        ("constraint", {"class_name": "NonNeg", "config": {}}, lambda c: c is not None),
    ],
)
def test_keras_serialized_forms(family, spec, check):
    get = regularizers.get if family == "regularizer" else constraints.get
    assert check(get(spec))


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"class_name": "MyReg", "config": {}, "registered_name": "Custom>MyReg"},
         "custom object"),
        ({"class_name": "L2", "config": {}, "module": "my_package"}, "custom object"),
        ({"class_name": "Orthogonal", "config": {}}, "unknown regularizer 'orthogonal'"),
        ({"class_name": "L2", "config": {}, "extra": 1}, r"unknown key\(s\) \['extra'\]"),
    ],
)
def test_keras_serialized_errors(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        regularizers.get(spec)
