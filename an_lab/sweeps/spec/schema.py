"""The sweep file's schema: what each key may hold (unknown keys are errors), the names a sweep gives to folders and
jobs, and the dotted run-config keys its axes, cells and baselines may set. Torch-free."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from an_lab.config import (
    SEED_LIMIT,
    BackboneInit,
    RunConfig,
    Seed,
    Strict,
    control_character,
)
from an_lab.launch.registry import NAMES
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.metrics import METRICS as RESULT_METRICS
from an_lab.metrics import logged_metric
from an_lab.sweep_folder import MAX_NAME as MAX_NAME  # the names' rule lives with the sweep folder
from an_lab.sweep_folder import check_name as check_name
from an_lab.sweeps.journal import LOCK_WAIT_S

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


def axis_settings(axis: str, value: Any) -> dict[str, Any]:
    """The run-config keys one axis value sets: {axis: value} for a config key, the value itself for a named axis."""
    return {axis: value} if axis in CONFIG_KEYS else dict(value)


class LauncherSettings(Strict):
    executor: Literal[NAMES] = "local"  # type: ignore[valid-type]  # an_lab.launch.registry
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
