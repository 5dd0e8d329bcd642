"""Statistics of coarser supports derived from per-(n, c) plane moments by the law of total variance.

Each helper takes mean and biased variance of shape (N, C) over equally sized planes and never touches the
input again; the pooled variance stays exact (no E[x^2] - E[x]^2 cancellation). statistics_dtype and
keep_statistics_fp32 let a layer keep the statistics of half-precision tensors in fp32.
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype that statistics are computed and kept in for tensors of `dtype`: fp32 for half precision."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def keep_statistics_fp32(fn):
    """Wraps a Module._apply function (.to, .half, .bfloat16, ...) so that it never leaves a tensor in half precision.

    A tensor that the cast would turn to fp16 / bf16 is moved to the cast's device as fp32 from its own values,
    so an fp32 statistic comes through a .bfloat16() without rounding.
    """

    def apply(tensor: torch.Tensor) -> torch.Tensor:
        result = fn(tensor)
        if result.dtype in HALF_DTYPES:
            return tensor.to(device=result.device, dtype=torch.float32)
        return result

    return apply


def batch_moments(mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel moments over (N, H, W), shape (C,)."""
    # (torch.var_mean would say the same in one call, but it is several times slower on CPU.)
    batch_mean = mean.mean(dim=0)
    offset = mean - batch_mean
    return batch_mean, torch.addcmul(var, offset, offset).mean(dim=0)


def group_moments(mean: torch.Tensor, var: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample moments over groups of C // groups channels, expanded back to shape (N, C)."""
    n, channels = mean.shape
    grouped = mean.view(n, groups, -1)
    group_mean = grouped.mean(dim=2, keepdim=True)
    offset = grouped - group_mean
    group_var = torch.addcmul(var.view(n, groups, -1), offset, offset).mean(dim=2, keepdim=True)
    per_group = channels // groups
    return (
        group_mean.expand(-1, -1, per_group).reshape(n, channels),
        group_var.expand(-1, -1, per_group).reshape(n, channels),
    )


def plane_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of each (n, c) plane of a 4D tensor, in two passes."""
    mean = x.mean(dim=(2, 3))
    return mean, (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
