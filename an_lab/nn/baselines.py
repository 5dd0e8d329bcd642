"""Baselines of the papers' Table 2 that torch does not ship: the SE unit and Switchable Normalization."""

from __future__ import annotations

import torch
from torch import nn

from an_lab.nn.moments import batch_moments, group_moments, plane_moments


class SEUnit(nn.Module):
    """Squeeze-and-excitation (Hu et al.): x * sigmoid(fc(relu(fc(avgpool(x))))) with reduction r."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction={reduction!r} is not valid for {channels} channels; use 1..{channels}")
        hidden = channels // reduction
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True))))
        return x * weights.sigmoid()


class SwitchableNorm2d(nn.Module):
    """Switchable Normalization (Luo et al.): a softmax-weighted mix of IN, LN and BN statistics.

    Mean and variance have separate importance weights; LN and BN moments are derived from the IN ones.
    In eval mode the BN part uses running averages, as in the original.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.mean_weight = nn.Parameter(torch.ones(3))  # importance of IN, LN, BN
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_mean, in_var = plane_moments(x)
        ln_mean, ln_var = group_moments(in_mean, in_var, 1)
        if self.training:
            bn_mean, bn_var = batch_moments(in_mean, in_var)
            count = x.shape[0] * x.shape[2] * x.shape[3]
            with torch.no_grad():
                self.running_mean.lerp_(bn_mean, self.momentum)
                self.running_var.lerp_(bn_var * (count / max(count - 1, 1)), self.momentum)
        else:
            bn_mean, bn_var = self.running_mean, self.running_var
        mw, vw = self.mean_weight.softmax(0), self.var_weight.softmax(0)
        mean = mw[0] * in_mean + mw[1] * ln_mean + mw[2] * bn_mean
        var = vw[0] * in_var + vw[1] * ln_var + vw[2] * bn_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        return torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None])
