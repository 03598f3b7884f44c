r"""Keras's recurrent layers (LSTM, GRU, SimpleRNN) and wrappers (Bidirectional, TimeDistributed).

One loop (:class:`_Recurrent`) serves the three cells; a cell only projects the
inputs and takes one step. Keras 3 semantics, batch first, states start at zero:

- **LSTM** (gates ``i, f, c, o`` in Keras's and PyTorch's order):
  ``z = x W + h U + b``; ``i, f, o = \sigma(z_i, z_f, z_o)``;
  ``c' = f c + i \tanh(z_c)``; ``h' = o \tanh(c')``.
- **GRU** (gates ``z, r, h``; ``reset_after=True``, Keras 3's default, has two bias
  rows, input and recurrent):
  ``z = \sigma(x W_z + b_z + h U_z + b'_z)``, ``r`` likewise,
  ``\tilde h = \tanh(x W_h + b_h + r \odot (h U_h + b'_h))``;
  ``h' = z \odot h + (1 - z) \odot \tilde h``. With ``reset_after=False``:
  ``\tilde h = \tanh(x W_h + b_h + (r \odot h) U_h)``.
- **SimpleRNN**: ``h' = \tanh(x W + b + h U)``.

(``\sigma`` is ``recurrent_activation``, ``\tanh`` is ``activation``.)

**Masks** (from Masking or ``Embedding(mask_zero=True)``): at a masked step the
states keep their previous values and the output repeats the previous output (zeros
with ``zero_output_for_mask``), as Keras does. **go_backwards** reads the sequence
from the end; the returned sequence is in that reversed order (Keras's rule).
**Dropout** in training: one input mask and one recurrent-state mask per call, the
same at every step (Keras 3's ``implementation=2``); drawn from torch's RNG.

Weights (Keras's layout is the transpose): ``weight_ih`` (k*units, in) is Keras's
``kernel`` (in, k*units); ``weight_hh`` (k*units, units) its ``recurrent_kernel``;
``bias`` Keras's bias ((2, 3*units) for GRU with ``reset_after``).

The steps run in a Python loop (the input projection is one matmul for all steps):
fine for the short sequences of the studies, slower than cuDNN for long ones.

Shape: ``(N, T, in) -> (N, T, units)`` with ``return_sequences``, else ``(N, units)``;
mask ``(N, T)``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GRU", "LSTM", "Bidirectional", "SimpleRNN", "TimeDistributed"]

State = tuple[Tensor, ...]


class _Recurrent(nn.Module):
    """The loop shared by the cells (see the module docstring); subclasses define a step."""

    gates = 1

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        return_sequences: bool = False,
        use_bias: bool = True,
        activation: nn.Module,
        recurrent_activation: nn.Module | None = None,
        go_backwards: bool = False,
        zero_output_for_mask: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        bias_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.units, self.return_sequences = in_features, units, return_sequences
        self.go_backwards, self.zero_output_for_mask = go_backwards, zero_output_for_mask
        self.dropout, self.recurrent_dropout = dropout, recurrent_dropout
        k = self.gates * units
        self.weight_ih = nn.Parameter(torch.empty(k, in_features))
        self.weight_hh = nn.Parameter(torch.empty(k, units))
        bias = nn.Parameter(torch.empty(bias_shape or (k,))) if use_bias else None
        self.register_parameter("bias", bias)
        self.activation = activation
        self.recurrent_activation = recurrent_activation or nn.Identity()

    def _input_bias(self) -> Tensor | None:
        return self.bias

    def _initial_state(self, x: Tensor) -> State:
        return (x.new_zeros(x.shape[0], self.units),)

    def _step(self, xz: Tensor, state: State, h_in: Tensor) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _drop_mask(self, like: Tensor, rate: float) -> Tensor | None:
        if not self.training or not 0.0 < rate < 1.0:
            return None
        return like.new_empty(like.shape).bernoulli_(1 - rate) / (1 - rate)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        keep = self._drop_mask(x[:, 0], self.dropout)
        if keep is not None:
            x = x * keep.unsqueeze(1)
        xz = F.linear(x, self.weight_ih, self._input_bias())  # (N, T, k*units), all steps
        state = self._initial_state(x)
        recurrent_keep = self._drop_mask(state[0], self.recurrent_dropout)
        output = x.new_zeros(x.shape[0], self.units)
        outputs = []
        for t in range(x.shape[1]):
            h_in = state[0] if recurrent_keep is None else state[0] * recurrent_keep
            new_output, new_state = self._step(xz[:, t], state, h_in)
            if mask is not None:
                m = mask[:, t].unsqueeze(1)
                held = torch.zeros_like(output) if self.zero_output_for_mask else output
                new_output = torch.where(m, new_output, held)
                new_state = tuple(torch.where(m, s, p) for s, p in zip(new_state, state,
                                                                        strict=True))
            output, state = new_output, new_state
            if self.return_sequences:
                outputs.append(output)
        return torch.stack(outputs, dim=1) if self.return_sequences else output

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, units={self.units}, "
            f"return_sequences={self.return_sequences}, use_bias={self.bias is not None}, "
            f"go_backwards={self.go_backwards}"
        )


class LSTM(_Recurrent):
    """Keras LSTM; see the module docstring. One bias vector like Keras (``torch.nn.LSTM``
    has two, so its parameter count differs from Keras's)."""

    gates = 4

    def _initial_state(self, x: Tensor) -> State:
        zeros = x.new_zeros(x.shape[0], self.units)
        return zeros, zeros

    def _step(self, xz: Tensor, state: State, h_in: Tensor) -> tuple[Tensor, State]:
        z = xz + F.linear(h_in, self.weight_hh)
        i, f, g, o = z.chunk(4, dim=1)
        i, f, o = (self.recurrent_activation(v) for v in (i, f, o))
        c = f * state[1] + i * self.activation(g)
        h = o * self.activation(c)
        return h, (h, c)


class GRU(_Recurrent):
    """Keras GRU (``reset_after`` selects the Keras 3 / cuDNN form); see the module docstring."""

    gates = 3

    def __init__(self, in_features: int, units: int, *, reset_after: bool = True,
                 **kwargs: object) -> None:
        self.reset_after = reset_after
        shape = (2, 3 * units) if reset_after else (3 * units,)
        super().__init__(in_features, units, bias_shape=shape, **kwargs)  # type: ignore[arg-type]

    def _input_bias(self) -> Tensor | None:
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def _step(self, xz: Tensor, state: State, h_in: Tensor) -> tuple[Tensor, State]:
        u = self.units
        x_z, x_r, x_h = xz.split(u, dim=1)
        if self.reset_after:
            recurrent_bias = None if self.bias is None else self.bias[1]
            rec = F.linear(h_in, self.weight_hh, recurrent_bias)
            r_z, r_r, r_h = rec.split(u, dim=1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            candidate = self.activation(x_h + r * r_h)
        else:
            r_z, r_r = F.linear(h_in, self.weight_hh[: 2 * u]).split(u, dim=1)
            z = self.recurrent_activation(x_z + r_z)
            r = self.recurrent_activation(x_r + r_r)
            candidate = self.activation(x_h + F.linear(r * h_in, self.weight_hh[2 * u :]))
        h = z * state[0] + (1 - z) * candidate
        return h, (h,)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reset_after={self.reset_after}"


class SimpleRNN(_Recurrent):
    """Keras SimpleRNN: ``h' = activation(x W + b + h U)``."""

    def _step(self, xz: Tensor, state: State, h_in: Tensor) -> tuple[Tensor, State]:
        h = self.activation(xz + F.linear(h_in, self.weight_hh))
        return h, (h,)


MergeMode = Literal["concat", "sum", "mul", "ave"]


class Bidirectional(nn.Module):
    """Keras Bidirectional: a forward and a backward (``go_backwards``) recurrent layer.

    With ``return_sequences`` the backward sequence is flipped back to time order,
    then the two are merged: ``concat`` (features), ``sum``, ``mul`` or ``ave``.
    Shape: ``(N, T, in) -> (N, [T,] 2*units)`` for ``concat``, else ``units``.
    """

    def __init__(self, forward_layer: _Recurrent, backward_layer: _Recurrent,
                 merge_mode: MergeMode) -> None:
        super().__init__()
        self.forward_layer, self.backward_layer = forward_layer, backward_layer
        self.merge_mode = merge_mode

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        y = self.forward_layer(x, mask)
        y_rev = self.backward_layer(x, mask)
        if self.forward_layer.return_sequences:
            y_rev = y_rev.flip(1)
        if self.merge_mode == "concat":
            return torch.cat([y, y_rev], dim=-1)
        if self.merge_mode == "sum":
            return y + y_rev
        if self.merge_mode == "mul":
            return y * y_rev
        return (y + y_rev) / 2

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode!r}"


class TimeDistributed(nn.Module):
    """Keras TimeDistributed: the inner layer applied to every step of ``(N, T, *rest)``.

    The steps are folded into the batch, ``(N*T, *rest)``; ``permute_in`` /
    ``permute_out`` move channel-last steps to the inner layer's layout and back.
    Shape: ``(N, T, *rest) -> (N, T, *inner_out)``.
    """

    def __init__(self, layer: nn.Module, *, permute_in: tuple[int, ...] | None,
                 permute_out: tuple[int, ...] | None) -> None:
        super().__init__()
        self.layer = layer
        self.permute_in, self.permute_out = permute_in, permute_out

    def forward(self, x: Tensor) -> Tensor:
        n, t = x.shape[:2]
        y = x.reshape(n * t, *x.shape[2:])
        if self.permute_in is not None:
            y = y.permute(self.permute_in)
        y = self.layer(y)
        if self.permute_out is not None:
            y = y.permute(self.permute_out)
        return y.reshape(n, t, *y.shape[1:])
