"""The CIFAR ResNets of He et al. (20/32/56 layers: 3 stages of 16/32/64 channels, parameter-free shortcuts).

Blocks are torchvision's BasicBlock, so layer names follow torchvision's ResNet (bn1, layer1.0.bn2, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth={depth} is not valid for a CIFAR ResNet; it must be 6n + 2 (20, 32, 44, 56, 110)")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = norm_layer(16)
        self.relu = nn.ReLU(inplace=True)
        in_channels = 16
        for stage, channels in enumerate((16, 32, 64), start=1):
            layers = []
            for index in range(blocks):
                stride = 2 if stage > 1 and index == 0 else 1
                shortcut = (
                    PadShortcut(stride, channels - in_channels) if stride > 1 or channels != in_channels else None
                )
                layers.append(BasicBlock(in_channels, channels, stride, shortcut, norm_layer=norm_layer))
                in_channels = channels
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))
