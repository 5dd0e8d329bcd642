"""torchvision ResNets with the papers' variants: ResNet-D deep stem and SE units after bn3."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from an_lab.nn import SEUnit

NormLayer = Callable[[int], nn.Module]


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BasicBlock | Bottleneck)]


def last_norm_name(block: nn.Module) -> str:
    return "bn3" if isinstance(block, Bottleneck) else "bn2"


def stage_of(name: str) -> int:
    """Stage index of a layer from its name: layer1.* -> 0, layer4.* -> 3; the stem counts as stage 0."""
    head = name.split(".", 1)[0]
    return int(head[len("layer") :]) - 1 if head.startswith("layer") else 0


def use_deep_stem(model: nn.Module, norm_layer: NormLayer) -> None:
    """ResNet-D: three 3x3 convs in the stem, and average pooling before each strided 1x1 shortcut conv."""
    model.conv1 = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
        norm_layer(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        norm_layer(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
    )
    for _, block in residual_blocks(model):
        shortcut = block.downsample
        if shortcut is None or shortcut[0].stride == (1, 1):
            continue
        conv = shortcut[0]
        stride = conv.stride[0]
        conv.stride = (1, 1)
        block.downsample = nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False), conv, shortcut[1]
        )


def add_se_units(model: nn.Module, reduction: int = 16) -> None:
    """One SE unit after the last norm of every residual block (after bn3 in bottlenecks)."""
    for _, block in residual_blocks(model):
        name = last_norm_name(block)
        norm = getattr(block, name)
        channels = block.conv3.out_channels if isinstance(block, Bottleneck) else block.conv2.out_channels
        setattr(block, name, nn.Sequential(norm, SEUnit(channels, reduction)))


def paper_an_sites(model: nn.Module) -> dict[str, int]:
    """AN at bn2 of bottlenecks (after the 3x3 conv), at bn1 and bn2 of basic blocks; name -> stage."""
    sites = {}
    for name, block in residual_blocks(model):
        names = ("bn2",) if isinstance(block, Bottleneck) else ("bn1", "bn2")
        sites.update({f"{name}.{norm}": stage_of(name) for norm in names})
    return sites
