"""The sections of a run config (model, data, optim, trainer, wandb) and the names each key may take."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from an_lab import catalog
from an_lab.config.base import Frozen
from an_lab.config.bounds import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_FAKE_SIZE,
    MAX_IMAGE_SIZE,
    MAX_ITERATIONS,
    MAX_NUM_CLASSES,
    MAX_NUM_NODES,
    MAX_NUM_WORKERS,
    Number,
    Seed,
    control_character,
    valid_devices,
    valid_k_schedule,
)

Pooling = Literal["rsd", "mean", "concat"]
Head = Literal["a2", "a1"]
Activation = Literal["hsigmoid", "softmax", "sigmoid"]
ModelName = Literal[catalog.MODEL_NAMES]  # type: ignore[valid-type]
Norm = Literal[catalog.NORM_CHOICES + catalog.DETECTION_ONLY_NORMS]  # type: ignore[valid-type]
DataName = Literal["digits", "imagefolder", "cifar10", "cifar100", "fake", "coco", "shapes"]
Task = Literal["classification", "detection"]
Precision = Literal["32", "bf16-mixed", "16-mixed", "bf16-true", "16-true"]


class ANConfig(Frozen):
    # None: the paper's schedule for the network
    k: Annotated[int | tuple[int, ...] | None, BeforeValidator(valid_k_schedule)] = None
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
    head_k: Annotated[int | tuple[int, ...] | None, BeforeValidator(valid_k_schedule)] = None
    an_mask_head: bool | None = Field(None, strict=True)  # an_gn: AN w/ GN in the mask head too (default: GN there)
    backbone_init: BackboneInit | str | None = None
    # Detection only: how many of the backbone's stages train, from the top (catalog.DETECTION_STAGES; None: 3, the
    # papers' frozen stem and first stage). A backbone pretrained on little data may need all of them to adapt.
    trainable_layers: int | None = Field(None, ge=0, le=max(catalog.DETECTION_STAGES.values()), strict=True)
    backbone_init_ignore: tuple[str, ...] = ()  # fnmatch patterns of keys the backbone_init load may leave out
    # Detection: torchvision MaskRCNN's sampling and output sizes (DETECTOR_OPTIONS; the defaults are COCO's), e.g.
    # fewer proposals and detections for small images with few objects, and the detector's sizes
    # (catalog.DETECTOR_SIZES: fpn_channels, box_fc_channels, anchor_size; torchvision's 256, 1024 and 32), e.g. a
    # narrower detector with smaller anchors for them
    # (pydantic copies a mutable default for each model; ruff cannot tell from here that Frozen is a pydantic model)
    detector_options: dict[str, Annotated[int, Field(strict=True, ge=1, le=100_000)]] = {}  # noqa: RUF012

    @field_validator("detector_options")
    @classmethod
    def _known_detector_options(cls, value: dict) -> dict:
        known = {**DETECTOR_OPTIONS, **{name: size[0] for name, size in catalog.DETECTOR_SIZES.items()}}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown detector option(s) {', '.join(unknown)}; choose among {', '.join(known)}")
        for name, (_, least, most) in catalog.DETECTOR_SIZES.items():
            if name in value and not least <= value[name] <= most:
                raise ValueError(f"{name} is {value[name]}; give {least} to {most}")
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
    devices: Annotated[int | Literal["auto"], BeforeValidator(valid_devices)] = 1
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
