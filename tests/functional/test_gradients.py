"""Gradients: ``gradcheck`` in float64 on every path, and ``torch.func`` transforms."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import reference
from bnlab.functional import ReferenceBatchNorm, batch_norm, reference_batch_norm_train

F64 = torch.float64


def data(shape, seed, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=F64) * 1.5 + 0.3).requires_grad_(requires_grad)


def stats(c, seed):
    g = torch.Generator().manual_seed(seed)
    gamma = (0.5 + torch.rand(c, generator=g, dtype=F64)).requires_grad_(True)
    beta = torch.randn(c, generator=g, dtype=F64).requires_grad_(True)
    return gamma, beta, torch.randn(c, generator=g, dtype=F64), 0.5 + torch.rand(c, dtype=F64)


def test_reference_function_gradcheck():
    """The closed-form backward of the paper's Algorithm 1 against finite differences."""
    x = data((7, 3), 0)
    gamma, beta, _, _ = stats((3,), 1)

    def f(x, gamma, beta):
        return ReferenceBatchNorm.apply(x, gamma, beta, 1e-3)[0]

    assert gradcheck(f, (x, gamma, beta))


def test_reference_function_statistics_carry_no_gradient():
    x = data((6, 2), 2)
    y, mean, var = ReferenceBatchNorm.apply(x, torch.ones(2, dtype=F64),
                                            torch.zeros(2, dtype=F64), 1e-3)
    assert y.requires_grad and not mean.requires_grad and not var.requires_grad


@pytest.mark.parametrize(("shape", "axis"), [((5, 2, 3), 1), ((3, 2, 2, 3), (1, 3)),
                                             ((4, 3, 2), -1)],
                         ids=["rank3-axis1", "rank4-tuple(1,3)", "rank3-axis-1"])
def test_reference_layout_gradcheck(shape, axis):
    kept = reference.kept_tuple(axis, len(shape))
    x = data(shape, 3)
    gamma, beta, _, _ = stats(reference.stat_shape(shape, kept), 4)
    assert gradcheck(lambda *a: reference_batch_norm_train(*a, kept, 1e-3)[0], (x, gamma, beta))


CASES = {
    "rank2-axis1": ((6, 3), 1),
    "rank4-axis1": ((3, 2, 2, 3), 1),
    "rank3-axis-1": ((3, 4, 2), -1),
    "rank4-tuple(1,2)": ((3, 2, 3, 2), (1, 2)),
}


# The native kernel takes one kept axis: tuples of axes run on the other paths.
GRADCHECK_CASES = [
    pytest.param(shape, axis, implementation, id=f"{label}-{implementation}")
    for label, (shape, axis) in CASES.items()
    for implementation in ("native", "composite", "reference", "auto")
    if implementation != "native" or isinstance(axis, int)
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize(("shape", "axis", "implementation"), GRADCHECK_CASES)
def test_batch_norm_gradcheck(shape, axis, training, implementation):
    """Finite differences through batch_norm on every path (first and second order)."""
    kept = reference.kept_tuple(axis, len(shape))
    x = data(shape, 5)
    gamma, beta, mean, var = stats(reference.stat_shape(shape, kept), 6)

    def f(x, gamma, beta):
        return batch_norm(x, gamma, beta, mean, var, training=training, axis=axis,
                          momentum=0.5, implementation=implementation)[0]

    assert gradcheck(f, (x, gamma, beta))
    if implementation in ("native", "composite"):
        assert gradgradcheck(f, (x, gamma, beta))


@pytest.mark.parametrize(("shape", "axis"), CASES.values(), ids=CASES.keys())
def test_implementations_have_equal_gradients(shape, axis, assert_close):
    kept = reference.kept_tuple(axis, len(shape))
    x0 = data(shape, 7, requires_grad=False)
    gamma0, beta0, mean, var = stats(reference.stat_shape(shape, kept), 8)
    upstream = data(shape, 9, requires_grad=False)
    results = {}
    for implementation in ("native", "composite", "reference"):
        if implementation == "native" and len(kept) != 1:
            continue
        x, gamma, beta = (t.detach().clone().requires_grad_(True) for t in (x0, gamma0, beta0))
        y, m, v = batch_norm(x, gamma, beta, mean, var, training=True, axis=axis,
                             implementation=implementation)
        results[implementation] = (y, m, v, *torch.autograd.grad(y, (x, gamma, beta), upstream))
    first, *others = results.values()
    for other in others:
        assert_close(other, first)


# ---------------------------------------------------------------------- torch.func
def test_vmap_over_models_matches_a_loop(assert_close):
    """vmap over a stack of 4 independent BN states (and inputs) equals a Python loop."""
    models, shape = 4, (6, 3, 5)
    g = torch.Generator().manual_seed(10)
    xs = torch.randn(models, *shape, generator=g, dtype=F64) + 2.0
    gammas = 0.5 + torch.rand(models, 3, generator=g, dtype=F64)
    betas = torch.randn(models, 3, generator=g, dtype=F64)
    means = torch.randn(models, 3, generator=g, dtype=F64)
    variances = 0.5 + torch.rand(models, 3, generator=g, dtype=F64)
    for training in (True, False):
        def one(x, gamma, beta, mean, var, training=training):
            return tuple(batch_norm(x, gamma, beta, mean, var, training=training,
                                    momentum=0.9))

        batched = torch.func.vmap(one)(xs, gammas, betas, means, variances)
        looped = [one(*args) for args in zip(xs, gammas, betas, means, variances, strict=True)]
        for i, result in enumerate(batched):
            assert_close(result, torch.stack([r[i] for r in looped]))


def test_vmap_over_shared_input_with_mask(assert_close):
    """vmap over models that share one masked input (in_dims=None) equals a loop."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 5, 2, generator=g, dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    gammas = 0.5 + torch.rand(4, 2, generator=g, dtype=F64)
    ones = torch.ones(2, dtype=F64)

    def one(gamma):
        return tuple(batch_norm(x, gamma, None, ones * 0, ones, training=True, axis=-1,
                                momentum=0.5, mask=mask))

    batched = torch.func.vmap(one)(gammas)
    looped = [one(gamma) for gamma in gammas]
    for i, result in enumerate(batched):
        assert_close(result, torch.stack([r[i] for r in looped]))


def test_vmap_skips_nonfinite_update_per_model(assert_close):
    """Under vmap a non-finite batch keeps its own model's statistics (no warning possible)."""
    xs = torch.randn(2, 8, 3, dtype=F64)
    xs[1, 0, 0] = float("nan")
    means, variances = torch.zeros(2, 3, dtype=F64), torch.ones(2, 3, dtype=F64)

    def one(x, mean, var):
        return batch_norm(x, None, None, mean, var, training=True, momentum=0.5)[1:]

    new_means, new_vars = torch.func.vmap(one)(xs, means, variances)
    assert_close(new_means[1], means[1])
    assert_close(new_vars[1], variances[1])
    expected, _ = reference.moments(xs[0], 1)
    assert_close(new_means[0], 0.5 * expected)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
def test_func_grad_matches_autograd(training, assert_close):
    x0 = data((6, 3, 4), 12, requires_grad=False)
    gamma0, beta0, mean, var = stats((3,), 13)
    weights = data((6, 3, 4), 14, requires_grad=False)

    def loss(x, gamma, beta):
        y, _, _ = batch_norm(x, gamma, beta, mean, var, training=training)
        return (y * weights).square().sum()

    grads = torch.func.grad(loss, argnums=(0, 1, 2))(x0, gamma0.detach(), beta0.detach())
    x, gamma, beta = (t.detach().clone().requires_grad_(True) for t in (x0, gamma0, beta0))
    expected = torch.autograd.grad(loss(x, gamma, beta), (x, gamma, beta))
    assert_close(grads, expected)


def test_vmap_of_func_grad_matches_a_loop(assert_close):
    """Per-model gradients: vmap(grad(...)) equals a loop of autograd."""
    g = torch.Generator().manual_seed(15)
    xs = torch.randn(3, 5, 2, generator=g, dtype=F64)
    gammas = 0.5 + torch.rand(3, 2, generator=g, dtype=F64)
    zeros, ones = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)

    def loss(gamma, x):
        y, _, _ = batch_norm(x, gamma, None, zeros, ones, training=True)
        return (y ** 3).sum()

    batched = torch.func.vmap(torch.func.grad(loss))(gammas, xs)
    looped = []
    for gamma, x in zip(gammas, xs, strict=True):
        gamma = gamma.clone().requires_grad_(True)
        looped.append(torch.autograd.grad(loss(gamma, x), gamma)[0])
    assert_close(batched, torch.stack(looped))
