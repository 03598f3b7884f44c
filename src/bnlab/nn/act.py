r"""``BatchNormAct``: batch normalization and an activation as one layer.

It is a :class:`~bnlab.nn.BatchNormalization` (same arguments, same parameters,
same buffers, same ``state_dict`` keys — checkpoints load either way) whose
output goes through an activation, applied in place on the fresh normalized
output when the backward pass allows it (see :mod:`bnlab.functional.act`).
The subclass adds no computation of its own besides that one call: every
normalization option (renorm, ghost batches, synchronized statistics, frozen
statistics) works unchanged, and every utility that finds BN layers by type
(freeze, recalibrate, convert_sync) sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from bnlab.functional.act import ActivationName, activate, activation_module, check_activation
from bnlab.nn.batchnorm import BatchNormalization

__all__ = ["BatchNormAct"]


class BatchNormAct(BatchNormalization):
    r"""Batch normalization followed by an activation, in one step.

    .. math::
        y = f\Big(\gamma \, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta\Big)

    Statistics, training/inference behaviour and the moving-statistics update
    (``momentum`` is the weight of the *old* value, Keras convention) are exactly
    those of :class:`~bnlab.nn.BatchNormalization`; the activation changes none of
    them. relu, leaky_relu (slope >= 0), sigmoid and tanh run in place on the
    normalized output (one activation-sized tensor less per layer); gelu and silu
    run out of place while gradients are recorded.

    Args:
        num_features: as for ``BatchNormalization`` (None builds on first forward).
        activation: ``"relu"`` (default), ``"leaky_relu"``, ``"sigmoid"``, ``"tanh"``,
            ``"gelu"`` or ``"silu"``.
        activation_kwargs: options of the activation: ``{"negative_slope": a}`` for
            leaky_relu (default 0.2, Keras; PyTorch uses 0.01) and
            ``{"approximate": "tanh"}`` for gelu (default ``"none"``, the erf form).
        **kwargs: every keyword argument of ``BatchNormalization`` (``axis``,
            ``momentum``, ``epsilon``, ``center``, ``scale``, initializers, ``renorm``,
            ``virtual_batch_size``, ...). ``name`` defaults to ``"batch_norm_act"``.

    Shape:
        - Input: ``(N, C, *)`` with ``axis=1``; output: same shape.

    Raises:
        ValueError: unknown activation or option (the message lists the valid ones),
            and everything ``BatchNormalization`` raises.

    Example:
        >>> layer = BatchNormAct(16, activation="leaky_relu",
        ...                      activation_kwargs={"negative_slope": 0.1})
        >>> y = layer(torch.randn(8, 16, 5, 5))
        >>> plain = BatchNormalization(16)
        >>> plain.load_state_dict(layer.state_dict())   # same keys both ways
        <All keys matched successfully>

    Use it for the usual "conv -> BN -> activation" block. With relu,
    ``scale=False`` loses nothing when a linear layer follows: relu commutes with a
    positive scale, which that layer can absorb (Keras's advice).
    """

    def __init__(
        self,
        num_features: int | Sequence[int] | None = None,
        *,
        activation: ActivationName | str = "relu",
        activation_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "batch_norm_act")
        # Validate before building any state, so a typo fails fast.
        options = check_activation(activation, activation_kwargs, name=kwargs["name"])
        super().__init__(num_features, **kwargs)
        self.activation = activation.lower()
        self.activation_kwargs = options

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalize like ``BatchNormalization``, then apply the activation."""
        return activate(super().forward(x, mask), self.activation, self.activation_kwargs,
                        inplace=True)

    def activation_module(self) -> nn.Module:
        """A fresh ``torch.nn`` module for the activation alone (e.g. after folding the BN)."""
        return activation_module(self.activation, self.activation_kwargs)

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.activation_kwargs.items())
        return f"{super().extra_repr()}, activation={self.activation!r}{options}"
