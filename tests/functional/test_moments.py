"""Moments and Chan's merge against float64 formulas on the whole data."""

from __future__ import annotations

import pytest
import torch

from bnlab.functional.moments import merge_moments, moments_of, stack_merge


def _reference(x: torch.Tensor, axis: int, mask: torch.Tensor | None = None):
    values = x.double().movedim(axis, -1).reshape(-1, x.shape[axis])
    if mask is not None:
        values = values[mask.reshape(-1)]
    mean = values.mean(0)
    return len(values), mean, ((values - mean) ** 2).sum(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("shape", "axis"), [((6, 3), 1), ((4, 3, 5, 2), 1), ((4, 5, 3), 2)],
                         ids=["NC", "NCHW", "NTC"])
def test_moments_of_matches_float64(shape, axis, dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.01 + 1e3).to(dtype)
    got = moments_of(x, (axis,))
    n, mean, m2 = _reference(x, axis)
    assert got.count.dtype == torch.float64 and int(got.count) == n
    torch.testing.assert_close(got.mean, mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.m2, m2, rtol=1e-4 if dtype != torch.float64 else 1e-9, atol=1e-12)


def test_masked_and_empty() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 7, 3, generator=g, dtype=torch.float64) + 4
    mask = torch.rand(5, 7, generator=g) > 0.4
    got = moments_of(x, (2,), mask)
    n, mean, m2 = _reference(x, 2, mask)
    assert int(got.count) == n
    torch.testing.assert_close(got.mean, mean)
    torch.testing.assert_close(got.m2, m2)
    empty = moments_of(torch.empty(0, 3), (1,))
    assert int(empty.count) == 0 and torch.equal(empty.mean, torch.zeros(3, dtype=torch.float64))


def test_merging_parts_equals_the_whole() -> None:
    g = torch.Generator().manual_seed(2)
    parts = [torch.randn(n, 4, generator=g, dtype=torch.float64) * s + 1e4
             for n, s in ((3, 1e-3), (0, 1.0), (11, 1e-2), (1, 5.0))]
    whole = _reference(torch.cat(parts), 1)
    pairwise = moments_of(parts[0], (1,))
    for part in parts[1:]:
        pairwise = merge_moments(pairwise, moments_of(part, (1,)))
    each = [moments_of(p, (1,)) for p in parts]
    stacked = stack_merge(torch.stack([m.count for m in each]), torch.stack([m.mean for m in each]),
                          torch.stack([m.m2 for m in each]))
    for merged in (pairwise, stacked):
        assert int(merged.count) == whole[0]
        torch.testing.assert_close(merged.mean, whole[1], rtol=1e-14, atol=0)
        torch.testing.assert_close(merged.m2, whole[2], rtol=1e-9, atol=0)
    torch.testing.assert_close(stacked.variance(unbiased=True), torch.cat(parts).var(0))
