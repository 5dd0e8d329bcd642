"""A run config file read, its recipe applied, its `--set` overrides set and its paths anchored, then validated into
a RunConfig, with pydantic's errors as one readable UsageError."""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from an_lab.config.overrides import deep_merge, normalize_sections, parse_assignment, set_path
from an_lab.config.recipes import RECIPES
from an_lab.config.run_config import RunConfig
from an_lab.errors import UsageError
from an_lab.paths import anchor, anchor_tree, is_path_key


def load_yaml(path: Path) -> dict:
    """Safe YAML (no object construction from tags) into a mapping, from a bounded regular file; errors name the
    file and the line (an_lab.yamlio)."""
    from an_lab.yamlio import load_mapping

    return load_mapping(path, "config file")[0]


def _field_names(model: type[BaseModel], path: tuple) -> list[str]:
    """Valid keys at a nested path of the schema, for close-name suggestions."""
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def explain(error: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    """One readable paragraph from pydantic's errors: the file, the key, what is wrong, the valid choices."""
    schema = schema or RunConfig
    lines = []
    for item in error.errors():
        location = tuple(item["loc"])
        key = ".".join(str(p) for p in location) or "(top level)"
        if item["type"] == "extra_forbidden":
            valid = _field_names(schema, location[:-1])
            close = difflib.get_close_matches(str(location[-1]), valid, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            lines.append(f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})")
        elif item["type"] == "literal_error":
            lines.append(f"{key}: {item['input']!r} is not valid; choose one of {item['ctx']['expected']}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message} (got {item['input']!r})" if key != "(top level)" else message)
    return f"{source}: " + "; ".join(lines)


def resolve(tree: dict, source: str = "config") -> RunConfig:
    """Recipe preset, then the tree's own keys; validated."""
    tree = normalize_sections(tree, source)
    recipe = tree.get("recipe", "custom")
    if not isinstance(recipe, str) or recipe not in RECIPES:
        raise UsageError(f"{source}: recipe {recipe!r} is not valid; choose one of {', '.join(RECIPES)}")
    try:
        return RunConfig.model_validate(deep_merge(RECIPES[recipe], tree))
    except ValidationError as error:
        raise UsageError(explain(error, source)) from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """A run config file with `--set` overrides, resolved. Paths follow an_lab.paths: the file's own relative to its
    folder, the overrides' relative to the working directory, the defaults' (no file) too."""
    source = str(path or "defaults")
    tree = load_yaml(Path(path)) if path else {}
    if sweep_keys := sorted({"mode", "axes", "base", "baselines", "cells", "seeds", "launcher"} & set(tree)):
        raise UsageError(
            f"{source}: this is a sweep file (it has {', '.join(sweep_keys)}), not a run config: launch it with "
            f"`an-lab sweep {source}` (or see its runs with `an-lab plan {source}`)"
        )
    tree = normalize_sections(tree, source)
    tree = anchor_tree({"output_dir": "runs", **tree}, Path(path).parent if path else Path.cwd(), source)
    for assignment in overrides:
        parts, value = parse_assignment(assignment)
        if is_path_key(".".join(parts)) and isinstance(value, str):
            value = anchor(value, Path.cwd(), f"--set {assignment!r}")
        set_path(tree, parts, value)
    tree.setdefault("data", {})
    if isinstance(tree["data"], dict) and "root" not in tree["data"]:
        tree["data"] = {**tree["data"], "root": anchor("data", Path(path).parent if path else Path.cwd(), source)}
    return resolve(tree, source)
