"""The run configuration: one validated, torch-free description of a training run.

A YAML file may start from a recipe preset (the papers' training setups) and override any key; `--set a.b=v`
overrides come last. The resolved config is the run's identity: its canonical JSON hashes to the run id.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from an_lab import catalog
from an_lab.errors import UsageError

Pooling = Literal["rsd", "mean", "concat"]
Head = Literal["a2", "a1"]
Activation = Literal["hsigmoid", "softmax", "sigmoid"]
ModelName = Literal[catalog.MODEL_NAMES]  # type: ignore[valid-type]
Norm = Literal[catalog.NORM_CHOICES]  # type: ignore[valid-type]
DataName = Literal["digits", "imagefolder", "cifar10", "cifar100", "fake"]
Precision = Literal["32", "bf16-mixed", "16-mixed"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ANConfig(Strict):
    k: int | tuple[int, ...] | None = None  # None: the paper's schedule for the network
    pooling: Pooling = "rsd"
    head: Head = "a2"
    activation: Activation = "hsigmoid"
    placement: Literal["paper", "all"] = "paper"


class ModelConfig(Strict):
    name: ModelName = "cifar_resnet20"
    norm: Norm = "an"
    an: ANConfig = ANConfig()
    stem: Literal["plain", "deep"] = "plain"
    zero_init_residual: bool = True

    @model_validator(mode="after")
    def _k_fits_the_network(self) -> ModelConfig:
        try:
            catalog.resolve_k(self.name, self.an.k)
        except ValueError as error:
            raise ValueError(f"an.k: {error}") from None
        if not self.name.startswith("resnet") and (self.norm == "se" or self.stem == "deep"):
            raise ValueError(f"norm 'se' and stem 'deep' apply to torchvision ResNets only, not to {self.name}")
        return self


class DataConfig(Strict):
    name: DataName = "digits"
    root: str = "data"  # data folder; imagefolder expects root/train/<class>/* and root/val/<class>/*
    image_size: int = Field(32, ge=8)  # training crop side; validation resizes to image_size / 0.875 for ImageNet
    batch_size: int = Field(64, ge=1)  # per device
    num_workers: int = Field(2, ge=0)
    download: bool = False  # cifar only: fetch the data set when it is missing
    fake_size: int = Field(512, ge=1)  # fake only: images per epoch
    num_classes: int | None = Field(None, ge=2)  # fake / imagefolder: taken from the data when omitted


class OptimConfig(Strict):
    base_lr: float = Field(0.1, gt=0)  # lr = base_lr * global_batch / 256
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    exclude_norm_and_bias_from_wd: bool = False
    warmup_epochs: float = Field(5, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)


class TrainerConfig(Strict):
    epochs: int = Field(120, ge=1)
    precision: Precision = "32"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True
    seed: int = 0
    limit_train_batches: int | None = Field(None, ge=1)  # for smoke runs and throughput checks
    diagnostics: bool = False  # save gamma/beta heatmaps and attention histograms at the end


class WandbConfig(Strict):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "an-lab"
    entity: str | None = None
    group: str | None = None  # the sweep name when launched by a sweep
    tags: tuple[str, ...] = ()


class RunConfig(Strict):
    recipe: Literal["vanilla", "sota", "mobile", "cifar", "custom"] = "custom"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    wandb: WandbConfig = WandbConfig()
    output_dir: str = "runs"

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("output_dir must name a folder")
        return value


# The papers' training setups (AN-REFERENCE.md); a config names one and overrides what it needs.
RECIPES: dict[str, dict[str, Any]] = {
    "vanilla": {
        "model": {"name": "resnet50", "zero_init_residual": True},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5},
        "trainer": {"epochs": 120, "precision": "16-mixed"},
    },
    "sota": {
        "model": {"name": "resnet50", "stem": "deep", "zero_init_residual": True},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5, "label_smoothing": 0.1, "mixup_alpha": 0.2},
        "trainer": {"epochs": 200, "precision": "16-mixed"},
    },
    "mobile": {
        "model": {"name": "mobilenet_v2"},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.05, "weight_decay": 4e-5, "warmup_epochs": 5},
        "trainer": {"epochs": 150, "precision": "16-mixed"},
    },
    "cifar": {
        "model": {"name": "cifar_resnet20"},
        "data": {"name": "cifar100", "image_size": 32, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 1},
        "trainer": {"epochs": 160},
    },
    "custom": {},
}

# Keys that change how a run is executed or logged but not what it computes: left out of the run id.
NON_IDENTITY_KEYS = (("data", "num_workers"), ("wandb",), ("output_dir",), ("trainer", "diagnostics"))


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


def load_yaml(path: Path) -> dict:
    """Safe YAML (no object construction from tags) into a mapping; errors name the file and the line."""
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the file ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping of keys, not a {type(data).__name__}")
    return data


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
    recipe = tree.get("recipe", "custom")
    if recipe not in RECIPES:
        raise UsageError(f"{source}: recipe {recipe!r} is not valid; choose one of {', '.join(RECIPES)}")
    try:
        return RunConfig.model_validate(deep_merge(RECIPES[recipe], tree))
    except ValidationError as error:
        raise UsageError(explain(error, source)) from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    tree = load_yaml(Path(path)) if path else {}
    for assignment in overrides:
        set_path(tree, *parse_assignment(assignment))
    return resolve(tree, str(path or "defaults"))


def identity(config: RunConfig) -> dict:
    """The part of the resolved config that determines what a run computes."""
    tree = config.model_dump(mode="json")
    for path in NON_IDENTITY_KEYS:
        node = tree
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    return tree


def config_hash(config: RunConfig) -> str:
    canonical = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def run_id(config: RunConfig) -> str:
    model = config.model
    return f"{model.name}-{model.norm}-{config_hash(config)}"


def run_dir(config: RunConfig) -> Path:
    return Path(config.output_dir) / run_id(config)
