"""Expansion: the sweep's mode turns its axes into cells, and each cell runs once per seed as one resolved RunConfig.

ablation: the base cell (the first value of every axis) plus, per axis, one cell for each of its other values
          with only that axis changed (the paper's Table 1);
grid:     the cartesian product of the axes;
list:     the cells written out under `cells:`;
search:   no cells of its own (Optuna picks trials later); its axis values and ranges are checked here.
Baselines are added in every mode: each is the base cell with the baseline's keys changed.

Every cell resolves as `config.resolve` would (an_lab.sweeps.resolver), with `wandb.group` set to the sweep name and
`wandb.tags` to what the cell changes; wandb is no part of a run's identity, so ids survive. Cells are named by
an_lab.sweeps.labels.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from an_lab.config import BackboneInit, RunConfig, WandbConfig
from an_lab.data_sources import check_data
from an_lab.errors import UsageError
from an_lab.identity import RunIds, run_id
from an_lab.sweeps.backbones import KEY as BACKBONE_KEY
from an_lab.sweeps.backbones import Backbone, BackboneResolver, SweepFinder
from an_lab.sweeps.labels import label_extras, row_title, show
from an_lab.sweeps.resolver import Resolver, dotted_leaves, value_at
from an_lab.sweeps.spec import Loc, Sweep, axis_settings


@dataclass(frozen=True)
class Cell:
    index: int
    kind: str  # base, axis (ablation), grid, list or baseline
    settings: dict[str, Any]  # dotted run-config keys -> values this cell sets on the sweep's base
    sources: dict[str, Loc]  # where in the sweep file each setting is written
    changes: dict[str, Any]  # the settings whose resolved value differs from the base cell's
    shown: dict[str, str]  # the changes' values as users write them (show)
    label: str
    tags: tuple[str, ...]
    config: RunConfig  # before the sweep's seeds are applied
    name: str | None = None  # baselines: their name
    loc: Loc = ()  # the place in the file that makes this cell

    def describe(self) -> str:
        return self.description

    @functools.cached_property
    def description(self) -> str:
        return ", ".join(f"{key}={text}" for key, text in self.shown.items()) or "(base)"

    @functools.cached_property
    def wandb(self) -> WandbConfig:
        """Its runs' W&B settings but the run name: group = the sweep (set by the Resolver), job_type = the cell's
        label, tags = what the cell changes (the run name, cell label and seed, is set per run). W&B is not part of
        a run's identity: ids do not move. Made when first asked for: a plan does not need 10,000 of these."""
        return self.config.wandb.model_copy(update={"job_type": self.label[:64], "tags": self.tags})

    @functools.cached_property
    def folder(self) -> Path:
        """The output folder its runs' folders are in."""
        return Path(self.config.output_dir)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a cell: the cell's config with the run's seed and W&B name (built when first asked for: a plan of
    100,000 runs holds 100,000 of these, not 100,000 configs), or the config given whole (`resolved`: a detection
    run whose model.backbone_init was resolved to a run folder, an_lab.sweeps.backbones)."""

    cell: Cell
    run_id: str
    seed: int
    backbone: Backbone | None = None  # the classification run a detection run starts from
    resolved: RunConfig | None = field(default=None, repr=False)

    @functools.cached_property
    def config(self) -> RunConfig:
        return self.resolved if self.resolved is not None else seeded(self.cell, self.seed)

    @property
    def run_dir(self) -> Path:
        return self.cell.folder / self.run_id


def seeded(cell: Cell, seed: int) -> RunConfig:
    """The cell's run config with this seed, and W&B's run name (cell label and seed) on the cell's W&B settings."""
    config = cell.config
    trainer = config.trainer.model_copy(update={"seed": seed}) if seed != config.trainer.seed else config.trainer
    name = f"{cell.label} seed={seed}"[:128]
    return config.model_copy(update={"trainer": trainer, "wandb": cell.wandb.model_copy(update={"name": name})})


@dataclass
class _Draft:
    kind: str
    settings: dict[str, Any]
    sources: dict[str, Loc]
    given_tags: tuple[str, ...] | None = None  # None: one per setting (key=value)
    name: str | None = None
    loc: Loc = ()

    @property
    def tags(self) -> tuple[str, ...]:
        if self.given_tags is not None:
            return self.given_tags
        return tuple(f"{key.rpartition('.')[2]}={show(value)}"[:64] for key, value in self.settings.items())


def _axis_draft(sweep: Sweep, kind: str, choice: dict[str, int], loc: Loc = (), leaves: dict | None = None) -> _Draft:
    """The cell that takes value `index` of each axis (choice: axis -> index); leaves: the dotted settings of each
    (axis, index) already worked out, shared by the cells of one expansion."""
    leaves = {} if leaves is None else leaves
    settings: dict[str, Any] = {}
    sources: dict[str, Loc] = {}
    for axis, index in choice.items():
        if (axis, index) not in leaves:
            leaves[axis, index] = _axis_leaves(sweep, axis, index)
        for leaf, leaf_value, source in leaves[axis, index]:
            settings[leaf] = leaf_value
            sources[leaf] = source
    return _Draft(kind, settings, sources, loc=loc)


def _axis_leaves(sweep: Sweep, axis: str, index: int) -> list[tuple[str, Any, Loc]]:
    value_loc: Loc = ("axes", axis, index)
    return [
        (leaf, leaf_value, value_loc if key == axis else (*value_loc, key))
        for key, value in axis_settings(axis, sweep.spec.axes[axis][index]).items()
        for leaf, leaf_value in dotted_leaves(key, value)
    ]


def _drafts(sweep: Sweep) -> tuple[_Draft, list[_Draft]]:
    """(the base cell, every cell of the mode in order, baselines last)."""
    spec = sweep.spec
    axes = spec.axes
    first = dict.fromkeys(axes, 0)
    leaves: dict = {}
    base = _axis_draft(sweep, "base", first, ("base",), leaves) if spec.mode != "list" else _Draft("base", {}, {})
    drafts: list[_Draft] = []
    if spec.mode == "ablation":
        drafts.append(base)
        for axis, values in axes.items():
            for index in range(1, len(values)):
                drafts.append(_axis_draft(sweep, "axis", {**first, axis: index}, ("axes", axis, index), leaves))
    elif spec.mode == "grid":
        names = list(axes)
        for combination in itertools.product(*(range(len(axes[name])) for name in names)):
            drafts.append(_axis_draft(sweep, "grid", dict(zip(names, combination, strict=True)), leaves=leaves))
    elif spec.mode == "list":
        for index, cell in enumerate(spec.cells):
            settings, sources = {}, {}
            for key, value in cell.items():
                for leaf, leaf_value in dotted_leaves(key, value):
                    settings[leaf], sources[leaf] = leaf_value, ("cells", index, key)
            drafts.append(_Draft("list", settings, sources, loc=("cells", index)))
    for name, changes in spec.baselines.items():
        settings, sources = dict(base.settings), dict(base.sources)
        tags = [f"baseline={name}"]
        for key, value in changes.items():
            for leaf, leaf_value in dotted_leaves(key, value):
                settings[leaf], sources[leaf] = leaf_value, ("baselines", name, key)
                tags.append(f"{leaf.rpartition('.')[2]}={show(leaf_value)}"[:64])
        drafts.append(_Draft("baseline", settings, sources, tuple(tags), name, ("baselines", name)))
    return base, drafts


def base_config(sweep: Sweep) -> RunConfig:
    """The base cell's run config: the sweep's base with the first value of every axis (list mode: the base alone)."""
    base, _ = _drafts(sweep)
    return Resolver(sweep).resolve(base.settings, base.sources, base.tags)


def _check_search_space(sweep: Sweep, resolver: Resolver, base: _Draft) -> None:
    """Search mode: every categorical value and both ends of every range must make a valid run on the base cell."""
    for axis, values in sweep.spec.axes.items():
        for index in range(len(values)):
            draft = _axis_draft(sweep, "search", {**dict.fromkeys(sweep.spec.axes, 0), axis: index})
            resolver.resolve(draft.settings, draft.sources)
    for key, bounds in sweep.spec.search.space.items():
        for end in ("low", "high"):
            value = getattr(bounds, end)
            value = int(value) if bounds.type == "int" else value
            resolver.resolve({**base.settings, key: value}, {**base.sources, key: ("search", "space", key, end)})


def expand(
    sweep: Sweep, seeds: dict[int, list[int]] | list[int] | None = None, *, find: SweepFinder | None = None
) -> list[PlannedRun]:
    """Every run of the sweep, cells in order and seeds within each cell; raises UsageError on an invalid or
    duplicate cell. Search mode returns its baselines only (trials come from Optuna).

    seeds: cell index -> the seeds that cell runs (adaptive seeding, an_lab.sweeps.seeding), or one list for every
    cell; cells it does not name run the sweep's initial seeds.
    find: looks up the sweep a cell's model.backbone_init names (an_lab.sweeps.manifest.find_sweep, which expands
    that sweep's file in turn: passed in, so that expansion imports nothing above it)."""
    resolver = Resolver(sweep)
    base, drafts = _drafts(sweep)
    # Resolved without W&B tags: a cell's are what it changes (Cell.wandb), and a W&B section that every cell
    # shares is validated once.
    base_config = resolver.resolve(base.settings, base.sources)
    if sweep.mode == "search":
        _check_search_space(sweep, resolver, base)
    configs = [base_config if draft is base else resolver.resolve(draft.settings, draft.sources) for draft in drafts]
    _one_task(sweep, drafts, configs)
    all_changes = _all_changes(drafts, configs, base_config)
    with_model = len({config.model.name for config in configs}) > 1
    an_detail = any(key.startswith("model.an.") for changes in all_changes for key in changes) or sweep.mode == "search"
    initial = sweep.spec.initial_seeds()
    backbones = BackboneResolver(sweep.path.parent, find)
    ids = RunIds()
    runs: list[PlannedRun] = []
    owner: dict[str, Cell] = {}
    for cell in _cells(drafts, configs, all_changes, with_model, an_detail):
        own = seeds if isinstance(seeds, list) else (seeds or {}).get(cell.index)
        for run in _cell_runs(sweep, cell, own or initial or (cell.config.trainer.seed,), backbones, ids):
            if run.run_id in owner:
                raise _duplicate(sweep, owner[run.run_id], cell, run.run_id)
            owner[run.run_id] = cell
            runs.append(run)
    return runs


def _cells(
    drafts: list[_Draft],
    configs: list[RunConfig],
    all_changes: list[dict],
    with_model: bool,
    an_detail: bool,
) -> Iterator[Cell]:
    """The cells, labelled and tagged; cells that share their model section (the configs, kept alive by the caller,
    share the resolver's validated sections) share the first part of their label."""
    titles: dict[tuple[int, str], str] = {}
    for index, (draft, config, changes) in enumerate(zip(drafts, configs, all_changes, strict=True)):
        shown = {key: show(value) for key, value in changes.items()}
        slot = (id(config.model), config.task)
        if slot not in titles:
            titles[slot] = row_title(config, with_model, an_detail)
        title = ", ".join([titles[slot], *label_extras(config.task, shown, with_model)])
        tags = _cell_tags(draft, shown)
        yield Cell(
            index=index,
            kind=draft.kind,
            settings=draft.settings,
            sources=draft.sources,
            changes=changes,
            shown=shown,
            label=title,
            tags=tags,
            config=config,
            name=draft.name,
            loc=draft.loc,
        )


def _all_changes(drafts: list[_Draft], configs: list[RunConfig], base_config: RunConfig) -> list[dict[str, Any]]:
    """Per cell, its settings whose resolved value differs from the base cell's (each base value read once)."""
    base_values: dict[str, Any] = {}
    out = []
    for draft, config in zip(drafts, configs, strict=True):
        changes = {}
        for key in draft.settings:
            if key not in base_values:
                base_values[key] = value_at(base_config, key)
            value = value_at(config, key)
            if value != base_values[key]:
                changes[key] = value
        out.append(changes)
    return out


def _cell_runs(sweep: Sweep, cell: Cell, seeds, backbones: BackboneResolver, ids: RunIds) -> Iterator[PlannedRun]:
    """The runs of a cell, one per seed. Their configs differ in the seed alone (and the W&B run name, no part of a
    run's identity), so the cell's identity is hashed once per seed without building a config per run; a detection
    cell whose backbone_init names a sweep's cell resolves it per seed first (the backbone's folder is hashed)."""
    if not isinstance(cell.config.model.backbone_init, BackboneInit):
        for seed, identifier in zip(seeds, ids.seeded(cell.config, seeds), strict=True):
            yield PlannedRun(cell, identifier, seed)
        return
    where = _backbone_where(sweep, cell)
    for seed in seeds:
        config, backbone = backbones.resolve(seeded(cell, seed), where)  # before the id: it hashes the folder
        yield PlannedRun(cell, run_id(config), seed, backbone, config)


def _one_task(sweep: Sweep, drafts: list, configs: list[RunConfig]) -> None:
    """A sweep's cells share one task: its tables, figures and reports are those of that task (a classification
    cell has no AP, a detection cell no top-1 error), so a mix is refused before anything runs."""
    tasks: dict[str, list[str]] = {}
    for draft, config in zip(drafts, configs, strict=True):
        where = sweep.line(draft.loc) if draft.loc else None
        tasks.setdefault(config.task, []).append(f"{draft.kind} cell" + (f" at line {where}" if where else ""))
    if len(tasks) > 1:
        parts = "; ".join(
            f"{task}: {', '.join(cells[:3])}{' ...' if len(cells) > 3 else ''}" for task, cells in tasks.items()
        )
        raise UsageError(
            f"{sweep.path}: its cells mix tasks ({parts}); a sweep has one task, whose metrics its tables and figures "
            "show: put the classification and the detection cells in two sweep files (a detection sweep can take "
            "its backbones from the classification one: model.backbone_init: {sweep: NAME, cell: LABEL})"
        )


def _backbone_where(sweep: Sweep, cell: Cell) -> str:
    """`file, line N` of the model.backbone_init a cell's runs start from: the cell's own setting, else the base's."""
    own = cell.sources.get(BACKBONE_KEY)
    return sweep.where(*((own,) if own else ()), sweep.base_key_loc(BACKBONE_KEY), ("base",))


def _cell_tags(draft: _Draft, shown: dict[str, str]) -> tuple[str, ...]:
    """W&B tags of a cell: what it changes against the base cell (a BN baseline is not tagged with AN's choices)."""
    own = [f"baseline={draft.name}"] if draft.kind == "baseline" else (["base"] if not shown else [])
    return tuple(tag[:64] for tag in [*own, *(f"{key.rpartition('.')[2]}={text}" for key, text in shown.items())])


def _duplicate(sweep: Sweep, first: Cell, second: Cell, identifier: str) -> UsageError:
    def where(cell: Cell) -> str:
        number = sweep.line(cell.loc) if cell.loc else None
        if number is None:
            numbers = sorted({n for loc in cell.sources.values() if (n := sweep.line(loc)) is not None})
            return f"lines {', '.join(map(str, numbers))}" if numbers else "no line"
        return f"line {number}"

    def name(cell: Cell) -> str:
        kind = f"baseline {cell.name!r}" if cell.kind == "baseline" else f"{cell.kind} cell"
        return f"{kind} {cell.label!r} [{cell.describe()}] ({where(cell)})"

    return UsageError(
        f"{sweep.path}: duplicate cells: the {name(first)} and the {name(second)} resolve to the same run "
        f"{identifier}; remove one or make them differ"
    )


def check_data_paths(sweep: Sweep, runs: list[PlannedRun]) -> None:
    """Every distinct data config of the runs must be readable (the launcher calls this too, before starting)."""
    seen, cells = set(), {id(run.cell): run.cell for run in runs}  # a cell's runs share its data
    for cell in cells.values():
        data = cell.config.data
        if data in seen:
            continue
        seen.add(data)
        loc: Loc = ("base", "data", "root")
        for key, source in cell.sources.items():
            if key.startswith("data."):
                loc = source
        check_data(data, sweep.where(loc, ("base", "data"), ("base",)))
