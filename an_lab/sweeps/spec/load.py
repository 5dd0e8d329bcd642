"""`load_sweep()`: a sweep file read once, its --set overrides applied, validated against the schema and checked,
with each mistake one UsageError that names the file, the key and its line."""

from __future__ import annotations

import difflib
import json
import reprlib
from pathlib import Path

from pydantic import BaseModel, ValidationError

from an_lab.config import normalize_sections, parse_assignment, set_path
from an_lab.errors import UsageError
from an_lab.paths import anchor, anchor_tree, is_path_key
from an_lab.sweeps.spec.checks import check_overrides, check_size, check_structure
from an_lab.sweeps.spec.lines import Loc, line_index, show_loc
from an_lab.sweeps.spec.schema import SweepSpec, check_name
from an_lab.sweeps.spec.sweep import Sweep
from an_lab.yamlio import load_mapping


def nest(tree: dict) -> dict:
    """Dotted keys of a run-config tree (`model.an.k: ...`) into nested sections."""
    nested: dict = {}
    for key, value in tree.items():
        value = nest(value) if isinstance(value, dict) else value
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return nested


def _anchored_override(assignment: str) -> str:
    """A `--set` of a path key with its value read from the working directory (an_lab.paths), written back as an
    assignment, so that the manifest records where it pointed, not how it was typed."""
    parts, value = parse_assignment(assignment)
    dotted = ".".join(parts[1:] if parts[0] == "base" else parts)
    if not (isinstance(value, str) and is_path_key(dotted)):
        return assignment
    return f"{'.'.join(parts)}={json.dumps(anchor(value, Path.cwd(), f'--set {assignment!r}'))}"


def _apply_override(raw: dict, assignment: str, source: str) -> Loc:
    """`--set`: top-level sweep keys (seeds, launcher.max_parallel, axes.<dotted key>, ...) or else keys of the base."""
    parts, value = parse_assignment(assignment)
    head = parts[0]
    if head == "axes" and len(parts) > 1:
        parts = ["axes", ".".join(parts[1:])]
    elif head == "baselines" and len(parts) > 2:
        parts = ["baselines", parts[1], ".".join(parts[2:])]
    elif head == "search" and parts[1:2] == ["space"] and len(parts) > 2:
        parts = ["search", "space", ".".join(parts[2:])]
    elif head not in SweepSpec.model_fields:
        parts = ["base", *parts]
    if parts[0] == "base" and not isinstance(raw.get("base", {}), dict):
        raise UsageError(f"--set {assignment!r}: the sweep's base is not a mapping")
    if parts[0] == "base":
        raw["base"] = normalize_sections(nest(raw.get("base") or {}), f"{source}, base")
    set_path(raw, parts, value)
    return tuple(parts)


def _explain(error: ValidationError, sweep: Sweep) -> str:
    """The first problem pydantic found in the sweep file, with its line and close names for unknown keys."""
    item = error.errors()[0]
    loc = tuple(item["loc"])
    if loc[:1] == ("seeds",) and loc[1:2] in (("list",), ("policy",)):  # the tag of the seeds' two forms
        loc = ("seeds", *loc[2:])
    key = show_loc(loc)
    if item["type"] == "extra_forbidden":
        model: type[BaseModel] = SweepSpec
        for part in loc[:-1]:
            annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
            for candidate in getattr(annotation, "__args__", ()) or (annotation,):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    model = candidate
        valid = list(model.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        message = f"unknown key {key!r}{hint} (valid keys here: {', '.join(valid)})"
    elif item["type"] == "literal_error":
        message = f"{key}: {item['input']!r} is not valid; choose one of {item['ctx']['expected']}"
    elif item["type"] == "missing":
        message = f"{key} is required"
    elif item["type"] == "value_error":  # our validators' messages name the value already
        message = f"{key}: {item['msg'].removeprefix('Value error, ')}"
    else:
        message = f"{key}: {item['msg']} (got {reprlib.repr(item['input'])})"
    return f"{sweep.where(loc)}: {message}"


# Top-level keys that only a sweep file has, and the sections that only a run config has at its top.
SWEEP_ONLY = {"mode", "axes", "base", "baselines", "cells", "seeds", "search", "launcher"}
RUN_SECTIONS = ("model", "data", "optim", "trainer", "task", "recipe")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read, validate and apply `--set` overrides; keys of axes, cells and baselines are checked against the run config.

    Whether every cell resolves to a valid run config, and duplicate cells, are checked by `expand()`.
    """
    path = Path(path)
    # One bounded read and one parse (libyaml where installed); tags such as !!python/object are errors, not code.
    raw, root = load_mapping(path, "sweep file")
    if "mode" not in raw and not set(raw) & SWEEP_ONLY and set(raw) & set(RUN_SECTIONS):
        raise UsageError(
            f"{path}: this is a run config (it has {', '.join(sorted(set(raw) & set(RUN_SECTIONS)))} at the top and "
            "no mode), not a sweep file: train it with `an-lab train "
            f"{path}`, or make it a sweep file (mode: grid, ablation, list or search, with the run config under base:)"
        )
    lines, repeats = line_index(root)
    overrides = tuple(_anchored_override(assignment) for assignment in overrides)  # recorded as they resolved
    sweep = Sweep(path=path, spec=None, base={}, overrides=overrides, lines=lines)  # type: ignore[arg-type]
    if repeats:
        loc, first, second = repeats[0]
        raise UsageError(f"{path}, line {second}: {show_loc(loc)} is given twice (lines {first} and {second})")
    if "name" not in raw:
        try:
            raw["name"] = check_name(path.stem, "the sweep name")
        except ValueError as error:
            raise UsageError(f"{path}: {error}; the file name is the default, add a name: key") from None
    for assignment in overrides:
        sweep.overridden.add(_apply_override(raw, assignment, str(path)))
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise UsageError(_explain(error, sweep)) from None
    sweep.spec = spec
    # Paths written in the file are read from its folder (an_lab.paths); --set ones are absolute already.
    base = anchor_tree(normalize_sections(nest(spec.base), f"{path}, base"), path.parent, f"{path}, base")
    where = f"{path}: output_dir"
    base["output_dir"] = anchor(spec.output_dir or base.get("output_dir") or "runs", path.parent, where)
    if isinstance(base.get("data", {}), dict) and "root" not in base.get("data", {}):
        base["data"] = {**base.get("data", {}), "root": anchor("data", path.parent, f"{path}, base: data.root")}
    sweep.base = base
    check_structure(sweep)
    check_overrides(sweep)
    check_size(sweep)
    return sweep
