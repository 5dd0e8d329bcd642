"""AttentiveNorm2d's fused path: Triton kernels for the full-size passes, the small (N, C) maths in torch.

Forward: one kernel reads x once for the (mean, biased variance) of every (n, c) plane; the head, the batch or
group statistics and the running statistics follow from those (N, C) values in torch ops (the same code as the
torch path, so the running statistics are updated exactly as there); a second kernel reads x again and writes
``(x - mean) * scale + shift`` in x's dtype. Backward: one kernel reads dy and x for the per-plane sums of dy and
dy * (x - mean), which give the gradients of the per-plane scale and shift; after autograd's pass through the
small ops, one kernel reads dy and x again and writes dx = dy * scale + a * (x - mean) + b, where a and b carry
the gradient that reaches x through the plane moments. So the input is read 2 times forward and 4 times
backward (x and dy, twice), the output and dx written once each, and nothing of the input's size is saved
beyond x itself. Half-precision inputs are loaded as they are and accumulated in fp32 (fp64 inputs in fp64).

Numerics: each program centres its planes on a pivot (the plane's first value), then reduces one tile at a time
exactly in registers (tile mean, then the squared deviations from it) and merges the tiles with Chan's formula,
so a plane with mean 1000 and std 0.01 keeps its variance (no E[x^2] - E[x]^2 cancellation anywhere).

Launches: 2 forward (moments, affine) and 2 backward (sums, dx). Where one program per (n, block of channels)
would leave a GPU short of programs (channels_last at large planes and few channels: 64 programs at 64x64x56x56),
the two reductions split each plane into chunks of whole tiles across programs, and one more small launch merges
the moments' chunks (Chan again) and one small torch sum adds the backward sums' chunks.

Layouts: every tensor is addressed as n * stride_n + c * stride_c + p * stride_p over the H * W positions p,
which covers NCHW (stride_p = 1) and channels_last (stride_c = 1) without copies; a tile spans a block of
channels and a block of positions, longer along whichever is contiguous. Any other layout is copied to NCHW.

Under torch.compile the four passes run as torch custom ops (an_lab::plane_moments, plane_affine, plane_sums,
input_grad, at the end of this module), which the compiler leaves as they are: no graph break; eager calls launch
the kernels directly.

Triton decides between compiling for the GPU and its CPU interpreter when a kernel is defined: with
``TRITON_INTERPRET=1`` set before this module is imported, the same kernels run on CPU tensors (the tests do
that); without it, only CUDA tensors are accepted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

INTERPRETED = bool(triton.knobs.runtime.interpret)

# Elements per tile (a power of two). Tests lower it to make the masked edges and the tile merging run.
MAX_TILE = 2048
# Channels per tile when channels are contiguous (channels_last).
CHANNELS_LAST_BLOCK = 64
# Programs that the reductions (moments, backward sums) aim to start at least, splitting planes into chunks of
# tiles to get there (merged by one more small launch): None is 4 per multiprocessor on CUDA, 1 on the CPU
# (the interpreter gains nothing from splitting). Tests raise it to make the split run.
MIN_PROGRAMS: int | None = None


# -- kernels ----------------------------------------------------------------------------------------------------


@triton.jit
def _plane_moments_kernel(
    x_ptr, mean_ptr, var_ptr, C, HW, CHUNK, s_n, s_c, s_p,
    SPLIT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Mean and biased variance of the planes (n, c) for a block of channels c; one program per (n, block, chunk of
    CHUNK positions). Unsplit (one chunk), it writes them; split, it writes the chunk's mean offset from the plane's
    pivot and its sum of squared deviations, laid out (N, chunks, C), for _merge_moments_kernel."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    chunk = tl.program_id(2)
    c_in = c < C
    plane = x_ptr + n * s_n + c.to(tl.int64) * s_c
    pivot = tl.load(plane, mask=c_in, other=0.0).to(ACC)  # every chunk of a plane centres on its first value
    positions = tl.arange(0, BLOCK_P)
    count = tl.zeros([BLOCK_C], dtype=ACC)
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    first = chunk * CHUNK
    end = tl.minimum(first + CHUNK, HW)
    for start in range(first, end, BLOCK_P):
        p = start + positions
        inside = c_in[:, None] & (p < end)[None, :]
        values = tl.load(plane[:, None] + p[None, :].to(tl.int64) * s_p, mask=inside, other=0.0).to(ACC)
        offsets = tl.where(inside, values - pivot[:, None], 0.0)
        in_tile = tl.minimum(end - start, BLOCK_P).to(ACC)
        tile_mean = tl.sum(offsets, axis=1) / in_tile
        deviations = tl.where(inside, offsets - tile_mean[:, None], 0.0)
        tile_m2 = tl.sum(deviations * deviations, axis=1)
        total = count + in_tile
        delta = tile_mean - mean
        mean += delta * (in_tile / total)
        m2 += tile_m2 + delta * delta * (count * (in_tile / total))
        count = total
    if SPLIT:
        out = (n * tl.num_programs(2) + chunk) * C + c
        tl.store(mean_ptr + out, mean, mask=c_in)
        tl.store(var_ptr + out, m2, mask=c_in)
    else:
        out = n * C + c
        tl.store(mean_ptr + out, pivot + mean, mask=c_in)
        tl.store(var_ptr + out, m2 / HW, mask=c_in)


@triton.jit
def _merge_moments_kernel(
    x_ptr, part_mean_ptr, part_m2_ptr, mean_ptr, var_ptr, C, HW, CHUNK, CHUNKS, s_n, s_c,
    BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Merges the chunks of _plane_moments_kernel (SPLIT) with Chan's formula into each plane's mean and variance."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_in = c < C
    pivot = tl.load(x_ptr + n * s_n + c.to(tl.int64) * s_c, mask=c_in, other=0.0).to(ACC)
    count = tl.zeros([BLOCK_C], dtype=ACC)
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for chunk in range(0, CHUNKS):
        part = (n * CHUNKS + chunk) * C + c
        part_mean = tl.load(part_mean_ptr + part, mask=c_in, other=0.0)
        part_m2 = tl.load(part_m2_ptr + part, mask=c_in, other=0.0)
        in_chunk = tl.minimum(HW - chunk * CHUNK, CHUNK).to(ACC)
        total = count + in_chunk
        delta = part_mean - mean
        mean += delta * (in_chunk / total)
        m2 += part_m2 + delta * delta * (count * (in_chunk / total))
        count = total
    out = n * C + c
    tl.store(mean_ptr + out, pivot + mean, mask=c_in)
    tl.store(var_ptr + out, m2 / HW, mask=c_in)


@triton.jit
def _plane_affine_kernel(
    x_ptr, y_ptr, mean_ptr, scale_ptr, shift_ptr, C, HW, sx_n, sx_c, sx_p, sy_n, sy_c, sy_p,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """y = (x - mean) * scale + shift with per-(n, c) mean, scale and shift, written in y's dtype."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_in = c < C
    inside = c_in[:, None] & (p < HW)[None, :]
    stat = n * C + c
    mean = tl.load(mean_ptr + stat, mask=c_in, other=0.0).to(ACC)
    scale = tl.load(scale_ptr + stat, mask=c_in, other=0.0).to(ACC)
    shift = tl.load(shift_ptr + stat, mask=c_in, other=0.0).to(ACC)
    c64, p64 = c.to(tl.int64)[:, None], p.to(tl.int64)[None, :]
    values = tl.load(x_ptr + n * sx_n + c64 * sx_c + p64 * sx_p, mask=inside, other=0.0).to(ACC)
    out = (values - mean[:, None]) * scale[:, None] + shift[:, None]
    tl.store(y_ptr + n * sy_n + c64 * sy_c + p64 * sy_p, out.to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _plane_sums_kernel(
    dy_ptr, x_ptr, mean_ptr, scale_ptr, sums_ptr, C, HW, CHUNK, sd_n, sd_c, sd_p, sx_n, sx_c, sx_p,
    HAS_SCALE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Per plane and chunk of CHUNK positions: the sum of dy, the sum of dy * (x - mean) and (HAS_SCALE) the sum of
    dy times -scale (the gradient of the mean that the affine subtracts), written to sums laid out (2 or 3, N,
    chunks, C)."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    chunk = tl.program_id(2)
    c_in = c < C
    mean = tl.load(mean_ptr + n * C + c, mask=c_in, other=0.0).to(ACC)
    c64 = c.to(tl.int64)[:, None]
    dy_plane = dy_ptr + n * sd_n + c64 * sd_c
    x_plane = x_ptr + n * sx_n + c64 * sx_c
    positions = tl.arange(0, BLOCK_P)
    total = tl.zeros([BLOCK_C], dtype=ACC)
    dot = tl.zeros([BLOCK_C], dtype=ACC)
    first = chunk * CHUNK
    end = tl.minimum(first + CHUNK, HW)
    for start in range(first, end, BLOCK_P):
        p = start + positions
        inside = c_in[:, None] & (p < end)[None, :]
        p64 = p.to(tl.int64)[None, :]
        grad = tl.load(dy_plane + p64 * sd_p, mask=inside, other=0.0).to(ACC)
        values = tl.load(x_plane + p64 * sx_p, mask=inside, other=0.0).to(ACC)
        total += tl.sum(grad, axis=1)
        dot += tl.sum(tl.where(inside, grad * (values - mean[:, None]), 0.0), axis=1)
    out = (n * tl.num_programs(2) + chunk) * C + c
    half = tl.num_programs(0).to(tl.int64) * tl.num_programs(2) * C
    tl.store(sums_ptr + out, total, mask=c_in)
    tl.store(sums_ptr + half + out, dot, mask=c_in)
    if HAS_SCALE:
        scale = tl.load(scale_ptr + n * C + c, mask=c_in, other=0.0).to(ACC)
        tl.store(sums_ptr + 2 * half + out, -scale * total, mask=c_in)


@triton.jit
def _input_grad_kernel(
    dy_ptr, x_ptr, dx_ptr, mean_ptr, scale_ptr, grad_mean_ptr, grad_var_ptr, C, HW,
    sd_n, sd_c, sd_p, sx_n, sx_c, sx_p, so_n, so_c, so_p,
    HAS_DY: tl.constexpr, HAS_MEAN: tl.constexpr, HAS_VAR: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """dx = dy * scale + (2 * grad_var * (x - mean) + grad_mean) / HW per (n, c): the affine's direct term and the
    term through the plane moments (d mean / dx = 1 / HW, d var / dx = 2 (x - mean) / HW), each where present."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_in = c < C
    inside = c_in[:, None] & (p < HW)[None, :]
    stat = n * C + c
    c64, p64 = c.to(tl.int64)[:, None], p.to(tl.int64)[None, :]
    out = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC)
    if HAS_DY:
        scale = tl.load(scale_ptr + stat, mask=c_in, other=0.0).to(ACC)
        grad = tl.load(dy_ptr + n * sd_n + c64 * sd_c + p64 * sd_p, mask=inside, other=0.0).to(ACC)
        out += grad * scale[:, None]
    size = tl.zeros([BLOCK_C], dtype=ACC) + HW  # (HW may be a compile-time 1: no .to on it)
    if HAS_VAR:
        mean = tl.load(mean_ptr + stat, mask=c_in, other=0.0).to(ACC)
        a = tl.load(grad_var_ptr + stat, mask=c_in, other=0.0).to(ACC) * (2.0 / size)
        values = tl.load(x_ptr + n * sx_n + c64 * sx_c + p64 * sx_p, mask=inside, other=0.0).to(ACC)
        out += (values - mean[:, None]) * a[:, None]
    if HAS_MEAN:
        b = tl.load(grad_mean_ptr + stat, mask=c_in, other=0.0).to(ACC) / size
        out += b[:, None]
    tl.store(dx_ptr + n * so_n + c64 * so_c + p64 * so_p, out.to(dx_ptr.dtype.element_ty), mask=inside)


# -- launchers --------------------------------------------------------------------------------------------------

# Kernel launches by construction, forward and backward of one AN call: moments (+ a merge where planes are split)
# and the affine; sums (+ one small torch sum where split) and dx.


def _accumulator(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _statistics(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _plane_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(stride of n, of c, of a position within the plane) of a 4D tensor whose planes are dense."""
    return t.stride(0), t.stride(1), t.stride(3) if t.shape[3] > 1 else t.stride(2)


def _dense_planes(t: torch.Tensor) -> bool:
    """Whether every (n, c) plane is addressed as one stride over its H * W positions (NCHW, channels_last, or a
    broadcast gradient): then the kernels read it as it is."""
    height, width = t.shape[2], t.shape[3]
    return height == 1 or width == 1 or t.stride(2) == width * t.stride(3)


def addressable(t: torch.Tensor) -> torch.Tensor:
    """t itself where the kernels can address it, else an NCHW copy."""
    return t if _dense_planes(t) else t.contiguous()


def _tiles(t: torch.Tensor) -> tuple[int, int]:
    """(channels, positions) per tile: long along whichever of the two is contiguous in memory."""
    channels, positions = t.shape[1], t.shape[2] * t.shape[3]
    stride_c, stride_p = t.stride(1), _plane_strides(t)[2]
    if stride_c == 1 and stride_p != 1 and channels > 1:  # channels_last
        block_c = min(triton.next_power_of_2(channels), CHANNELS_LAST_BLOCK, MAX_TILE)
        return block_c, min(triton.next_power_of_2(positions), max(1, MAX_TILE // block_c))
    block_p = min(triton.next_power_of_2(positions), MAX_TILE)
    return min(triton.next_power_of_2(channels), max(1, MAX_TILE // block_p)), block_p


def _chunks(t: torch.Tensor, block_c: int, block_p: int) -> tuple[int, int]:
    """(positions per chunk, chunks per plane) for the reductions: planes are split, in whole tiles, where one
    program per (n, block of channels) would leave the GPU short of MIN_PROGRAMS programs."""
    positions = t.shape[2] * t.shape[3]
    tiles = triton.cdiv(positions, block_p)
    programs = t.shape[0] * triton.cdiv(t.shape[1], block_c)
    wanted = _min_programs(t.device)
    if programs >= wanted or tiles == 1:
        return positions, 1
    chunk = triton.cdiv(tiles, min(tiles, triton.cdiv(wanted, programs))) * block_p
    return chunk, triton.cdiv(positions, chunk)


def _min_programs(device: torch.device) -> int:
    if MIN_PROGRAMS is not None:
        return MIN_PROGRAMS
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1  # the interpreter runs programs one after the other: no split


def plane_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) of every (n, c) plane of x, shape (N, C), in fp32 (fp64 for fp64 input)."""
    n, channels = x.shape[:2]
    positions = x.shape[2] * x.shape[3]
    mean = x.new_empty((n, channels), dtype=_statistics(x.dtype))
    var = torch.empty_like(mean)
    block_c, block_p = _tiles(x)
    chunk, chunks = _chunks(x, block_c, block_p)
    blocks = triton.cdiv(channels, block_c)
    accumulator = _accumulator(x.dtype)
    if chunks == 1:
        _plane_moments_kernel[(n, blocks, 1)](
            x, mean, var, channels, positions, chunk, *_plane_strides(x),
            SPLIT=False, BLOCK_C=block_c, BLOCK_P=block_p, ACC=accumulator,
        )  # fmt: skip
        return mean, var
    parts = mean.new_empty((2, n, chunks, channels))
    _plane_moments_kernel[(n, blocks, chunks)](
        x, parts[0], parts[1], channels, positions, chunk, *_plane_strides(x),
        SPLIT=True, BLOCK_C=block_c, BLOCK_P=block_p, ACC=accumulator,
    )  # fmt: skip
    merge_c = min(triton.next_power_of_2(channels), 256)
    _merge_moments_kernel[(n, triton.cdiv(channels, merge_c))](
        x, parts[0], parts[1], mean, var, channels, positions, chunk, chunks, *_plane_strides(x)[:2],
        BLOCK_C=merge_c, ACC=accumulator,
    )  # fmt: skip
    return mean, var


def _elementwise_grid(t: torch.Tensor, block_c: int, block_p: int) -> tuple[int, int, int]:
    return t.shape[0], triton.cdiv(t.shape[1], block_c), triton.cdiv(t.shape[2] * t.shape[3], block_p)


def plane_affine(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(x - mean) * scale + shift with (N, C) mean, scale and shift, in x's dtype and memory layout."""
    out = torch.empty_like(x)
    block_c, block_p = _tiles(x)
    _plane_affine_kernel[_elementwise_grid(x, block_c, block_p)](
        x, out, mean, scale.contiguous(), shift.contiguous(), x.shape[1], x.shape[2] * x.shape[3],
        *_plane_strides(x), *_plane_strides(out),
        BLOCK_C=block_c, BLOCK_P=block_p, ACC=_accumulator(x.dtype),
    )  # fmt: skip
    return out


def plane_sums(
    grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """(sum of grad, sum of grad * (x - mean)) over every (n, c) plane, shape (N, C), and with `scale` a third:
    -scale * (sum of grad)."""
    n, channels = x.shape[:2]
    block_c, block_p = _tiles(x)
    chunk, chunks = _chunks(x, block_c, block_p)
    sums = mean.new_empty((2 if scale is None else 3, n, chunks, channels))
    _plane_sums_kernel[(n, triton.cdiv(channels, block_c), chunks)](
        grad, x, mean, mean if scale is None else scale.contiguous(), sums, channels, x.shape[2] * x.shape[3], chunk,
        *_plane_strides(grad), *_plane_strides(x),
        HAS_SCALE=scale is not None, BLOCK_C=block_c, BLOCK_P=block_p, ACC=_accumulator(x.dtype),
    )  # fmt: skip
    if chunks > 1:
        sums = sums.sum(dim=2, keepdim=True)  # one small op over (2 or 3, N, chunks, C)
    return tuple(sums[:, :, 0].unbind(0))


def input_grad(grad, x, mean, scale, grad_mean, grad_var) -> torch.Tensor:
    """grad * scale + (2 * grad_var * (x - mean) + grad_mean) / (H * W) with (N, C) scale, grad_mean and grad_var, in
    x's dtype and layout; grad (with scale), grad_mean and grad_var may each be None (no term)."""
    out = torch.empty_like(x)
    block_c, block_p = _tiles(x)
    has_dy = grad is not None
    _input_grad_kernel[_elementwise_grid(x, block_c, block_p)](
        grad if has_dy else x, x, out, mean, scale.contiguous() if has_dy else mean,
        mean if grad_mean is None else grad_mean.contiguous(), mean if grad_var is None else grad_var.contiguous(),
        x.shape[1], x.shape[2] * x.shape[3],
        *_plane_strides(grad if has_dy else x), *_plane_strides(x), *_plane_strides(out),
        HAS_DY=has_dy, HAS_MEAN=grad_mean is not None, HAS_VAR=grad_var is not None,
        BLOCK_C=block_c, BLOCK_P=block_p, ACC=_accumulator(x.dtype),
    )  # fmt: skip
    return out


# -- the kernels as torch custom ops ------------------------------------------------------------------------------
# torch.compile cannot look into a Triton launch from Python: under compilation the passes go through these ops,
# opaque to the compiler (no graph break), with fake implementations that give the outputs' shapes, dtypes and
# layouts. Eager calls skip the dispatcher (a few microseconds an op, on a layer bound by the host issuing ops).


@torch.library.custom_op("an_lab::plane_moments", mutates_args=())
def _plane_moments_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return plane_moments(x)


@_plane_moments_op.register_fake
def _(x):
    mean = x.new_empty(x.shape[:2], dtype=_statistics(x.dtype))
    return mean, torch.empty_like(mean)


@torch.library.custom_op("an_lab::plane_affine", mutates_args=())
def _plane_affine_op(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return plane_affine(x, mean, scale, shift)


@_plane_affine_op.register_fake
def _(x, mean, scale, shift):
    return torch.empty_like(x)


@torch.library.custom_op("an_lab::plane_sums", mutates_args=())
def _plane_sums_op(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    return torch.stack(plane_sums(grad, x, mean, scale))


@_plane_sums_op.register_fake
def _(grad, x, mean, scale):
    return mean.new_empty((2 if scale is None else 3, *mean.shape))


@torch.library.custom_op("an_lab::input_grad", mutates_args=())
def _input_grad_op(
    grad: torch.Tensor | None,
    x: torch.Tensor,
    mean: torch.Tensor,
    scale: torch.Tensor | None,
    grad_mean: torch.Tensor | None,
    grad_var: torch.Tensor | None,
) -> torch.Tensor:
    return input_grad(grad, x, mean, scale, grad_mean, grad_var)


@_input_grad_op.register_fake
def _(grad, x, mean, scale, grad_mean, grad_var):
    return torch.empty_like(x)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """plane_moments, through its custom op under torch.compile."""
    return _plane_moments_op(x) if torch.compiler.is_compiling() else plane_moments(x)


def affine(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """plane_affine, through its custom op under torch.compile."""
    return (
        _plane_affine_op(x, mean, scale, shift)
        if torch.compiler.is_compiling()
        else plane_affine(x, mean, scale, shift)
    )


def sums(
    grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """plane_sums, through its custom op under torch.compile."""
    if torch.compiler.is_compiling():
        return tuple(_plane_sums_op(grad, x, mean, scale).unbind(0))
    return plane_sums(grad, x, mean, scale)


def grad_input(grad, x, mean, scale, grad_mean, grad_var) -> torch.Tensor:
    """input_grad, through its custom op under torch.compile."""
    if torch.compiler.is_compiling():
        return _input_grad_op(grad, x, mean, scale, grad_mean, grad_var)
    return input_grad(grad, x, mean, scale, grad_mean, grad_var)
