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
- a list of the above (their union).

All edits refer to the base list, so their order does not shift indices. Several
inserts at one place keep the order of the edits. ``set`` merges arguments (later
edits win). Conflicts are errors: two ``replace``/``remove`` of one entry, or a
``set`` of an entry that is replaced or removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bnlab.models.arguments import received
from bnlab.models.errors import SpecError
from bnlab.models.registry import list_layer_types
from bnlab.models.spec import LayerSpec, check_sequence, layer_names, parse_layer

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
        f"{where}: expected an index, a layer type, a layer name or a list of them; "
        f"got {received(target)}"
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


def apply_edits(
    base: Sequence[LayerSpec], edits: Sequence[Mapping[str, Any]], *, where: str
) -> list[LayerSpec]:
    """Return a new layer list: ``base`` with ``edits`` applied (see the module docstring).

    Args:
        base: the parsed base list (unchanged).
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
            model (e.g. Input not first).
    """
    if isinstance(edits, str | Mapping) or not isinstance(edits, Sequence):
        raise SpecError(f"{where}: expected a list of edit tables; got {received(edits)}")
    base = list(base)
    names = layer_names(base)
    n = len(base)
    before: list[list[LayerSpec]] = [[] for _ in range(n)]
    after: list[list[LayerSpec]] = [[] for _ in range(n)]
    replaced: dict[int, tuple[int, list[LayerSpec]]] = {}
    removed: dict[int, int] = {}
    changes: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}

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
            slots = after if op == "insert_after" else before
            for i in indices:
                slots[i].extend(layers)
        elif op in ("replace", "remove"):
            layers = _new_layers(edit, here) if op == "replace" else []
            for i in indices:
                previous = replaced.get(i, (removed.get(i), None))[0]
                if previous is not None or i in changes:
                    other = previous if previous is not None else changes[i][0][0]
                    raise SpecError(
                        f"{here}: entry [{i}] ({names[i] or 'input'}) is already changed by "
                        f"{where}[{other}]; {op} cannot be combined with another edit of the same entry"
                    )
                if op == "replace":
                    replaced[i] = (j, layers)
                else:
                    removed[i] = j
        else:  # set
            if "args" not in edit:
                raise SpecError(
                    f"{here}: 'set' needs 'args', e.g. {{set = 0, args = {{units = 32}}}}"
                )
            args = edit["args"]
            if not isinstance(args, Mapping):
                raise SpecError(f"{here}.args: expected a table of arguments; got {received(args)}")
            for i in indices:
                other = replaced.get(i, (removed.get(i), None))[0]
                if other is not None:
                    raise SpecError(
                        f"{here}: entry [{i}] ({names[i] or 'input'}) is replaced or removed by "
                        f"{where}[{other}]; cannot also set its arguments"
                    )
                changes.setdefault(i, []).append((j, args))

    result: list[LayerSpec] = []
    for i, spec in enumerate(base):
        result.extend(before[i])
        if i in replaced:
            result.extend(replaced[i][1])
        elif i not in removed:
            for j, args in changes.get(i, []):
                spec = spec.replace_args(args, where=f"{where}[{j}].args")
            result.append(spec)
        result.extend(after[i])
    check_sequence(result, where=f"{where} (result)")
    return result
