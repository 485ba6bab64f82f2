"""Shared by the contract's tests: the comparison of a model class with its CRD schema."""

from __future__ import annotations

import dataclasses
import typing

BOUNDS = ("minimum", "maximum", "minLength", "maxLength", "maxItems", "enum", "pattern")


def _inner(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) else tp


def compare(cls, schema: dict, path: str) -> list[str]:
    """Every disagreement between a model class and its CRD object schema."""
    problems = []
    props = schema.get("properties", {})
    fields = {f.metadata["key"]: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if set(props) != set(fields):
        problems.append(f"{path}: CRD has {sorted(set(props) - set(fields))} only, model has {sorted(set(fields) - set(props))} only")
    for key in sorted(set(props) & set(fields)):
        f, prop, here = fields[key], props[key], f"{path}.{key}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required != (key in schema.get("required", [])):
            problems.append(f"{here}: required in model={required}, in CRD={key in schema.get('required', [])}")
        default = None if required else (f.default if f.default_factory is dataclasses.MISSING else f.default_factory())
        tp = _inner(hints[f.name])
        if dataclasses.is_dataclass(tp):
            if default is not None and prop.get("default", {}) != {}:
                problems.append(f"{here}: CRD default {prop['default']!r} for an object the model defaults field by field")
            problems += compare(tp, prop, here)
            continue
        crd_default = prop.get("default")
        model_default = list(default) if isinstance(default, tuple) else default
        if required:
            model_default = None
        if model_default in ((), [], {}) and crd_default is None:
            model_default = None  # an empty list/object is what "absent" reads as
        if crd_default != model_default:
            problems.append(f"{here}: default in CRD {crd_default!r}, in model {model_default!r}")
        bounds = dict(prop)
        if prop.get("type") == "array":
            bounds.update({k: v for k, v in prop.get("items", {}).items() if k in ("minLength", "maxLength", "pattern")})
        for b in BOUNDS:
            if bounds.get(b) != f.metadata.get(b):
                problems.append(f"{here}: {b} in CRD {bounds.get(b)!r}, in model {f.metadata.get(b)!r}")
    return problems
