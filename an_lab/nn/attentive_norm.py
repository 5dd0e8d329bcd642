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

import contextlib
import functools
import importlib
import sys

import torch
import torch.distributed as dist
from torch import nn

from an_lab.catalog import AN_IMPLS, STANDARDIZATIONS, check_choice
from an_lab.nn.attention import AttentionWeights
from an_lab.nn.moments import batch_moments, group_moments, keep_statistics_fp32, plane_moments, statistics_dtype

# Plane sizes from which batch norm's per-channel native kernels beat broadcast ops on CPU (measured at
# ResNet-50 stage shapes): the elementwise kernel wins from 28x28 planes, the reduction kernel from 7x7.
# The trick is for the CPU only: CUDA's batch-norm backward refuses the eval-mode call (its kernel asserts that
# the saved batch statistics exist), and on a GPU the plain ops are already fused by the elementwise kernels.
_NATIVE_MIN_PLANE = 512
_NATIVE_MIN_PLANE_SUMS = 32


def _native_fits(x: torch.Tensor, min_plane: int, *others: torch.Tensor) -> bool:
    tensors = (x, *others)
    return x.device.type == "cpu" and all(t.is_contiguous() for t in tensors) and x.shape[2] * x.shape[3] >= min_plane


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
    if not _native_fits(x, _NATIVE_MIN_PLANE):
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
    if not _native_fits(x, _NATIVE_MIN_PLANE_SUMS, grad):
        return (grad * x).sum(dim=(2, 3)), grad.sum(dim=(2, 3))
    ones = x.new_ones(x.shape[0] * x.shape[1])
    _, dot, total = torch.ops.aten.native_batch_norm_backward(
        _as_channels(grad), _as_channels(x), ones, ones - 1, ones, None, None, False, 0.0, [False, True, True]
    )
    return dot.view(x.shape[:2]), total.view(x.shape[:2])


DOUBLE_BACKWARD_ERROR = (
    "AttentiveNorm2d does not support double backward (create_graph=True) in its fast path; build the layer with "
    "double_backward=True (or set layer.double_backward = True) to run it as plain autograd ops, which give "
    "second derivatives at the cost of speed"
)


class _RefuseDoubleBackward(torch.autograd.Function):
    """Passes first-order gradients through unchanged; differentiating them again raises DOUBLE_BACKWARD_ERROR."""

    @staticmethod
    def forward(ctx, count: int, *tensors: torch.Tensor):
        return tensors[:count]  # the rest only connect this node to the graph that second derivatives walk

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(DOUBLE_BACKWARD_ERROR)


def _first_order(backward):
    """Like torch's once_differentiable, with an error that names the layer, and one that cannot be skipped.

    The gradients are computed without a graph. Under create_graph=True they are routed through a node whose
    backward raises, and that node takes every incoming gradient and saved tensor that requires grad as an
    input, so any second derivative that would flow through this backward reaches it (a bare detached alias
    would be pruned by autograd.grad(..., inputs=...) and the second derivative would silently lose a term).
    """

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        if not torch.is_grad_enabled():
            return outputs
        sources = [t for t in (*grads, *ctx.saved_tensors) if t is not None and t.requires_grad]
        present = [i for i, t in enumerate(outputs) if t is not None]
        if not sources or not present:
            return outputs
        guarded = _RefuseDoubleBackward.apply(len(present), *(outputs[i] for i in present), *sources)
        outputs = list(outputs)
        for i, tensor in zip(present, guarded, strict=True):
            outputs[i] = tensor
        return tuple(outputs)

    return wrapper


class _PlaneMoments(torch.autograd.Function):
    """(mean, biased variance) of each (n, c) plane, and two hand-off outputs for the _CenteredAffine that follows.

    ``centered`` (x minus its plane means) is what the affine scales; ``slot`` is an (N, C) placeholder whose
    values are never read. Their backward protocol: the affine returns its output gradient as the "gradient" of
    ``centered`` and its per-plane scale as the "gradient" of ``slot``. The pair stands for the affine's direct
    input gradient grad_out * scale, which this node adds to its own term within one kernel instead of leaving
    autograd a separate full-size accumulation. Both halves travel along autograd's edges of the same backward
    call, so no state is kept between calls: a call that skips this node (parameters only) leaves nothing
    behind, and a call that reaches it without the affine (through the attention weights alone) brings None.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        plane_size = x.shape[2] * x.shape[3]
        mean = x.mean(dim=(2, 3))
        centered = x - _planes(mean)
        var = torch.linalg.vector_norm(centered, dim=(2, 3)).square_().div_(plane_size)
        ctx.save_for_backward(centered)
        ctx.plane_size = plane_size
        ctx.set_materialize_grads(False)  # absent gradients stay None instead of full-size zeros
        return mean, var, centered, mean.new_empty(mean.shape)

    @staticmethod
    @_first_order
    def backward(ctx, grad_mean, grad_var, grad_out, scale):
        (centered,) = ctx.saved_tensors
        if grad_mean is None and grad_var is None:
            return None if grad_out is None else grad_out * _planes(scale)
        zeros = centered.new_zeros(centered.shape[:2])
        # d mean / dx = 1/HW and d var / dx = 2 (x - mean) / HW: a per-plane affine map of the centred input.
        grad_scale = zeros if grad_var is None else grad_var * (2.0 / ctx.plane_size)
        grad_shift = zeros if grad_mean is None else grad_mean / ctx.plane_size
        grad = _plane_affine(centered, grad_scale, grad_shift)
        if grad_out is not None:
            grad.addcmul_(grad_out, _planes(scale))
        return grad


class _CenteredAffine(torch.autograd.Function):
    """out = centered * scale + shift with per-(n, c) scale and shift (see _PlaneMoments for the hand-off)."""

    @staticmethod
    def forward(ctx, centered, slot, mean, scale, shift):
        ctx.save_for_backward(centered, scale)
        return _plane_affine(centered, scale, shift)

    @staticmethod
    @_first_order
    def backward(ctx, grad_out: torch.Tensor):
        centered, scale = ctx.saved_tensors
        grad_scale, grad_shift = _plane_sums(grad_out, centered)
        # The input gradient grad_out * scale goes to _PlaneMoments in two factors, never multiplied out here.
        hand_off = ctx.needs_input_grad[0]
        return (
            grad_out if hand_off else None,
            scale if hand_off else None,
            -scale * grad_shift,  # centered = x - mean
            grad_scale,
            grad_shift,
        )


class _GatherAcrossRanks(torch.autograd.Function):
    """all_gather of a small tensor whose backward returns to each rank the summed gradient of its own copy."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, group):
        ctx.group = group
        gathered = local.new_empty(dist.get_world_size(group) * local.numel())
        dist.all_gather_into_tensor(gathered, local.contiguous(), group=group)
        return gathered.view(-1, *local.shape)

    @staticmethod
    @_first_order
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


_TRITON_MISSING = (
    "AttentiveNorm2d(impl='triton') needs Triton, which cannot be imported here ({error}); Triton ships with "
    "torch's Linux CUDA wheels (pip install triton elsewhere), or build the layer with impl='torch' or impl='auto'"
)
_TRITON_DEVICE = (
    "AttentiveNorm2d(impl='triton') got a tensor on {device}: its Triton kernels run on CUDA tensors, or on CPU "
    "tensors through Triton's interpreter (TRITON_INTERPRET=1 set before triton is first imported, as the tests "
    "do; slow, for testing); use impl='torch' or impl='auto' on this device"
)


def _kernels():
    """an_lab.nn.fused (the Triton kernels), imported on first use; one clear error where Triton is missing. Once
    imported it is read from sys.modules, which torch.compile can trace (importlib it cannot)."""
    loaded = sys.modules.get("an_lab.nn.fused")
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module("an_lab.nn.fused")
    except ImportError as error:
        if not (error.name or "").startswith("triton"):
            raise
        raise RuntimeError(_TRITON_MISSING.format(error=error)) from None


class _FusedPlaneMoments(torch.autograd.Function):
    """The fused path's _PlaneMoments: per-plane (mean, biased variance) from one Triton kernel, and two hand-off
    outputs for the _FusedPlaneAffine that follows (the same protocol as _PlaneMoments, with a zero-stride
    placeholder in place of the centred copy: nothing of the input's size is written or saved but x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        mean, var = _kernels().moments(x)
        ctx.save_for_backward(x, mean)
        ctx.set_materialize_grads(False)
        placeholder = x.new_empty(()).expand(x.shape)
        return mean, var, placeholder, mean.new_empty(mean.shape)

    @staticmethod
    @_first_order
    def backward(ctx, grad_mean, grad_var, grad_out, scale):
        x, mean = ctx.saved_tensors
        if grad_mean is None and grad_var is None and grad_out is None:
            return None
        if grad_out is not None:
            grad_out = _kernels().addressable(grad_out)
        # One kernel: the affine's grad_out * scale plus the gradient through the plane moments.
        return _kernels().grad_input(grad_out, x, mean, scale, grad_mean, grad_var)


class _FusedPlaneAffine(torch.autograd.Function):
    """out = (x - mean) * scale + shift with per-(n, c) mean, scale and shift, from one Triton kernel, in x's dtype."""

    @staticmethod
    def forward(ctx, x, placeholder, slot, mean, scale, shift):
        ctx.save_for_backward(x, mean, scale)
        return _kernels().affine(x, mean, scale, shift)

    @staticmethod
    @_first_order
    def backward(ctx, grad_out: torch.Tensor):
        x, mean, scale = ctx.saved_tensors
        # The sums of grad_out and grad_out * (x - mean), and -scale * the first: the gradient of mean (x - mean).
        sums = _kernels().sums(_kernels().addressable(grad_out), x, mean, scale if ctx.needs_input_grad[3] else None)
        # The input gradient grad_out * scale goes to _FusedPlaneMoments in two factors, as in _CenteredAffine.
        hand_off = ctx.needs_input_grad[1]
        return (
            None,
            grad_out if hand_off else None,
            scale if hand_off else None,
            sums[2] if len(sums) == 3 else None,
            sums[1],
            sums[0],
        )


def _moments_and_affine_fused(x: torch.Tensor, mixer) -> torch.Tensor:
    x = _kernels().addressable(x)
    mean, var, placeholder, slot = _FusedPlaneMoments.apply(x)
    scale, shift = mixer(mean, var)
    return _FusedPlaneAffine.apply(x, placeholder, slot, mean, scale, shift)


def _moments_and_affine_eager(x: torch.Tensor, mixer) -> torch.Tensor:
    mean, var, centered, slot = _PlaneMoments.apply(x)
    scale, shift = mixer(mean, var)
    return _CenteredAffine.apply(centered, slot, mean, scale, shift)


def _moments_and_affine_traced(x: torch.Tensor, mixer) -> torch.Tensor:
    mean, var = plane_moments(x)
    scale, shift = mixer(mean, var)
    return torch.addcmul(_planes(shift), x - _planes(mean), _planes(scale))


class AttentiveNorm2d(nn.Module):
    """Attentive Normalization (Li, Sun, Wu 2020) as a drop-in for ``nn.BatchNorm2d``.

    ``out = (lam @ gamma) * standardize(x) + (lam @ beta)`` with ``lam = act(head(pool(x)))`` of shape (N, K)
    computed from the raw input. ``norm`` picks the standardization (batch statistics with running averages,
    or group / instance / layer statistics per sample); ``gamma`` and ``beta`` have shape (k, num_features).

    Precision: the layer computes in fp32 for half-precision inputs, under autocast or not, and returns the
    input's dtype. Cast to half precision (``.bfloat16()``, ``.half()``, Lightning's "bf16-true"), ``gamma``,
    ``beta`` and the attention's linear head follow the cast and are read as fp32 in the computation; the
    statistics stay fp32: the running averages and the BatchNorm1d of the a2 head (parameters included).

    Double backward (``create_graph=True`` followed by a second differentiation) needs
    ``double_backward=True``: the layer then runs as plain autograd ops, slower than its fused backward; the
    default raises an error that says so.

    ``impl`` picks the implementation: ``"torch"`` the fast path above, built from torch ops (any device);
    ``"triton"`` the fused path of ``an_lab.nn.fused``: Triton kernels for the passes over the input (per-plane
    moments, then the normalise + mixture affine forward; per-plane sums, then the input gradient backward), the
    head and the statistics in small torch ops, on CUDA tensors (CPU tensors only under Triton's interpreter);
    ``"auto"`` (the default) runs the torch path on every device for now: it is to choose the fused path on CUDA
    once a GPU measurement shows it faster, and none has been made yet. Under ``torch.compile`` the fused path's
    kernels are torch custom ops (``an_lab::plane_moments`` ...), opaque to the compiler, so ``impl="triton"``
    compiles without a graph break; the other impls trace the plain torch ops. With ``double_backward=True`` every
    impl runs the plain torch ops.
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
        double_backward: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        check_choice("norm", norm, STANDARDIZATIONS)
        check_choice("impl", impl, AN_IMPLS)
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
        self.double_backward = double_backward
        self.impl = impl
        if impl == "triton":  # imported now, not at a first forward that torch.compile traces (it cannot import)
            with contextlib.suppress(ImportError, RuntimeError):  # missing Triton: one clear error at that forward
                _kernels()
        self.sync_stats = False  # set by convert_sync_batchnorm, with its process group (None: the whole world)
        self.process_group = None
        self.gamma = nn.Parameter(torch.empty(k, num_features))
        self.beta = nn.Parameter(torch.empty(k, num_features))
        self.attention = AttentionWeights(num_features, k, pooling, head, activation)
        if self.track_running_stats:
            # fp32 even when built under a half-precision default dtype (e.g. Lightning's init_module).
            stats = statistics_dtype(torch.get_default_dtype())
            self.register_buffer("running_mean", torch.zeros(num_features, dtype=stats))
            self.register_buffer("running_var", torch.ones(num_features, dtype=stats))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def _apply(self, fn, recurse=True):
        """Module casts (.to, .half, .bfloat16, ...) apply, except that the running statistics stay fp32."""
        statistics = {
            name: self._buffers[name] for name in ("running_mean", "running_var") if self._buffers[name] is not None
        }
        self._buffers.update(dict.fromkeys(statistics))  # skipped by the cast below, order of the buffers kept
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers.update(statistics)
        cast = keep_statistics_fp32(fn)
        self._buffers.update({name: cast(tensor) for name, tensor in statistics.items()})
        return self

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
            + (", double_backward=True" if self.double_backward else "")
            + (f", impl={self.impl}" if self.impl != "auto" else "")
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
            self.running_mean.lerp_(batch_mean.detach().to(self.running_mean.dtype), factor)
            # Running variance is unbiased, as in nn.BatchNorm2d.
            unbiased = batch_var.detach() * (count / (count - 1))
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

    def _standardizer(self, mean: torch.Tensor, var: torch.Tensor, plane_size: int):
        """Mean and variance that standardize each plane, broadcastable to (N, C)."""
        if self.norm == "batch":
            if not self._uses_batch_statistics():
                return self.running_mean.to(mean.dtype), self.running_var.to(mean.dtype)
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
        if x.numel() == 0:
            return self._empty(x)
        plane_size = x.shape[2] * x.shape[3]

        compute = statistics_dtype(x.dtype)

        def mixer(mean: torch.Tensor, var: torch.Tensor):
            lam = self.attention(mean, var, plane_size)
            center, spread = self._standardizer(mean, var, plane_size)
            # Parameters of a half-precision module are read in the compute dtype (no copy when they match).
            scale = (lam @ self.gamma.to(compute)) * torch.rsqrt(spread + self.eps)
            shift = torch.addmm((mean - center) * scale, lam, self.beta.to(compute))
            return scale, shift

        # Half-precision inputs are computed in fp32 whatever autocast says; the output keeps the input's dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            if self._uses_kernels(x):
                return _moments_and_affine_fused(x, mixer)  # reads x as it is, accumulates in fp32
            x32 = x.to(compute)
            if self.double_backward or torch.compiler.is_compiling():
                out = _moments_and_affine_traced(x32, mixer)
            else:
                out = _moments_and_affine_eager(x32, mixer)
        return out.to(x.dtype)

    def _uses_kernels(self, x: torch.Tensor) -> bool:
        """Whether this call runs the fused Triton path: impl='triton' in first-order mode, eager or compiled (its
        kernels then as custom ops); 'auto' keeps the torch path until the fused one is measured faster on a GPU,
        and double_backward traces the plain ops."""
        if self.impl != "triton" or self.double_backward:
            return False
        kernels = _kernels()
        if not (x.device.type == "cuda" or (x.device.type == "cpu" and kernels.INTERPRETED)):
            raise RuntimeError(_TRITON_DEVICE.format(device=x.device))
        return True

    def _empty(self, x: torch.Tensor) -> torch.Tensor:
        """An empty input (a Mask R-CNN head with no region in the batch) gives an empty output, as nn.BatchNorm2d
        and nn.GroupNorm do, instead of statistics of nothing. Every trainable parameter joins the graph with a zero
        gradient, so that DDP finds them used."""
        synced = self.training and self.norm == "batch" and self.sync_stats
        if synced and dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1:
            # The other ranks wait in the gather of batch statistics: an error here instead of a hang there.
            raise ValueError("AttentiveNorm2d with synchronized statistics got an empty batch on this rank")
        if self.training and self.norm == "batch" and self.track_running_stats:
            self.num_batches_tracked.add_(1)  # nn.BatchNorm2d counts an empty batch too (and changes no statistic)
        anchor = sum((p.sum() for p in self.parameters() if p.requires_grad), x.new_zeros(()))
        return x + 0 * anchor.to(x.dtype)

    # -- conversions ------------------------------------------------------------------------------------------

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Like ``nn.SyncBatchNorm.convert_sync_batchnorm``, and also syncs the batch statistics of AN layers."""
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        for layer in module.modules():
            if isinstance(layer, cls) and layer.norm == "batch":
                layer.sync_stats, layer.process_group = True, process_group
        return module
