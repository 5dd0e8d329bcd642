"""RunConfig: the sections of a run put together, and which keys each task reads (a key the run's task does not read is
refused, not ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, field_validator, model_validator

from an_lab import catalog
from an_lab.config.base import Frozen
from an_lab.config.bounds import control_character
from an_lab.config.recipes import RECIPES
from an_lab.config.sections import DataConfig, ModelConfig, OptimConfig, Task, TrainerConfig, WandbConfig

# RECIPES' keys, in their order: a recipe added there is valid at once (Literal[("a", "b")] is Literal["a", "b"]).
RecipeName = Literal[tuple(RECIPES)]  # type: ignore[valid-type]


class RunConfig(Frozen):
    recipe: RecipeName = "custom"
    task: Task = "classification"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()
    wandb: WandbConfig = WandbConfig()
    output_dir: str = "runs"

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip() or control_character(value) is not None:
            raise ValueError("output_dir must name a folder, without control or invisible characters")
        return value

    @model_validator(mode="after")
    def _keys_fit_the_task(self) -> RunConfig:
        problems = _detection_problems(self) if self.task == "detection" else _classification_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


DETECTION_DATA = ("coco", "shapes")
# Keys that only a detection run reads, with the value that means "not set".
DETECTION_KEYS = {
    ("model", "detector"): None,
    ("model", "head_norm"): None,
    ("model", "head_k"): None,
    ("model", "box_head"): None,
    ("model", "an_mask_head"): None,
    ("model", "backbone_init"): None,
    ("model", "trainable_layers"): None,
    ("model", "backbone_init_ignore"): (),
    ("model", "detector_options"): {},
    ("data", "max_size"): None,
    ("trainer", "iterations"): None,
    ("trainer", "checkpoint_every"): None,
    ("trainer", "eval_every"): None,
    ("optim", "clip_grad_norm"): None,
    ("optim", "lr_steps"): None,
}
# Keys only classification reads, with their defaults: a detection config that sets one is refused, not ignored.
CLASSIFICATION_KEYS = {
    ("optim", "label_smoothing"): 0.0,
    ("optim", "mixup_alpha"): 0.0,
    ("model", "stem"): "plain",
}


def _value(config: BaseModel, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


def _classification_problems(config: RunConfig) -> list[str]:
    if (problem := catalog.input_size_problem(config.model.name, config.data.image_size)) is not None:
        return [f"data.image_size {config.data.image_size}: {problem}; set data.image_size to that or more"]
    problems = [  # every detection key is section.key: two getattrs (this runs once per cell of a 10,000-cell plan)
        f"{section}.{key} is a detection key (set task: detection to use it)"
        for (section, key), unset in DETECTION_KEYS.items()
        if getattr(getattr(config, section), key) != unset
    ]
    if config.optim.warmup_iterations != OptimConfig.model_fields["warmup_iterations"].default:
        problems.append("optim.warmup_iterations is a detection key (classification warms up by optim.warmup_epochs)")
    if config.data.name == "coco":
        problems.append("data.name 'coco' is a detection data set (set task: detection)")
    if config.model.norm in catalog.DETECTION_ONLY_NORMS:
        problems.append(
            f"model.norm {config.model.norm!r} is a detection backbone norm; for classification choose one of "
            f"{', '.join(catalog.NORM_CHOICES)}"
        )
    return problems


def _detection_problems(config: RunConfig) -> list[str]:
    model, trainer, problems = config.model, config.trainer, []
    if model.name not in catalog.DETECTION_BACKBONES:
        problems.append(
            f"model.name {model.name!r}: a detection backbone is one of {', '.join(catalog.DETECTION_BACKBONES)}"
        )
    if model.norm not in catalog.DETECTION_NORMS:
        problems.append(
            f"model.norm {model.norm!r}: a detection backbone's norm is one of {', '.join(catalog.DETECTION_NORMS)} "
            "(bn_frozen is BN*: frozen statistics and affine)"
        )
    if config.data.name not in DETECTION_DATA:
        problems.append(f"data.name {config.data.name!r}: detection reads {' or '.join(DETECTION_DATA)} (COCO format)")
    stages = catalog.DETECTION_STAGES.get(model.name)
    if model.trainable_layers is not None and stages is not None and model.trainable_layers > stages:
        problems.append(
            f"model.trainable_layers {model.trainable_layers}: {model.name} has {stages} stages; give 0 to {stages}"
        )
    fpn = model.detector_options.get("fpn_channels")
    if fpn is not None and model.head_norm not in (None, "none") and fpn % catalog.HEAD_GROUPS:
        problems.append(
            f"model.detector_options.fpn_channels {fpn}: model.head_norm {model.head_norm!r} normalizes the FPN and "
            f"heads in {catalog.HEAD_GROUPS} groups; give a multiple of {catalog.HEAD_GROUPS} (e.g. 32, 64, 256)"
        )
    if model.box_head == "2fc" and model.head_norm not in (None, "none"):
        problems.append(f"model.box_head '2fc' has no convs for model.head_norm {model.head_norm!r}: use 4conv1fc")
    for key in ("head_k", "an_mask_head"):
        if getattr(model, key) is not None and model.head_norm != "an_gn":
            problems.append(f"model.{key} is about AN in the heads: it needs model.head_norm: an_gn")
    problems += [
        f"{'.'.join(path)} is a classification key (detection does not use it; remove it)"
        for path, default in CLASSIFICATION_KEYS.items()
        if _value(config, path) != default
    ]
    # (compared with the default, not with the keys given: a saved config.json spells every key out)
    if trainer.epochs != TrainerConfig.model_fields["epochs"].default:
        problems.append("trainer.epochs: detection trains by iterations; set trainer.iterations instead")
    if trainer.iterations is None:
        problems.append("trainer.iterations: detection needs the number of training iterations (COCO 1x: 90000)")
    if trainer.iterations is not None:
        problems += _interval_problems(trainer)
    return problems


def checkpoint_interval(trainer: TrainerConfig) -> int:
    """Detection: iterations between checkpoints (one Lightning epoch): trainer.checkpoint_every, or the largest
    divisor of the evaluation interval (trainer.eval_every, else the whole run) that is at most 1000."""
    if trainer.checkpoint_every is not None:
        return trainer.checkpoint_every
    span = trainer.eval_every or trainer.iterations
    return max(d for d in range(1, min(span, 1000) + 1) if span % d == 0)


def _interval_problems(trainer: TrainerConfig) -> list[str]:
    """Checkpoints fall on whole stretches of the run and evaluations on checkpoints, the last at the end."""
    iterations, evaluate = trainer.iterations, trainer.eval_every or trainer.iterations
    every = checkpoint_interval(trainer)
    problems = []
    if iterations % evaluate:
        problems.append(f"trainer.eval_every ({evaluate}) must divide trainer.iterations ({iterations})")
    if evaluate % every:
        problems.append(
            f"trainer.checkpoint_every ({every}) must divide trainer.eval_every ({evaluate}): models are evaluated "
            "right after a checkpoint"
        )
    if iterations % every:
        problems.append(f"trainer.checkpoint_every ({every}) must divide trainer.iterations ({iterations})")
    return problems
