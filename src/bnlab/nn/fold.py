r"""Folding batch normalization into the preceding Linear/Conv for inference: :func:`fold`.

In inference a BN layer is a fixed per-channel affine map. When it directly
follows a layer that is itself affine per output channel — ``z = W x + b`` — the
two collapse into one:

.. math::
    s = \frac{\gamma}{\sqrt{v + \epsilon}},\qquad
    W' = s \odot W \;(\text{row } c \text{ scaled by } s_c),\qquad
    b' = s \odot (b - m) + \beta

with the moving mean :math:`m` and variance :math:`v` (computed in float64,
stored in the layer's dtype). The BN layer is replaced by ``nn.Identity``; the
model computes the same function in eval mode with one pass over the activations
fewer. A :class:`~bnlab.nn.BatchNormAct` is replaced by its activation alone.
:func:`fold` does this in place and returns the BN layers it left, each with the
reason; :func:`fold_report` gives the same decision without changing the model.

**Where.** Anywhere in the model's graph, as ``torch.fx`` traces it (BN layers,
``nn.Linear``/``nn.Conv*d`` and registered producers are kept as single calls): in
ResNet blocks, branches, residual additions and functional calls
(``torch.relu``, ``x + y``, ``torch.cat``). A BN layer is folded when its input is the
output of a *producer* — ``nn.Linear``, ``nn.Conv1d/2d/3d`` or a class registered
with :func:`register_producer` — that nothing else reads, each called once, and the
BN normalizes the producer's output channel axis (axis 1 for convolutions; the last
axis for Linear). Everything else is left in place and listed with the reason
(what feeds the BN, who else reads the producer's output, ...).

**Models torch.fx cannot trace** (Python control flow on tensor values, iteration
over a tensor, ...) fall back to *chain containers*, whose forward feeds each child's
output to the next child and nowhere else — ``nn.Sequential`` and any class registered
with :func:`register_chain` (e.g. the lab's ``SequentialModel``); a nested
``nn.Sequential`` counts as its last child there.

**Linear and channel-first BN.** ``nn.Linear`` puts its features last, while
PyTorch's BN (and bnlab's ``axis=1``) normalize axis 1: the two agree only for
``(N, F)`` tensors, which :func:`fold` assumes. Pass ``example_input`` to check
every pair on a real forward instead (on the traced graph, by shape propagation).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from bnlab.nn.act import BatchNormAct
from bnlab.nn.views import batch_norm_layers, view

__all__ = [
    "FoldReport",
    "Producer",
    "Unfolded",
    "fold",
    "fold_report",
    "register_chain",
    "register_producer",
]

Segments = Callable[[nn.Module], Iterable[Sequence[tuple[str, nn.Module]]]]


@dataclass(frozen=True)
class Producer:
    """How to fold a BN layer into a layer type.

    The type must hold ``weight`` with the output channels on dim 0 (Linear
    ``(out, in)``, Conv ``(out, in / groups, *k)``) and ``bias`` (a Parameter or
    None), and compute ``W x + b`` per output channel — nothing after it.

    Attributes:
        channel_axis: the output channel axis of the layer's *output*: 1 for
            channel-first convolutions, -1 for Linear/Dense.
        output_rank: the rank of the output if fixed (Conv2d: 4), else None.
        check: returns why a given instance cannot take a BN (e.g. "has activation
            ReLU"), or None when it can.
    """

    channel_axis: int
    output_rank: int | None = None
    check: Callable[[nn.Module], str | None] | None = None


_PRODUCERS: dict[type[nn.Module], Producer] = {
    nn.Linear: Producer(-1),
    nn.Conv1d: Producer(1, 3),
    nn.Conv2d: Producer(1, 4),
    nn.Conv3d: Producer(1, 5),
}
_CHAINS: dict[type[nn.Module], Segments] = {
    nn.Sequential: lambda module: [list(module.named_children())],
}


def register_producer(
    cls: type[nn.Module],
    *,
    channel_axis: int,
    output_rank: int | None = None,
    check: Callable[[nn.Module], str | None] | None = None,
) -> None:
    """Let :func:`fold` fold BN layers into ``cls`` (see :class:`Producer`).

    Example (a Dense layer with a built-in activation)::

        register_producer(Dense, channel_axis=-1, check=lambda m: None
                          if isinstance(m.activation, nn.Identity) else "has an activation")
    """
    if channel_axis not in (1, -1):
        raise ValueError(f"register_producer: channel_axis must be 1 or -1; got {channel_axis!r}")
    _PRODUCERS[cls] = Producer(channel_axis, output_rank, check)


def register_chain(cls: type[nn.Module], segments: Segments) -> None:
    """Declare that ``cls``'s forward is a chain of its children.

    ``segments(module)`` returns lists of ``(name relative to module, child)`` in
    call order; within one list each child's output is the next child's input,
    unchanged and used nowhere else. Start a new list wherever the forward does
    something between two children (a permute, a reshape).
    """
    _CHAINS[cls] = segments


class Unfolded(NamedTuple):
    """A BN layer that :func:`fold` leaves in place: its name in the model, and why.

    Prints as ``"blocks.3.joined_bn: not folded, its input is the function cat, ..."``.
    """

    bn: str
    reason: str

    def __str__(self) -> str:
        return f"{self.bn}: not folded, {self.reason}"


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold` would do to a model.

    Attributes:
        folded: ``(bn name, producer name)`` for each BN folded, in model order.
        unfolded: an :class:`Unfolded` ``(bn name, reason)`` for each BN left in place.
    """

    folded: tuple[tuple[str, str], ...]
    unfolded: tuple[Unfolded, ...]

    def __str__(self) -> str:
        lines = [f"folded {len(self.folded)} BN layer(s), left {len(self.unfolded)}"]
        lines += [f"  {bn} -> {producer}" for bn, producer in self.folded]
        lines += [f"  {unfolded}" for unfolded in self.unfolded]
        return "\n".join(lines)


def fold_report(model: nn.Module, example_input: Any = None) -> FoldReport:
    """Which BN layers :func:`fold` would fold into which layer, and why the others not.

    Args:
        model: any module; not changed.
        example_input: optional input for one eval-mode forward (on a copy) that
            checks each pair on real tensors (shape propagation on the traced graph):
            the BN must normalize the producer's channel axis. Needed to fold BN
            after a Linear applied to more than 2D input; a tuple is passed as
            positional args.

    Returns:
        A :class:`FoldReport`: ``folded`` ``(bn, producer)`` pairs and ``unfolded``
        :class:`Unfolded` ``(bn, reason)`` for every BN layer that stays.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                             torch.nn.BatchNorm2d(4))
        >>> fold_report(model).unfolded
        (Unfolded(bn='2', reason='it follows 1 (ReLU), not a Linear/Conv layer'),)
    """
    pairs, unfolded = _plan(model, example_input)
    return FoldReport(tuple(pairs), tuple(unfolded))


def fold(model: nn.Module, example_input: Any = None, *, strict: bool = False) -> list[Unfolded]:
    """Fold every foldable BN layer of ``model`` into the Linear/Conv before it, in place.

    Afterwards ``model`` is in eval mode and computes what it computed in eval mode
    before, up to rounding (float32: ~1e-6 relative). Folded BN layers become
    ``nn.Identity`` (a ``BatchNormAct``: its activation module); producers without a
    bias get one. The folded model is for inference: training it no longer
    normalizes those activations. To keep the original, fold a copy:
    ``folded = copy.deepcopy(model); fold(folded, x)``.

    Works for bnlab's :class:`BatchNormalization` (one kept axis; ``center`` /
    ``scale`` off are folded as beta = 0 / gamma = 1) and PyTorch's
    ``BatchNorm1d/2d/3d``; a layer without moving statistics (PyTorch
    ``track_running_stats=False``, an unbuilt bnlab layer) is left in place.

    Args:
        model: the model to fold, changed in place.
        example_input: see :func:`fold_report`.
        strict: raise instead of leaving some BN layers unfolded.

    Returns:
        The BN layers left in place, as :class:`Unfolded` ``(bn, reason)`` in model
        order; empty when every BN layer was folded. :func:`fold_report` gives the
        same list, and the folded pairs, without changing the model.

    Raises:
        ValueError: ``strict=True`` and some BN layer cannot be folded (the message
            lists each with its reason); the model is not changed.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
        ...                             torch.nn.ReLU(), torch.nn.BatchNorm2d(8))
        >>> for unfolded in fold(model):
        ...     print(unfolded)
        3: not folded, it follows 2 (ReLU), not a Linear/Conv layer
        >>> [type(layer).__name__ for layer in model]
        ['Conv2d', 'Identity', 'ReLU', 'BatchNorm2d']
    """
    pairs, unfolded = _plan(model, example_input)
    if strict and unfolded:
        reasons = "; ".join(f"{bn}: {reason}" for bn, reason in unfolded)
        raise ValueError(f"fold: {len(unfolded)} BN layer(s) cannot be folded ({reasons}); "
                         "pass strict=False to leave them in place")
    for bn_name, producer_name in pairs:
        bn = model.get_submodule(bn_name)
        _fold_pair(model.get_submodule(producer_name), bn)
        # A fused BN + activation leaves its activation behind.
        _replace(model, bn_name, bn.activation_module() if isinstance(bn, BatchNormAct)
                 else nn.Identity())
    model.eval()
    return unfolded


# ------------------------------------------------------------------ planning
Plan = tuple[list[tuple[str, str]], list[Unfolded]]  # (bn, producer) pairs, the rest


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps BN layers and producers as single module calls."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, nn.Identity):  # traced through: it adds no node
            return False
        return module in self._leaves or super().is_leaf_module(module, qualified_name)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._leaves = {m for m in model.modules()
                        if _producer_spec(m) is not None or id(m) in _bn_ids(model)}


def _bn_ids(model: nn.Module) -> set[int]:
    return {id(m) for _, m in batch_norm_layers(model)}


def _plan(model: nn.Module, example_input: Any) -> Plan:
    try:
        graph = _Tracer(model).trace(model)
    except Exception:  # user code torch.fx cannot trace: any error of its forward
        return _plan_chains(model, example_input)
    return _plan_graph(model, graph, example_input)


def _plan_graph(model: nn.Module, graph: fx.Graph, example_input: Any) -> Plan:
    """Pairs found on the traced graph: a BN call whose input is a producer call's output."""
    bns = dict(batch_norm_layers(model))
    if example_input is not None:
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():
            ShapeProp(fx.GraphModule(copy.deepcopy(model).eval(), graph)).propagate(*args)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    shared = _shared_modules(model)
    candidates: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in bns:
            continue
        name = str(node.target)
        source = node.args[0] if node.args else None
        if len(node.args) > 1 or node.kwargs:
            reasons[name] = "it is called with a mask or other arguments"
        elif not (isinstance(source, fx.Node) and source.op == "call_module"):
            reasons[name] = (f"its input is {_describe(model, source)}, not a Linear/Conv "
                             "layer's output")
        elif (reason := _reason(bns[name], (str(source.target),
                                             model.get_submodule(str(source.target))),
                                shared)) is not None:
            reasons[name] = reason
        elif calls[source.target] > 1 or calls[node.target] > 1:
            reasons[name] = f"{source.target} or the BN layer is called more than once"
        elif len(source.users) > 1:
            others = ", ".join(_describe(model, u) for u in source.users if u is not node)
            reasons[name] = f"{source.target}'s output is also used by {others}"
        elif (reason := _shape_reason(model, bns[name], source)) is not None:
            reasons[name] = reason
        else:
            candidates[name] = str(source.target)
    pairs = [(name, candidates[name]) for name in bns if name in candidates]
    unfolded = [Unfolded(name, reasons.get(name, "the traced forward never calls it"))
                for name in bns if name not in candidates]
    return pairs, unfolded


def _describe(model: nn.Module, value: Any) -> str:
    """A graph node as a reason names it: "the model input x", "the function add", ..."""
    if not isinstance(value, fx.Node):
        return f"the constant {value!r}"
    if value.op == "placeholder":
        return f"the model's input {value.target!r}"
    if value.op == "call_module":
        return f"{value.target} ({type(model.get_submodule(str(value.target))).__name__})"
    if value.op == "call_function":
        return f"the function {getattr(value.target, '__name__', value.target)}"
    if value.op == "call_method":
        return f"the method .{value.target}()"
    return f"{value.op} {value.target}"


def _shape_reason(model: nn.Module, bn: nn.Module, source: fx.Node) -> str | None:
    """With shape propagation: why the BN does not normalize the producer's channel axis."""
    meta = source.meta.get("tensor_meta")
    if meta is None:
        return None
    rank = len(meta.shape)
    axis = view(bn).axis
    axis = (axis if isinstance(axis, int) else axis[0]) % rank
    spec = _producer_spec(model.get_submodule(str(source.target)))
    channel = spec.channel_axis % rank if spec is not None else axis
    if axis != channel:
        return (f"on the example input it normalizes axis {axis} of a {rank}D tensor, "
                f"not {source.target}'s channel axis {channel}")
    return None


def _plan_chains(model: nn.Module, example_input: Any) -> Plan:
    """Pairs found in chain containers, for a model torch.fx cannot trace."""
    bns = dict(batch_norm_layers(model))
    candidates: dict[str, str] = {}  # bn -> producer
    reasons: dict[str, str] = {}
    shared = _shared_modules(model)
    for container_name, container in model.named_modules():
        segments = _segments(container)
        if segments is None:
            continue
        for segment in segments:
            previous: tuple[str, nn.Module] | None = None
            for child_name, child in segment:
                name = _join(container_name, child_name)
                if isinstance(child, nn.Identity):
                    continue
                if name in bns:
                    producer = _last_leaf(*previous) if previous is not None else None
                    reason = _reason(child, producer, shared)
                    if reason is None:
                        candidates[name] = producer[0]
                    else:
                        reasons[name] = reason
                previous = (name, child)
    if example_input is not None and candidates:
        for bn_name, reason in _check_on_input(model, candidates, example_input).items():
            del candidates[bn_name]
            reasons[bn_name] = reason
    pairs = [(name, candidates[name]) for name in bns if name in candidates]
    unfolded = [Unfolded(name, reasons.get(name, "not inside an nn.Sequential or registered "
                                                 "chain container, so what feeds it is unknown"))
                for name in bns if name not in candidates]
    return pairs, unfolded


def _reason(bn: nn.Module, producer: tuple[str, nn.Module] | None,
            shared: set[int]) -> str | None:
    """Why ``bn`` cannot be folded into ``producer``, or None."""
    if producer is None:
        return "it is the first layer of its container"
    producer_name, module = producer
    spec = _producer_spec(module)
    if spec is None:
        return (f"it follows {producer_name or 'the model'} ({type(module).__name__}), not a "
                "Linear/Conv layer")
    if spec.check is not None and (problem := spec.check(module)) is not None:
        return f"its producer {producer_name} ({type(module).__name__}) {problem}"
    if id(module) in shared or id(bn) in shared:
        return f"{producer_name} or the BN layer is used more than once in the model"
    layer = view(bn)
    if layer.mean is None:
        return ("it has no moving statistics (track_running_stats=False uses batch "
                "statistics in eval mode)" if layer.is_torch else "it is not built yet")
    axes = (layer.axis,) if isinstance(layer.axis, int) else tuple(layer.axis)
    if len(axes) != 1:
        return f"it keeps several axes {axes}; only one channel axis can be folded"
    channels = module.weight.shape[0]
    if layer.mean.numel() != channels:
        return f"it has {layer.mean.numel()} features but {producer_name} has {channels} outputs"
    if not _axis_matches(axes[0], spec):
        return (f"it normalizes axis {axes[0]}, not the channel axis {spec.channel_axis} of "
                f"{producer_name}'s output")
    return None


def _axis_matches(axis: int, spec: Producer) -> bool:
    if spec.output_rank is not None:
        return axis % spec.output_rank == spec.channel_axis % spec.output_rank
    # Unknown rank (Linear): -1 always matches; axis 1 matches (N, F) outputs (assumed).
    return axis in (-1, 1) if spec.channel_axis == -1 else axis == spec.channel_axis


def _check_on_input(model: nn.Module, candidates: dict[str, str], example_input: Any) -> dict[str, str]:
    """Run one eval forward on a copy; pairs whose tensors do not line up, with why."""
    probe = copy.deepcopy(model).eval()
    outputs: dict[str, tuple[int, int]] = {}
    inputs: dict[str, tuple[int, int, int]] = {}
    handles = []
    for bn_name, producer_name in candidates.items():
        def after(module: nn.Module, args: Any, output: Tensor, name: str = producer_name) -> None:
            outputs[name] = (id(output), output.dim())

        def before(module: nn.Module, args: Any, name: str = bn_name) -> None:
            axis = view(module).axis
            axis = axis if isinstance(axis, int) else axis[0]
            inputs[name] = (id(args[0]), args[0].dim(), axis % args[0].dim())

        handles.append(probe.get_submodule(producer_name).register_forward_hook(after))
        handles.append(probe.get_submodule(bn_name).register_forward_pre_hook(before))
    with torch.no_grad():
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        probe(*args)
    problems = {}
    for bn_name, producer_name in candidates.items():
        if bn_name not in inputs or producer_name not in outputs:
            problems[bn_name] = "the example input did not reach it"
            continue
        tensor_id, rank, axis = inputs[bn_name]
        spec = _producer_spec(probe.get_submodule(producer_name))
        if tensor_id != outputs[producer_name][0]:
            problems[bn_name] = f"its input is not {producer_name}'s output on the example input"
        elif axis != spec.channel_axis % rank:
            problems[bn_name] = (f"on the example input it normalizes axis {axis} of a {rank}D "
                                 f"tensor, not {producer_name}'s channel axis {spec.channel_axis % rank}")
    return problems


def _segments(module: nn.Module) -> list[Sequence[tuple[str, nn.Module]]] | None:
    for cls in type(module).__mro__:
        if cls in _CHAINS:
            # A subclass with its own forward may do anything between the children.
            if type(module).forward is not cls.forward:
                return None
            return list(_CHAINS[cls](module))
    return None


def _producer_spec(module: nn.Module) -> Producer | None:
    for cls in type(module).__mro__:
        if cls in _PRODUCERS:
            if type(module).forward is not cls.forward:
                return None
            return _PRODUCERS[cls]
    return None


def _last_leaf(name: str, module: nn.Module) -> tuple[str, nn.Module]:
    """The layer whose output a child's output is: nested Sequentials end in their last child."""
    while isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        children = [(n, m) for n, m in module.named_children() if not isinstance(m, nn.Identity)]
        if not children:
            break
        child_name, module = children[-1]
        name = _join(name, child_name)
    return name, module


def _shared_modules(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        seen[id(module)] = seen.get(id(module), 0) + 1
    for _, parameter in model.named_parameters(remove_duplicate=False):
        seen[id(parameter)] = seen.get(id(parameter), 0) + 1
    shared = {key for key, n in seen.items() if n > 1}
    # A module whose weight is tied to another module's counts as shared.
    for _, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and id(weight) in shared:
            shared.add(id(module))
    return shared


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ------------------------------------------------------------------ applying
def _fold_pair(producer: nn.Module, bn: nn.Module) -> None:
    layer = view(bn)
    weight: Tensor = producer.weight
    channels = weight.shape[0]
    f64 = {"dtype": torch.float64, "device": weight.device}
    mean = layer.mean.detach().to(**f64).reshape(channels)
    variance = layer.variance.detach().to(**f64).reshape(channels)
    gamma = torch.ones(channels, **f64) if layer.gamma is None else layer.gamma.detach().to(**f64).reshape(channels)
    beta = torch.zeros(channels, **f64) if layer.beta is None else layer.beta.detach().to(**f64).reshape(channels)
    scale = gamma * torch.rsqrt(variance + layer.epsilon)
    bias = torch.zeros(channels, **f64) if producer.bias is None else producer.bias.detach().to(**f64)
    new_weight = weight.detach().to(torch.float64) * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    new_bias = (bias - mean) * scale + beta
    with torch.no_grad():
        weight.copy_(new_weight.to(weight.dtype))
        if producer.bias is None:
            producer.bias = nn.Parameter(new_bias.to(weight.dtype),
                                         requires_grad=weight.requires_grad)
        else:
            producer.bias.copy_(new_bias.to(producer.bias.dtype))


def _replace(model: nn.Module, name: str, replacement: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, replacement)

