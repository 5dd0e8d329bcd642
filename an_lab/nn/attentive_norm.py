"""AttentiveNorm2d: standardization followed by an instance-specific mixture of K affine transforms.

Fast path. Every standardization backbone (batch, group, instance, layer) and every pooling needs only the
per-(n, c) mean and variance of the input. The layer computes them once per plane (two passes: the mean,
then the norm of the centred planes, which keeps the variance exact where sum-of-squares cancels), derives
the batch or group statistics from them with the law of total variance, and applies the standardization and
the mixture together as one per-(n, c) scale-and-shift of the centred input. The backward pass is written by
hand: the gradient that reaches the input through the statistics is itself a per-plane affine map of the
centred input, so the whole input gradient is two fused kernels instead of autograd's chain of temporaries.
Under torch.compile the same maths runs as plain tensor ops for the compiler to fuse.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable

from an_lab.catalog import STANDARDIZATIONS, check_choice
from an_lab.nn.attention import AttentionWeights
from an_lab.nn.moments import batch_moments, group_moments, plane_moments

# Plane sizes from which batch norm's per-channel native kernels beat broadcast ops on CPU (measured at
# ResNet-50 stage shapes): the elementwise kernel wins from 28x28 planes, the reduction kernel from 7x7.
_NATIVE_MIN_PLANE = 512
_NATIVE_MIN_PLANE_SUMS = 32


def _planes(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None]


def _as_channels(x: torch.Tensor) -> torch.Tensor:
    """View (N, C, H, W) as (1, N*C, H, W): per-channel native batch-norm kernels then work per plane."""
    return x.view(1, -1, x.shape[2], x.shape[3])


def _plane_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x * scale + shift with (N, C) scale and shift, in one pass over x.

    torch.addcmul broadcasts slowly on CPU; batch norm's eval kernel with mean 0 and variance 1 is the same
    map, vectorized per channel, but it pays per channel: on small planes multiply-then-add is faster.
    """
    if not x.is_contiguous() or x.shape[2] * x.shape[3] < _NATIVE_MIN_PLANE:
        return (x * _planes(scale)).add_(_planes(shift))
    zeros = x.new_zeros(x.shape[0] * x.shape[1])
    out = torch.empty_like(x)  # written through a view, returned as a tensor of its own (in-place ops allowed)
    torch.ops.aten.native_batch_norm.out(
        _as_channels(x),
        scale.reshape(-1),
        shift.reshape(-1),
        zeros,
        zeros + 1,
        False,
        0.0,
        0.0,
        out=_as_channels(out),
        save_mean=x.new_empty(0),
        save_invstd=x.new_empty(0),
    )
    return out


def _plane_sums(grad: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of grad * x, sum of grad) over each plane, in one pass where the kernel allows."""
    if not (grad.is_contiguous() and x.is_contiguous()) or x.shape[2] * x.shape[3] < _NATIVE_MIN_PLANE_SUMS:
        return (grad * x).sum(dim=(2, 3)), grad.sum(dim=(2, 3))
    ones = x.new_ones(x.shape[0] * x.shape[1])
    _, dot, total = torch.ops.aten.native_batch_norm_backward(
        _as_channels(grad), _as_channels(x), ones, ones - 1, ones, None, None, False, 0.0, [False, True, True]
    )
    return dot.view(x.shape[:2]), total.view(x.shape[:2])


class _GradLink:
    """Hands the centred input from the moments to the affine in forward, and the output gradient back in backward.

    Both nodes contribute an input gradient; adding them inside one kernel saves autograd's separate
    accumulation pass over the whole tensor. Saved tensors stay with autograd, which frees them after backward.
    """

    __slots__ = ("centered", "grad_out", "scale")

    def __init__(self) -> None:
        self.centered = self.grad_out = self.scale = None


class _PlaneMoments(torch.autograd.Function):
    """(mean, biased variance) of each (n, c) plane; hands the centred input on to the affine that follows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, link: _GradLink):
        plane_size = x.shape[2] * x.shape[3]
        mean = x.mean(dim=(2, 3))
        centered = x - _planes(mean)
        var = torch.linalg.vector_norm(centered, dim=(2, 3)).square_().div_(plane_size)
        link.centered = centered
        ctx.save_for_backward(centered)
        ctx.link, ctx.plane_size = link, plane_size
        return mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_mean: torch.Tensor, grad_var: torch.Tensor):
        (centered,) = ctx.saved_tensors
        link = ctx.link
        # d mean / dx = 1/HW and d var / dx = 2 (x - mean) / HW: a per-plane affine map of the centred input.
        grad = _plane_affine(centered, grad_var * (2.0 / ctx.plane_size), grad_mean / ctx.plane_size)
        if link.grad_out is not None:
            grad.addcmul_(link.grad_out, _planes(link.scale))
            link.grad_out = link.scale = None
        return grad, None


class _CenteredAffine(torch.autograd.Function):
    """out = (x - mean) * scale + shift with per-(n, c) scale and shift, reading the cached centred input."""

    @staticmethod
    def forward(ctx, x, mean, scale, shift, link: _GradLink):
        centered, link.centered = link.centered, None
        ctx.defer_input_grad = x.requires_grad
        ctx.link = link
        ctx.save_for_backward(scale, centered)
        return _plane_affine(centered, scale, shift)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        scale, centered = ctx.saved_tensors
        grad_scale, grad_shift = _plane_sums(grad_out, centered)
        if ctx.defer_input_grad:
            # scale is computed from the moments of x, so _PlaneMoments.backward runs after this node and
            # adds grad_out * scale to the input gradient there.
            ctx.link.grad_out, ctx.link.scale = grad_out, scale
        return None, -scale * grad_shift, grad_scale, grad_shift, None


class _GatherAcrossRanks(torch.autograd.Function):
    """all_gather of a small tensor whose backward returns to each rank the summed gradient of its own copy."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, group):
        ctx.group = group
        gathered = local.new_empty(dist.get_world_size(group) * local.numel())
        dist.all_gather_into_tensor(gathered, local.contiguous(), group=group)
        return gathered.view(-1, *local.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def _moments_and_affine_eager(x: torch.Tensor, mixer) -> torch.Tensor:
    link = _GradLink()
    mean, var = _PlaneMoments.apply(x, link)
    scale, shift = mixer(mean, var)
    return _CenteredAffine.apply(x, mean, scale, shift, link)


def _moments_and_affine_traced(x: torch.Tensor, mixer) -> torch.Tensor:
    mean, var = plane_moments(x)
    scale, shift = mixer(mean, var)
    return torch.addcmul(_planes(shift), x - _planes(mean), _planes(scale))


class AttentiveNorm2d(nn.Module):
    """Attentive Normalization (Li, Sun, Wu 2020) as a drop-in for ``nn.BatchNorm2d``.

    ``out = (lam @ gamma) * standardize(x) + (lam @ beta)`` with ``lam = act(head(pool(x)))`` of shape (N, K)
    computed from the raw input. ``norm`` picks the standardization (batch statistics with running averages,
    or group / instance / layer statistics per sample); ``gamma`` and ``beta`` have shape (k, num_features).
    The layer runs in fp32 under autocast and returns the input's dtype.
    """

    def __init__(
        self,
        num_features: int,
        k: int,
        *,
        norm: str = "batch",
        pooling: str = "rsd",
        head: str = "a2",
        activation: str = "hsigmoid",
        groups: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        check_choice("norm", norm, STANDARDIZATIONS)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} is not valid; the number of affine components must be an integer >= 1")
        if num_features < 1:
            raise ValueError(f"num_features={num_features!r} is not valid; it must be an integer >= 1")
        if norm == "group" and (groups < 1 or num_features % groups):
            raise ValueError(
                f"groups={groups!r} is not valid for num_features={num_features}; it must divide the channels "
                f"(divisors: {', '.join(str(d) for d in range(1, num_features + 1) if num_features % d == 0)})"
            )
        self.num_features, self.k, self.norm = num_features, k, norm
        self.groups = {"group": groups, "instance": num_features, "layer": 1}.get(norm, 0)
        self.eps, self.momentum = eps, momentum
        self.track_running_stats = track_running_stats and norm == "batch"
        self.sync_stats = False  # set by convert_sync_batchnorm, with its process group (None: the whole world)
        self.process_group = None
        self.gamma = nn.Parameter(torch.empty(k, num_features))
        self.beta = nn.Parameter(torch.empty(k, num_features))
        self.attention = AttentionWeights(num_features, k, pooling, head, activation)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    @property
    def pooling(self) -> str:
        return self.attention.pooling

    @property
    def head(self) -> str:
        return self.attention.head

    @property
    def activation(self) -> str:
        return self.attention.activation

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        with torch.no_grad():
            self.gamma.normal_().mul_(0.1).add_(1.0)
            self.beta.normal_().mul_(0.1)
        self.attention.reset_parameters()

    def zero_init_(self) -> None:
        """Zero-gamma init of the last norm of a residual block: both mixtures start at 0."""
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def extra_repr(self) -> str:
        group = f", groups={self.groups}" if self.norm == "group" else ""
        return (
            f"{self.num_features}, k={self.k}, norm={self.norm}{group}, pooling={self.pooling}, head={self.head}, "
            f"activation={self.activation}, eps={self.eps}, momentum={self.momentum}, "
            f"track_running_stats={self.track_running_stats}"
        )

    # -- statistics -------------------------------------------------------------------------------------------

    def _uses_batch_statistics(self) -> bool:
        return self.training or not self.track_running_stats

    def _batch_moments(self, mean: torch.Tensor, var: torch.Tensor, plane_size: int):
        """Per-channel batch mean and biased variance from per-plane ones, across processes when synced."""
        count = mean.shape[0] * plane_size
        batch_mean, batch_var = batch_moments(mean, var)
        if self.training and self.sync_stats and dist.is_available() and dist.is_initialized():
            group = self.process_group or dist.group.WORLD
            if dist.get_world_size(group) > 1:
                local = torch.cat([batch_mean.new_full((1,), count), batch_mean, batch_var])
                gathered = _GatherAcrossRanks.apply(local, group)
                counts, means, variances = (
                    gathered[:, :1],
                    gathered[:, 1 : -self.num_features],
                    gathered[:, -self.num_features :],
                )
                count = counts.sum(dim=0)
                weights = counts / count
                batch_mean = (weights * means).sum(dim=0)
                batch_var = (weights * (variances + (means - batch_mean).square())).sum(dim=0)
        return batch_mean, batch_var, count

    def _update_running_stats(self, batch_mean, batch_var, count) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        with torch.no_grad():
            self.running_mean.lerp_(batch_mean.detach(), factor)
            # Running variance is unbiased, as in nn.BatchNorm2d.
            self.running_var.lerp_(batch_var.detach() * (count / (count - 1)), factor)

    def _standardizer(self, mean: torch.Tensor, var: torch.Tensor, plane_size: int):
        """Mean and variance that standardize each plane, broadcastable to (N, C)."""
        if self.norm == "batch":
            if not self._uses_batch_statistics():
                return self.running_mean, self.running_var
            if self.training and mean.shape[0] * plane_size <= 1:
                raise ValueError(
                    "AttentiveNorm2d(norm='batch') needs more than 1 value per channel in training, got an input "
                    "of batch 1 and spatial size 1x1; use a larger batch or eval mode"
                )
            batch_mean, batch_var, count = self._batch_moments(mean, var, plane_size)
            if self.training and self.track_running_stats:
                self._update_running_stats(batch_mean, batch_var, count)
            return batch_mean, batch_var
        return group_moments(mean, var, self.groups)

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"AttentiveNorm2d expects a 4D input (N, C, H, W), got {x.dim()}D")
        if x.shape[1] != self.num_features:
            raise ValueError(f"AttentiveNorm2d({self.num_features}) got an input with {x.shape[1]} channels")
        plane_size = x.shape[2] * x.shape[3]

        def mixer(mean: torch.Tensor, var: torch.Tensor):
            lam = self.attention(mean, var, plane_size)
            center, spread = self._standardizer(mean, var, plane_size)
            scale = (lam @ self.gamma) * torch.rsqrt(spread + self.eps)
            shift = torch.addmm((mean - center) * scale, lam, self.beta)
            return scale, shift

        # Half-precision inputs are computed in fp32 whatever autocast says; the output keeps the input's dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            if torch.compiler.is_compiling():
                out = _moments_and_affine_traced(x32, mixer)
            else:
                out = _moments_and_affine_eager(x32, mixer)
        return out.to(x.dtype)

    # -- conversions ------------------------------------------------------------------------------------------

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, and also syncs the batch statistics of AN layers."""
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        for layer in module.modules():
            if isinstance(layer, cls) and layer.norm == "batch":
                layer.sync_stats, layer.process_group = True, process_group
        return module
