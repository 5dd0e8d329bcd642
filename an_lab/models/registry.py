"""create(name, norm=..., **an_options): every network of the papers with any normalization choice."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torchvision
from torch import nn

from an_lab.models import mobilenet, resnet
from an_lab.models.cifar_resnet import CifarResNet
from an_lab.models.convert import attentive_twin, convertible_norms
from an_lab.nn import AttentiveNorm2d, SwitchableNorm2d

NORM_CHOICES = ("bn", "gn", "sn", "se", "an", "an_gn")
PLACEMENTS = ("paper", "all")
STEMS = ("plain", "deep")


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]  # (num_classes=, norm_layer=, **kw) -> model
    default_k: tuple[int, ...]  # the paper's K per stage
    stage_of: Callable[[str], int]
    paper_sites: Callable[[nn.Module], dict[str, int]]
    input_size: int
    is_resnet: bool = True


def _cifar(depth: int) -> Callable[..., nn.Module]:
    return partial(CifarResNet, depth)


_RESNET_K = (10, 10, 20, 20)
ARCHITECTURES: dict[str, Architecture] = {
    **{
        name: Architecture(getattr(torchvision.models, name), _RESNET_K, resnet.stage_of, resnet.paper_an_sites, 224)
        for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    },
    "mobilenet_v2": Architecture(
        torchvision.models.mobilenet_v2,
        (5, 5, 5, 5, 10, 10, 10),
        mobilenet.stage_of,
        mobilenet.paper_an_sites,
        224,
        is_resnet=False,
    ),
    # The papers do not train CIFAR ResNets; K doubles in the last of the three stages as in the ImageNet schedule.
    **{
        f"cifar_resnet{depth}": Architecture(_cifar(depth), (10, 10, 20), resnet.stage_of, resnet.paper_an_sites, 32)
        for depth in (20, 32, 56)
    },
}
MODEL_NAMES = tuple(ARCHITECTURES)


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in the papers; narrower layers (CIFAR, MobileNet) use the largest divisor of 32 that fits.
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _backbone_norm(norm: str) -> Callable[[int], nn.Module]:
    return {"gn": _group_norm, "an_gn": _group_norm, "sn": SwitchableNorm2d}.get(norm, nn.BatchNorm2d)


def resolve_k(name: str, k: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    """K per stage: the paper's schedule, one int for every stage, or a tuple with one K per stage."""
    default = ARCHITECTURES[name].default_k
    if k is None:
        return default
    if isinstance(k, int) and not isinstance(k, bool):
        return (k,) * len(default)
    schedule = tuple(k)
    if len(schedule) != len(default):
        raise ValueError(
            f"k={schedule} has {len(schedule)} entries but {name} has {len(default)} stages; "
            f"give one K per stage, e.g. k={default}"
        )
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in schedule):
        raise ValueError(f"k={schedule} is not valid; every K must be an integer >= 1")
    return schedule


def _check(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


def create(
    name: str,
    *,
    norm: str = "bn",
    k: int | tuple[int, ...] | None = None,
    pooling: str = "rsd",
    head: str = "a2",
    activation: str = "hsigmoid",
    num_classes: int = 1000,
    placement: str = "paper",
    stem: str = "plain",
    zero_init_residual: bool = True,
    **kw,
) -> nn.Module:
    """Build `name` with the chosen normalization.

    norm: bn, gn (32 groups), sn (Switchable Norm), se (BN + an SE unit after each block's last norm), an (AN on a
    BN backbone) or an_gn (AN on a GN backbone). AN layers sit where the papers put them (placement="paper") or
    replace every norm (placement="all", the stem taking the first stage's K). stem="deep" is ResNet-D.
    zero_init_residual starts the last norm of each residual block at zero (both mixtures for AN).
    kw goes to the torchvision constructor (e.g. dropout for mobilenet_v2).
    """
    _check("name", name, MODEL_NAMES)
    _check("norm", norm, NORM_CHOICES)
    _check("placement", placement, PLACEMENTS)
    _check("stem", stem, STEMS)
    arch = ARCHITECTURES[name]
    if not arch.is_resnet and (norm == "se" or stem == "deep"):
        raise ValueError(f"norm='se' and stem='deep' apply to ResNets only, not to {name}")
    schedule = resolve_k(name, k)

    norm_layer = _backbone_norm(norm)
    model = arch.build(num_classes=num_classes, norm_layer=norm_layer, **kw)
    if stem == "deep":
        resnet.use_deep_stem(model, norm_layer)
    if norm == "se":
        resnet.add_se_units(model)
    if norm in ("an", "an_gn"):
        norms = convertible_norms(model)
        sites = arch.paper_sites(model) if placement == "paper" else {n: arch.stage_of(n) for n in norms}
        for site, stage in sites.items():
            parent_name, _, attribute = site.rpartition(".")
            twin = attentive_twin(norms[site], schedule[stage], pooling=pooling, head=head, activation=activation)
            setattr(model.get_submodule(parent_name), attribute, twin)
    if zero_init_residual and arch.is_resnet:
        for block_name, block in resnet.residual_blocks(model):
            _zero_init(model.get_submodule(f"{block_name}.{resnet.last_norm_name(block)}"))
    return model


def _zero_init(norm: nn.Module) -> None:
    if isinstance(norm, nn.Sequential):  # a norm followed by an SE unit
        norm = norm[0]
    if isinstance(norm, AttentiveNorm2d):
        norm.zero_init_()
    else:
        nn.init.zeros_(norm.weight)
