"""The run configuration: one validated, torch-free description of a training run.

A YAML file may start from a recipe preset (the papers' training setups) and override any key; `--set a.b=v`
overrides come last. The resolved config is the run's identity: its canonical JSON hashes to the run id.
"""

from __future__ import annotations

import copy
import difflib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from an_lab import catalog
from an_lab.errors import UsageError
from an_lab.paths import anchor, anchor_tree, is_path_key

Pooling = Literal["rsd", "mean", "concat"]
Head = Literal["a2", "a1"]
Activation = Literal["hsigmoid", "softmax", "sigmoid"]
ModelName = Literal[catalog.MODEL_NAMES]  # type: ignore[valid-type]
Norm = Literal[catalog.NORM_CHOICES + catalog.DETECTION_ONLY_NORMS]  # type: ignore[valid-type]
DataName = Literal["digits", "imagefolder", "cifar10", "cifar100", "fake", "coco", "shapes"]
Task = Literal["classification", "detection"]
Precision = Literal["32", "bf16-mixed", "16-mixed", "bf16-true", "16-true"]

# Bounds checked when a config is validated (`an-lab plan` included), so that a value that can only be a typo is an
# error before anything runs rather than a failure hours later (a seed numpy refuses, terabytes asked of the allocator).
# Integer fields are strict: YAML integers only, so `epochs: true` or `epochs: 1.5` are refused rather than read as 1
# (PyYAML reads `1e26` without a dot as a string, which a strict integer refuses too).
SEED_LIMIT = 2**32  # seeds are in [0, 2**32): numpy's RandomState and Lightning's seed_everything refuse others
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536  # per device
MAX_NUM_WORKERS = 256  # data loader processes per device
MAX_IMAGE_SIZE = 4_096  # training crop side in pixels
MAX_FAKE_SIZE = 10**7  # images per epoch of the fake data set
MAX_NUM_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_DEVICES = 256  # processes per node
MAX_NUM_NODES = 10_000
MAX_ITERATIONS = 10**8

Seed = Annotated[int, Field(strict=True, ge=0, lt=SEED_LIMIT)]


def _number(value: Any) -> Any:
    """A float may be written as an int, or as YAML 1.1's dotless exponent (`1e-3` reads as a string); not as a bool."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {value!r}")
    return value


# A finite float: `.inf`, `.nan` and the strings "inf" or "nan" are refused, as are true and false.
Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]


def _k_schedule(value: Any) -> Any:
    """model.an.k as written: None, one K for every stage, or a list of one K per stage (its length is checked against
    the network by catalog.resolve_k)."""
    if value is None:
        return value
    values = value if isinstance(value, list | tuple) else [value]
    whole = [k for k in values if isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= catalog.MAX_K]
    if not values or len(whole) != len(values):
        raise ValueError(
            f"k={value!r} is not valid; give one K or a list of one K per stage, each an integer from 1 to "
            f"{catalog.MAX_K} (AN learns K x C affine weights per layer)"
        )
    return value


def _devices(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DEVICES):
        return value
    raise ValueError(f"devices must be 'auto' or the processes per node, 1 to {MAX_DEVICES}, not {value!r}")


def control_character(text: str) -> str | None:
    """The first character of `text` that has no place on a line of a job script: control characters (line breaks,
    NUL, tab, escape...), line and paragraph separators and invisible format characters."""
    return next((char for char in text if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")), None)


class Strict(BaseModel):
    """The project's one strict pydantic base: an unknown key is an error, never ignored (sweep files, launcher
    settings and run configs derive from it)."""

    model_config = ConfigDict(extra="forbid")


class Frozen(Strict):
    """A strict model that cannot be changed once made: a run config is its identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ANConfig(Frozen):
    # None: the paper's schedule for the network
    k: Annotated[int | tuple[int, ...] | None, BeforeValidator(_k_schedule)] = None
    pooling: Pooling = "rsd"
    head: Head = "a2"
    activation: Activation = "hsigmoid"
    placement: Literal["paper", "all"] = "paper"
    impl: Literal[catalog.AN_IMPLS] = "auto"  # type: ignore[valid-type]  # how AN runs, not what: not in the run id


# The MaskRCNN arguments a detection config may set through model.detector_options, with torchvision's defaults.
DETECTOR_OPTIONS = {
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_test": 1000,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 512,
    "box_detections_per_img": 100,
}


class BackboneInit(Frozen):
    """A run of a classification sweep of the same project, by sweep name, cell (label or baseline name) and seed."""

    sweep: str = Field(min_length=1, max_length=200)
    cell: str = Field(min_length=1, max_length=200)
    seed: Seed = 0


class ModelConfig(Frozen):
    name: ModelName = "cifar_resnet20"  # detection: the backbone (resnet50, resnet101, mobilenet_v2)
    norm: Norm = "an"  # detection: the backbone's norm (bn_frozen = BN*, gn, syncbn, an)
    an: ANConfig = ANConfig()
    stem: Literal["plain", "deep"] = "plain"
    zero_init_residual: bool = Field(True, strict=True)
    # Detection only: the detector (None: mask_rcnn, Mask R-CNN; cascade_mask_rcnn: Cascade Mask R-CNN; htc: Hybrid
    # Task Cascade without its semantic branch), all on the same backbone, FPN and RPN
    detector: Literal[catalog.DETECTORS] | None = None  # type: ignore[valid-type]
    # Detection only: the norm of the FPN and heads (none: torchvision's heads; gn: 4conv1fc box head, GN mask head
    # and GN FPN; an_gn: the same with AN w/ GN in the box head's convs), the K of those AN layers (one per conv), and
    # the backbone's starting weights: a classification run ({sweep, cell, seed}), a run folder or a checkpoint file.
    head_norm: Literal["none", "gn", "an_gn"] | None = None
    # the box head: 2fc (torchvision's) or 4conv1fc (the papers' for every row; with head norms the only choice);
    # None: 2fc without head norms, 4conv1fc with them
    box_head: Literal["2fc", "4conv1fc"] | None = None
    head_k: Annotated[int | tuple[int, ...] | None, BeforeValidator(_k_schedule)] = None
    an_mask_head: bool | None = Field(None, strict=True)  # an_gn: AN w/ GN in the mask head too (default: GN there)
    backbone_init: BackboneInit | str | None = None
    # Detection only: how many of the backbone's stages train, from the top (catalog.DETECTION_STAGES; None: 3, the
    # papers' frozen stem and first stage). A backbone pretrained on little data may need all of them to adapt.
    trainable_layers: int | None = Field(None, ge=0, le=max(catalog.DETECTION_STAGES.values()), strict=True)
    backbone_init_ignore: tuple[str, ...] = ()  # fnmatch patterns of keys the backbone_init load may leave out
    # Detection: torchvision MaskRCNN's sampling and output sizes (DETECTOR_OPTIONS; the defaults are COCO's), e.g.
    # fewer proposals and detections for small images with few objects, and the detector's widths
    # (catalog.DETECTOR_WIDTHS: fpn_channels, box_fc_channels; torchvision's 256 and 1024), e.g. narrower for them
    detector_options: dict[str, Annotated[int, Field(strict=True, ge=1, le=100_000)]] = {}

    @field_validator("detector_options")
    @classmethod
    def _known_detector_options(cls, value: dict) -> dict:
        known = {**DETECTOR_OPTIONS, **catalog.DETECTOR_WIDTHS}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown detector option(s) {', '.join(unknown)}; choose among {', '.join(known)}")
        least, most = catalog.DETECTOR_WIDTH_RANGE
        for name in catalog.DETECTOR_WIDTHS:
            if name in value and not least <= value[name] <= most:
                raise ValueError(f"{name} is {value[name]}; a width is from {least} to {most} channels")
        # torchvision's own value builds the same detector as no value: the run id must not tell them apart
        return {name: setting for name, setting in value.items() if setting != known[name]}

    @model_validator(mode="before")
    @classmethod
    def _gn_backed_an_defaults_to_the_a1_head(cls, data: Any) -> Any:
        """AN on a GN backbone uses the a1 head (the papers' "AN w/ GN": GN(32, affine=False), a1, hsigmoid) unless
        the config names a head; AN on BN keeps a2. (A default, not a rewrite: an explicit an.head stays.)"""
        if not isinstance(data, dict) or data.get("norm") != "an_gn":
            return data
        an = data.get("an", {})
        if isinstance(an, dict) and "head" not in an:
            return {**data, "an": {**an, "head": catalog.default_head("an_gn")}}
        return data

    @model_validator(mode="after")
    def _k_fits_the_network(self) -> ModelConfig:
        try:
            catalog.resolve_k(self.name, self.an.k)
        except ValueError as error:
            raise ValueError(f"an.k: {error}") from None
        if not self.name.startswith("resnet") and (self.norm == "se" or self.stem == "deep"):
            raise ValueError(f"norm 'se' and stem 'deep' apply to torchvision ResNets only, not to {self.name}")
        if isinstance(self.backbone_init, str) and (
            not self.backbone_init.strip() or control_character(self.backbone_init) is not None
        ):
            raise ValueError("backbone_init must name a run folder or a checkpoint file, without control characters")
        if isinstance(self.head_k, tuple) and len(self.head_k) != catalog.HEAD_CONVS:
            raise ValueError(f"head_k: give one K or {catalog.HEAD_CONVS}, one per conv of the box head")
        return self


class DataConfig(Frozen):
    name: DataName = "digits"
    root: str = "data"  # data folder; imagefolder expects root/train/<class>/* and root/val/<class>/*
    # training crop side; validation resizes to image_size / 0.875 for ImageNet
    image_size: int = Field(32, ge=8, le=MAX_IMAGE_SIZE, strict=True)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH_SIZE, strict=True)  # per device
    num_workers: int = Field(2, ge=0, le=MAX_NUM_WORKERS, strict=True)
    download: bool = Field(False, strict=True)  # cifar only: fetch the data set when it is missing
    fake_size: int = Field(512, ge=1, le=MAX_FAKE_SIZE, strict=True)  # fake only: images per epoch
    # fake / imagefolder: taken from the data when omitted
    num_classes: int | None = Field(None, ge=2, le=MAX_NUM_CLASSES, strict=True)
    # coco / shapes (detection): image folders under root with annotations/instances_<folder>.json; image_size is the
    # shorter side images are resized to and max_size caps the longer one (COCO: 800 and 1333). A classification run
    # on shapes classifies its objects, one crop around each (the train / val folders are the splits)
    train: str = "train2017"
    val: str = "val2017"
    max_size: int | None = Field(None, ge=8, le=MAX_IMAGE_SIZE, strict=True)

    @field_validator("train", "val")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if not value or value in (".", "..") or "/" in value or "\\" in value or control_character(value) is not None:
            raise ValueError("must name one folder under data.root (no slashes, no control characters)")
        return value


class OptimConfig(Frozen):
    base_lr: Number = Field(0.1, gt=0)  # lr = base_lr * global_batch / 256
    momentum: Number = Field(0.9, ge=0, lt=1)
    nesterov: bool = Field(False, strict=True)
    weight_decay: Number = Field(1e-4, ge=0)
    exclude_norm_and_bias_from_wd: bool = Field(False, strict=True)
    warmup_epochs: Number = Field(5, ge=0, le=MAX_EPOCHS)
    label_smoothing: Number = Field(0.0, ge=0, lt=1)
    mixup_alpha: Number = Field(0.0, ge=0)
    # Detection: linear warm-up over the first iterations (from 1/3 of the rate) and gradient clipping (L2 norm)
    warmup_iterations: int = Field(500, ge=0, le=MAX_ITERATIONS, strict=True)
    clip_grad_norm: Number | None = Field(None, gt=0)
    # Detection: where the learning rate drops 10x, as fractions of trainer.iterations, increasing, each in (0, 1).
    # None: 2/3 and 8/9 (COCO 1x: 60k and 80k of 90k; 2x alike); the "20e" schedule of the cascades: 0.8, 0.95
    lr_steps: tuple[Number, ...] | None = None

    @field_validator("lr_steps")
    @classmethod
    def _fractions_of_the_run(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (
            not 1 <= len(value) <= 8 or not all(0 < f < 1 for f in value) or list(value) != sorted(set(value))
        ):
            raise ValueError(
                "give 1 to 8 increasing fractions of trainer.iterations, each between 0 and 1, e.g. [0.8, 0.95]"
            )
        return value


class TrainerConfig(Frozen):
    epochs: int = Field(120, ge=1, le=MAX_EPOCHS, strict=True)
    precision: Precision = "32"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: Annotated[int | Literal["auto"], BeforeValidator(_devices)] = 1
    num_nodes: int = Field(1, ge=1, le=MAX_NUM_NODES, strict=True)
    channels_last: bool = Field(False, strict=True)
    compile: bool = Field(False, strict=True)
    deterministic: bool = Field(True, strict=True)
    seed: Seed = 0
    limit_train_batches: int | None = Field(None, ge=1, strict=True)  # for smoke runs and throughput checks
    diagnostics: bool = Field(False, strict=True)  # save gamma/beta heatmaps and attention histograms at the end
    # CPU threads for torch's kernels. Part of the run's identity: the thread count changes how float reductions are
    # split, so a run id means one result only if it is fixed here rather than taken from how many runs share a machine.
    cpu_threads: int = Field(1, ge=1, le=256, strict=True)
    # Detection trains by iterations (optimizer steps): the learning rate drops 10x at 2/3 and 8/9 of them; a
    # checkpoint is written every checkpoint_every iterations and the model is evaluated every eval_every (and at the
    # end). None: one checkpoint per 1000 iterations and one evaluation at the end.
    iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS, strict=True)
    checkpoint_every: int | None = Field(None, ge=1, le=MAX_ITERATIONS, strict=True)
    eval_every: int | None = Field(None, ge=1, le=MAX_ITERATIONS, strict=True)


class WandbConfig(Frozen):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "an-lab"
    entity: str | None = None
    group: str | None = None  # the sweep name when launched by a sweep
    job_type: str | None = None  # the cell's label when launched by a sweep
    name: str | None = None  # the run's name in W&B: cell label and seed (default: the run id)
    tags: tuple[str, ...] = ()
    # Seconds W&B may take to start an online run; past them (no network, a silent server) the run logs offline.
    init_timeout: float = Field(30.0, gt=0, le=600, allow_inf_nan=False)


RecipeName = Literal[
    "vanilla",
    "sota",
    "mobile",
    "aognet",
    "aognet_sota",
    "cifar",
    "mask_rcnn_1x",
    "mask_rcnn_2x",
    "cascade_mask_rcnn_20e",
    "custom",
]


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
    problems = [
        f"{'.'.join(path)} is a detection key (set task: detection to use it)"
        for path, unset in DETECTION_KEYS.items()
        if _value(config, path) != unset
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


_MASK_RCNN: dict[str, Any] = {
    "task": "detection",
    "model": {"name": "resnet50", "norm": "bn_frozen", "head_norm": "none"},
    "data": {"name": "coco", "root": "data/coco", "image_size": 800, "max_size": 1333, "batch_size": 2},
    "optim": {"base_lr": 0.02, "weight_decay": 1e-4, "warmup_iterations": 500, "clip_grad_norm": 35.0},
    "trainer": {"iterations": 90_000, "checkpoint_every": 2_000, "eval_every": 10_000},
}

# The papers' training setups (their ImageNet and CIFAR recipes); a config names one and overrides what it needs.
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
    # The AOGNet authors' ImageNet configurations: the ResNet recipe with no zero-init and 256 images per GPU for
    # AOGNet-12M (128 for AOGNet-40M: set data.batch_size), 8 GPUs; the 200-epoch ones add label smoothing and mixup
    # (and keep the AOGNet stem: no ResNet-D).
    "aognet": {
        "model": {"name": "aognet_12m", "zero_init_residual": False},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 256},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5},
        "trainer": {"epochs": 120, "precision": "16-mixed"},
    },
    "aognet_sota": {
        "model": {"name": "aognet_12m", "zero_init_residual": False},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 256},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5, "label_smoothing": 0.1, "mixup_alpha": 0.2},
        "trainer": {"epochs": 200, "precision": "16-mixed"},
    },
    "cifar": {
        "model": {"name": "cifar_resnet20"},
        "data": {"name": "cifar100", "image_size": 32, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 1},
        "trainer": {"epochs": 160},
    },
    # Mask R-CNN + FPN fine-tuning as the papers (their mmdetection setup): 8 GPUs x 2 images, lr 0.02 at 16 images,
    # 90k (1x) or 180k (2x) iterations with 10x drops at 2/3 and 8/9, 500 warm-up iterations, weight decay 1e-4,
    # gradients clipped at L2 norm 35, images resized to 800 on the shorter side (at most 1333 on the longer).
    "mask_rcnn_1x": _MASK_RCNN,
    "mask_rcnn_2x": {**_MASK_RCNN, "trainer": {**_MASK_RCNN["trainer"], "iterations": 180_000}},
    # The cascades' "20e" schedule (the authors' cascade_mask_rcnn_*_fpn_20e configurations): 20 epochs of COCO
    # train2017 at 16 images per iteration, mmdetection's 7,330 iterations per epoch (the 117,266 images with
    # annotations; 146,600 in all), the rate divided by 10 after epochs 16 and 19 (iterations 117,280 and 139,270),
    # the same warm-up, clipping and resize; Cascade Mask R-CNN with 2fc heads and no head norms. A checkpoint every
    # fifth of an epoch, an evaluation every 2 epochs.
    "cascade_mask_rcnn_20e": {
        **_MASK_RCNN,
        "model": {**_MASK_RCNN["model"], "detector": "cascade_mask_rcnn", "box_head": "2fc"},
        "optim": {**_MASK_RCNN["optim"], "lr_steps": [0.8, 0.95]},
        "trainer": {"iterations": 146_600, "checkpoint_every": 1_466, "eval_every": 14_660},
    },
    "custom": {},
}


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
    """Safe YAML (no object construction from tags) into a mapping, from a bounded regular file; errors name the
    file and the line (an_lab.yamlio)."""
    from an_lab.yamlio import load_mapping

    return load_mapping(path, "config file")[0]


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
