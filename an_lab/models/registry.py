"""create(name, norm=..., **an_options): every network of the papers with any normalization choice."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torchvision
from torch import nn

from an_lab.catalog import (
    DEFAULT_K,
    INPUT_SIZE,
    NORM_CHOICES,
    PLACEMENTS,
    STEMS,
    check_choice,
    default_head,
    resolve_k,
)
from an_lab.models import aognet, densenet, mobilenet, resnet
from an_lab.models.cifar_resnet import CifarResNet
from an_lab.models.convert import convert_norms, convertible_norms
from an_lab.nn import AttentiveNorm2d, SwitchableNorm2d


def _no_residual_norms(model: nn.Module) -> list[str]:
    return []


def _resnet_last_norms(model: nn.Module) -> list[str]:
    return [f"{name}.{resnet.last_norm_name(block)}" for name, block in resnet.residual_blocks(model)]


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]  # (num_classes=, norm_layer=, **kw) -> model
    stage_of: Callable[[str], int]
    paper_sites: Callable[[nn.Module], dict[str, int]]
    is_resnet: bool = True  # torchvision-style ResNet blocks: SE units and the deep stem apply
    # The last norm of each residual unit, which zero_init_residual starts at zero (none in a network without them).
    residual_last_norms: Callable[[nn.Module], list[str]] = _resnet_last_norms


ARCHITECTURES: dict[str, Architecture] = {
    **{
        name: Architecture(getattr(torchvision.models, name), resnet.stage_of, resnet.paper_an_sites)
        for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
    },
    "mobilenet_v2": Architecture(
        torchvision.models.mobilenet_v2,
        mobilenet.stage_of,
        mobilenet.paper_an_sites,
        is_resnet=False,
        residual_last_norms=_no_residual_norms,
    ),
    **{
        name: Architecture(
            partial(aognet.AOGNet, aognet.CONFIGS[name]),
            aognet.stage_of,
            aognet.paper_an_sites,
            is_resnet=False,
            residual_last_norms=aognet.unit_last_norms,
        )
        for name in aognet.CONFIGS
    },
    **{
        name: Architecture(
            getattr(densenet, name),
            densenet.stage_of,
            densenet.paper_an_sites,
            is_resnet=False,
            residual_last_norms=_no_residual_norms,
        )
        for name in ("densenet161", "cifar_densenet100")
    },
    **{
        f"cifar_resnet{depth}": Architecture(partial(CifarResNet, depth), resnet.stage_of, resnet.paper_an_sites)
        for depth in (20, 32, 56)
    },
}
assert set(ARCHITECTURES) == set(DEFAULT_K) == set(INPUT_SIZE), "catalog.py and the registry list the same models"


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in the papers; narrower layers (CIFAR, MobileNet) use the largest divisor of 32 that fits.
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _backbone_norm(norm: str) -> Callable[[int], nn.Module]:
    return {"gn": _group_norm, "an_gn": _group_norm, "sn": SwitchableNorm2d}.get(norm, nn.BatchNorm2d)


def create(
    name: str,
    *,
    norm: str = "bn",
    k: int | tuple[int, ...] | None = None,
    pooling: str = "rsd",
    head: str | None = None,
    activation: str = "hsigmoid",
    num_classes: int = 1000,
    placement: str = "paper",
    stem: str = "plain",
    zero_init_residual: bool = True,
    impl: str = "auto",
    **kw,
) -> nn.Module:
    """Build `name` with the chosen normalization.

    norm: bn, gn (32 groups), sn (Switchable Norm), se (BN + an SE unit after each block's last norm), an (AN on a
    BN backbone) or an_gn (AN on a GN backbone). head None is the paper's: a2 for an, a1 for an_gn (the GN-backed
    AN of the Mask R-CNN heads: GN(32, affine=False), a1 head, hsigmoid). AN layers sit where the papers put them
    (placement="paper") or replace every norm (placement="all", the stem taking the first stage's K); any other
    choice of layers: models.convert_norms(select=...). stem="deep" is ResNet-D.
    zero_init_residual starts the last norm of each residual unit at zero (both mixtures for AN): ResNet blocks and
    AOGNet node units; MobileNet-v2 and DenseNets have none (the released AOGNet configs do not zero-init: their
    runs set it to false).
    impl: the AN layers' implementation (AttentiveNorm2d's impl: auto, triton or torch).
    kw goes to the torchvision constructor (e.g. dropout for mobilenet_v2).
    """
    check_choice("name", name, tuple(ARCHITECTURES))
    check_choice("norm", norm, NORM_CHOICES)
    check_choice("placement", placement, PLACEMENTS)
    check_choice("stem", stem, STEMS)
    arch = ARCHITECTURES[name]
    if not arch.is_resnet and (norm == "se" or stem == "deep"):
        raise ValueError(f"norm='se' and stem='deep' apply to ResNets only, not to {name}")
    schedule = resolve_k(name, k)
    if head is None:
        head = default_head(norm)

    norm_layer = _backbone_norm(norm)
    model = arch.build(num_classes=num_classes, norm_layer=norm_layer, **kw)
    if stem == "deep":
        resnet.use_deep_stem(model, norm_layer)
    if norm == "se":
        resnet.add_se_units(model)
    if norm in ("an", "an_gn"):
        if placement == "paper":
            sites = arch.paper_sites(model)
        else:
            sites = {name: arch.stage_of(name) for name in convertible_norms(model)}
        k_of = {site: schedule[stage] for site, stage in sites.items()}
        convert_norms(model, select=k_of, k=k_of, pooling=pooling, head=head, activation=activation, impl=impl)
    if zero_init_residual:
        for norm_name in arch.residual_last_norms(model):
            _zero_init(model.get_submodule(norm_name))
    return model


def _zero_init(norm: nn.Module) -> None:
    if isinstance(norm, nn.Sequential):  # a norm followed by an SE unit
        norm = norm[0]
    if isinstance(norm, AttentiveNorm2d):
        norm.zero_init_()
    else:
        nn.init.zeros_(norm.weight)
