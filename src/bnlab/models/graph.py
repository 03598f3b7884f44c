"""Graph (Keras Functional) models: :class:`GraphSpec` -> :class:`GraphModel`.

A graph is a list of named nodes; each node is one layer applied to the tensors named
in ``inbound`` (model inputs or earlier nodes, in Keras's call order; merge layers
such as Add, Concatenate and Multiply take several). A tensor may feed any number of
nodes (residual connections). Node names are the Keras layer names.

Layouts (see :mod:`bnlab.models.layout`) are planned per edge when the model is built:
each tensor has a layout, channel-first or channel-last; a node permutes an input
only when its layer needs the other layout (a merge layer brings its inputs to the
layout of its first input), and outputs leave channel-last, equal to Keras's. Keras's
channel-axis arguments (Concatenate's ``axis``, BatchNormalization's ``axis``,
Softmax's ``axis``) are mapped to the layout the layer receives.

Example::

    spec = GraphSpec(
        "residual", inputs=(("x", (8, 8, 3)),),
        nodes=(GraphNode("conv", parse_layer({"type": "Conv2D", "filters": 3,
                         "kernel_size": 3, "padding": "same"}, where="conv"), ("x",)),
               GraphNode("add", parse_layer({"type": "Add"}, where="add"), ("x", "conv"))),
        outputs=("add",))
    model = build_graph_model(spec, seed=0)
    y = model(torch.randn(2, 8, 8, 3))          # (2, 8, 8, 3)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from bnlab.models.base import KerasModel
from bnlab.models.builder import build_layer
from bnlab.models.errors import SpecError
from bnlab.models.layer_type import MaskRule, Shape
from bnlab.models.layout import plan_permute, to_last
from bnlab.models.masks import call_with_mask, combine_masks, warn_dropped_mask
from bnlab.models.sequential import check_input
from bnlab.models.spec import LayerSpec

__all__ = ["GraphModel", "GraphNode", "GraphSpec", "build_graph_model", "graph_from_wiring"]

_RESERVED = frozenset(dir(nn.ModuleDict()))


@dataclass(frozen=True)
class GraphNode:
    """One layer of a graph: its (Keras) name, its spec, the names of its input tensors."""

    name: str
    layer: LayerSpec
    inbound: tuple[str, ...]


@dataclass(frozen=True)
class GraphSpec:
    """A Functional model: named inputs with Keras shapes (no batch axis; None for an
    unknown size), nodes, and the names of the output tensors."""

    name: str
    inputs: tuple[tuple[str, tuple[int | None, ...]], ...]
    nodes: tuple[GraphNode, ...]
    outputs: tuple[str, ...] = field(default=())

    def wiring(self) -> dict[str, Any]:
        """Everything but the node layers, JSON-ready: the name, the inputs and their
        shapes, each node's name and input tensors (in ``nodes`` order), the outputs.
        :func:`graph_from_wiring` puts a graph back together from it and the layers."""
        return {
            "name": self.name,
            "inputs": [[name, list(shape)] for name, shape in self.inputs],
            "nodes": [{"name": node.name, "inbound": list(node.inbound)} for node in self.nodes],
            "outputs": list(self.outputs),
        }

    def with_input_shape(self, shape: Sequence[int | None]) -> GraphSpec:
        """This graph with the shape of its one input replaced (no batch axis)."""
        if len(self.inputs) != 1:
            raise SpecError(
                f"graph {self.name!r} has {len(self.inputs)} inputs; only the shape of a "
                "graph with one input can be replaced"
            )
        return replace(self, inputs=((self.inputs[0][0], tuple(shape)),))


def graph_from_wiring(wiring: Mapping[str, Any], layers: Sequence[LayerSpec], *,
                      where: str) -> GraphSpec:
    """The :class:`GraphSpec` of :meth:`GraphSpec.wiring` and the node layers, in order.

    Raises:
        SpecError: a wiring that is not of that form, or a layer count that differs from
            its node count (names and connections are checked when the graph is built).
    """
    def strings(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    inputs, nodes = wiring.get("inputs"), wiring.get("nodes")
    well_formed = (
        isinstance(wiring.get("name"), str)
        and isinstance(inputs, list)
        and all(isinstance(i, list) and len(i) == 2 and isinstance(i[0], str)
                and isinstance(i[1], list) for i in inputs)
        and isinstance(nodes, list)
        and all(isinstance(n, dict) and isinstance(n.get("name"), str) and strings(n.get("inbound"))
                for n in nodes)
        and strings(wiring.get("outputs"))
    )
    if not well_formed:
        raise SpecError(
            f"{where}: expected a graph's wiring: name, inputs [[name, shape]], nodes "
            f"[{{name, inbound}}] and outputs; got {wiring!r:.200}"
        )
    if len(nodes) != len(layers):
        raise SpecError(f"{where}: the graph has {len(nodes)} nodes but {len(layers)} layers")
    return GraphSpec(
        wiring["name"],
        tuple((name, tuple(shape)) for name, shape in inputs),
        tuple(GraphNode(n["name"], layer, tuple(n["inbound"]))
              for n, layer in zip(nodes, layers, strict=True)),
        tuple(wiring["outputs"]),
    )


class _Plan(NamedTuple):
    """How a node runs: its inputs, the permutation of each, its mask rule."""

    name: str
    inbound: tuple[str, ...]
    permutes: tuple[tuple[int, ...] | None, ...]
    mask_rule: MaskRule
    merge: bool


class GraphModel(KerasModel):
    """A Functional model built by :func:`build_graph_model`; Keras's channel-last in and out.

    Attributes:
        layers: ``nn.ModuleDict`` node name -> module, in the spec's order.
        specs: node name -> :class:`LayerSpec`.
        input_names, input_shapes: the model inputs, in call order.
        output_names: the output tensors.
        output_shapes: node name -> Keras output shape without the batch axis.
        inbound: node name -> names of its input tensors (Keras's "Connected to").
        name: model name shown by :func:`bnlab.models.summary`.

    ``forward(*inputs)`` takes one channel-last tensor per input, in ``input_names``
    order, and returns one tensor (one output) or a tuple.
    """

    def __init__(self, spec: GraphSpec, modules: dict[str, nn.Module],
                 shapes: dict[str, Shape], plans: list[_Plan],
                 final_permutes: tuple[tuple[int, ...] | None, ...]) -> None:
        super().__init__()
        self.name = spec.name
        self.layers = nn.ModuleDict({node.name: modules[node.name] for node in spec.nodes})
        self.specs: dict[str, LayerSpec] = {node.name: node.layer for node in spec.nodes}
        self.inbound: dict[str, tuple[str, ...]] = {n.name: n.inbound for n in spec.nodes}
        self.input_names = tuple(name for name, _ in spec.inputs)
        self.input_shapes: tuple[Shape, ...] = tuple(tuple(s) for _, s in spec.inputs)
        self.output_names = spec.outputs
        self.output_shapes = {node.name: shapes[node.name] for node in spec.nodes}
        self._plans = plans
        self._final_permutes = final_permutes

    @property
    def output_shape(self) -> Shape | tuple[Shape, ...]:
        """Keras output shape(s) without the batch axis (a tuple of them for several)."""
        shapes = tuple(self._shape_of(name) for name in self.output_names)
        return shapes[0] if len(shapes) == 1 else shapes

    def _shape_of(self, name: str) -> Shape:
        if name in self.output_shapes:
            return self.output_shapes[name]
        return self.input_shapes[self.input_names.index(name)]

    def named_layers(self) -> list[tuple[str, LayerSpec, nn.Module]]:
        """``(name, spec, module)`` of every node, in the spec's (Keras's) order."""
        return [(name, self.specs[name], module) for name, module in self.layers.items()]

    def chains(self) -> list[list[tuple[str, nn.Module]]]:
        """The model's chains, for :func:`bnlab.nn.fold.fold`: runs of nodes where each
        node's output feeds only the next node, unpermuted; qualified names
        (``"layers.conv1_bn"``), in call order."""
        uses = Counter(s for plan in self._plans for s in plan.inbound)
        uses.update(self.output_names)
        segments: list[list[tuple[str, nn.Module]]] = []
        tail: dict[str, int] = {}  # node at the end of a segment -> the segment
        for plan in self._plans:
            entry = (f"layers.{plan.name}", self.layers[plan.name])
            source = plan.inbound[0]
            if not plan.merge and plan.permutes == (None,) and uses[source] == 1 and source in tail:
                index = tail.pop(source)
                segments[index].append(entry)
            else:
                segments.append([entry])
                index = len(segments) - 1
            tail[plan.name] = index
        return segments

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(
                f"{self.name} takes {len(self.input_names)} input(s) "
                f"({', '.join(self.input_names)}); got {len(inputs)}"
            )
        values: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for name, shape, x in zip(self.input_names, self.input_shapes, inputs, strict=True):
            check_input(f"{self.name} input {name!r}", shape, x)
            values[name] = (x, None)
        for plan in self._plans:
            xs = []
            for source, permute in zip(plan.inbound, plan.permutes, strict=True):
                x = values[source][0]
                xs.append(x if permute is None else x.permute(permute))
            masks = [values[source][1] for source in plan.inbound]
            module = self.layers[plan.name]
            if plan.merge:
                values[plan.name] = (module(xs), combine_masks(masks))
            else:
                values[plan.name] = call_with_mask(module, plan.mask_rule, xs[0], masks[0])
        outputs = []
        for name, permute in zip(self.output_names, self._final_permutes, strict=True):
            y = values[name][0]
            outputs.append(y if permute is None else y.permute(permute))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, inputs={dict(zip(self.input_names, self.input_shapes, strict=True))}"


def _order(spec: GraphSpec, where: str) -> list[int]:
    """Node indices in an order where every node comes after its inputs (stable)."""
    known = {name for name, _ in spec.inputs}
    names = [node.name for node in spec.nodes]
    for i, node in enumerate(spec.nodes):
        for source in node.inbound:
            if source not in known and source not in names:
                raise SpecError(
                    f"{where}.nodes[{i}] ({node.name}): unknown input tensor {source!r}; "
                    f"choose from the inputs ({', '.join(n for n, _ in spec.inputs)}) and "
                    f"the nodes"
                )
    order: list[int] = []
    pending = list(range(len(spec.nodes)))
    while pending:
        ready = [i for i in pending if all(s in known for s in spec.nodes[i].inbound)]
        if not ready:
            stuck = ", ".join(spec.nodes[i].name for i in pending)
            raise SpecError(f"{where}: the nodes {stuck} form a cycle; a graph must be acyclic")
        for i in ready:
            known.add(spec.nodes[i].name)
            order.append(i)
        pending = [i for i in pending if i not in ready]
    return order


def _check_names(spec: GraphSpec, where: str) -> None:
    seen: set[str] = set()
    for kind, name in [("input", n) for n, _ in spec.inputs] + [
        ("node", node.name) for node in spec.nodes
    ]:
        if not isinstance(name, str) or not name:
            raise SpecError(f"{where}: {kind} names must be non-empty strings; got {name!r}")
        if name in seen:
            raise SpecError(f"{where}: the name {name!r} is used twice; names must be unique")
        if kind == "node" and name in _RESERVED:
            raise SpecError(
                f"{where}: node name {name!r} is reserved by torch.nn.ModuleDict; choose another"
            )
        seen.add(name)
    if not spec.inputs:
        raise SpecError(f"{where}: a graph needs at least one input; got none")
    if not spec.outputs:
        raise SpecError(f"{where}: a graph needs at least one output; got none")
    for output in spec.outputs:
        if output not in seen:
            raise SpecError(
                f"{where}: unknown output {output!r}; outputs name inputs or nodes"
            )


def _merge_layout(channels_first: list[bool], shapes: list[Shape]) -> bool:
    """A merge computes in the layout of its first input (only tensors of rank >= 3 can be
    channel-first)."""
    return channels_first[0] and all(len(s) >= 2 for s in shapes)


def build_graph_model(spec: GraphSpec, *, seed: int | None = None) -> GraphModel:
    """Build a :class:`GraphModel` from a :class:`GraphSpec`, inferring every shape.

    Args:
        spec: the graph; node layers are parsed :class:`LayerSpec` (use
            :func:`bnlab.models.parse_layer` on Keras configs).
        seed: if given, weights are initialized from ``torch.manual_seed(seed)`` in a
            forked RNG (the global RNG is untouched); None uses the global RNG.

    Raises:
        SpecError: duplicate or unknown names, a cycle, an Input node, a layer that
            does not fit its input shape (one line naming the node).
    """
    if seed is None:
        return _build(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(spec)


def _build(spec: GraphSpec) -> GraphModel:
    where = f"graph {spec.name!r}"
    _check_names(spec, where)
    shapes: dict[str, Shape] = {name: tuple(shape) for name, shape in spec.inputs}
    first: dict[str, bool] = {name: False for name, _ in spec.inputs}
    masked: dict[str, bool] = {name: False for name, _ in spec.inputs}
    modules: dict[str, nn.Module] = {}
    plans: list[_Plan] = []
    for i in _order(spec, where):
        node = spec.nodes[i]
        here = f"{where}.nodes[{i}] ({node.name})"
        layer_type = node.layer.layer_type
        if layer_type.build is None:
            raise SpecError(f"{here}: Input layers belong in the graph's inputs, not its nodes")
        single = layer_type.inputs == 1
        if single and len(node.inbound) != 1:
            raise SpecError(
                f"{here}: {node.layer.type} takes one input tensor; got {len(node.inbound)} "
                f"({', '.join(node.inbound)})"
            )
        in_shapes = [shapes[s] for s in node.inbound]
        layouts = [first[s] for s in node.inbound]
        try:
            if single:
                built = build_layer(node.layer, node.name, in_shapes[0], layouts[0])
                permutes: tuple[tuple[int, ...] | None, ...] = (built.permute,)
            else:
                target = _merge_layout(layouts, in_shapes)
                permutes = tuple(
                    plan_permute("channels_first" if target else "channels_last",
                                 len(s) + 1, cf)[0]
                    for s, cf in zip(in_shapes, layouts, strict=True)
                )
                built = build_layer(node.layer, node.name, tuple(in_shapes), target)
        except (ValueError, TypeError) as error:
            raise SpecError(f"{here}: {error}") from None
        rule = layer_type.mask_rule(built.args)
        has_mask = any(masked[s] for s in node.inbound)
        if has_mask and rule == "drop":
            warn_dropped_mask(here, node.layer.type)
        masked[node.name] = rule == "produce" or (has_mask and rule in ("keep", "use"))
        modules[node.name] = built.module
        shapes[node.name], first[node.name] = built.output_shape, built.channels_first
        plans.append(_Plan(node.name, node.inbound, permutes, rule, not single))
    finals = tuple(to_last(len(shapes[o]) + 1) if first[o] else None for o in spec.outputs)
    return GraphModel(spec, modules, shapes, plans, finals)
