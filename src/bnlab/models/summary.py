"""``summary(model)``: Keras's model summary table, as a string.

Same columns, totals and byte sizes as Keras 3's ``model.summary()``::

    Model: "sequential"
    ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
    ┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
    ┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
    │ conv2d (Conv2D)                 │ (None, 26, 26, 32)     │           320 │
    └─────────────────────────────────┴────────────────────────┴───────────────┘
     Total params: 320 (1.25 KB)
     Trainable params: 320 (1.25 KB)
     Non-trainable params: 0 (0.00 B)

A graph (Functional) model adds Keras's "Connected to" column (``conv1[0][0]``, one
line per input tensor) and a row per model input (``input (InputLayer)``, 0 params).

Counting follows Keras: a layer's ``Param #`` counts its parameters and its
floating-point state buffers (BatchNormalization's ``moving_mean`` and
``moving_variance``). Trainable = parameters with ``requires_grad``; non-trainable =
the other parameters (a frozen BatchNormalization's gamma and beta) plus those
buffers. Integer buffers (step counters) are not weights and are not counted.
Columns widen to fit long names instead of wrapping them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bnlab.models.graph import GraphModel
from bnlab.models.layer_type import keras_shape
from bnlab.models.sequential import SequentialModel

__all__ = ["ParamCounts", "count_params", "summary"]


@dataclass(frozen=True)
class ParamCounts:
    """Weights of a module in Keras's sense: counts and sizes in bytes."""

    trainable: int
    non_trainable: int
    trainable_bytes: int
    non_trainable_bytes: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def total_bytes(self) -> int:
        return self.trainable_bytes + self.non_trainable_bytes


def _weights(module: nn.Module) -> list[tuple[torch.Tensor, bool]]:
    """(tensor, trainable) for every parameter and floating-point persistent buffer."""
    out = [(p, p.requires_grad) for p in module.parameters()]
    persistent = module.state_dict(keep_vars=True)
    buffers = {id(b) for b in persistent.values()}
    out += [(b, False) for b in module.buffers() if b.is_floating_point() and id(b) in buffers]
    return out


def count_params(module: nn.Module) -> ParamCounts:
    """Keras's trainable / non-trainable weight counts of ``module`` (see the module doc)."""
    counts = [0, 0]
    sizes = [0, 0]
    seen: set[int] = set()
    for tensor, trainable in _weights(module):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        counts[not trainable] += tensor.numel()
        sizes[not trainable] += tensor.numel() * tensor.element_size()
    return ParamCounts(counts[0], counts[1], sizes[0], sizes[1])


def _readable(size: float) -> str:
    """Keras's ``readable_memory_size``: 1024-based units, two decimals."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


Row = tuple[str, ...]


def _rows(model: SequentialModel | GraphModel) -> tuple[Row, list[Row]]:
    """The header and the rows (a cell may hold several lines, joined by newlines)."""
    if isinstance(model, SequentialModel):
        return ("Layer (type)", "Output Shape", "Param #"), [
            (f"{name} ({spec.type})", keras_shape(model.output_shapes[name]),
             f"{count_params(module).total:,}")
            for name, spec, module in model.named_layers()
        ]
    rows: list[Row] = [
        (f"{name} (InputLayer)", keras_shape(shape), "0", "-")
        for name, shape in zip(model.input_names, model.input_shapes, strict=True)
    ]
    for name, spec, module in model.named_layers():
        connected = ",\n".join(f"{source}[0][0]" for source in model.inbound[name])
        rows.append((f"{name} ({spec.type})", keras_shape(model.output_shapes[name]),
                     f"{count_params(module).total:,}", connected))
    return ("Layer (type)", "Output Shape", "Param #", "Connected to"), rows


def summary(model: SequentialModel | GraphModel) -> str:
    """Keras's summary table of ``model``: Layer (type), Output Shape, Param #
    (+ Connected to for a graph), totals.

    Output shapes are in Keras's channel-last form with ``None`` for the batch axis,
    e.g. ``(None, 222, 222, 16)``, whatever layout the model uses inside.
    """
    header, rows = _rows(model)
    minimums = (31, 22, 13, 20)[: len(header)]
    widths = [
        max(minimum, len(header[c]), *(len(line) for r in rows for line in r[c].split("\n")))
        for c, minimum in enumerate(minimums)
    ]

    def line(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    def row(cells: Row, bar: str) -> list[str]:
        parts = [cell.split("\n") for cell in cells]
        height = max(len(p) for p in parts)
        out = []
        for k in range(height):
            texts = [p[k] if k < len(p) else "" for p in parts]
            formatted = [f"{t:>{w}}" if c == 2 else f"{t:<{w}}"
                         for c, (t, w) in enumerate(zip(texts, widths, strict=True))]
            out.append(f"{bar} " + f" {bar} ".join(formatted) + f" {bar}")
        return out

    lines = [f'Model: "{model.name}"', line("┏", "━", "┳", "┓"), *row(header, "┃")]
    lines.append(line("┡", "━", "╇", "┩"))
    for k, cells in enumerate(rows):
        if k:
            lines.append(line("├", "─", "┼", "┤"))
        lines += row(cells, "│")
    lines.append(line("└", "─", "┴", "┘"))
    counts = count_params(model)
    lines += [
        f" Total params: {counts.total:,} ({_readable(counts.total_bytes)})",
        f" Trainable params: {counts.trainable:,} ({_readable(counts.trainable_bytes)})",
        f" Non-trainable params: {counts.non_trainable:,} ({_readable(counts.non_trainable_bytes)})",
    ]
    return "\n".join(lines)
