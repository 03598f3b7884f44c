"""Hypothesis property tests of batch normalization (float64 unless stated)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from bnlab import BatchNormalization
from bnlab.functional import batch_norm

PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
F64 = torch.float64


@st.composite
def layouts(draw, min_rank=2, max_rank=4):
    """(shape, axis): small shapes, an int axis, a negative axis or a tuple of axes."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    shape = (draw(st.integers(2, 5)), *shape[1:])  # at least two samples
    kind = draw(st.sampled_from(["first", "last", "tuple"] if rank > 2 else ["first", "last"]))
    if kind == "first":
        axis = 1
    elif kind == "last":
        axis = -1
    else:
        axis = tuple(draw(st.lists(st.integers(1, rank - 1), min_size=2, max_size=2,
                                   unique=True)))
    return shape, axis


@st.composite
def batches(draw, min_rank=2, max_rank=4):
    """(x, axis) with arbitrary finite values, at least two values per statistic."""
    shape, axis = draw(layouts(min_rank, max_rank))
    values = draw(hnp.arrays(np.float64, shape,
                             elements=st.floats(-1e3, 1e3, allow_nan=False, width=64)))
    return torch.from_numpy(values), axis


def affine_for(x, axis, seed):
    kept = reference.kept_tuple(axis, x.dim())
    stat = reference.stat_shape(x.shape, kept)
    g = torch.Generator().manual_seed(seed)
    gamma = 0.1 + 2 * torch.rand(stat, generator=g, dtype=F64)
    beta = 4 * torch.randn(stat, generator=g, dtype=F64)
    return gamma, beta, kept, stat


@PROPERTY
@given(case=batches(), training=st.booleans(), seed=st.integers(0, 2**16))
def test_shape_and_dtype_preserved(case, training, seed):
    x, axis = case
    gamma, beta, _, stat = affine_for(x, axis, seed)
    for dtype in (torch.float32, F64):
        y, m, v = batch_norm(x.to(dtype), gamma.to(dtype), beta.to(dtype), torch.zeros(stat),
                             torch.ones(stat), training=training, axis=axis)
        assert y.shape == x.shape and y.dtype == dtype
        assert m.shape == v.shape == stat


@PROPERTY
@given(case=batches(), seed=st.integers(0, 2**16))
def test_training_channel_mean_is_beta_and_std_is_gamma(case, seed, assert_close):
    """Per statistic, the output's mean is beta and its biased std is
    gamma * sqrt(var / (var + eps)) — gamma itself once var >> eps."""
    x, axis = case
    gamma, beta, _, stat = affine_for(x, axis, seed)
    y, _, _ = batch_norm(x, gamma, beta, torch.zeros(stat, dtype=F64),
                         torch.ones(stat, dtype=F64), training=True, axis=axis, epsilon=1e-3)
    out_mean, out_var = reference.moments(y, axis)
    _, in_var = reference.moments(x, axis)
    assert_close(out_mean, beta, atol=1e-9, rtol=1e-9)
    assert_close(out_var.sqrt(), gamma * torch.sqrt(in_var / (in_var + 1e-3)), atol=1e-7,
                 rtol=1e-7)
    spread = in_var > 1.0  # eps is 1e-3 of the variance or less
    assert_close(out_var.sqrt()[spread], gamma[spread], rtol=1e-3, atol=0)


@PROPERTY
@given(case=batches(), seed=st.integers(0, 2**16))
def test_training_without_affine_has_zero_mean_unit_variance(case, seed, assert_close):
    x, axis = case
    *_, stat = affine_for(x, axis, seed)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    y, _, _ = batch_norm(x, None, None, torch.zeros(stat, dtype=F64), torch.ones(stat, dtype=F64),
                         training=True, axis=axis, epsilon=1e-12)
    mean, var = reference.moments(y, axis)
    assert_close(mean, torch.zeros_like(mean), atol=1e-9, rtol=0)
    assert_close(var, torch.ones_like(var), atol=1e-6, rtol=0)


@PROPERTY
@given(case=batches(), seed=st.integers(0, 2**16))
def test_inference_is_deterministic_per_sample_and_changes_nothing(case, seed, assert_close):
    x, axis = case
    gamma, beta, kept, stat = affine_for(x, axis, seed)
    if 0 in kept:
        return  # keeping the batch axis ties statistics to sample positions
    layer = BatchNormalization(stat, axis=axis, momentum=0.5, dtype=F64)
    with torch.no_grad():
        layer.gamma.copy_(gamma)
        layer.beta.copy_(beta)
    layer(x)  # one training step: non-trivial moving statistics
    layer.eval()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    y = layer(x)
    assert torch.equal(layer(x), y)
    for i in range(x.shape[0]):
        assert_close(layer(x[i:i + 1]), y[i:i + 1])
    shuffled = layer(x.flip(0))
    assert_close(shuffled, y.flip(0))
    for k, v in layer.state_dict().items():
        assert torch.equal(v, state[k]), k


@PROPERTY
@given(case=batches(), data=st.data())
def test_permuting_the_batch_permutes_the_output(case, data, assert_close):
    x, axis = case
    kept = reference.kept_tuple(axis, x.dim())
    if 0 in kept:
        return
    stat = reference.stat_shape(x.shape, kept)
    perm = torch.tensor(data.draw(st.permutations(range(x.shape[0]))))
    zeros, ones = torch.zeros(stat, dtype=F64), torch.ones(stat, dtype=F64)
    y, m, v = batch_norm(x, None, None, zeros, ones, training=True, axis=axis, momentum=0.5)
    y_p, m_p, v_p = batch_norm(x[perm], None, None, zeros, ones, training=True, axis=axis,
                               momentum=0.5)
    assert_close(y_p, y[perm], atol=1e-8, rtol=1e-8)
    assert_close(m_p, m, atol=1e-9, rtol=1e-9)
    assert_close(v_p, v, atol=1e-9, rtol=1e-9)


@PROPERTY
@given(splits=st.sampled_from([1, 2, 3, 6]), seed=st.integers(0, 2**16))
def test_cumulative_mean_does_not_depend_on_the_split(splits, seed, assert_close):
    """momentum=None with equal batches: the moving mean is the mean of all the data,
    however it is split (fvcore's precise-BN property)."""
    x = torch.randn(12, 3, 4, generator=torch.Generator().manual_seed(seed), dtype=F64) + 5
    layer = BatchNormalization(3, momentum=None, dtype=F64)
    for chunk in x.chunk(splits):
        layer(chunk)
    assert_close(layer.moving_mean, reference.moments(x, 1)[0])
