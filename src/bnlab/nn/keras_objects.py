"""Resolve Keras-style object specs (initializers, regularizers, constraints).

A spec is one of:

- a lowercase name: ``"he_uniform"``, ``"l2"``, ``"non_neg"``;
- a name with arguments: ``"constant(0.5)"``, ``"l1_l2(l1=1e-5, l2=1e-4)"``,
  ``"min_max_norm(0.5, 2.0)"`` — numbers, True/False/None only;
- a dict ``{"name": "max_norm", "max_value": 3.0}`` (what a TOML table gives);
- Keras's serialized form ``{"class_name": "RandomNormal", "config": {"stddev": 0.1}}``
  (Keras 3 adds ``"module": "keras.initializers"`` and ``"registered_name": None``;
  tf.keras writes the first two keys only): the class name in snake case is the
  registry name (``GlorotUniform`` -> ``glorot_uniform``, ``L1L2`` -> ``l1_l2``), the
  config its arguments. ``seed`` is ignored (bnlab draws from torch's RNG); a custom
  object (a ``registered_name`` or ``module`` outside Keras) is refused;
- an instance or any callable, returned as is;
- None (nothing).

Each family keeps one registry ``{name: factory}``; a miss lists the valid names.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

Spec = str | Mapping[str, Any] | Callable[..., Any] | None


def resolve(spec: Spec, registry: Mapping[str, Callable[..., Any]], family: str) -> Any:
    """Build the object a spec names, or return None / the callable unchanged."""
    if spec is None or (callable(spec) and not isinstance(spec, str)):
        return spec
    name, args, kwargs = _parse(spec, family)
    key = name.strip().lower()
    if key not in registry:
        raise ValueError(f"unknown {family} {name!r}; choose from: {', '.join(sorted(registry))}")
    try:
        return registry[key](*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for {family} {name!r} in {spec!r}: {error}") from None


def serialize(spec: Spec, registry: Mapping[str, Callable[..., Any]], family: str,
              ) -> dict[str, Any] | None:
    """Keras 3's serialized form of a spec (None stays None), every argument filled in::

        "l2(1e-4)" -> {"module": "keras.regularizers", "class_name": "L2",
                       "config": {"l2": 0.0001}, "registered_name": None}

    Raises:
        ValueError: an invalid spec, or a Python callable (it has no Keras form).
    """
    if spec is None:
        return None
    if callable(spec) and not isinstance(spec, str):
        raise ValueError(
            f"the {family} {spec!r} is a Python callable and cannot be written as a Keras "
            f"config; give it by name, e.g. {sorted(registry)[0]!r}"
        )
    resolve(spec, registry, family)  # validates
    name, args, kwargs = _parse(spec, family)
    if isinstance(spec, Mapping) and "class_name" in spec:
        class_name = spec["class_name"]
    else:
        class_name = "".join(part.capitalize() for part in name.strip().lower().split("_"))
    bound = inspect.signature(registry[name.strip().lower()]).bind(*args, **kwargs)
    bound.apply_defaults()
    return {"module": f"keras.{family}s", "class_name": class_name,
            "config": dict(bound.arguments), "registered_name": None}


def _parse(spec: str | Mapping[str, Any], family: str,
           ) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """A name, "name(args)", a table with 'name' or Keras's dict -> (name, args, kwargs)."""
    if isinstance(spec, str):
        name, args, kwargs = _parse_call(spec, family)
    elif isinstance(spec, Mapping) and "class_name" in spec:
        name, args, kwargs = _keras_serialized(spec, family)
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(
                f"a {family} given as a table needs a 'name' key; got keys {sorted(spec)} "
                "(Keras's serialized form has 'class_name' and 'config')"
            )
        name, args, kwargs = str(spec["name"]), (), {k: v for k, v in spec.items() if k != "name"}
    else:
        raise TypeError(
            f"a {family} must be a name, 'name(args)', a table with 'name', or a callable; "
            f"got {spec!r} of type {type(spec).__name__}"
        )
    return name, args, kwargs


_KERAS_KEYS = frozenset({"module", "class_name", "config", "registered_name"})
#: Keras config entries with no effect here when None (seed: bnlab uses torch's RNG).
_IGNORED = {"seed": "any", "input_axes": None, "output_axes": None}


def snake_case(class_name: str) -> str:
    """Keras's class name -> the registry name: ``GlorotUniform`` -> ``glorot_uniform``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()


def _keras_serialized(spec: Mapping[str, Any], family: str) -> tuple[str, tuple[()], dict[str, Any]]:
    """``{"class_name": ..., "config": {...}}`` -> (registry name, (), kwargs)."""
    extra = set(spec) - _KERAS_KEYS
    if extra:
        raise ValueError(
            f"unknown key(s) {sorted(extra)} in the Keras {family} {dict(spec)!r}; "
            f"allowed: {', '.join(sorted(_KERAS_KEYS))}"
        )
    class_name, config = spec["class_name"], spec.get("config") or {}
    module, registered = spec.get("module"), spec.get("registered_name")
    custom = (registered is not None and registered != class_name) or (
        module is not None and not str(module).startswith("keras")
    )
    if custom or not isinstance(class_name, str) or not isinstance(config, Mapping):
        raise ValueError(
            f"the {family} {dict(spec)!r} is a custom object or malformed; only Keras's own "
            f"{family}s can be read (class_name a string, config a table)"
        )
    kwargs = {}
    for key, value in config.items():
        if key in _IGNORED and (_IGNORED[key] == "any" or value is None):
            continue
        kwargs[key] = value
    return snake_case(class_name), (), kwargs


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
