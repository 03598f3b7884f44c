"""Ghost batch normalization against a float64 per-ghost-batch loop.

The reference splits the batch into consecutive chunks of ``virtual_batch_size``,
normalizes each with its own mean and biased variance (``reference.training_output``)
and folds the *average* of the chunks' statistics into the moving statistics once
per step.
"""

from __future__ import annotations

import pytest
import torch

import reference
from bnlab.functional import NonFiniteStatisticsWarning, batch_norm
from bnlab.functional.ghost import ghost_batch_norm

F64 = torch.float64


def sample(shape, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=F64)
    # Per-sample shifts make the ghost batches' statistics differ from the batch's.
    shift = torch.randn(shape[0], *([1] * (len(shape) - 1)), generator=g, dtype=F64)
    return (1.5 * x + shift).to(dtype)


def reference_ghost(x, gamma, beta, k, axis, epsilon):
    """Outputs and averaged (mean, biased variance) of the ghost batches, float64."""
    chunks = x.split(k, dim=0)
    outputs = [reference.training_output(c, gamma, beta, axis, epsilon) for c in chunks]
    stats = [reference.moments(c, axis) for c in chunks]
    mean = torch.stack([m for m, _ in stats]).mean(dim=0)
    var = torch.stack([v for _, v in stats]).mean(dim=0)
    return torch.cat(outputs, dim=0), mean, var


LAYOUTS = {
    # name: (shape, axis, virtual_batch_size)
    "dense": ((12, 5), 1, 4),
    "conv_nchw": ((8, 3, 4, 5), 1, 2),
    "conv_k1": ((6, 3, 2, 2), 1, 1),
    "sequence_channel_last": ((9, 4, 3), -1, 3),
    "middle_axis": ((6, 2, 3, 4), 2, 3),
    "two_kept_axes": ((8, 3, 4, 5), (1, 2), 4),
}


@pytest.mark.parametrize(("shape", "axis", "k"), LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("momentum", [0.9, None], ids=["momentum", "cumulative"])
def test_matches_per_ghost_batch_reference_over_steps(shape, axis, k, momentum, assert_close):
    kept = reference.kept_tuple(axis, len(shape))
    stat = reference.stat_shape(shape, kept)
    g = torch.Generator().manual_seed(0)
    gamma = (0.5 + torch.rand(stat, generator=g, dtype=F64)).requires_grad_(True)
    beta = torch.randn(stat, generator=g, dtype=F64).requires_grad_(True)
    mean, var = torch.zeros(stat, dtype=F64), torch.ones(stat, dtype=F64)
    ref_mean, ref_var = mean, var
    for step in range(3):
        x = sample(shape, seed=10 + step).requires_grad_(True)
        y, mean, var = ghost_batch_norm(x, gamma, beta, mean, var, virtual_batch_size=k,
                                        training=True, axis=axis, momentum=momentum,
                                        num_batches_tracked=step)
        y_ref, ghost_mean, ghost_var = reference_ghost(x, gamma, beta, k, axis, 1e-3)
        ref_mean, ref_var = reference.moving_update(
            ref_mean, ref_var, ghost_mean, ghost_var, momentum=momentum, count=0,
            batches_seen=step)
        assert_close(y, y_ref)
        w = torch.randn(shape, generator=g, dtype=F64)
        assert_close(torch.autograd.grad(y, (x, gamma, beta), w),
                     torch.autograd.grad(y_ref, (x, gamma, beta), w))
        assert_close(mean, ref_mean.detach())
        assert_close(var, ref_var.detach())


@pytest.mark.parametrize("implementation", ["auto", "composite", "reference"])
def test_float32_matches_reference(implementation, assert_close):
    x = sample((16, 4, 3, 3), seed=1, dtype=torch.float32)
    y, mean, var = ghost_batch_norm(x, None, None, torch.zeros(4), torch.ones(4),
                                    virtual_batch_size=4, training=True, momentum=0.5,
                                    implementation=implementation)
    y_ref, ghost_mean, ghost_var = reference_ghost(x, None, None, 4, 1, 1e-3)
    assert_close(y, y_ref)
    assert_close(mean, 0.5 * ghost_mean)
    assert_close(var, 0.5 + 0.5 * ghost_var)


def test_unbiased_moving_variance_scales_each_ghost_variance(assert_close):
    x = sample((12, 3), seed=2)
    _, _, var = ghost_batch_norm(x, None, None, torch.zeros(3, dtype=F64),
                                 torch.ones(3, dtype=F64), virtual_batch_size=4, training=True,
                                 momentum=0.0, unbiased_moving_variance=True)
    _, _, ghost_var = reference_ghost(x, None, None, 4, 1, 1e-3)
    assert_close(var, ghost_var * 4 / 3)


def test_moving_variance_is_the_within_ghost_variance_not_the_batch_variance():
    """The documented choice: averaged ghost variances, smaller than the batch's variance
    when the ghost means differ."""
    x = sample((12, 3), seed=3)
    _, _, var = ghost_batch_norm(x, None, None, torch.zeros(3, dtype=F64),
                                 torch.ones(3, dtype=F64), virtual_batch_size=4,
                                 training=True, momentum=0.0)
    _, batch_var = reference.moments(x, 1)
    assert bool((var < batch_var - 1e-3).all())


@pytest.mark.parametrize(("shape", "axis"), [((8, 3, 4), 1), ((8, 4, 3), -1), ((8, 3, 2, 2), (1, 2))],
                         ids=["channel_first", "channel_last", "two_axes"])
def test_virtual_batch_size_equal_to_batch_is_exactly_plain_batch_norm(shape, axis):
    x = sample(shape, seed=4, dtype=torch.float32).requires_grad_(True)
    kept = reference.kept_tuple(axis, len(shape))
    stat = reference.stat_shape(shape, kept)
    gamma = (torch.rand(stat) + 0.5).requires_grad_(True)
    beta = torch.randn(stat).requires_grad_(True)
    state = (torch.randn(stat), torch.rand(stat) + 0.5)
    ghost = ghost_batch_norm(x, gamma, beta, *state, virtual_batch_size=shape[0],
                             training=True, axis=axis)
    plain = batch_norm(x, gamma, beta, *state, training=True, axis=axis)
    for a, b in zip(ghost, plain, strict=True):
        assert torch.equal(a, b)
    w = torch.randn(shape)
    for a, b in zip(torch.autograd.grad(ghost.output, (x, gamma, beta), w),
                    torch.autograd.grad(plain.output, (x, gamma, beta), w), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch", [1, 3, 7], ids=lambda n: f"batch{n}")
def test_inference_is_plain_batch_norm_for_any_batch_size(batch):
    x = sample((batch, 3, 2), seed=5, dtype=torch.float32)
    state = (torch.randn(3), torch.rand(3) + 0.5)
    ghost = ghost_batch_norm(x, None, None, *state, virtual_batch_size=4, training=False)
    plain = batch_norm(x, None, None, *state, training=False)
    assert torch.equal(ghost.output, plain.output)
    assert ghost.moving_mean is state[0] and ghost.moving_variance is state[1]


def test_each_ghost_batch_is_normalized_by_itself():
    """Property: changing one ghost batch leaves the other ghost batches' outputs alone."""
    x = sample((8, 3), seed=6)
    state = (torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))
    y = ghost_batch_norm(x, None, None, *state, virtual_batch_size=4, training=True).output
    x2 = x.clone()
    x2[4:] = x2[4:] + 3
    y2 = ghost_batch_norm(x2, None, None, *state, virtual_batch_size=4, training=True).output
    assert torch.equal(y[:4], y2[:4])
    torch.testing.assert_close(y[4:], y2[4:])  # a shifted ghost batch: its own mean moves too


def test_batch_not_divisible_names_both_sizes():
    with pytest.raises(ValueError, match=r"batch size 10 is not a multiple of virtual_batch_size=4"):
        ghost_batch_norm(torch.randn(10, 3), None, None, torch.zeros(3), torch.ones(3),
                         virtual_batch_size=4, training=True)


def test_empty_batch_changes_nothing():
    state = (torch.zeros(3), torch.ones(3))
    result = ghost_batch_norm(torch.zeros(0, 3), None, None, *state, virtual_batch_size=4,
                              training=True)
    assert result.output.shape == (0, 3)
    assert result.moving_mean is state[0] and result.moving_variance is state[1]


def test_one_value_per_ghost_batch_raises():
    with pytest.raises(ValueError, match=r"virtual_batch_size=1 leaves 1 value per channel"):
        ghost_batch_norm(torch.randn(4, 3), None, None, torch.zeros(3), torch.ones(3),
                         virtual_batch_size=1, training=True)


def test_batch_axis_cannot_be_kept():
    with pytest.raises(ValueError, match=r"axis must not keep it; got axis=\(0, 1\)"):
        ghost_batch_norm(torch.randn(4, 3, 2), None, None, torch.zeros(4, 3), torch.ones(4, 3),
                         virtual_batch_size=2, training=True, axis=(0, 1))


@pytest.mark.parametrize("value", [0, -2, 2.0, True], ids=repr)
def test_bad_virtual_batch_size(value):
    with pytest.raises(ValueError, match=rf"virtual_batch_size must be a positive int.*got {value!r}"):
        ghost_batch_norm(torch.randn(4, 3), None, None, torch.zeros(3), torch.ones(3),
                         virtual_batch_size=value, training=True)


def test_mask_with_several_ghost_batches_raises():
    with pytest.raises(ValueError, match=r"mask cannot be combined with virtual_batch_size=2"):
        ghost_batch_norm(torch.randn(4, 3, 5), None, None, torch.zeros(3), torch.ones(3),
                         virtual_batch_size=2, training=True, mask=torch.ones(4, 5, dtype=torch.bool))


def test_non_finite_ghost_batch_keeps_the_statistics():
    x = torch.randn(8, 3)
    x[5, 0] = float("nan")
    state = (torch.zeros(3), torch.ones(3))
    with pytest.warns(NonFiniteStatisticsWarning):
        result = ghost_batch_norm(x, None, None, *state, virtual_batch_size=4, training=True)
    assert result.moving_mean is state[0] and result.moving_variance is state[1]


def test_half_input_gives_half_output(assert_close):
    x = sample((8, 3, 4), seed=7, dtype=torch.float16)
    y, mean, _ = ghost_batch_norm(x, None, None, torch.zeros(3), torch.ones(3),
                                  virtual_batch_size=2, training=True)
    assert y.dtype == torch.float16 and mean.dtype == torch.float32
    y_ref, _, _ = reference_ghost(x, None, None, 2, 1, 1e-3)
    assert_close(y, y_ref)


@pytest.mark.parametrize(("shape", "axis"), [((6, 3, 2), 1), ((6, 2, 3), -1), ((6, 2, 2, 2), (1, 2))],
                         ids=["channel_first", "channel_last", "two_axes"])
def test_gradcheck_float64(shape, axis):
    x = sample(shape, seed=8).requires_grad_(True)
    stat = reference.stat_shape(shape, reference.kept_tuple(axis, len(shape)))
    gamma = (torch.rand(stat, dtype=F64) + 0.5).requires_grad_(True)
    beta = torch.randn(stat, dtype=F64).requires_grad_(True)
    state = (torch.zeros(stat, dtype=F64), torch.ones(stat, dtype=F64))

    def fn(x, gamma, beta):
        return ghost_batch_norm(x, gamma, beta, *state, virtual_batch_size=3, training=True,
                                axis=axis).output

    assert torch.autograd.gradcheck(fn, (x, gamma, beta))
