"""The checks of a loaded sweep that need no run config resolved: mode rules, axis names and values, cells and
baselines, the search space, --set overrides that a cell would overwrite, and the number of runs."""

from __future__ import annotations

import math
from typing import Any

import yaml

from an_lab.config import SHORTHAND
from an_lab.errors import UsageError
from an_lab.sweeps.spec.lines import Loc, show_loc
from an_lab.sweeps.spec.schema import (
    CONFIG_KEYS,
    METRICS,
    RESERVED,
    SeedPolicy,
    SweepSpec,
    axis_settings,
    check_name,
    config_key_problem,
)
from an_lab.sweeps.spec.sweep import Sweep


def _check_keys(sweep: Sweep, settings: dict, loc: Loc, what: str) -> None:
    for key in settings:
        key_loc = (*loc, key)
        if (problem := config_key_problem(str(key))) is not None:
            raise sweep.error(f"{show_loc(key_loc)}: {problem}", key_loc, loc)
        if str(key).split(".")[0] in RESERVED:
            raise sweep.error(
                f"{show_loc(key_loc)}: {what} may not set {key!r}; the sweep sets it (output_dir: the sweep's "
                "output_dir; wandb group and tags: the sweep name and the cell's values)",
                key_loc,
            )
        if key == "trainer.seed" and sweep.spec.seeds is not None:
            raise sweep.error(
                f"{show_loc(key_loc)}: trainer.seed is set by the sweep's seeds: {sweep.spec.seeds}; "
                "remove one of the two",
                key_loc,
                ("seeds",),
            )


def check_structure(sweep: Sweep) -> None:
    """Mode rules, axis names and values, cells and baselines: everything that needs no run config resolved."""
    _check_mode(sweep)
    owners = _check_axes(sweep)
    _check_cells(sweep)
    _check_baselines(sweep)
    _check_search_keys(sweep, owners)


def _check_mode(sweep: Sweep) -> None:
    """What each mode takes: cells for list mode only, search settings (with a metric) for search mode only."""
    spec = sweep.spec
    if spec.mode == "list":
        if not spec.cells:
            raise sweep.error("mode list needs cells: a list of mappings of dotted keys to values", ("mode",))
        if spec.axes:
            raise sweep.error("mode list takes cells, not axes; list every cell under cells:", ("axes",))
    elif spec.cells:
        raise sweep.error(f"cells: apply to mode list only (this sweep's mode is {spec.mode})", ("cells",))
    if spec.mode == "search":
        if spec.search is None or spec.search.metric is None:
            raise sweep.error(
                f"mode search needs search.metric, the validation metric to optimize (one of {', '.join(METRICS)})",
                ("search",),
                ("mode",),
            )
    elif spec.search is not None:
        raise sweep.error(f"search: applies to mode search only (this sweep's mode is {spec.mode})", ("search",))
    if spec.mode == "search" and isinstance(spec.seeds, SeedPolicy):
        raise sweep.error(
            "adaptive seeds ({min, max, until}) need cells to compare; a search takes a list of seeds", ("seeds",)
        )


def _check_axes(sweep: Sweep) -> dict[str, str]:
    """Each axis: not empty, its keys run-config keys owned by it alone, no value twice. Returns config key -> the
    axis that sets it."""
    owners: dict[str, str] = {}
    for axis, values in sweep.spec.axes.items():
        loc: Loc = ("axes", axis)
        if not values:
            raise sweep.error(f"axes.{axis} is empty; give at least one value, e.g. [a, b]", loc)
        for key in _axis_keys(sweep, axis, values, loc):
            for other_key, other_axis in owners.items():
                if key == other_key or key.startswith(other_key + ".") or other_key.startswith(key + "."):
                    raise sweep.error(
                        f"axes {other_axis!r} and {axis!r} both set {min(key, other_key, key=len)!r}; "
                        "let one axis own each key (a named axis can move several keys together)",
                        loc,
                    )
            owners[key] = axis
        _check_distinct(sweep, axis, values, loc)
    return owners


def _axis_keys(sweep: Sweep, axis: str, values: list[Any], loc: Loc) -> list[str]:
    """The run-config keys an axis sets: its own name for a config key, else (a named axis) the keys of its values."""
    if axis in CONFIG_KEYS:
        _check_keys(sweep, {axis: None}, ("axes",), "an axis")
        return [axis]
    if "." in axis:
        raise sweep.error(f"axes: {config_key_problem(axis)}", loc)
    if not all(isinstance(v, dict) and v for v in values):
        raise sweep.error(
            f"axes: {config_key_problem(axis)}; an axis that is not a config key moves several keys "
            "together, and each of its values is then a mapping of dotted keys, e.g. "
            "[{trainer.epochs: 90, optim.base_lr: 0.1}, {trainer.epochs: 120, optim.base_lr: 0.2}]",
            loc,
        )
    try:
        check_name(axis, "the axis name")
    except ValueError as error:
        raise sweep.error(f"axes: {error}", loc) from None
    keys: list[str] = []
    for index, value in enumerate(values):
        _check_keys(sweep, value, (*loc, index), "an axis")
        keys += [k for k in value if k not in keys]
    return keys


def _check_distinct(sweep: Sweep, axis: str, values: list[Any], loc: Loc) -> None:
    """An axis lists each value once: two equal values would make two equal cells, one run."""
    seen: dict[str, int] = {}
    for index, value in enumerate(values):
        canonical = yaml.safe_dump(value, default_flow_style=True, sort_keys=True)
        if canonical in seen:
            first = sweep.line((*loc, seen[canonical]))
            raise sweep.error(
                f"axes.{axis} lists {value!r} twice (items {seen[canonical] + 1} and {index + 1}"
                + (f", lines {first} and {sweep.line((*loc, index))}" if first else "")
                + "); each value makes a cell, and two equal cells would be one run",
                (*loc, index),
            )
        seen[canonical] = index


def _check_cells(sweep: Sweep) -> None:
    for index, cell in enumerate(sweep.spec.cells):
        if not cell:
            raise sweep.error(f"cells[{index}] is empty; give the dotted keys this cell changes", ("cells", index))
        _check_keys(sweep, cell, ("cells", index), "a cell")


def _check_baselines(sweep: Sweep) -> None:
    for name, settings in sweep.spec.baselines.items():
        try:
            check_name(name, "the baseline name")
        except ValueError as error:
            raise sweep.error(f"baselines: {error}", ("baselines", name)) from None
        if not settings:
            raise sweep.error(
                f"baselines.{name} is empty; give the keys it changes, e.g. {{model.norm: bn}}", ("baselines", name)
            )
        _check_keys(sweep, settings, ("baselines", name), "a baseline")


def _check_search_keys(sweep: Sweep, owners: dict[str, str]) -> None:
    """Each key of a search space: a numeric run-config key that no axis sets as well."""
    if sweep.spec.search is None:
        return
    for key in sweep.spec.search.space:
        loc = ("search", "space", key)
        _check_keys(sweep, {key: None}, ("search", "space"), "the search space")
        if key in owners:
            raise sweep.error(f"search.space.{key} is also an axis; give it in one place", loc)
        if CONFIG_KEYS[key]:
            raise sweep.error(f"search.space.{key} is a section; a range needs a numeric key", loc)


def _flat_keys(prefix: str, value: Any) -> list[str]:
    """The dotted leaf keys a value sets at a run-config key (a section's mapping sets each of its leaves)."""
    if isinstance(value, dict) and CONFIG_KEYS.get(prefix):
        return [leaf for key, inner in value.items() for leaf in _flat_keys(f"{prefix}.{key}", inner)]
    if isinstance(value, str) and prefix in SHORTHAND:
        return [f"{prefix}.{SHORTHAND[prefix]}"]
    return [prefix]


def _cell_keys(sweep: Sweep) -> dict[str, Loc]:
    """Every dotted leaf key that an axis or a listed cell sets, with where it is written."""
    keys: dict[str, Loc] = {}
    for axis, values in sweep.spec.axes.items():
        for index, value in enumerate(values):
            for key, inner in axis_settings(axis, value).items():
                for leaf in _flat_keys(key, inner):
                    keys.setdefault(leaf, ("axes", axis, index))
    for index, cell in enumerate(sweep.spec.cells):
        for key, inner in cell.items():
            for leaf in _flat_keys(key, inner):
                keys.setdefault(leaf, ("cells", index, key))
    return keys


def check_overrides(sweep: Sweep) -> None:
    """A --set of a base key that an axis or a listed cell sets again would silently lose: refuse it, naming both."""
    cell_keys = _cell_keys(sweep)
    for loc in sorted(sweep.overridden, key=str):
        if loc[:1] != ("base",) or len(loc) < 2:
            continue
        node: Any = sweep.base
        for part in loc[1:]:
            node = node.get(part) if isinstance(node, dict) else None
        dotted = ".".join(str(part) for part in loc[1:])
        for leaf in _flat_keys(dotted, node):
            if leaf == "trainer.seed" and sweep.spec.seeds is not None:
                raise UsageError(
                    f"{sweep.where(('seeds',))}: --set {dotted} would be lost: the sweep's seeds "
                    f"{sweep.spec.seeds} set trainer.seed of every run; use --set 'seeds=[...]' instead"
                )
            for key, where in cell_keys.items():
                if key == leaf or key.startswith(leaf + ".") or leaf.startswith(key + "."):
                    raise _lost_override(sweep, dotted, leaf, where)


def _lost_override(sweep: Sweep, dotted: str, leaf: str, where: Loc) -> UsageError:
    line = sweep.line(where)
    place = show_loc(where[:2]) + (f" (line {line})" if line else "")
    instead = f"change the axis instead (--set 'axes.{where[1]}=[...]')" if where[0] == "axes" else "edit that cell"
    return UsageError(
        f"{sweep.path}: --set {dotted} sets {leaf}, which {place} sets again for every cell it makes, so the --set "
        f"would be lost; {instead}, or drop one of the two"
    )


def count_runs(spec: SweepSpec) -> int:
    """Runs the sweep expands to (cells x seeds), computed from the axes' lengths without building any cell."""
    lengths = [len(values) for values in spec.axes.values()]
    if spec.mode == "ablation":
        cells = 1 + sum(length - 1 for length in lengths)
    elif spec.mode == "grid":
        cells = math.prod(lengths)
    elif spec.mode == "list":
        cells = len(spec.cells)
    else:  # search: trials come one at a time from Optuna
        cells = spec.search.n_trials if spec.search is not None else 0
    return (cells + len(spec.baselines)) * spec.most_seeds()


def check_size(sweep: Sweep) -> None:
    spec = sweep.spec
    runs = count_runs(spec)
    if runs > spec.max_runs:
        shape = " x ".join(str(len(values)) for values in spec.axes.values()) if spec.mode == "grid" else spec.mode
        raise sweep.error(
            f"the sweep expands to {runs:,} runs ({shape} cells, {len(spec.baselines)} baselines, "
            f"{spec.most_seeds()} seeds), more than max_runs ({spec.max_runs:,}); if you mean it, raise max_runs "
            "in the file or with --set max_runs=N",
            ("axes",),
            ("mode",),
        )
