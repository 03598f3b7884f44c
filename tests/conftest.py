"""Shared test configuration: the numerical tolerances, per dtype, in one place.

Tests get them through the session fixtures ``tolerance`` (dtype -> ``{"rtol", "atol"}``)
and ``assert_close`` (``torch.testing.assert_close`` with those tolerances).
Also: Keras (a reference in differential tests) runs on the torch backend, and
torch uses one intra-op thread (see ``pytest_configure``).
"""

from __future__ import annotations

import os

# Keras 3 picks its backend at import time; the tests use it as a reference on torch.
os.environ.setdefault("KERAS_BACKEND", "torch")

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

# Agreement required between two computations of the same numbers (outputs, moving
# statistics, gradients) in a given dtype. float32/float64 are the 1e-5 and
# 1e-10; the half types carry 8 (bfloat16) or 11 (float16) significant bits.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1.6e-2},
}


def pytest_configure(config: pytest.Config) -> None:
    # Tests work on small tensors, where intra-op threads cost more than they give and
    # contend with other processes on a shared machine; one thread keeps runs fast and steady.
    torch.set_num_threads(1)


def tolerance_for(dtype: torch.dtype) -> dict[str, float]:
    """``{"rtol", "atol"}`` for ``dtype``."""
    if dtype not in TOLERANCES:
        raise ValueError(f"no tolerance for {dtype}; known: {sorted(map(str, TOLERANCES))}")
    return dict(TOLERANCES[dtype])


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.from_numpy(np.array(value))


def assert_close_for(
    actual: Any,
    expected: Any,
    *,
    dtype: torch.dtype | None = None,
    msg: str | Callable[[str], str] | None = None,
    **override: float,
) -> None:
    """Compare at the tolerance of ``dtype`` (default: ``actual``'s dtype).

    ``expected`` is cast to ``actual``'s dtype and device, so a float64 reference
    can be compared with a float32 result directly. Tuples/lists compare pairwise.
    """
    if isinstance(actual, tuple | list):
        assert len(actual) == len(expected), f"{len(actual)} values vs {len(expected)} expected"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close_for(a, e, dtype=dtype, msg=msg or _prefixed(f"item {i}: "), **override)
        return
    actual_t, expected_t = _as_tensor(actual), _as_tensor(expected)
    tol = tolerance_for(dtype or actual_t.dtype)
    tol.update(override)
    torch.testing.assert_close(
        actual_t, expected_t.to(dtype=actual_t.dtype, device=actual_t.device),
        msg=msg, **tol,
    )


def _prefixed(prefix: str) -> Callable[[str], str]:
    return lambda generated: prefix + generated


@pytest.fixture(scope="session")
def tolerance() -> Callable[[torch.dtype], dict[str, float]]:
    """``tolerance(dtype) -> {"rtol": ..., "atol": ...}``."""
    return tolerance_for


@pytest.fixture(scope="session")
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected, *, dtype=None, msg=None, **override)``."""
    return assert_close_for
