"""torchvision's DenseNets with any norm, a CIFAR DenseNet-BC, and where AN goes in them.

Placement. The first version of the AN paper puts AN where a unit has the fewest channels ("in the Bottleneck of
ResNets it follows the 3x3 convolution since it has the least number of channels"). In a DenseNet layer
(norm1 - ReLU - 1x1 conv - norm2 - ReLU - 3x3 conv) that is norm2, after the 1x1 conv: always bn_size x growth
channels (192 in DenseNet-161), while norm1 sees the whole concatenation (up to 2,112 channels).

Counts. torchvision's DenseNet-161 has 28,681,000 parameters with BN; the paper lists 28.73M, so it counted a
slightly different build (49 thousand more parameters; which one it does not say). AN at norm2 adds
C*K + 2K + 2K*C - 2C parameters per layer (a2 head) over BN: with K = 10, 10, 20, 20 per dense block that is
+767,688 (29.45M, far from the paper's 30.28M); with K = 20, 20, 40, 40 it is +1,565,328, i.e. 30,246,328 (30.25M,
0.11% under 30.28M; the paper's own AN overhead, 30.28M - 28.73M = 1.55M, is 1.0% under ours). No other placement
with a schedule of the papers comes closer to both figures (norm1, the transitions, the stem and the final norm add
0.3M to 4M each), so norm2 with K = 20, 20, 40, 40 is the default; placement="all" or convert_norms(select=...)
choose others.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.models.densenet import DenseNet, _DenseLayer

from an_lab.models.convert import replace_layer

NormLayer = Callable[[int], nn.Module]


def replace_batch_norms(model: nn.Module, norm_layer: NormLayer) -> nn.Module:
    """torchvision's DenseNet builds BatchNorm2d only: put norm_layer(channels) in place of each one."""
    if norm_layer is nn.BatchNorm2d:
        return model
    batch_norms = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for name, norm in batch_norms:
        replace_layer(model, name, norm_layer(norm.num_features))
    return model


def densenet161(*, num_classes: int = 1000, norm_layer: NormLayer = nn.BatchNorm2d, **kw) -> DenseNet:
    """DenseNet-161: growth 48, blocks (6, 12, 36, 24), 96 stem channels, bottleneck 4 x growth."""
    model = DenseNet(growth_rate=48, block_config=(6, 12, 36, 24), num_init_features=96, num_classes=num_classes, **kw)
    return replace_batch_norms(model, norm_layer)


def cifar_densenet100(*, num_classes: int = 10, norm_layer: NormLayer = nn.BatchNorm2d, **kw) -> DenseNet:
    """DenseNet-BC-100 (k = 12) for 32x32 images: three blocks of 16 layers, a 3x3 stem of 2k channels, no pooling
    in the stem, transitions that halve the channels (Huang et al.'s CIFAR model)."""
    model = DenseNet(growth_rate=12, block_config=(16, 16, 16), num_init_features=24, num_classes=num_classes, **kw)
    model.features.conv0 = nn.Conv2d(3, 24, kernel_size=3, padding=1, bias=False)
    nn.init.kaiming_normal_(model.features.conv0.weight)
    model.features.pool0 = nn.Identity()
    return replace_batch_norms(model, norm_layer)


def stage_of(name: str) -> int:
    """Dense block of a layer from its name: features.denseblockN.* and the transition after it -> N - 1; the stem
    -> 0; the final norm (features.norm5) -> the last block."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "features":
        return 0
    for prefix in ("denseblock", "transition"):
        if parts[1].startswith(prefix) and parts[1][len(prefix) :].isdigit():
            return int(parts[1][len(prefix) :]) - 1
    return -1 if parts[1] == "norm5" else 0


def paper_an_sites(model: nn.Module) -> dict[str, int]:
    """norm2 (after the 1x1 conv) of every dense layer -> its dense block."""
    return {f"{name}.norm2": stage_of(name) for name, m in model.named_modules() if isinstance(m, _DenseLayer)}
