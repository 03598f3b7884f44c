"""Resolve Keras-style object specs (initializers, regularizers, constraints).

A spec is one of:

- a lowercase name: ``"he_uniform"``, ``"l2"``, ``"non_neg"``;
- a name with arguments: ``"constant(0.5)"``, ``"l1_l2(l1=1e-5, l2=1e-4)"``,
  ``"min_max_norm(0.5, 2.0)"`` — numbers, True/False/None only;
- a dict ``{"name": "max_norm", "max_value": 3.0}`` (what a TOML table gives);
- an instance or any callable, returned as is;
- None (nothing).

Each family keeps one registry ``{name: factory}``; a miss lists the valid names.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

Spec = str | Mapping[str, Any] | Callable[..., Any] | None


def resolve(spec: Spec, registry: Mapping[str, Callable[..., Any]], family: str) -> Any:
    """Build the object a spec names, or return None / the callable unchanged."""
    if spec is None or (callable(spec) and not isinstance(spec, str)):
        return spec
    if isinstance(spec, str):
        name, args, kwargs = _parse_call(spec, family)
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(
                f"a {family} given as a table needs a 'name' key; got keys {sorted(spec)}"
            )
        name, args, kwargs = str(spec["name"]), (), {k: v for k, v in spec.items() if k != "name"}
    else:
        raise TypeError(
            f"a {family} must be a name, 'name(args)', a table with 'name', or a callable; "
            f"got {spec!r} of type {type(spec).__name__}"
        )
    key = name.strip().lower()
    if key not in registry:
        raise ValueError(f"unknown {family} {name!r}; choose from: {', '.join(sorted(registry))}")
    try:
        return registry[key](*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for {family} {name!r} in {spec!r}: {error}") from None


def _parse_call(text: str, family: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """Split ``"name(1, b=2)"`` into its name and literal arguments, safely."""
    text = text.strip()
    if "(" not in text:
        return text, (), {}
    try:
        node = ast.parse(text, mode="eval").body
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise ValueError
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    except (SyntaxError, ValueError):
        raise ValueError(
            f"cannot read the {family} {text!r}; write a name such as 'constant' or a call "
            "with literal arguments such as 'constant(0.5)'"
        ) from None
    return node.func.id, args, kwargs
