"""What feeds each BN layer, seen on one real forward pass: :class:`Tracer` -> :class:`Structure`.

Module order says little about dataflow (a model's ``forward`` may call its children
in any order, or reuse them), so doctor watches one forward pass instead:

- **bias before BN**: the BN layer's input *is* (the same tensor object) the output of
  a layer computing ``W x + b`` per output channel (``nn.Linear``, ``nn.Conv*d``,
  bnlab's ``Dense``/``Conv2D`` with a linear activation), and the BN normalizes that
  layer's channel axis. BN subtracts the per-channel mean, so ``b`` cancels exactly, in
  training (batch mean) and at inference (the moving mean includes ``b``): its
  parameters are wasted, and BN's ``beta`` already plays their role.
- **BN on the inputs**: the BN layer's input shares storage with the model's input (the
  input itself or a view of it: a permute, a flatten).
- **dropout before BN**: a dropout module with rate > 0 runs before the BN layer in
  the same forward. At training time the BN layer's input variance includes the dropout
  noise, at inference it does not: the moving variance no longer fits (the "variance
  shift" of Li et al., CVPR 2019).
- **modes**: the ``training`` flag of the model and of every BN layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from bnlab.functional.axes import kept_axes
from bnlab.models import GraphModel, SequentialModel
from bnlab.models.layers import Conv2D, Dense, Dropout
from bnlab.nn.views import view

__all__ = [
    "BiasBeforeBN", "DropoutBeforeBN", "Structure", "Tracer", "display_name", "dropout_rate"
]


def dropout_rate(module: nn.Module) -> float | None:
    """The drop probability of a dropout module, PyTorch's (``p``) or bnlab's Keras-style
    ``Dropout`` (``rate``, also SpatialDropout); None for any other module."""
    if isinstance(module, _DropoutNd):
        return float(module.p)
    if isinstance(module, Dropout):
        return float(module.rate)
    return None


@dataclass(frozen=True)
class BiasBeforeBN:
    """A bias that the following BN layer cancels."""

    producer: str
    layer: str
    parameters: int


@dataclass(frozen=True)
class DropoutBeforeBN:
    """A dropout module that runs before some BN layers."""

    dropout: str
    rate: float
    layers: tuple[str, ...]


@dataclass(frozen=True)
class Structure:
    """Facts about the model seen on one forward pass and in its flags.

    Attributes:
        model_training: the model's own ``training`` flag.
        layer_training: BN layer name -> its ``training`` flag.
        reached: BN layers the data reached, in call order.
        bias_before_bn: cancelled biases.
        input_bn: BN layers applied to the model's input (or a view of it).
        dropout_before_bn: dropout modules followed by BN layers.
    """

    model_training: bool
    layer_training: Mapping[str, bool]
    reached: tuple[str, ...] = ()
    bias_before_bn: tuple[BiasBeforeBN, ...] = ()
    input_bn: tuple[str, ...] = ()
    dropout_before_bn: tuple[DropoutBeforeBN, ...] = field(default=())


def affine_channel_axis(module: nn.Module) -> int | None:
    """The output channel axis of a layer computing ``W x + b`` per channel, else None.

    ``nn.Linear`` and bnlab's ``Dense``: -1 (features last); convolutions: 1. bnlab's
    layers count only with a linear activation (after a ReLU the bias is not cancelled).
    """
    if isinstance(module, nn.Linear):
        return -1
    if isinstance(module, _ConvNd):
        return 1
    if isinstance(module, Dense | Conv2D) and isinstance(module.activation, nn.Identity):
        return -1 if isinstance(module, Dense) else 1
    return None


def _storage(t: Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def display_name(model: nn.Module, qualified: str) -> str:
    """How doctor names a submodule: Keras names for bnlab's Keras-style models, else qualified.

    ``"layers.batch_normalization"`` of a :class:`bnlab.models.SequentialModel` or
    :class:`~bnlab.models.GraphModel` reads ``"batch_normalization"`` (its Keras layer
    name, as in a model file); the root is ``"(model)"``.
    """
    if isinstance(model, SequentialModel | GraphModel) and qualified.startswith("layers."):
        return qualified[len("layers."):]
    return qualified or "(model)"


class Tracer:
    """Hooks that watch one forward pass of ``model``; use as a context manager.

    ``layers`` maps display names (:func:`display_name`) to the BN modules. Set
    :attr:`model_input` to the tensor passed to the model before the forward.
    """

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        self.model = model
        self.layers = dict(layers)
        self.model_input: Tensor | None = None
        self._ids = {id(m): name for name, m in layers.items()}
        self._modules = {display_name(model, q): m for q, m in model.named_modules()}
        self._order: list[str] = []
        self._bn_inputs: dict[str, Tensor] = {}
        self._outputs: dict[int, tuple[Tensor, list[str]]] = {}
        self._stack = ExitStack()

    def __enter__(self) -> Tracer:
        for name, module in self._modules.items():
            pre = module.register_forward_pre_hook(self._before(name))
            post = module.register_forward_hook(self._after(name))
            self._stack.callback(pre.remove)
            self._stack.callback(post.remove)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _before(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            self._order.append(name)
            if id(module) in self._ids and args and isinstance(args[0], Tensor):
                self._bn_inputs.setdefault(name, args[0])
        return hook

    def _after(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, Tensor):
                # Keep the tensor alive so that its id cannot be reused within the pass.
                self._outputs.setdefault(id(output), (output, []))[1].append(name)
        return hook

    def structure(self, *, model_training: bool, layer_training: Mapping[str, bool]) -> Structure:
        """What the watched forward pass showed (call after it), with the given modes."""
        reached = tuple(dict.fromkeys(n for n in self._order if n in self._bn_inputs))
        first_call = {}
        for i, name in enumerate(self._order):
            first_call.setdefault(name, i)
        return Structure(
            model_training=model_training,
            layer_training=dict(layer_training),
            reached=reached,
            bias_before_bn=tuple(self._biases(reached)),
            input_bn=tuple(self._input_layers(reached)),
            dropout_before_bn=tuple(self._dropouts(first_call)),
        )

    def _biases(self, reached: tuple[str, ...]) -> list[BiasBeforeBN]:
        found = []
        for layer in reached:
            x = self._bn_inputs[layer]
            _, producers = self._outputs.get(id(x), (None, []))
            for producer in producers:
                module = self._modules[producer]
                axis = affine_channel_axis(module)
                bias = getattr(module, "bias", None)
                if axis is None or not isinstance(bias, nn.Parameter) or x.dim() < 2:
                    continue
                try:
                    kept = kept_axes(view(self.layers[layer]).axis, x.dim())
                except (TypeError, ValueError):
                    continue
                if kept == (axis % x.dim(),):
                    found.append(BiasBeforeBN(producer, layer, bias.numel()))
                    break
        return found

    def _input_layers(self, reached: tuple[str, ...]) -> list[str]:
        if self.model_input is None:
            return []
        source = _storage(self.model_input)
        return [name for name in reached
                if source is not None and _storage(self._bn_inputs[name]) == source]

    def _dropouts(self, first_call: Mapping[str, int]) -> list[DropoutBeforeBN]:
        found = []
        for name, module in self._modules.items():
            rate = dropout_rate(module)
            if rate is None or rate <= 0 or name not in first_call:
                continue
            after = tuple(layer for layer in self.layers
                          if layer in first_call and first_call[layer] > first_call[name])
            if after:
                found.append(DropoutBeforeBN(name, rate, after))
        return found
