"""Variants as edits of a base layer list.

An edit is one dict with exactly one operation key::

    {insert_after = 0, layer = {type = "BatchNormalization"}}
    {insert_before = 2, layers = [{type = "BatchNormalization"}, {type = "Activation", activation = "relu"}]}
    {replace = 1, layer = {type = "Dense", units = 64}}
    {remove = 2}
    {set = 0, args = {activation = "linear"}}

The target of an operation selects entries of the *base* list:

- an integer index (negative counts from the end, like Python);
- a layer type, spelled exactly as the registry does (``"Dense"``, ``"Conv2D"``):
  every entry of that type, e.g. ``{insert_after = "Conv2D", layer = {type = "BatchNormalization"}}``
  puts a BatchNormalization after each convolution;
- a layer name: an explicit ``name`` or the Keras auto-name the entry gets in the
  base model (``"dense"``, ``"dense_1"``, ``"conv2d_2"``; see :func:`layer_names`).
  Type names are CamelCase and auto-names snake_case, so they do not clash; a layer
  explicitly *named* like a type (``name = "Dense"``) is reached by its index;
- a table ``{type = "BatchNormalization"}`` (every layer of that type) or
  ``{name = "conv1_bn"}`` (one layer by name), e.g.
  ``{set = {type = "BatchNormalization"}, args = {momentum = 0.8}}`` sets the momentum
  of every BN layer;
- a list of the above (their union).

The base may also be a :class:`~bnlab.models.GraphSpec` (a Functional model, e.g. read
from a Keras file): entries are its nodes in order, names are the node names, and the
result is a new GraphSpec. ``insert_after`` feeds the new layers from the target and
rewires the target's consumers (and the model outputs) to the last new layer;
``insert_before`` and ``remove`` apply to single-input nodes; a replacement keeps the
target's inputs and, for its last layer, the target's name (so consumers keep theirs).
New nodes are named like Keras names layers (``batch_normalization_3``), unique in the graph.

All edits refer to the base list, so their order does not shift indices. Several
inserts at one place keep the order of the edits. ``set`` merges arguments (later
edits win). Conflicts are errors: two ``replace``/``remove`` of one entry, or a
``set`` of an entry that is replaced or removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bnlab.models.arguments import received
from bnlab.models.errors import SpecError
from bnlab.models.graph import GraphNode, GraphSpec
from bnlab.models.registry import list_layer_types
from bnlab.models.spec import LayerSpec, auto_name, check_sequence, layer_names, parse_layer

__all__ = ["apply_edits"]

_OPS = ("insert_after", "insert_before", "replace", "remove", "set")
_KEYS = {
    "insert_after": {"layer", "layers"},
    "insert_before": {"layer", "layers"},
    "replace": {"layer", "layers"},
    "remove": set(),
    "set": {"args"},
}


def _describe(base: Sequence[LayerSpec], names: Sequence[str | None]) -> str:
    return ", ".join(
        f"[{i}] {name or 'input'} ({spec.type})"
        for i, (spec, name) in enumerate(zip(base, names, strict=True))
    )


def _targets(
    target: Any, base: Sequence[LayerSpec], names: Sequence[str | None], where: str
) -> list[int]:
    """Indices of the base list selected by ``target`` (see the module docstring)."""
    n = len(base)
    if isinstance(target, list | tuple):
        if not target:
            raise SpecError(f"{where}: expected at least one target in the list; got []")
        found = {i for t in target for i in _targets(t, base, names, where)}
        return sorted(found)
    if isinstance(target, Mapping):
        if len(target) != 1 or next(iter(target)) not in ("type", "name"):
            raise SpecError(
                f"{where}: a target table has one key, 'type' or 'name', e.g. "
                f'{{type = "BatchNormalization"}}; got {dict(target)!r}'
            )
        key, value = next(iter(target.items()))
        if key == "type" and value not in list_layer_types():
            raise SpecError(
                f"{where}.type: unknown layer type {value!r}; choose from: "
                f"{', '.join(list_layer_types())}"
            )
        if not isinstance(value, str) or (key == "name" and value not in names):
            raise SpecError(
                f"{where}.{key}: no layer named {value!r} in the base list; it has: "
                f"{_describe(base, names)}"
            )
        return _targets(value, base, names, where)
    if isinstance(target, int) and not isinstance(target, bool):
        if not -n <= target < n:
            raise SpecError(
                f"{where}: index {target} is out of range for the base list of {n} entries; "
                f"use 0..{n - 1} (or -{n}..-1): {_describe(base, names)}"
            )
        return [target % n]
    if isinstance(target, str):
        if target in list_layer_types():
            found = [i for i, spec in enumerate(base) if spec.type == target]
            if not found:
                raise SpecError(
                    f"{where}: no {target} layer in the base list; it has: {_describe(base, names)}"
                )
            return found
        if target in names:
            return [names.index(target)]
        raise SpecError(
            f"{where}: no layer named {target!r} and no such layer type in the base list; "
            f"use an index, a type or a name: {_describe(base, names)}"
        )
    raise SpecError(
        f"{where}: expected an index, a layer type, a layer name, a table {{type = ...}} or "
        f"{{name = ...}}, or a list of them; got {received(target)}"
    )


def _new_layers(edit: Mapping[str, Any], where: str) -> list[LayerSpec]:
    if ("layer" in edit) == ("layers" in edit):
        raise SpecError(
            f"{where}: give exactly one of 'layer' (a table) or 'layers' (a list of tables); "
            f"got keys {sorted(edit)}"
        )
    if "layer" in edit:
        return [parse_layer(edit["layer"], where=f"{where}.layer")]
    raw = edit["layers"]
    if isinstance(raw, str | Mapping) or not isinstance(raw, Sequence) or not raw:
        raise SpecError(
            f"{where}.layers: expected a non-empty list of layer tables; got {received(raw)}"
        )
    return [parse_layer(item, where=f"{where}.layers[{k}]") for k, item in enumerate(raw)]


@dataclass
class _Changes:
    """What the edits do to each base entry (index -> ...), collected before applying."""

    before: dict[int, list[LayerSpec]] = field(default_factory=dict)
    after: dict[int, list[LayerSpec]] = field(default_factory=dict)
    replaced: dict[int, tuple[int, list[LayerSpec]]] = field(default_factory=dict)
    removed: dict[int, int] = field(default_factory=dict)
    changes: dict[int, list[tuple[int, Mapping[str, Any]]]] = field(default_factory=dict)

    def spec(self, i: int, spec: LayerSpec, where: str) -> LayerSpec:
        """Entry ``i`` with its ``set`` edits applied."""
        for j, args in self.changes.get(i, []):
            spec = spec.replace_args(args, where=f"{where}[{j}].args")
        return spec


def _collect(
    base: Sequence[LayerSpec], names: Sequence[str | None], edits: Sequence[Mapping[str, Any]],
    where: str,
) -> _Changes:
    """Validate the edits and sort them by the base entry they touch."""
    if isinstance(edits, str | Mapping) or not isinstance(edits, Sequence):
        raise SpecError(f"{where}: expected a list of edit tables; got {received(edits)}")
    out = _Changes()
    for j, edit in enumerate(edits):
        here = f"{where}[{j}]"
        if not isinstance(edit, Mapping):
            raise SpecError(
                f"{here}: expected an edit table such as {{remove = 1}}; got {received(edit)}"
            )
        ops = [k for k in _OPS if k in edit]
        if len(ops) != 1:
            raise SpecError(
                f"{here}: expected exactly one operation of: {', '.join(_OPS)}; "
                f"got keys {sorted(edit)}"
            )
        op = ops[0]
        extra = set(edit) - {op} - _KEYS[op]
        if extra:
            allowed = sorted(_KEYS[op]) or ["nothing else"]
            raise SpecError(
                f"{here}: unknown key(s) {sorted(extra)} for '{op}'; allowed: {', '.join(allowed)}"
            )
        indices = _targets(edit[op], base, names, f"{here}.{op}")

        if op in ("insert_after", "insert_before"):
            layers = _new_layers(edit, here)
            slots = out.after if op == "insert_after" else out.before
            for i in indices:
                slots.setdefault(i, []).extend(layers)
        elif op in ("replace", "remove"):
            layers = _new_layers(edit, here) if op == "replace" else []
            for i in indices:
                previous = out.replaced.get(i, (out.removed.get(i), None))[0]
                if previous is not None or i in out.changes:
                    other = previous if previous is not None else out.changes[i][0][0]
                    raise SpecError(
                        f"{here}: entry [{i}] ({names[i] or 'input'}) is already changed by "
                        f"{where}[{other}]; {op} cannot be combined with another edit of the same entry"
                    )
                if op == "replace":
                    out.replaced[i] = (j, layers)
                else:
                    out.removed[i] = j
        else:  # set
            if "args" not in edit:
                raise SpecError(
                    f"{here}: 'set' needs 'args', e.g. {{set = 0, args = {{units = 32}}}}"
                )
            args = edit["args"]
            if not isinstance(args, Mapping):
                raise SpecError(f"{here}.args: expected a table of arguments; got {received(args)}")
            for i in indices:
                other = out.replaced.get(i, (out.removed.get(i), None))[0]
                if other is not None:
                    raise SpecError(
                        f"{here}: entry [{i}] ({names[i] or 'input'}) is replaced or removed by "
                        f"{where}[{other}]; cannot also set its arguments"
                    )
                out.changes.setdefault(i, []).append((j, args))
    return out


def apply_edits(
    base: Sequence[LayerSpec] | GraphSpec, edits: Sequence[Mapping[str, Any]], *, where: str
) -> list[LayerSpec] | GraphSpec:
    """Return a new layer list (or GraphSpec): ``base`` with ``edits`` applied (see the
    module docstring).

    Args:
        base: the parsed base list, or a GraphSpec (unchanged).
        edits: edit dicts; an empty list returns a copy of ``base``.
        where: location of the edit list for messages, e.g.
            ``"circles.toml: variants.bn_after.edits"``; entries add ``[j]``.

    Example::

        >>> base = parse_layers([{"type": "Dense", "units": 8, "activation": "relu"},
        ...                      {"type": "Dense", "units": 1}], where="layers")
        >>> apply_edits(base, [{"set": 0, "args": {"activation": "linear"}},
        ...                    {"insert_after": 0, "layer": {"type": "BatchNormalization"}}],
        ...             where="edits")  # Dense(linear), BatchNormalization, Dense

    Raises:
        SpecError: unknown operation or key, bad target (lists the base entries),
            invalid layer or arguments, conflicting edits, or a result that is no valid
            model (e.g. Input not first; a graph edit of a node with several inputs).
    """
    if isinstance(base, GraphSpec):
        return _edit_graph(base, edits, where)
    base = list(base)
    changes = _collect(base, layer_names(base), edits, where)
    result: list[LayerSpec] = []
    for i, spec in enumerate(base):
        result.extend(changes.before.get(i, []))
        if i in changes.replaced:
            result.extend(changes.replaced[i][1])
        elif i not in changes.removed:
            result.append(changes.spec(i, spec, where))
        result.extend(changes.after.get(i, []))
    check_sequence(result, where=f"{where} (result)")
    return result


def _edit_graph(graph: GraphSpec, edits: Sequence[Mapping[str, Any]], where: str) -> GraphSpec:
    """:func:`apply_edits` on a graph's nodes; see the module docstring for the wiring."""
    nodes = list(graph.nodes)
    changes = _collect([n.layer for n in nodes], [n.name for n in nodes], edits, where)
    used = {name for name, _ in graph.inputs} | {n.name for n in nodes}
    counts: dict[str, int] = {}

    def fresh(spec: LayerSpec) -> str:
        explicit = spec.args.get("name")
        if explicit is not None:
            if explicit in used:
                raise SpecError(f"{where}: the new layer name {explicit!r} is already used")
            used.add(explicit)
            return explicit
        name = auto_name(spec.layer_type.auto_name, counts, used)
        used.add(name)
        return name

    def chain(specs: list[LayerSpec], inbound: tuple[str, ...], last: str | None = None,
              ) -> list[GraphNode]:
        out = []
        for k, spec in enumerate(specs):
            name = last if last is not None and k == len(specs) - 1 else fresh(spec)
            out.append(GraphNode(name, spec, inbound))
            inbound = (name,)
        return out

    def single_input(i: int, op: str) -> str:
        if len(nodes[i].inbound) != 1:
            raise SpecError(
                f"{where}: cannot {op} node {nodes[i].name!r}: it has {len(nodes[i].inbound)} "
                "inputs; only single-input nodes can be"
            )
        return nodes[i].inbound[0]

    output_of: dict[str, str] = {}  # base node -> the tensor its consumers now read
    # (node, whether its inbound names base tensors that must follow output_of)
    placed: list[tuple[GraphNode, bool]] = []
    for i, node in enumerate(nodes):
        if i in changes.removed:
            output_of[node.name] = single_input(i, "remove")
            continue
        if i in changes.replaced:
            replacement = changes.replaced[i][1]
            explicit = replacement[-1].args.get("name")
            group = chain(replacement, node.inbound, last=None if explicit else node.name)
            placed += [(n, k == 0) for k, n in enumerate(group)]
        else:
            before = chain(changes.before.get(i, []), (single_input(i, "insert before"),)
                           if i in changes.before else ())
            inbound = (before[-1].name,) if before else node.inbound
            own = GraphNode(node.name, changes.spec(i, node.layer, where), inbound)
            after = chain(changes.after.get(i, []), (node.name,))
            placed += [(n, k == 0) for k, n in enumerate(before)]
            placed += [(own, not before)] + [(n, False) for n in after]
            group = [*before, own, *after]
        output_of[node.name] = group[-1].name

    def follow(name: str) -> str:
        """A removed node's consumers read its input (which may be removed too)."""
        seen = set()
        while output_of.get(name, name) != name and name not in seen:
            seen.add(name)
            name = output_of[name]
        return name

    result = tuple(
        GraphNode(n.name, n.layer, tuple(follow(s) for s in n.inbound)) if rewire else n
        for n, rewire in placed
    )
    return GraphSpec(graph.name, graph.inputs, result, tuple(follow(o) for o in graph.outputs))
