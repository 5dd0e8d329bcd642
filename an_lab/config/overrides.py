"""Changing a config tree before it is validated: deep merges, `--set a.b=value` assignments, section shorthands."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from an_lab.config.run_config import RunConfig
from an_lab.errors import UsageError


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value), the value read as YAML (numbers, lists, booleans)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: write KEY=VALUE, for example --set model.an.pooling=mean")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise UsageError(f"--set {text!r}: the value is not valid YAML ({error.problem})") from None
    return key.strip().split("."), value


def set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set {'.'.join(path)}: {part!r} holds a value, not a section")
    node[path[-1]] = value


# Sections that accept a plain value as shorthand for one of their keys: `model: resnet50` is `model: {name: resnet50}`.
SHORTHAND = {"model": "name", "data": "name"}


def normalize_sections(tree: dict, source: str, schema: type[BaseModel] | None = None, prefix: str = "") -> dict:
    """The tree with section shorthands spelled out; a plain value where a section belongs is an error that says how
    to write it (never silently replaced by an empty section)."""
    schema = schema or RunConfig
    out = dict(tree)
    for key, value in tree.items():
        info = schema.model_fields.get(str(key))
        section = getattr(info, "annotation", None)
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out[key] = normalize_sections(value, source, section, f"{dotted}.")
        elif isinstance(value, str) and dotted in SHORTHAND:
            out[key] = {SHORTHAND[dotted]: value}
        elif value is not None:
            fields = ", ".join(section.model_fields)
            shorthand = f" or `{dotted}: NAME` for {dotted}.name" if dotted in SHORTHAND else ""
            raise UsageError(
                f"{source}: {dotted} is a section of keys ({fields}), not the value {value!r}; write "
                f"`{dotted}: {{{next(iter(section.model_fields))}: ...}}`{shorthand}"
            )
    return out
