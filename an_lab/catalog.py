"""The names users choose from, in one torch-free place: layers, models, the CLI and config validation share them."""

from __future__ import annotations

# AttentiveNorm2d design axes (paper Table 1); the first value of each is the paper's best choice.
POOLINGS = ("rsd", "mean", "concat")
HEADS = ("a2", "a1")


def default_head(norm: str) -> str:
    """The papers' attention head: a2 for AN on BN, a1 for AN w/ GN (GN(32, affine=False), a1, hsigmoid)."""
    return "a1" if norm == "an_gn" else "a2"


ACTIVATIONS = ("hsigmoid", "softmax", "sigmoid")
# AttentiveNorm2d's implementations: auto (the torch path until the fused one is measured faster on a GPU), the
# fused Triton kernels, the torch ops.
AN_IMPLS = ("auto", "triton", "torch")
STANDARDIZATIONS = ("batch", "group", "instance", "layer")

# models.create()
NORM_CHOICES = ("bn", "gn", "sn", "se", "an", "an_gn")

# Detection (models.detection): the detectors (Mask R-CNN, Cascade Mask R-CNN, HTC), backbones, backbone norms
# (bn_frozen is the papers' BN*: FrozenBatchNorm2d), the norm of the FPN and heads, the box heads, and the convs of the
# 4conv1fc box head that AN w/ GN replaces the GN of (one K each).
DETECTORS = ("mask_rcnn", "cascade_mask_rcnn", "htc")
DETECTION_BACKBONES = ("resnet50", "resnet101", "mobilenet_v2", "aognet_12m", "aognet_40m")
# Each backbone's stages in torchvision's count of trainable layers (a ResNet's stem and layer1-4, an AOGNet's stem and
# four stages, MobileNet-v2's six), and how many of them, from the top, train by default (the papers' frozen stem and
# first stage).
DETECTION_STAGES = {"resnet50": 5, "resnet101": 5, "mobilenet_v2": 6, "aognet_12m": 5, "aognet_40m": 5}
TRAINABLE_STAGES = 3
BOX_HEADS = ("2fc", "4conv1fc")
MAX_DETECTION_SIDE = 4_096  # the longest image side a detector is profiled at (config.MAX_IMAGE_SIZE alike)
DETECTION_NORMS = ("bn_frozen", "gn", "syncbn", "an")
DETECTION_ONLY_NORMS = ("bn_frozen", "syncbn")
HEAD_NORMS = ("none", "gn", "an_gn")
HEAD_CONVS = 4
HEAD_GROUPS = 32  # the groups of GN and of AN w/ GN in the FPN and heads: their channels must be a multiple of it
# detector_options that size a detector (the rest are MaskRCNN's own arguments): name -> (torchvision's value, least,
# most). The FPN's channels (also the RPN head's and the heads' convs'), the box head's fc channels, and the side of the
# smallest anchor (on the stride-4 level; it doubles at each level up to stride 64).
DETECTOR_SIZES = {"fpn_channels": (256, 8, 4096), "box_fc_channels": (1024, 8, 4096), "anchor_size": (32, 4, 1024)}
HEAD_K = (10, 10, 20, 20)
PLACEMENTS = ("paper", "all")
STEMS = ("plain", "deep")

# The paper's K per stage for each network, and the input side it is profiled at.
_RESNET_K = (10, 10, 20, 20)
DEFAULT_K: dict[str, tuple[int, ...]] = {
    **{name: _RESNET_K for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    "mobilenet_v2": (5, 5, 5, 5, 10, 10, 10),
    # The papers train no CIFAR ResNets; K doubles in the last of the three stages as in the ImageNet schedule.
    **{f"cifar_resnet{depth}": (10, 10, 20) for depth in (20, 32, 56)},
    # AOGNets: per stage, as the authors' AN configurations (their CIFAR model has three stages).
    "aognet_12m": _RESNET_K,
    "aognet_40m": _RESNET_K,
    "cifar_aognet": (10, 10, 20),
    # DenseNets: per dense block; 20, 20, 40, 40 reproduces the first AN paper's DenseNet-161 count best
    # (an_lab/models/densenet.py says how closely).
    "densenet161": (20, 20, 40, 40),
    "cifar_densenet100": (10, 10, 20),
}
MODEL_NAMES = tuple(DEFAULT_K)
INPUT_SIZE = {name: 32 if name.startswith("cifar_") else 224 for name in MODEL_NAMES}
# The smallest image side a network takes (measured: below it a pooling layer's output would be empty); 8 for the rest.
MIN_INPUT_SIZE = {"aognet_12m": 31, "aognet_40m": 31, "densenet161": 29}


def input_size_problem(model: str, side: int) -> str | None:
    """Why `model` cannot take images of `side` pixels, or None."""
    smallest = MIN_INPUT_SIZE.get(model, 8)
    if side < smallest:
        return f"{model} takes images of at least {smallest}x{smallest} pixels (its pooling leaves nothing below that)"
    return None


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


# The most mixture components an AN layer may have. AN learns K x C gammas and betas per layer (C: the layer's channels,
# up to 2048 in a ResNet-50) and its attention head outputs K weights per sample, so memory grows linearly in K: the
# papers use K from 5 to 40, K = 1024 is already ~4M affine weights per layer, and a K of 1e11 would ask the allocator
# for terabytes before the first step.
MAX_K = 1024


def resolve_k(model: str, k: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """K per stage: the paper's schedule (None), one int for every stage, or one K per stage; each K in [1, MAX_K]."""
    default = DEFAULT_K[model]
    if k is None:
        return default
    if isinstance(k, int) and not isinstance(k, bool):
        k = (k,) * len(default)
    schedule = tuple(k)
    if len(schedule) != len(default):
        raise ValueError(
            f"k={schedule} has {len(schedule)} entries but {model} has {len(default)} stages; "
            f"give one K per stage, e.g. k={default}"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_K for v in schedule):
        raise ValueError(f"k={schedule} is not valid; every K must be an integer from 1 to {MAX_K}")
    return schedule
