"""AttentiveNorm2d(impl="triton"): the fused Triton path against the torch path in float64.

On a machine without CUDA the kernels run on CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, set
below); the CUDA cases run the same checks with compiled kernels where a GPU is present.

Tolerances, against the float64 torch path on the same input values: fp32 inputs 5e-6 on outputs and running
statistics (measured at most 7e-7), and 1e-4 of each gradient's largest magnitude on gradients (measured at most
2.8e-5: the a2 head's BatchNorm1d over K amplifies fp32 rounding in the head's gradients). Half-precision inputs
accumulate in fp32, so parameter gradients and statistics are held to the same fp32 tolerances; the output and
the input gradient, written in the input's dtype, to 1e-2 for bf16 (measured 6e-3: one rounding to 8 bits) and
1e-3 for fp16 (measured 4e-4).
"""

import copy
import importlib
import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_attentive_norm import _randomized  # tests/nn: the same layer set-up for both paths
from torch import nn

from an_lab.catalog import ACTIVATIONS, HEADS, POOLINGS
from an_lab.nn import AttentiveNorm2d
from an_lab.nn.attentive_norm import DOUBLE_BACKWARD_ERROR

# Triton chooses between compiling for the GPU and interpreting when a kernel is defined, that is when
# an_lab.nn.fused is first imported: here, at collection (no other module imports it). Without CUDA the kernels are
# interpreted on CPU tensors; with CUDA they compile for the GPU and the CPU cases are skipped.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
# About 100 s on 2 CPU cores through Triton's interpreter: out of the quick path (-m "not slow"), still run by the
# test command (CI) and by benchmarks/gpu_check.sh.
pytestmark = pytest.mark.slow
fused = importlib.import_module("an_lab.nn.fused")

DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not fused.INTERPRETED, reason="CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 without CUDA)"
        ),
    ),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
FP32 = {"out": 5e-6, "grad": 1e-4}  # measured at most 7e-7 and 2.8e-5 over the design cells


def _float64_reference(layer: AttentiveNorm2d) -> AttentiveNorm2d:
    reference = copy.deepcopy(layer).double()
    reference.impl = "torch"
    return reference


def _forward_backward(layer, x, grad, autocast=None):
    x = x.detach().clone().requires_grad_()
    if autocast is None:
        out = layer(x)
    else:
        with torch.autocast(x.device.type, dtype=autocast):  # the forward only, as training steps run
            out = layer(x)
    out.backward(grad)
    return out, x.grad


def check_against_float64(layer, x, grad, out_tol, autocast=None):
    """Output, gradients and buffers of `layer` (impl="triton") against its own torch path in float64.

    out_tol bounds what is written in the input's dtype (output, input gradient); parameter gradients and statistics
    are fp32 whatever the input, and held to FP32."""
    reference = _float64_reference(layer)
    out, x_grad = _forward_backward(layer, x, grad, autocast)
    expected, x_grad_expected = _forward_backward(reference, x.double(), grad.double())
    assert out.dtype == x_grad.dtype == x.dtype
    torch.testing.assert_close(out.double(), expected, atol=out_tol, rtol=out_tol)
    x_tol = max(out_tol, FP32["grad"])
    scale = x_grad_expected.abs().max().item()
    torch.testing.assert_close(x_grad.double(), x_grad_expected, atol=x_tol * scale, rtol=x_tol)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters(), strict=True):
        scale = p_ref.grad.abs().max().item()
        torch.testing.assert_close(
            p.grad.double(), p_ref.grad, atol=FP32["grad"] * scale, rtol=FP32["grad"], msg=f"gradient of {name}"
        )
    expected_buffers = dict(reference.named_buffers())
    for name, buffer in layer.named_buffers():
        expected_buffer = expected_buffers[name].double()
        torch.testing.assert_close(buffer.double(), expected_buffer, atol=FP32["out"], rtol=FP32["out"], msg=name)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("pooling", "head", "activation"), list(itertools.product(POOLINGS, HEADS, ACTIVATIONS)))
def test_every_design_cell_matches_the_float64_torch_path(pooling, head, activation, training, layout, device):
    torch.manual_seed(0)
    layer = AttentiveNorm2d(6, 4, pooling=pooling, head=head, activation=activation, impl="triton")
    layer = _randomized(layer).to(device).train(training)
    x = (torch.randn(3, 6, 5, 7) * 2 + 0.5).to(device, memory_format=LAYOUTS[layout])
    grad = torch.randn(3, 6, 5, 7, device=device)  # NCHW whatever x is: the kernels read each as it is laid out
    out = check_against_float64(layer, x, grad, FP32["out"])
    assert out.is_contiguous(memory_format=LAYOUTS[layout])
    assert int(layer.num_batches_tracked) == int(training)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(
    ("side", "tile", "programs"),
    [((1, 1), None, None), ((7, 7), None, None), ((13, 17), None, None), ((13, 17), 16, None), ((13, 17), 16, 48)],
    ids=["1x1", "7x7", "13x17", "13x17-tiles", "13x17-chunks"],
)
def test_masked_tile_edges(side, tile, programs, layout, device, monkeypatch):
    """Planes smaller than a tile, not a multiple of it, and, with tiles of 16 elements (4 channels per tile in
    channels_last over 6 channels), merged across tiles and masked at the channel edge; with 48 programs asked
    for, the reductions split each plane into chunks of several tiles (2 of 112 positions in NCHW, 6 of 40 in
    channels_last) that a second kernel merges."""
    if tile is not None:
        monkeypatch.setattr(fused, "MAX_TILE", tile)
        monkeypatch.setattr(fused, "CHANNELS_LAST_BLOCK", 4)
    monkeypatch.setattr(fused, "MIN_PROGRAMS", programs)
    torch.manual_seed(1)
    layer = _randomized(AttentiveNorm2d(6, 3, impl="triton")).to(device)
    x = (torch.randn(4, 6, *side) * 3 - 1).to(device, memory_format=LAYOUTS[layout])
    grad = torch.randn(4, 6, *side, device=device).contiguous(memory_format=LAYOUTS[layout])
    check_against_float64(layer, x, grad, FP32["out"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum", "cumulative"])
def test_running_statistics_over_several_steps_follow_batchnorm(momentum, device):
    """As exactly as the torch path: the running statistics come from the same (N, C) maths on the kernel's moments."""
    torch.manual_seed(2)
    layer = AttentiveNorm2d(6, 2, momentum=momentum, impl="triton").to(device)
    twin = copy.deepcopy(layer)
    twin.impl = "torch"
    bn = nn.BatchNorm2d(6, momentum=momentum).to(device)
    for step in range(4):
        x = (torch.randn(5, 6, 3, 3) * 4 - 2).to(device)
        if step % 2:
            x = x.contiguous(memory_format=torch.channels_last)
        layer(x), twin(x), bn(x)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(layer, name), getattr(bn, name), msg=name)
        torch.testing.assert_close(getattr(layer, name), getattr(twin, name), msg=name)
    assert int(layer.num_batches_tracked) == int(bn.num_batches_tracked) == 4


@pytest.mark.parametrize("device", DEVICES)
def test_a_plane_with_mean_1000_and_std_0_01_keeps_its_variance(device):
    """Each plane's variance to 1e-6 of the float64 value of the same fp32 inputs (measured 7.5e-8; 1.5e-7 merging
    32-element tiles, in one program or split across programs; the torch path's fp32 two-pass is 2.3e-4 off), and so
    the running variance and the rsd pooling that follow from it. The output's error is fp32's own: the plane mean
    rounds by up to half an ulp at 1000 (3.05e-5), the batch mean of three of them, summed to 3000 in fp32, by up to
    9.1e-5 more; the standardization divides that by the std and multiplies it by the mixture gain (measured:
    0.0096 at a bound of 0.013)."""
    torch.manual_seed(3)
    x = (1000 + 0.01 * torch.randn(3, 4, 13, 17, dtype=torch.float64)).float().to(device)
    expected_var = x.double().var(dim=(2, 3), correction=0)
    for tile, programs in ((None, None), (32, None), (32, 10**6)):
        mean, var = _moments(x, tile, programs)
        torch.testing.assert_close(var.double(), expected_var, atol=0, rtol=1e-6)
        torch.testing.assert_close(mean.double(), x.double().mean(dim=(2, 3)), atol=3.1e-5, rtol=0)  # half an ulp
    layer = AttentiveNorm2d(4, 3, pooling="rsd", head="a1", impl="triton").to(device)
    reference = _float64_reference(layer)
    captured = []
    handle = reference.attention.register_forward_hook(lambda module, inputs, output: captured.append(output))
    out, expected = layer(x), reference(x.double())
    handle.remove()
    torch.testing.assert_close(layer.running_var.double(), reference.running_var.double(), atol=0, rtol=1e-6)
    gain = (captured[0] @ reference.gamma).abs().max().item()
    bound = gain * (3.05e-5 + 9.1e-5) / x.double().std().item()
    torch.testing.assert_close(out.double(), expected, atol=bound, rtol=0)


def _moments(x, tile, programs):
    """fused.plane_moments with tiles of `tile` elements (None: the default) and `programs` programs asked for."""
    with pytest.MonkeyPatch.context() as patch:
        if tile is not None:
            patch.setattr(fused, "MAX_TILE", tile)
        patch.setattr(fused, "MIN_PROGRAMS", programs)
        return fused.plane_moments(fused.addressable(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 1e-2), (torch.float16, 1e-3)], ids=["bf16", "fp16"])
def test_half_precision_inputs_accumulate_in_fp32(dtype, tol, training, device):
    """Half-precision inputs are read as they are (no conversion pass) and written back in their dtype: against the
    float64 torch path on the same (rounded) input values, the error is the output's and gradient's own rounding."""
    torch.manual_seed(4)
    layer = _randomized(AttentiveNorm2d(8, 3, impl="triton")).to(device).train(training)
    x = (torch.randn(3, 8, 7, 7) * 2 + 1).to(device, dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 8, 7, 7).to(device, dtype)
    # Under autocast (Lightning's bf16-mixed) the layer computes in fp32 all the same.
    out = check_against_float64(layer, x, grad, tol, autocast=dtype)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert layer.running_var.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_module_matches_the_torch_path(device):
    """layer.bfloat16() (Lightning's bf16-true): the fused and torch paths do the same fp32 maths."""
    torch.manual_seed(5)
    layer = _randomized(AttentiveNorm2d(8, 3, impl="triton")).to(device).bfloat16()
    twin = copy.deepcopy(layer)
    twin.impl = "torch"
    x = (torch.randn(4, 8, 6, 6) * 2 + 1).to(device, torch.bfloat16)
    grad = torch.randn(4, 8, 6, 6).to(device, torch.bfloat16)
    out, x_grad = _forward_backward(layer, x, grad)
    expected, x_grad_expected = _forward_backward(twin, x, grad)
    torch.testing.assert_close(out, expected, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(x_grad, x_grad_expected, atol=1e-2, rtol=1e-2)
    for p, p_twin in zip(layer.parameters(), twin.parameters(), strict=True):
        assert p.grad.dtype == p.dtype
        torch.testing.assert_close(p.grad.float(), p_twin.grad.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(layer.running_var, twin.running_var)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("norm", "head"), [("batch", "a2"), ("group", "a1")])
def test_gradcheck_in_float64(norm, head, device):
    """The hand-written backward against finite differences of the fused forward itself (fast mode)."""
    torch.manual_seed(6)
    layer = AttentiveNorm2d(8, 3, norm=norm, groups=4, head=head, impl="triton").double().to(device)
    names = ("gamma", "beta", "attention.fc.weight")
    params = [dict(layer.named_parameters())[name].detach().clone().requires_grad_() for name in names]
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64, device=device, requires_grad=True)

    def function(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(function, (x, *params), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
def test_group_standardization_matches_the_float64_torch_path(device):
    """AN w/ GN (the detection heads' layer) takes the same kernels: its group statistics follow from the moments."""
    torch.manual_seed(7)
    layer = AttentiveNorm2d(8, 3, norm="group", groups=4, head="a1", impl="triton").to(device)
    x = (torch.randn(3, 8, 7, 7) + 2).to(device, memory_format=torch.channels_last)
    check_against_float64(layer, x, torch.randn(3, 8, 7, 7, device=device), FP32["out"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("step", ["params", "weights", "input"])
def test_partial_backward_calls_match_the_torch_path(step, device):
    """Gradients of the parameters alone, of the attention weights alone (through the moments only) and of the input
    alone, each from one backward call on a retained graph, in float64."""
    torch.manual_seed(8)
    layer = _randomized(AttentiveNorm2d(8, 4, impl="triton")).double().to(device)
    twin = copy.deepcopy(layer)
    twin.impl = "torch"
    x = torch.randn(4, 8, 5, 6, dtype=torch.float64, device=device) * 2 + 1
    weight = torch.randn(4, 8, 5, 6, dtype=torch.float64, device=device)
    lam_weight = torch.randn(4, 4, dtype=torch.float64, device=device)

    def gradients(module):
        captured = []
        handle = module.attention.register_forward_hook(lambda m, i, output: captured.append(output))
        inputs = x.clone().requires_grad_()
        out = module(inputs)
        handle.remove()
        if step == "weights":
            return torch.autograd.grad((captured[0] * lam_weight).sum(), inputs)
        targets = list(module.parameters()) if step == "params" else [inputs]
        return torch.autograd.grad((out * weight).sum(), targets)

    for got, expected in zip(gradients(layer), gradients(twin), strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_through_the_fused_path_is_the_layers_error(device):
    torch.manual_seed(9)
    layer = AttentiveNorm2d(8, 3, impl="triton").double().to(device)
    x = torch.randn(3, 8, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    (first,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"AttentiveNorm2d does not support double backward"):
        first.square().sum().backward()
    assert "double_backward=True" in DOUBLE_BACKWARD_ERROR
    layer.double_backward = True  # the plain ops: second derivatives work, whatever impl says
    (first,) = torch.autograd.grad(layer(x).square().sum(), x, create_graph=True)
    first.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_impl_is_checked_when_the_layer_is_built():
    with pytest.raises(ValueError, match=r"impl='cuda' is not valid; choose one of auto, triton, torch"):
        AttentiveNorm2d(8, 2, impl="cuda")
    assert "impl=triton" in repr(AttentiveNorm2d(8, 2, impl="triton"))


@pytest.mark.parametrize("device", DEVICES)
def test_auto_runs_the_torch_path_until_the_fused_one_is_measured_faster(device, monkeypatch):
    def refuse(*args):
        raise AssertionError("impl='auto' launched a kernel")

    monkeypatch.setattr(fused, "plane_moments", refuse)
    layer = AttentiveNorm2d(8, 2).to(device)
    assert layer.impl == "auto"
    x = torch.randn(3, 8, 4, 4, device=device)
    layer(x).sum().backward()
    with pytest.raises(AssertionError, match="launched a kernel"):
        AttentiveNorm2d(8, 2, impl="triton").to(device)(x)


def test_a_cpu_tensor_without_the_interpreter_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(fused, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match=r"impl='triton'\) got a tensor on cpu: .*TRITON_INTERPRET=1.*impl='torch'"):
        AttentiveNorm2d(8, 2, impl="triton")(torch.randn(3, 8, 4, 4))


def test_without_triton_the_fused_path_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton then fails, as where it is not installed
    monkeypatch.delitem(sys.modules, "an_lab.nn.fused")
    with pytest.raises(RuntimeError, match=r"impl='triton'\) needs Triton, which cannot be imported here"):
        AttentiveNorm2d(8, 2, impl="triton")(torch.randn(3, 8, 4, 4))
    assert AttentiveNorm2d(8, 2, impl="torch")(torch.randn(3, 8, 4, 4)).shape == (3, 8, 4, 4)


# Compiles every kernel for an H100 (sm_90) with Triton's own compiler and ptxas, which need no GPU: what the
# interpreter forgives (types carried through a loop, constexpr branches, pointer arithmetic) must lower to PTX.
COMPILE_FOR_A_GPU = textwrap.dedent(
    """
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from an_lab.nn import fused
    assert not fused.INTERPRETED
    TILES = {"nchw": (2, 1024), "channels_last": (64, 32)}
    FLAGS = {
        "_plane_moments_kernel": [{"SPLIT": False}, {"SPLIT": True}],
        "_plane_sums_kernel": [{"HAS_SCALE": True}, {"HAS_SCALE": False}],
        "_input_grad_kernel": [
            {"HAS_DY": True, "HAS_MEAN": True, "HAS_VAR": True},
            {"HAS_DY": False, "HAS_MEAN": True, "HAS_VAR": False},
            {"HAS_DY": True, "HAS_MEAN": False, "HAS_VAR": False},
        ],
    }
    KERNELS = (
        "_plane_moments_kernel", "_merge_moments_kernel", "_plane_affine_kernel", "_plane_sums_kernel",
        "_input_grad_kernel",
    )
    for name in KERNELS:
        kernel = getattr(fused, name)
        # fp16 with 1x1 planes: Triton compiles an integer argument equal to 1 as a constant.
        settings = (("fp32", "nchw", {}), ("bf16", "channels_last", {}), ("fp16", "nchw", {"HW": 1, "CHUNK": 1}))
        for dtype, layout, one in settings:
            block_c, block_p = TILES[layout]
            for flags in FLAGS.get(name, [{}]):
                constexprs = {"BLOCK_C": block_c, "BLOCK_P": block_p, "ACC": tl.float32, **flags, **one}
                constexprs = {arg: value for arg, value in constexprs.items() if arg in kernel.arg_names}
                signature = {}
                for arg in kernel.arg_names:
                    if arg in constexprs:
                        signature[arg] = "constexpr"
                    elif arg.endswith("_ptr"):
                        signature[arg] = "*" + (dtype if arg in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr") else "fp32")
                    else:
                        signature[arg] = "i32"
                source = ASTSource(kernel, signature=signature, constexprs=constexprs)
                compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
                assert compiled.asm["cubin"], name
                print(name, dtype, layout, *flags.values())
    """
)


def test_the_kernels_compile_for_a_gpu_without_one():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", COMPILE_FOR_A_GPU], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Three settings of each kernel's forms: moments unsplit and split, merge, affine, sums with and without the
    # mean's gradient, three of dx's.
    assert len(result.stdout.splitlines()) == 3 * (2 + 1 + 1 + 2 + 3)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs_and_broadcast_gradients(device):
    """An input whose planes are not dense (a strided slice) is copied to NCHW; the gradient of out.sum(), a
    zero-stride broadcast, is read as it is."""
    torch.manual_seed(10)
    layer = _randomized(AttentiveNorm2d(6, 3, impl="triton")).double().to(device)
    twin = copy.deepcopy(layer)
    twin.impl = "torch"
    base = torch.randn(3, 6, 10, 9, dtype=torch.float64, device=device)
    inputs = [base.clone()[:, :, ::2, 1:].requires_grad_() for _ in range(2)]  # planes of 5x8, row stride 18
    for module, x in zip((layer, twin), inputs, strict=True):
        (module(x) * 1.5).sum().backward()
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad)
    torch.testing.assert_close(layer.gamma.grad, twin.gamma.grad)


def test_torch_compile_traces_the_torch_path_without_a_graph_break():
    torch.manual_seed(11)
    layer = AttentiveNorm2d(6, 3, impl="torch").double()
    twin = copy.deepcopy(layer)
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)  # fullgraph: a graph break is an error
    torch.testing.assert_close(compiled(x), twin(x))


def _graphs(found: list[str]):
    """A torch.compile backend that keeps each graph's code and runs the graph as it is."""

    def backend(gm, example_inputs):
        found.append(gm.print_readable(print_output=False))
        return gm.forward

    return backend


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["graphs", "aot_eager", "inductor"])
def test_torch_compile_runs_the_fused_kernels_as_custom_ops_without_a_graph_break(device, backend):
    """impl='triton' under torch.compile(fullgraph=True): the four kernels are custom ops in the graph (forward and
    backward), their fake implementations carry AOTAutograd's tracing, inductor compiles around them; the output,
    the input gradient and the parameters' gradients are the torch path's, running statistics included."""
    torch.manual_seed(11)
    layer = _randomized(AttentiveNorm2d(6, 3, impl="triton")).double().to(device)
    twin = _float64_reference(layer)
    found: list[str] = []
    compiled = torch.compile(layer, backend=_graphs(found) if backend == "graphs" else backend, fullgraph=True)
    base = torch.randn(3, 6, 5, 7, dtype=torch.float64, device=device)
    inputs = [base.clone().requires_grad_() for _ in range(2)]
    for _ in range(2):  # the second call runs the compiled code again, with the running statistics moved once
        outs = [compiled(inputs[0]), twin(inputs[1])]
        torch.testing.assert_close(outs[0], outs[1])
        for out in outs:
            (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype, device=device).view_as(out)).sum().backward()
        torch.testing.assert_close(inputs[0].grad, inputs[1].grad)
        torch.testing.assert_close(layer.gamma.grad, twin.gamma.grad)
        torch.testing.assert_close(layer.running_var, twin.running_var)
    if backend == "graphs":
        code = "\n".join(found)
        assert [
            op for op in ("plane_moments", "plane_affine", "plane_sums", "input_grad") if f"an_lab.{op}" not in code
        ] == []


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_half_precision_channels_last_keeps_the_layout_and_dtype(device):
    """A bf16 channels_last input through the compiled fused path: the output keeps bf16 and channels_last (the
    fake implementation says so, and the kernel writes it), and matches the eager fused path."""
    torch.manual_seed(5)
    layer = _randomized(AttentiveNorm2d(8, 4, impl="triton")).to(device)
    twin = copy.deepcopy(layer)
    x = torch.randn(4, 8, 6, 6, device=device).to(torch.bfloat16).to(memory_format=torch.channels_last)
    out = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    expected = twin(x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
