"""torchvision MobileNet-v2 and where AN goes in it: after each block's 3x3 depthwise conv."""

from __future__ import annotations

from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

# Blocks per inverted-residual setting in torchvision's default configuration (t, c, n, s rows).
SETTING_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def _setting_of_block(index: int) -> int:
    """features[index] (1-based blocks) -> 0-based inverted-residual setting."""
    bound = 0
    for setting, count in enumerate(SETTING_BLOCKS):
        bound += count
        if index <= bound:
            return setting
    return len(SETTING_BLOCKS) - 1  # the final 1x1 conv belongs to the last setting


def stage_of(name: str) -> int:
    parts = name.split(".")
    return _setting_of_block(int(parts[1])) if parts[0] == "features" else 0


def paper_an_sites(model: nn.Module) -> dict[str, int]:
    sites = {}
    for index, block in enumerate(model.features):
        if not isinstance(block, InvertedResidual):
            continue
        # With expansion 1 the depthwise conv comes first; otherwise it follows the 1x1 expansion.
        position = next(
            i for i, layer in enumerate(block.conv) if isinstance(layer, nn.Sequential) and layer[0].groups > 1
        )
        sites[f"features.{index}.conv.{position}.1"] = _setting_of_block(index)
    return sites
