r"""What Sequential and graph models share: layers by name, weight penalties and constraints.

Keras adds each layer's weight regularization to the loss (``model.losses``) and
projects constrained weights after each optimizer step; here
:meth:`KerasModel.regularization_loss` returns

.. math:: \sum_{\text{layers}} \sum_{w} R_w(w)

over every weight ``w`` with a regularizer (``kernel_regularizer``,
``bias_regularizer``, ``recurrent_regularizer``, ``depthwise_/pointwise_regularizer``,
``embeddings_regularizer``, ``alpha_regularizer``, ``gamma_/beta_regularizer``), and
:meth:`KerasModel.apply_constraints` applies the ``*_constraint`` projections. Both act
on the weights in Keras's layout, so a ``max_norm(axis=0)`` of a Dense kernel
constrains each unit's incoming weights as in Keras.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bnlab.models.keras_weights import KerasWeight, keras_weight_views
from bnlab.models.spec import LayerSpec
from bnlab.nn import BatchNormalization, constraints, regularizers

__all__ = ["KerasModel"]


def _arg_prefix(weight: str) -> str:
    """Keras's argument prefix of a weight: ``recurrent_kernel`` -> ``recurrent``."""
    return weight if weight == "kernel" else weight.removesuffix("_kernel")


class KerasModel(nn.Module):
    """Base of :class:`~bnlab.models.SequentialModel` and :class:`~bnlab.models.GraphModel`.

    Subclasses implement :meth:`named_layers`.
    """

    def named_layers(self) -> list[tuple[str, LayerSpec, nn.Module]]:
        """``(name, spec, module)`` of every layer, in Keras's order."""
        raise NotImplementedError

    def layer(self, name: str) -> nn.Module:
        """The module of the layer called ``name`` (Keras's ``model.get_layer``).

        Raises:
            KeyError: no such layer; the message lists the names.
        """
        for layer_name, _, module in self.named_layers():
            if layer_name == name:
                return module
        names = ", ".join(n for n, _, _ in self.named_layers())
        raise KeyError(f"no layer named {name!r}; layers: {names}")

    def batch_norm_layers(self) -> dict[str, BatchNormalization]:
        """Name -> every BatchNormalization layer of the model, in order."""
        return {n: m for n, _, m in self.named_layers() if isinstance(m, BatchNormalization)}

    def _penalized(self, kind: str) -> Iterator[tuple[KerasWeight, Any]]:
        """(weight view, regularizer/constraint object) for every weight that has one."""
        get = regularizers.get if kind == "regularizer" else constraints.get
        for _, spec, module in self.named_layers():
            if isinstance(module, BatchNormalization):
                continue  # its own gamma/beta regularizers and constraints
            args = spec.resolved_args()
            for view in keras_weight_views(module):
                found = get(args.get(f"{_arg_prefix(view.name)}_{kind}"))
                if found is not None:
                    yield view, found

    def regularization_loss(self) -> torch.Tensor:
        """The sum of every weight penalty (see the module docstring); 0 if none.

        Add it to the data loss before ``backward()``, like Keras adds ``model.losses``.
        """
        losses = [m.regularization_loss() for m in self.batch_norm_layers().values()]
        losses += [penalty(view.to_keras(view.tensor))
                   for view, penalty in self._penalized("regularizer")]
        if not losses:
            reference = next(self.parameters(), None)
            return torch.zeros((), device=reference.device if reference is not None else None)
        return torch.stack([loss.reshape(()) for loss in losses]).sum()

    def apply_constraints(self) -> None:
        """Apply every weight constraint (BN's included); call after each optimizer step."""
        for module in self.batch_norm_layers().values():
            module.apply_constraints()
        with torch.no_grad():
            for view, constraint in self._penalized("constraint"):
                view.tensor.copy_(view.from_keras(constraint(view.to_keras(view.tensor))))
