"""``bnlab.functional.batch_norm`` against PyTorch's kernel and the float64 reference.

Same computation two ways: outputs, moving statistics after several steps and
gradients (input, gamma, beta) must agree to the dtype's tolerance (conftest).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import reference
from bnlab.convert import torch_momentum
from bnlab.functional import batch_norm

IMPLEMENTATIONS = ("auto", "native", "composite", "reference")
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def sample(shape, dtype, seed, kept=(1,)):
    """Per-channel shifted and scaled normal data, so statistics are not trivial."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    stat = reference.stat_shape(shape, kept)
    bshape = [n if d in kept else 1 for d, n in enumerate(shape)]
    shift = torch.randn(stat, generator=g, dtype=torch.float64).reshape(bshape)
    scale = (0.5 + torch.rand(stat, generator=g, dtype=torch.float64)).reshape(bshape)
    return (x * scale * 2 + shift).to(dtype)


def parameters(stat, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gamma = (0.5 + torch.rand(stat, generator=g, dtype=torch.float64)).to(dtype)
    beta = torch.randn(stat, generator=g, dtype=torch.float64).to(dtype)
    mean = torch.randn(stat, generator=g, dtype=torch.float64).to(dtype)
    var = (0.5 + torch.rand(stat, generator=g, dtype=torch.float64)).to(dtype)
    return gamma, beta, mean, var


# ------------------------------------------------------- vs torch.nn.functional.batch_norm
RANK_SHAPES = {
    "rank2": (16, 3),
    "rank3": (4, 3, 5),
    "rank4": (4, 3, 3, 5),
    "rank5": (2, 3, 2, 3, 4),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", RANK_SHAPES.values(), ids=RANK_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_training_matches_torch_functional(implementation, shape, dtype, assert_close):
    """Output, gradients and the (unbiased, PyTorch-style) moving update vs F.batch_norm."""
    x = sample(shape, dtype, seed=1).requires_grad_(True)
    gamma, beta, mean, var = parameters((shape[1],), dtype, seed=2)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)
    y, new_mean, new_var = batch_norm(
        x, gamma, beta, mean, var, training=True, momentum=0.9, epsilon=1e-5,
        unbiased_moving_variance=True, implementation=implementation,
    )
    x_t, gamma_t, beta_t = (t.detach().clone().requires_grad_(True) for t in (x, gamma, beta))
    running_mean, running_var = mean.clone(), var.clone()
    y_t = F.batch_norm(x_t, running_mean, running_var, gamma_t, beta_t, True,
                       torch_momentum(0.9), 1e-5)
    assert_close(y, y_t)
    assert_close(new_mean, running_mean)
    assert_close(new_var, running_var)
    g = sample(shape, dtype, seed=3)
    assert_close(torch.autograd.grad(y, (x, gamma, beta), g),
                 torch.autograd.grad(y_t, (x_t, gamma_t, beta_t), g))


@pytest.mark.parametrize("shape", RANK_SHAPES.values(), ids=RANK_SHAPES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_inference_matches_torch_functional(shape, dtype, assert_close):
    x = sample(shape, dtype, seed=4).requires_grad_(True)
    gamma, beta, mean, var = parameters((shape[1],), dtype, seed=5)
    y, new_mean, new_var = batch_norm(x, gamma, beta, mean, var, training=False, epsilon=1e-3)
    y_t = F.batch_norm(x, mean, var, gamma, beta, False, 0.0, 1e-3)
    assert_close(y, y_t)
    assert new_mean is mean and new_var is var
    g = torch.ones_like(x)
    assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_t, x, g)[0])


# ------------------------------------------------------- vs the float64 reference
def _one_axis(axis):
    return isinstance(axis, int)


AXES = {
    "rank2-axis1": ((12, 3), 1),
    "rank2-axis-1": ((12, 3), -1),
    "rank3-axis-1": ((4, 5, 3), -1),
    "rank4-axis1": ((4, 3, 3, 5), 1),
    "rank4-axis2": ((3, 2, 4, 5), 2),
    "rank4-axis-1": ((3, 4, 5, 3), -1),
    "rank5-axis1": ((2, 3, 2, 3, 4), 1),
    "rank4-tuple(1,2)": ((4, 3, 2, 5), (1, 2)),
    "rank4-tuple(-1,1)": ((4, 3, 5, 2), (-1, 1)),
    "rank5-tuple(1,4)": ((3, 2, 2, 3, 3), (1, 4)),
    "rank3-tuple(0,2)": ((3, 8, 2), (0, 2)),
}


# The native kernel takes one kept axis: tuples of axes run on the other paths.
TRAINING_CASES = [
    pytest.param(shape, axis, implementation, id=f"{label}-{implementation}")
    for label, (shape, axis) in AXES.items()
    for implementation in IMPLEMENTATIONS
    if implementation != "native" or _one_axis(axis)
]


@pytest.mark.parametrize(("shape", "axis", "implementation"), TRAINING_CASES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_training_matches_reference(implementation, shape, axis, dtype, assert_close):
    """Output and gradients vs autograd through the float64 formula."""
    kept = reference.kept_tuple(axis, len(shape))
    stat = reference.stat_shape(shape, kept)
    x = sample(shape, dtype, seed=6, kept=kept).requires_grad_(True)
    gamma, beta, mean, var = parameters(stat, dtype, seed=7)
    gamma.requires_grad_(True)
    beta.requires_grad_(True)
    y, _, _ = batch_norm(x, gamma, beta, mean, var, training=True, axis=axis, epsilon=1e-3,
                         implementation=implementation)
    assert y.dtype == dtype and y.shape == x.shape
    x64, g64, b64 = (t.detach().double().requires_grad_(True) for t in (x, gamma, beta))
    y64 = reference.training_output(x64, g64, b64, axis, 1e-3)
    assert_close(y, y64)
    upstream = sample(shape, torch.float64, seed=8)
    grads = torch.autograd.grad(y, (x, gamma, beta), upstream.to(dtype))
    expected = torch.autograd.grad(y64, (x64, g64, b64), upstream)
    assert_close(grads, tuple(e.to(dtype) for e in expected))


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "bare"])
@pytest.mark.parametrize(("shape", "axis"), AXES.values(), ids=AXES.keys())
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_inference_matches_reference(shape, axis, affine, dtype, assert_close):
    """Output and gradients vs the float64 formula, for one kept axis (the kernel) and
    several (one fused ``x * a + b`` pass), with and without gamma and beta."""
    kept = reference.kept_tuple(axis, len(shape))
    stat = reference.stat_shape(shape, kept)
    x = sample(shape, dtype, seed=9, kept=kept).requires_grad_(True)
    gamma, beta, mean, var = parameters(stat, dtype, seed=10)
    if not affine:
        gamma = beta = None
    else:
        gamma.requires_grad_(True)
        beta.requires_grad_(True)
    y, _, _ = batch_norm(x, gamma, beta, mean, var, training=False, axis=axis, epsilon=1e-3)
    assert y.dtype == dtype and y.shape == x.shape
    leaves = [t for t in (x, gamma, beta) if t is not None]
    leaves64 = [t.detach().double().requires_grad_(True) for t in leaves]
    g64, b64 = (leaves64[1], leaves64[2]) if affine else (None, None)
    y64 = reference.inference_output(leaves64[0], mean.double(), var.double(), g64, b64, axis, 1e-3)
    assert_close(y, y64)
    upstream = sample(shape, torch.float64, seed=11)
    grads = torch.autograd.grad(y, leaves, upstream.to(dtype))
    expected = torch.autograd.grad(y64, leaves64, upstream)
    assert_close(grads, tuple(e.to(dtype) for e in expected))


MOMENTA = {"m0.0": 0.0, "m0.5": 0.5, "m0.99": 0.99, "mNone": None}


@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
@pytest.mark.parametrize("momentum", MOMENTA.values(), ids=MOMENTA.keys())
@pytest.mark.parametrize(("shape", "axis"), [AXES["rank4-axis1"], AXES["rank4-tuple(-1,1)"],
                                             AXES["rank3-axis-1"]],
                         ids=["rank4-axis1", "rank4-tuple(-1,1)", "rank3-axis-1"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_moving_statistics_match_reference(shape, axis, momentum, unbiased, dtype, assert_close):
    """Three training steps then inference: moving statistics and outputs vs the formulas."""
    kept = reference.kept_tuple(axis, len(shape))
    stat = reference.stat_shape(shape, kept)
    gamma, beta, mean, var = parameters(stat, dtype, seed=9)
    batches = [sample(shape, dtype, seed=10 + t, kept=kept) for t in range(3)]
    moving_mean, moving_var = mean, var
    for t, x in enumerate(batches):
        y, moving_mean, moving_var = batch_norm(
            x, gamma, beta, moving_mean, moving_var, training=True, axis=axis,
            momentum=momentum, epsilon=1e-3, num_batches_tracked=t,
            unbiased_moving_variance=unbiased,
        )
    outputs, ref_mean, ref_var = reference.run_training(
        batches, gamma, beta, mean, var, axis=axis, momentum=momentum, epsilon=1e-3,
        unbiased=unbiased,
    )
    assert_close(y, outputs[-1])
    assert moving_mean.dtype == dtype
    assert_close(moving_mean, ref_mean)
    assert_close(moving_var, ref_var)
    x = sample(shape, dtype, seed=20, kept=kept)
    y, m, v = batch_norm(x, gamma, beta, moving_mean, moving_var, training=False, axis=axis,
                         epsilon=1e-3)
    assert m is moving_mean and v is moving_var
    assert_close(y, reference.inference_output(x, ref_mean, ref_var, gamma, beta, axis, 1e-3))


@pytest.mark.parametrize(("center", "scale"), [(True, True), (True, False), (False, True),
                                               (False, False)],
                         ids=["center+scale", "center", "scale", "neither"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_missing_gamma_beta_mean_identity(center, scale, implementation, assert_close):
    """gamma=None acts as 1 and beta=None as 0, in training and inference."""
    x = sample((6, 3, 4), torch.float64, seed=11).requires_grad_(True)
    gamma, beta, mean, var = parameters((3,), torch.float64, seed=12)
    g = gamma if scale else None
    b = beta if center else None
    y, _, _ = batch_norm(x, g, b, mean, var, training=True, implementation=implementation)
    assert_close(y, reference.training_output(x, g, b, 1, 1e-3))
    y, _, _ = batch_norm(x, g, b, mean, var, training=False, implementation=implementation)
    assert_close(y, reference.inference_output(x, mean, var, g, b, 1, 1e-3))


@pytest.mark.parametrize("implementation", ["auto", "composite"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_mask_matches_reference(implementation, dtype, assert_close):
    """Masked positions leave the statistics; every position is still normalized."""
    shape = (3, 7, 4)  # (N, T, C), channel last
    x = sample(shape, dtype, seed=13, kept=(2,)).requires_grad_(True)
    gamma, beta, mean, var = parameters((4,), dtype, seed=14)
    lengths = torch.tensor([7, 4, 2])
    mask = torch.arange(7)[None, :] < lengths[:, None]  # (N, T)
    # Garbage in the masked positions must not matter.
    x_garbage = torch.where(mask[..., None], x, torch.full_like(x, 1e3))
    y, new_mean, new_var = batch_norm(x_garbage, gamma, beta, mean, var, training=True, axis=-1,
                                      momentum=0.5, mask=mask, implementation=implementation)
    ref_mean, ref_var = reference.moments(x, -1, mask)
    expected = reference.normalize(x_garbage, ref_mean, ref_var, gamma, beta, -1, 1e-3)
    assert_close(y, expected)
    m, v = reference.moving_update(mean, var, ref_mean, ref_var, momentum=0.5, count=13)
    assert_close(new_mean, m)
    assert_close(new_var, v)
    # Gradient w.r.t. the valid positions vs the float64 formula.
    x64 = x.detach().double().requires_grad_(True)
    y64 = reference.training_output(x64, gamma.double(), beta.double(), -1, 1e-3, mask)
    up = torch.where(mask[..., None], sample(shape, torch.float64, seed=15), 0.0)
    grad = torch.autograd.grad(y, x, up.to(dtype))[0]
    expected_grad = torch.autograd.grad(y64, x64, up)[0]
    assert_close(grad, expected_grad.to(dtype))


def test_mask_all_true_equals_no_mask(assert_close):
    x = sample((4, 6, 3), torch.float64, seed=16, kept=(2,))
    gamma, beta, mean, var = parameters((3,), torch.float64, seed=17)
    with_mask = batch_norm(x, gamma, beta, mean, var, training=True, axis=-1,
                           mask=torch.ones(4, 6, dtype=torch.bool))
    without = batch_norm(x, gamma, beta, mean, var, training=True, axis=-1)
    for a, b in zip(with_mask, without, strict=True):
        assert_close(a, b)


def test_never_mutates_inputs():
    x = sample((8, 3, 4), torch.float32, seed=18)
    gamma, beta, mean, var = parameters((3,), torch.float32, seed=19)
    before = [t.clone() for t in (x, gamma, beta, mean, var)]
    versions = [t._version for t in (x, gamma, beta, mean, var)]
    for implementation in IMPLEMENTATIONS:
        for training in (True, False):
            batch_norm(x, gamma, beta, mean, var, training=training,
                       implementation=implementation)
    for t, b, v in zip((x, gamma, beta, mean, var), before, versions, strict=True):
        assert torch.equal(t, b)
        assert t._version == v
