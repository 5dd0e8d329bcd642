"""The run configuration: one validated, torch-free description of a training run.

A YAML file may start from a recipe preset (the papers' training setups) and override any key; `--set a.b=v`
overrides come last. The resolved config is the run's identity: its canonical JSON hashes to the run id
(an_lab.identity).

One job a module, the public names re-exported here:

    bounds.py       the bounds values are checked against, and the constrained types (Seed, Number)
    base.py         Strict and Frozen: the one strict pydantic base
    sections.py     the sections of a run config: model, data, optim, trainer, wandb
    run_config.py   RunConfig, and which keys each task reads
    recipes.py      RECIPES: the papers' training setups, as data
    overrides.py    deep merges, `--set` assignments, section shorthands
    load.py         load_config() and resolve(): read, apply the recipe and overrides, validate, explain errors
"""

from an_lab.config.base import Frozen, Strict
from an_lab.config.bounds import (
    MAX_BATCH_SIZE,
    MAX_DEVICES,
    MAX_EPOCHS,
    MAX_FAKE_SIZE,
    MAX_IMAGE_SIZE,
    MAX_ITERATIONS,
    MAX_NUM_CLASSES,
    MAX_NUM_NODES,
    MAX_NUM_WORKERS,
    SEED_LIMIT,
    Number,
    Seed,
    control_character,
)
from an_lab.config.load import explain, load_config, load_yaml, resolve
from an_lab.config.overrides import SHORTHAND, deep_merge, normalize_sections, parse_assignment, set_path
from an_lab.config.recipes import RECIPES
from an_lab.config.run_config import (
    CLASSIFICATION_KEYS,
    DETECTION_DATA,
    DETECTION_KEYS,
    RecipeName,
    RunConfig,
    checkpoint_interval,
)
from an_lab.config.sections import (
    DETECTOR_OPTIONS,
    Activation,
    ANConfig,
    BackboneInit,
    DataConfig,
    DataName,
    Head,
    ModelConfig,
    ModelName,
    Norm,
    OptimConfig,
    Pooling,
    Precision,
    Task,
    TrainerConfig,
    WandbConfig,
)

__all__ = [
    "CLASSIFICATION_KEYS",
    "DETECTION_DATA",
    "DETECTION_KEYS",
    "DETECTOR_OPTIONS",
    "MAX_BATCH_SIZE",
    "MAX_DEVICES",
    "MAX_EPOCHS",
    "MAX_FAKE_SIZE",
    "MAX_IMAGE_SIZE",
    "MAX_ITERATIONS",
    "MAX_NUM_CLASSES",
    "MAX_NUM_NODES",
    "MAX_NUM_WORKERS",
    "RECIPES",
    "SEED_LIMIT",
    "SHORTHAND",
    "ANConfig",
    "Activation",
    "BackboneInit",
    "DataConfig",
    "DataName",
    "Frozen",
    "Head",
    "ModelConfig",
    "ModelName",
    "Norm",
    "Number",
    "OptimConfig",
    "Pooling",
    "Precision",
    "RecipeName",
    "RunConfig",
    "Seed",
    "Strict",
    "Task",
    "TrainerConfig",
    "WandbConfig",
    "checkpoint_interval",
    "control_character",
    "deep_merge",
    "explain",
    "load_config",
    "load_yaml",
    "normalize_sections",
    "parse_assignment",
    "resolve",
    "set_path",
]
