"""The sweep file: its schema (unknown keys are errors), where each key sits in the file, and `load_sweep()`.

A sweep file names a base run config, design axes (dotted keys into the run config), a mode that expands them into
cells, seeds, baselines and launcher settings. Everything here is torch-free: `an-lab plan` and `an-lab status` use it.
Mistakes become one `UsageError` that names the file, the key and, where the key is in the file, its line.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from an_lab.config import (
    SEED_LIMIT,
    SHORTHAND,
    BackboneInit,
    RunConfig,
    Seed,
    Strict,
    control_character,
    normalize_sections,
    parse_assignment,
    set_path,
)
from an_lab.errors import UsageError
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.metrics import METRICS as RESULT_METRICS
from an_lab.metrics import logged_metric
from an_lab.paths import anchor, anchor_tree, is_path_key
from an_lab.sweeps.journal import JOURNAL, LOCK_WAIT_S
from an_lab.yamlio import load_mapping

MODES = ("ablation", "grid", "list", "search")
MAX_RUNS = 100_000
# Metrics logged once per validation epoch that a search can optimize: a classification run's (lightning_modules/
# classifier.py) and a detection run's box and mask AP (one row per evaluation).
METRICS = ("val_top1_err", "val_top5_err", "val_loss", "train_loss", "val_bbox_ap", "val_segm_ap")
# Optuna's samplers and pruners by the names users write; the values are the optuna class names.
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "grid": "GridSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "nsgaii": "NSGAIISampler",
    "nsgaiii": "NSGAIIISampler",
    "bruteforce": "BruteForceSampler",
}
PRUNERS = {
    "median": "MedianPruner",
    "none": "NopPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "threshold": "ThresholdPruner",
    "wilcoxon": "WilcoxonPruner",
}
# Run config keys the sweep sets itself: cells may not change them.
RESERVED = ("output_dir", "wandb")

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Sweep, baseline and axis names become parts of paths and labels: the sweep folder <output_dir>/sweeps/<name>/ and the
# files named after the sweep, the SLURM job name an-lab-<name>, the W&B group and tags. 64 characters keep every such
# path component far below the 255 bytes a file name may have (a longer name would pass `plan` and then fail with
# ENAMETOOLONG when the sweep writes its folder); run folders are named by run id, <model>-<norm>-<12 hex digits>.
MAX_NAME = 64


def check_name(value: str, what: str = "name") -> str:
    """A name that becomes a folder, a W&B group or a job name: letters, digits, '_', '.', '-'; no '..' or slashes;
    at most MAX_NAME characters."""
    if isinstance(value, str) and len(value) > MAX_NAME:
        raise ValueError(
            f"{what} {reprlib.repr(value)} is {len(value)} characters long; at most {MAX_NAME} (it names folders, "
            "files and the SLURM job)"
        )
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not usable as a folder or job name: use only letters, digits, '_', '.' and '-', "
            "start with a letter, digit or '_', and no '..' (no slashes, spaces or shell characters)"
        )
    return value


def _walk_keys(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    keys: dict[str, bool] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        keys[prefix + name] = section
        if section:
            keys.update(_walk_keys(annotation, f"{prefix}{name}."))
    return keys


# Every dotted key of the run config -> whether it is a section (model, model.an, ...) rather than a value.
CONFIG_KEYS: dict[str, bool] = _walk_keys(RunConfig)
# model.backbone_init is a run folder (a string) or a mapping {sweep, cell, seed}; a cell may change one of its keys.
CONFIG_KEYS.update({f"model.backbone_init.{name}": False for name in BackboneInit.model_fields})


def config_key_problem(key: str) -> str | None:
    """Why `key` is not a dotted key of the run config, with the close names; None when it is one."""
    if key in CONFIG_KEYS:
        return None
    close = difflib.get_close_matches(key, list(CONFIG_KEYS), n=3, cutoff=0.6)
    parent, _, _ = key.rpartition(".")
    if CONFIG_KEYS.get(parent):
        valid = [k.rpartition(".")[2] for k in CONFIG_KEYS if k.rpartition(".")[0] == parent]
        here = f" (valid keys under {parent}: {', '.join(valid)})"
    else:
        here = f" (top-level keys: {', '.join(k for k in CONFIG_KEYS if '.' not in k)})"
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint}{here}"


class LauncherSettings(Strict):
    executor: Literal["local", "slurm"] = "local"
    max_parallel: int = Field(1, ge=1)  # runs at once (local processes, or SLURM array tasks unless array_parallelism)
    slurm: SlurmSettings | None = None


class Range(Strict):
    """A numeric search dimension: Optuna's suggest_float / suggest_int."""

    type: Literal["float", "int"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("an int range needs integer low and high")
        return self


def metric_direction(metric: str) -> str:
    """Which way a search metric is better: the registry's direction for a logged result metric (errors minimize,
    AP maximizes), minimize for the losses."""
    found = logged_metric(metric)
    return found.direction if found is not None else "minimize"


class SearchSettings(Strict):
    metric: str | None = None  # required in search mode; checked with the mode
    # None: the metric's own direction (metric_direction); given, it must agree with it
    direction: Literal["minimize", "maximize"] | None = None
    n_trials: int = Field(20, ge=1)
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = Field(default_factory=dict)
    pruner: str = "median"
    pruner_options: dict[str, Any] = Field(default_factory=dict)
    storage: str | None = None  # any Optuna storage URL; default: a journal file in the sweep folder
    # How long a write to the journal waits for its lock held by another live process (an_lab.sweeps.journal)
    lock_wait_s: float = Field(LOCK_WAIT_S, gt=0, le=86_400)
    # numeric ranges; list-valued axes are the categorical dimensions
    space: dict[str, Range] = Field(default_factory=dict)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            close = difflib.get_close_matches(value, METRICS, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"metric {value!r} is not logged{hint} (choose one of {', '.join(METRICS)})")
        return value

    @model_validator(mode="after")
    def _direction_of_the_metric(self) -> SearchSettings:
        """The direction follows the metric; a direction that works against it (maximize an error, minimize an AP)
        is an error rather than a search that optimizes the wrong way."""
        wanted = metric_direction(self.metric) if self.metric is not None else "minimize"
        if self.direction is not None and self.direction != wanted:
            raise ValueError(
                f"direction {self.direction!r} works against metric {self.metric!r}, which is better "
                f"when it is {'lower' if wanted == 'minimize' else 'higher'}; write direction: {wanted}, or leave "
                "direction out (it follows the metric)"
            )
        self.direction = wanted
        return self

    @field_validator("sampler", "pruner")
    @classmethod
    def _known_name(cls, value: str, info) -> str:
        names = SAMPLERS if info.field_name == "sampler" else PRUNERS
        if value not in names:
            close = difflib.get_close_matches(value, list(names), n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"{info.field_name} {value!r} is not known{hint} (choose one of {', '.join(names)})")
        return value


class SeedTarget(Strict):
    # a final metric of result.json (an_lab.metrics.METRICS) that the sweep's runs report; None: their task's primary
    # metric (top1_err, bbox_ap), resolved with the runs (an_lab.sweeps.seeding.target_metric)
    metric: str | None = None
    ci_halfwidth: float = Field(gt=0, allow_inf_nan=False)  # points: the 95% CI of the difference to the baseline

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in RESULT_METRICS:
            close = difflib.get_close_matches(value, list(RESULT_METRICS), n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(
                f"metric {value!r} is not a metric of result.json{hint} (choose one of {', '.join(RESULT_METRICS)})"
            )
        return value


class SeedPolicy(Strict):
    """Adaptive seeds: every cell runs `min` seeds; each later launch adds seeds to the cells whose CI of the
    difference to the baseline is still wider than the target, up to `max` (precision, never significance)."""

    min: int = Field(3, ge=2, le=1000, strict=True)
    max: int = Field(10, ge=2, le=1000, strict=True)
    first: Seed = 0  # seeds are first, first + 1, ...
    until: SeedTarget

    @model_validator(mode="after")
    def _ordered(self) -> SeedPolicy:
        if self.min > self.max:
            raise ValueError(f"seeds.min ({self.min}) is above seeds.max ({self.max})")
        if self.first + self.max > SEED_LIMIT:
            raise ValueError(f"seeds first + max must stay below {SEED_LIMIT}")
        return self

    def candidates(self) -> list[int]:
        return list(range(self.first, self.first + self.max))


class ConvergenceSettings(Strict):
    """When the table calls a run "not converged": an undertrained comparison must not pass for a finding."""

    train_loss_max: float | None = Field(None, gt=0, allow_inf_nan=False)  # final training loss above this
    val_drop_max: float | None = Field(1.0, gt=0, allow_inf_nan=False)  # top-1 error (points) still falling by more
    last_epochs: int = Field(3, ge=2, le=50, strict=True)  # ... over this many last epochs


class SweepSpec(Strict):
    """The sweep file as written (axes and cells hold dotted run-config keys, checked by `load_sweep`)."""

    name: str
    description: str = ""
    mode: Literal[MODES]  # type: ignore[valid-type]
    base: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    cells: list[dict[str, Any]] = Field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # A list of seeds, an adaptive policy ({min, max, until: {metric, ci_halfwidth}}), or None: the base's trainer.seed.
    seeds: (
        Annotated[
            Annotated[list[Seed], Tag("list")] | Annotated[SeedPolicy, Tag("policy")],
            Discriminator(lambda value: "policy" if isinstance(value, dict | SeedPolicy) else "list"),
        ]
        | None
    ) = None
    launcher: LauncherSettings = LauncherSettings()
    output_dir: str | None = None  # where runs go; overrides base.output_dir
    search: SearchSettings | None = None
    # Runs (cells x seeds) a sweep may expand to; counted before any cell is built, so that a grid of 10**7 cells is
    # refused at once instead of filling the memory. Raise it in the file or with --set max_runs=N.
    max_runs: int = Field(MAX_RUNS, ge=1, le=10**9, strict=True)
    convergence: ConvergenceSettings = ConvergenceSettings()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "the sweep name")

    @field_validator("output_dir")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or control_character(value) is not None):
            raise ValueError("output_dir must name a folder, without control or invisible characters")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int] | SeedPolicy | None) -> list[int] | SeedPolicy | None:
        if isinstance(value, list) and not value:
            raise ValueError("seeds is empty; give at least one seed, e.g. [0, 1, 2]")
        if isinstance(value, list) and len(set(value)) != len(value):
            raise ValueError(f"seeds {value} repeat a seed; each seed runs every cell once")
        return value

    def initial_seeds(self) -> list[int] | None:
        """The seeds every cell starts with: the list, the policy's first `min`, or None (the base's trainer.seed)."""
        if isinstance(self.seeds, SeedPolicy):
            return self.seeds.candidates()[: self.seeds.min]
        return self.seeds

    def most_seeds(self) -> int:
        """The most seeds a cell can run (for counting runs before expansion)."""
        if isinstance(self.seeds, SeedPolicy):
            return self.seeds.max
        return len(self.seeds or [0])


# A location in the sweep file: keys and list indices from the top, e.g. ("axes", "model.an.k", 1).
Loc = tuple[str | int, ...]


@dataclass
class Sweep:
    """A validated sweep file, with the overrides applied, ready to expand into runs (`an_lab.sweeps.expand`)."""

    path: Path
    spec: SweepSpec
    base: dict  # run-config tree of the base: nested keys, --set overrides applied, output_dir set
    overrides: tuple[str, ...] = ()
    lines: dict[Loc, int] = field(default_factory=dict, repr=False)
    overridden: set[Loc] = field(default_factory=set, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def output_dir(self) -> Path:
        return Path(self.base.get("output_dir", "runs"))

    @property
    def sweep_dir(self) -> Path:
        """The sweep's own folder (manifest, Optuna journal): <output_dir>/sweeps/<name>/; runs sit in <output_dir>/."""
        return self.output_dir / "sweeps" / self.name

    @property
    def storage(self) -> str | None:
        """Search mode: the Optuna storage URL, or the default journal file in the sweep folder."""
        if self.spec.search is None:
            return None
        return self.spec.search.storage or str((self.sweep_dir / JOURNAL).resolve())

    def line(self, loc: Loc) -> int | None:
        return self.lines.get(tuple(loc))

    def where(self, *locs: Loc) -> str:
        """`file, line N` for the first of `locs` found in the file (or `(from --set)`), else just the file."""
        for loc in locs:
            if any(tuple(loc[: len(o)]) == o for o in self.overridden):
                return f"{self.path} (from --set)"
            if loc[:1] == ("base",) and loc[1:] and all(isinstance(part, str) for part in loc[1:]):
                loc = self.base_key_loc(".".join(loc[1:]))  # type: ignore[arg-type]
            if (number := self.line(loc)) is not None:
                return f"{self.path}, line {number}"
        return str(self.path)

    def error(self, message: str, *locs: Loc) -> UsageError:
        return UsageError(f"{self.where(*locs)}: {message}")

    def base_key_loc(self, dotted: str) -> Loc:
        """Where a run-config key of the base is written: nested (`model: {an: {k: ...}}`) or dotted."""
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            for loc in (("base", *parts[:cut]), ("base", ".".join(parts[:cut]))):
                if loc in self.lines:
                    return loc
        return ("base", *parts)


def show_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_index(root: yaml.Node | None) -> tuple[dict[Loc, int], list[tuple[Loc, int, int]]]:
    """Line of every key and list item, from the YAML node tree (composed once by an_lab.yamlio), and repeated keys."""
    lines: dict[Loc, int] = {}
    repeats: list[tuple[Loc, int, int]] = []
    seen: set[int] = set()  # aliases share nodes: visit each once (and never loop)
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())] if root is not None else []
    while stack:
        node, loc = stack.pop()
        if id(node) in seen or len(loc) > 32:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                    continue
                key, number = key_node.value, key_node.start_mark.line + 1
                if key in first:
                    repeats.append(((*loc, key), first[key], number))
                first.setdefault(key, number)
                lines.setdefault((*loc, key), number)
                stack.append((value_node, (*loc, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*loc, index), item.start_mark.line + 1)
                stack.append((item, (*loc, index)))
    return lines, repeats


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
    lines, repeats = _line_index(root)
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
    _check_structure(sweep)
    _check_overrides(sweep)
    _check_size(sweep)
    return sweep


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


def axis_settings(axis: str, value: Any) -> dict[str, Any]:
    """The run-config keys one axis value sets: {axis: value} for a config key, the value itself for a named axis."""
    return {axis: value} if axis in CONFIG_KEYS else dict(value)


def _check_structure(sweep: Sweep) -> None:
    """Mode rules, axis names and values, cells and baselines: everything that needs no run config resolved."""
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

    owners: dict[str, str] = {}  # config key -> the axis that sets it
    for axis, values in spec.axes.items():
        loc: Loc = ("axes", axis)
        if not values:
            raise sweep.error(f"axes.{axis} is empty; give at least one value, e.g. [a, b]", loc)
        if axis in CONFIG_KEYS:
            _check_keys(sweep, {axis: None}, ("axes",), "an axis")
            keys = [axis]
        else:
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
            keys = []
            for index, value in enumerate(values):
                _check_keys(sweep, value, (*loc, index), "an axis")
                keys += [k for k in value if k not in keys]
        for key in keys:
            for other_key, other_axis in owners.items():
                if key == other_key or key.startswith(other_key + ".") or other_key.startswith(key + "."):
                    raise sweep.error(
                        f"axes {other_axis!r} and {axis!r} both set {min(key, other_key, key=len)!r}; "
                        "let one axis own each key (a named axis can move several keys together)",
                        loc,
                    )
            owners[key] = axis
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

    for index, cell in enumerate(spec.cells):
        if not cell:
            raise sweep.error(f"cells[{index}] is empty; give the dotted keys this cell changes", ("cells", index))
        _check_keys(sweep, cell, ("cells", index), "a cell")
    for name, settings in spec.baselines.items():
        try:
            check_name(name, "the baseline name")
        except ValueError as error:
            raise sweep.error(f"baselines: {error}", ("baselines", name)) from None
        if not settings:
            raise sweep.error(
                f"baselines.{name} is empty; give the keys it changes, e.g. {{model.norm: bn}}", ("baselines", name)
            )
        _check_keys(sweep, settings, ("baselines", name), "a baseline")
    if spec.search is not None:
        for key in spec.search.space:
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


def _check_overrides(sweep: Sweep) -> None:
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


def _check_size(sweep: Sweep) -> None:
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
