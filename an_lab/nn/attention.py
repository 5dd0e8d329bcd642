"""The attention branch of Attentive Normalization: pooling -> head -> activation.

It reads the per-(n, c) moments that the layer has already computed for its standardization, so the
input is never traversed a second time for the attention weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from an_lab.catalog import ACTIVATIONS, HEADS, POOLINGS, check_choice
from an_lab.nn.moments import keep_statistics_fp32

# The reference code's constant in mean / sqrt(var + 1e-3); it also keeps the pooled std finite.
POOL_EPS = 1e-3


def _activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "hsigmoid":
        # relu6(a + 3) / 6 is F.hardsigmoid, written so that it has a second derivative (double_backward=True).
        return F.relu6(logits + 3) / 6
    if activation == "softmax":
        return logits.softmax(dim=1)  # over the K components
    return logits.sigmoid()


class AttentionWeights(nn.Module):
    """Instance-specific mixture weights lam (N, K) from per-plane moments.

    The reference implementation's head is a 1x1 convolution on the pooled (N, C, 1, 1) map; a linear
    layer on the (N, C) vector is the same map with the same parameter count and initialization.

    The weights are computed in the dtype of the moments. A linear head cast to half precision is read in that
    dtype; the a2 head's BatchNorm1d normalizes over the batch, so it stays fp32 through module casts.
    """

    def __init__(self, num_features: int, k: int, pooling: str, head: str, activation: str) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        check_choice("head", head, HEADS)
        check_choice("activation", activation, ACTIVATIONS)
        self.pooling, self.head, self.activation = pooling, head, activation
        in_features = 2 * num_features if pooling == "concat" else num_features
        self.fc = nn.Linear(in_features, k, bias=head == "a1")
        self.norm = nn.BatchNorm1d(k) if head == "a2" else None
        if self.norm is not None:
            self.norm._apply(keep_statistics_fp32(lambda t: t))  # fp32 under a half-precision default dtype
        self.reset_parameters()

    def _apply(self, fn, recurse=True):
        """Module casts (.to, .half, .bfloat16, ...) apply, except that the a2 head's BatchNorm1d stays fp32."""
        norm = self._modules.get("norm")
        if norm is None or not recurse:
            return super()._apply(fn, recurse)
        self._modules["norm"] = None  # skipped by the cast below
        try:
            super()._apply(fn, recurse)
        finally:
            self._modules["norm"] = norm
        norm._apply(keep_statistics_fp32(fn))
        return self

    def reset_parameters(self) -> None:
        # Kaiming-normal with fan_out, as the reference initializes its 1x1 conv (fan_out = K).
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)
        if self.norm is not None:
            self.norm.reset_parameters()  # weight 1, bias 0, fresh running statistics

    def pool(self, mean: torch.Tensor, var: torch.Tensor, plane_size: int) -> torch.Tensor:
        """mean, var: (N, C) per-plane mean and biased variance over plane_size = H*W positions."""
        if self.pooling == "mean":
            return mean
        # Unbiased variance as in the reference; a 1x1 plane has none, so it counts as 0 instead of NaN.
        unbiased = var * (plane_size / (plane_size - 1)) if plane_size > 1 else torch.zeros_like(var)
        if self.pooling == "rsd":
            return mean * torch.rsqrt(unbiased + POOL_EPS)
        return torch.cat([mean, torch.sqrt(unbiased + POOL_EPS)], dim=1)

    def forward(self, mean: torch.Tensor, var: torch.Tensor, plane_size: int) -> torch.Tensor:
        pooled = self.pool(mean, var, plane_size)
        if self.fc.weight.dtype == pooled.dtype:
            logits = self.fc(pooled)
        else:
            bias = None if self.fc.bias is None else self.fc.bias.to(pooled.dtype)
            logits = F.linear(pooled, self.fc.weight.to(pooled.dtype), bias)
        if self.norm is not None:
            if self.norm.training and logits.shape[0] < 2:
                raise ValueError(
                    "AttentiveNorm2d with head='a2' normalizes the K attention logits over the batch, which "
                    "cannot train on a batch of 1; use a batch of at least 2, head='a1', or eval mode"
                )
            norm_dtype = next(self.norm.parameters(), logits).dtype  # fp32 in a half-precision module
            logits = self.norm(logits.to(norm_dtype)).to(logits.dtype)
        return _activate(logits, self.activation)
