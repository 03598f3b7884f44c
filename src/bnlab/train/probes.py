"""Percentiles of a layer's input or output during training, through forward hooks.

A :class:`ProbeRecorder` hooks the probed layers once; the training loop arms it before
the forward pass of a step that should be recorded and disarms it after, so evaluation
passes and other steps cost one Python call per hooked layer and nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bnlab.models.base import KerasModel
from bnlab.train.config import ProbeSpec
from bnlab.train.history import ProbeTrace

__all__ = ["MAX_PROBE_VALUES", "ProbeRecorder", "find_layer", "percentiles"]

#: Tensors with more values than this are subsampled with a fixed stride before percentiles.
MAX_PROBE_VALUES = 100_000


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer of ``model`` called ``name``.

    A model of :mod:`bnlab.models` (``SequentialModel``, ``GraphModel``) is asked by its
    Keras-style layer names (``"dense_1"``, ``"batch_normalization"``). Any other module
    is searched by its dotted ``named_modules()`` name (``"0"``, ``"block.bn"``).

    Raises:
        ValueError: no layer has that name; the message lists the names.
    """
    if isinstance(model, KerasModel):
        if name not in model.layers:
            raise ValueError(f"unknown probe layer {name!r}; choose from: {', '.join(model.layers)}")
        return model.layer(name)
    modules = dict(model.named_modules())
    modules.pop("", None)
    if name not in modules:
        raise ValueError(f"unknown probe layer {name!r}; choose from: {', '.join(modules) or '(no submodules)'}")
    return modules[name]


def percentiles(x: torch.Tensor, q: tuple[float, ...]) -> torch.Tensor:
    """Percentiles ``q`` (in [0, 100]) of all values of ``x``, NumPy's linear interpolation.

    More than :data:`MAX_PROBE_VALUES` values are first subsampled as ``flat[::stride]``
    with ``stride = ceil(numel / MAX_PROBE_VALUES)``. Computed in float64.

    Shape:
        x: any shape; returns (len(q),) float64.
    """
    flat = x.detach().reshape(-1)
    if flat.numel() > MAX_PROBE_VALUES:
        flat = flat[:: math.ceil(flat.numel() / MAX_PROBE_VALUES)]
    qs = torch.tensor(q, dtype=torch.float64, device=flat.device) / 100.0
    return torch.quantile(flat.to(torch.float64), qs)


class ProbeRecorder:
    """Hooks the probed layers of ``model`` and collects percentiles when armed.

    Usage in a training loop::

        recorder = ProbeRecorder(model, specs)
        try:
            for step ...:
                recorder.arm(step)        # records on the next forward if step is due
                out = model(x)
                recorder.disarm()
        finally:
            recorder.close()
        traces = recorder.traces()
    """

    def __init__(self, model: nn.Module, specs: tuple[ProbeSpec, ...]) -> None:
        self._specs = specs
        self._armed: list[bool] = [False] * len(specs)
        self._step = 0
        self._steps: list[list[int]] = [[] for _ in specs]
        self._values: list[list[torch.Tensor]] = [[] for _ in specs]
        # Resolve every name before hooking anything, so a bad name leaves no hook behind.
        layers = [find_layer(model, spec.layer) for spec in specs]
        self._handles = [
            layer.register_forward_hook(self._make_hook(i)) for i, layer in enumerate(layers)
        ]

    def _make_hook(self, i: int) -> Any:
        spec = self._specs[i]

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not self._armed[i]:
                return
            self._armed[i] = False  # one record per step even if the layer runs twice
            value = inputs[0] if spec.where == "input" else output
            if isinstance(value, tuple | list):
                value = value[0]
            self._steps[i].append(self._step)
            self._values[i].append(percentiles(value, spec.percentiles))

        return hook

    def arm(self, step: int) -> bool:
        """Arm the probes due at ``step``; returns whether any is armed."""
        self._step = step
        any_armed = False
        for i, spec in enumerate(self._specs):
            self._armed[i] = step % spec.every_steps == 0
            any_armed = any_armed or self._armed[i]
        return any_armed

    def disarm(self) -> None:
        for i in range(len(self._armed)):
            self._armed[i] = False

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def traces(self, *, pad_until: int | None = None) -> dict[str, ProbeTrace]:
        """The records as :class:`ProbeTrace` objects keyed ``"<layer>.<where>"``.

        With ``pad_until``, steps that were due but not run (training stopped early) up to
        ``pad_until`` (exclusive) are added with NaN values.
        """
        out = {}
        for i, spec in enumerate(self._specs):
            steps = list(self._steps[i])
            rows = (
                [tuple(r) for r in torch.stack(self._values[i]).tolist()] if self._values[i] else []
            )
            if pad_until is not None:
                nan_row = tuple(math.nan for _ in spec.percentiles)
                every = spec.every_steps
                first = steps[-1] + every if steps else 0
                for s in range(first, pad_until, every):
                    steps.append(s)
                    rows.append(nan_row)
            out[spec.key] = ProbeTrace(
                percentiles=spec.percentiles, steps=tuple(steps), values=tuple(rows)
            )
        return out
