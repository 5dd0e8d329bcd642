"""AttentiveNorm2d against a plain reference written here, and the BatchNorm2d behaviour users rely on."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from an_lab.catalog import ACTIVATIONS, HEADS, POOLINGS
from an_lab.nn import AttentiveNorm2d

# Layer tests that mean something on a GPU run there too; without CUDA those cases are skipped.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


def reference_forward(layer: AttentiveNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The layer the obvious way: BN without affine, pooling on its own, then a separate mixture affine."""
    return reference_forward_and_weights(layer, x)[0]


def reference_forward_and_weights(layer: AttentiveNorm2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """reference_forward, and the attention weights lam (N, K) it mixes with."""
    standardized = F.batch_norm(
        x, layer.running_mean, layer.running_var, None, None, layer.training, layer.momentum, layer.eps
    )
    mean, var = x.mean(dim=(2, 3)), x.var(dim=(2, 3))  # var unbiased, as in the reference code
    pooled = {
        "mean": mean,
        "rsd": mean / torch.sqrt(var + 1e-3),
        "concat": torch.cat([mean, torch.sqrt(var + 1e-3)], dim=1),
    }[layer.pooling]
    logits = layer.attention.fc(pooled)
    if layer.head == "a2":
        logits = layer.attention.norm(logits)
    lam = {"hsigmoid": lambda t: F.relu6(t + 3) / 6, "softmax": lambda t: t.softmax(1), "sigmoid": torch.sigmoid}[
        layer.activation
    ](logits)
    gamma, beta = lam @ layer.gamma, lam @ layer.beta
    return gamma[:, :, None, None] * standardized + beta[:, :, None, None], lam


def _randomized(layer: AttentiveNorm2d) -> AttentiveNorm2d:
    """Running statistics (where the layer keeps them) and the a2 head's BatchNorm1d away from their initial values."""
    with torch.no_grad():
        if layer.running_mean is not None:
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
        if layer.attention.norm is not None:
            layer.attention.norm.weight.uniform_(0.5, 1.5)
            layer.attention.norm.bias.normal_()
    return layer


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("pooling", "head", "activation"), list(itertools.product(POOLINGS, HEADS, ACTIVATIONS)))
def test_matches_reference_fp32(pooling, head, activation, training, device):
    torch.manual_seed(0)
    layer = _randomized(AttentiveNorm2d(24, 6, pooling=pooling, head=head, activation=activation))
    layer = layer.to(device).train(training)
    reference = copy.deepcopy(layer)
    x = (torch.randn(8, 24, 9, 11) * 2 + 0.5).to(device).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(8, 24, 9, 11).to(device)

    out = layer(x)
    expected = reference_forward(reference, x_ref)
    out.backward(grad)
    expected.backward(grad)

    precision = 1e-5 if device == "cpu" else 1e-4  # GPU reductions (cuDNN's batch norm) sum in other orders
    tol = {"atol": precision, "rtol": precision}
    torch.testing.assert_close(out, expected, **tol)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters(), strict=True):
        # Parameter gradients sum ~20k fp32 terms in a different order: 1e-5 of the gradient's own scale.
        scale = p_ref.grad.abs().max().item()
        torch.testing.assert_close(
            p.grad, p_ref.grad, atol=precision * scale, rtol=precision, msg=f"gradient of {name}"
        )
    reference_buffers = dict(reference.named_buffers())
    for name, buffer in layer.named_buffers():
        if name != "num_batches_tracked":  # F.batch_norm in the reference does not count batches
            torch.testing.assert_close(buffer, reference_buffers[name], **tol, msg=name)
    assert int(layer.num_batches_tracked) == int(training)


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "layer"])
def test_gradcheck_every_standardization(norm):
    torch.manual_seed(1)
    layer = AttentiveNorm2d(8, 3, norm=norm, groups=4, head="a1").double()
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


@pytest.mark.parametrize(("norm", "groups"), [("group", 4), ("instance", 16), ("layer", 1)])
def test_group_standardizations_match_group_norm(norm, groups):
    torch.manual_seed(2)
    layer = AttentiveNorm2d(16, 4, norm=norm, groups=4)
    x = torch.randn(5, 16, 6, 6) * 3 + 1
    lam = layer.attention(x.mean(dim=(2, 3)), x.var(dim=(2, 3), correction=0), 36)
    expected = (lam @ layer.gamma)[:, :, None, None] * F.group_norm(x, groups, eps=layer.eps) + (lam @ layer.beta)[
        :, :, None, None
    ]
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_variance_is_exact_for_large_offsets():
    """Sum-of-squares variance loses ~4 digits at mean/std = 100; the two-pass statistic does not."""
    layer = AttentiveNorm2d(4, 2, pooling="mean", head="a1").eval()
    layer.track_running_stats = False
    x64 = torch.randn(4, 4, 32, 32, dtype=torch.float64) + 100
    out = layer(x64.float())
    expected = reference_forward(copy.deepcopy(layer).double(), x64)
    torch.testing.assert_close(out.double(), expected, atol=2e-4, rtol=1e-5)


def test_running_stats_momentum_and_cumulative_average_follow_batchnorm():
    torch.manual_seed(3)
    for momentum in (0.3, None):
        layer = AttentiveNorm2d(6, 2, momentum=momentum)
        bn = nn.BatchNorm2d(6, momentum=momentum)
        for _ in range(4):
            x = torch.randn(5, 6, 3, 3) * 4 - 2
            layer(x)
            bn(x)
        torch.testing.assert_close(layer.running_mean, bn.running_mean)
        torch.testing.assert_close(layer.running_var, bn.running_var)
        assert int(layer.num_batches_tracked) == int(bn.num_batches_tracked) == 4


def test_eval_uses_running_stats_and_untracked_uses_batch_stats():
    torch.manual_seed(4)
    x = torch.randn(4, 6, 5, 5) + 3
    tracked = AttentiveNorm2d(6, 2).eval()
    untracked = AttentiveNorm2d(6, 2, track_running_stats=False).eval()
    untracked.load_state_dict(tracked.state_dict(), strict=False)
    assert untracked.running_mean is None and "running_mean" not in untracked.state_dict()
    # Fresh running stats (mean 0, var 1) leave the offset of 3 in place; batch statistics remove it.
    assert tracked(x).mean().item() > untracked(x).mean().item() + 1


def test_state_dict_round_trip_reproduces_outputs():
    torch.manual_seed(5)
    source = AttentiveNorm2d(8, 4, pooling="concat")
    source(torch.randn(4, 8, 5, 5))  # move the running statistics
    target = AttentiveNorm2d(8, 4, pooling="concat")
    target.load_state_dict(source.state_dict())
    x = torch.randn(3, 8, 5, 5)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))
    assert set(source.state_dict()) >= {"gamma", "beta", "running_mean", "running_var", "num_batches_tracked"}


def test_initialization_follows_the_paper():
    torch.manual_seed(6)
    layer = AttentiveNorm2d(512, 20)
    assert layer.gamma.shape == layer.beta.shape == (20, 512)
    assert abs(layer.gamma.mean().item() - 1) < 0.01 and abs(layer.gamma.std().item() - 0.1) < 0.01
    assert abs(layer.beta.mean().item()) < 0.01 and abs(layer.beta.std().item() - 0.1) < 0.01
    # Kaiming-normal with fan_out = K: std = sqrt(2 / K).
    assert abs(layer.attention.fc.weight.std().item() - (2 / 20) ** 0.5) < 0.02
    assert torch.equal(layer.attention.norm.weight, torch.ones(20))


def test_one_by_one_planes_give_finite_output_and_gradients():
    layer = AttentiveNorm2d(16, 4)
    x = torch.randn(8, 16, 1, 1, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.isfinite(layer.attention.fc.weight.grad).all()


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "layer"])
@pytest.mark.parametrize("training", [True, False])
def test_an_empty_batch_gives_an_empty_output_and_zero_gradients(norm, training):
    """A Mask R-CNN head sees no region in some batches: an empty output, as nn.BatchNorm2d / nn.GroupNorm give
    (the eval-mode batch-norm kernel killed the process with SIGFPE on one before), every parameter in the graph."""
    layer = AttentiveNorm2d(64, 10, norm=norm, groups=32).train(training)
    reference = nn.BatchNorm2d(64).train(training)
    x = torch.randn(0, 64, 7, 7, requires_grad=True)
    out = layer(x)
    reference(torch.randn(0, 64, 7, 7))
    out.sum().backward()
    assert out.shape == (0, 64, 7, 7) and x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None and not p.grad.any() for p in layer.parameters())
    if norm == "batch":
        assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked)
        assert torch.equal(layer.running_mean, reference.running_mean)


def test_a2_head_with_batch_of_one_in_training_is_a_clear_error():
    layer = AttentiveNorm2d(8, 4, head="a2")
    with pytest.raises(ValueError, match=r"head='a2'.*batch of at least 2"):
        layer(torch.randn(1, 8, 4, 4))
    layer.eval()
    assert layer(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)
    assert AttentiveNorm2d(8, 4, head="a1", norm="group", groups=2)(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k=0 is not valid"),
        ({"k": 2.5}, "k=2.5 is not valid"),
        ({"pooling": "max"}, "pooling='max' is not valid; choose one of rsd, mean, concat"),
        ({"head": "a3"}, "head='a3' is not valid; choose one of a2, a1"),
        ({"activation": "relu"}, "activation='relu' is not valid; choose one of hsigmoid, softmax, sigmoid"),
        ({"norm": "switch"}, "norm='switch' is not valid; choose one of batch, group, instance, layer"),
        ({"norm": "group", "groups": 5}, "groups=5 is not valid for num_features=12.*divisors: 1, 2, 3, 4, 6, 12"),
    ],
)
def test_invalid_arguments_name_the_argument_and_the_choices(kwargs, message):
    kwargs = {"k": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        AttentiveNorm2d(12, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_fp32_and_returns_the_input_dtype(dtype, device):
    torch.manual_seed(7)
    layer = AttentiveNorm2d(8, 3).to(device)
    x = torch.randn(4, 8, 6, 6).to(device, dtype)
    expected = copy.deepcopy(layer)(x.float())
    with torch.autocast(device, dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_matches_contiguous(device):
    torch.manual_seed(8)
    layer = AttentiveNorm2d(16, 4).to(device)
    twin = copy.deepcopy(layer)
    x = torch.randn(4, 16, 7, 7, device=device, requires_grad=True)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(4, 16, 7, 7, device=device)
    out, out_cl = layer(x), twin(x_cl)
    out.backward(grad)
    out_cl.backward(grad)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)  # the next convolution gets NHWC as it is
    tol = {} if device == "cpu" else {"atol": 1e-4, "rtol": 1e-4}  # GPU reductions differ between the layouts
    torch.testing.assert_close(out, out_cl, **tol)
    torch.testing.assert_close(x.grad, x_cl.grad, **tol)
    torch.testing.assert_close(layer.gamma.grad, twin.gamma.grad, **tol)


def test_gradients_when_only_the_input_or_only_the_parameters_require_them():
    torch.manual_seed(9)
    layer = AttentiveNorm2d(6, 2).eval()
    for p in layer.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layer.double()(t), (x,))

    layer = AttentiveNorm2d(6, 2)
    layer(torch.randn(3, 6, 4, 4)).sum().backward()  # the input needs no gradient
    assert all(p.grad is not None for p in layer.parameters())


def test_frozen_mixture_keeps_the_attention_head_trainable():
    """The detection fine-tuning rule: gamma, beta and running statistics frozen, the head trains."""
    layer = AttentiveNorm2d(8, 4)
    layer.gamma.requires_grad_(False)
    layer.beta.requires_grad_(False)
    layer.eval()
    before = layer.running_mean.clone()
    layer(torch.randn(4, 8, 5, 5, requires_grad=True)).square().sum().backward()
    assert layer.attention.fc.weight.grad.abs().sum() > 0 and layer.gamma.grad is None
    assert torch.equal(layer.running_mean, before)


# -- half-precision modules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)], ids=["bf16", "fp16"])
def test_half_precision_module_matches_fp32_and_keeps_statistics_in_fp32(dtype, tol, training, device):
    """layer.bfloat16() / .half() (Lightning's bf16-true / 16-true): parameters follow, statistics stay fp32."""
    torch.manual_seed(10)
    full = _randomized(AttentiveNorm2d(16, 5)).to(device).train(training)
    half = copy.deepcopy(full).to(dtype)
    statistics = [half.running_mean, half.running_var, half.attention.norm.running_mean, half.attention.norm.weight]
    assert all(t.dtype == torch.float32 for t in statistics)
    # The fp32 statistics come through the cast unrounded.
    torch.testing.assert_close(half.running_var, full.running_var, atol=0, rtol=0)
    torch.testing.assert_close(half.attention.norm.weight, full.attention.norm.weight, atol=0, rtol=0)
    twin = copy.deepcopy(half).float()  # fp32 again, with the parameter values rounded to `dtype`
    x = (torch.randn(6, 16, 7, 7, device=device) * 2 + 1).to(dtype)  # the same values reach every layer
    grad = torch.randn(6, 16, 7, 7, device=device).to(dtype)
    x_half, x_twin = x.clone().requires_grad_(), x.float().requires_grad_()

    out = half(x_half)
    out.backward(grad)
    expected = twin(x_twin)
    expected.backward(grad.float())

    assert half.gamma.dtype == half.beta.dtype == half.attention.fc.weight.dtype == dtype
    assert out.dtype == x_half.grad.dtype == dtype
    # Against the original fp32 layer, the output differs by the rounding of parameters and output only.
    torch.testing.assert_close(out.float(), full(x.float()), atol=tol, rtol=tol)
    # Against the fp32 layer with the same (rounded) parameters, the whole computation is the same fp32 maths;
    # gradients are compared there, since a parameter rounding can move an hsigmoid logit across its kink.
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)
    grad_scale = x_twin.grad.abs().max().item()
    torch.testing.assert_close(x_half.grad.float(), x_twin.grad, atol=tol * grad_scale, rtol=tol)
    for (name, p), p_twin in zip(half.named_parameters(), twin.parameters(), strict=True):
        assert p.grad.dtype == p.dtype and torch.isfinite(p.grad).all(), name
        scale = p_twin.grad.abs().max().item()
        torch.testing.assert_close(p.grad.float(), p_twin.grad, atol=tol * scale, rtol=tol, msg=f"gradient of {name}")
    # The statistics stay fp32 and are updated as in the fp32 layer.
    assert half.running_mean.dtype == half.running_var.dtype == half.attention.norm.running_var.dtype == torch.float32
    torch.testing.assert_close(half.running_mean, twin.running_mean)
    torch.testing.assert_close(half.running_var, twin.running_var)
    torch.testing.assert_close(half.attention.norm.running_var, twin.attention.norm.running_var)
    assert int(half.num_batches_tracked) == int(training)


def test_half_precision_default_dtype_at_construction_keeps_statistics_in_fp32():
    """Lightning's init_module() under bf16-true builds layers with bf16 as the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        layer = AttentiveNorm2d(8, 4)
    finally:
        torch.set_default_dtype(previous)
    assert layer.gamma.dtype == layer.attention.fc.weight.dtype == torch.bfloat16
    assert layer.running_var.dtype == layer.attention.norm.running_var.dtype == torch.float32
    out = layer(torch.randn(4, 8, 5, 5).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert torch.isfinite(layer.running_var).all() and int(layer.num_batches_tracked) == 1


# -- backward calls on one graph --------------------------------------------------------------------------------


def _layer_forward_and_weights(layer: AttentiveNorm2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output and its attention weights lam, captured on the way."""
    captured = []
    handle = layer.attention.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        out = layer(x)
    finally:
        handle.remove()
    return out, captured[0]


def _gradients_of_call_sequence(layer, forward, x, steps, out_weight, lam_weight) -> list[list[torch.Tensor]]:
    """Every gradient that each backward call of `steps` returns, all on one retained forward graph.

    params / input / both: torch.autograd.grad of the weighted output; weights: of the weighted attention weights,
    with respect to the input; backward: .backward() of the weighted output, then the accumulated .grad fields.
    """
    out, lam = forward(layer, x)
    params = list(layer.parameters())
    results = []
    for step in steps:
        if step == "backward":
            (out * out_weight).sum().backward(retain_graph=True)
            results.append([x.grad.clone(), *(p.grad.clone() for p in params)])
            continue
        target = (lam * lam_weight).sum() if step == "weights" else (out * out_weight).sum()
        inputs = {"params": params, "input": [x], "both": [x, *params], "weights": [x]}[step]
        results.append(list(torch.autograd.grad(target, inputs, retain_graph=True)))
    return results


CALL_SEQUENCES = {
    "params-then-weights": ["params", "weights"],
    "params-then-input": ["params", "input"],
    "params-then-backward": ["params", "backward"],
    "input-params-weights-both": ["input", "params", "weights", "both"],
    "weights-then-params": ["weights", "params"],
    "two-full-backwards": ["backward", "backward"],
    "backward-params-backward": ["backward", "params", "backward"],
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("steps", list(CALL_SEQUENCES.values()), ids=list(CALL_SEQUENCES))
def test_any_sequence_of_backward_calls_matches_the_reference(steps, training, device):
    """No state survives between backward calls: each call's gradients equal plain autograd's, in fp64."""
    torch.manual_seed(11)
    layer = _randomized(AttentiveNorm2d(8, 4)).double().to(device).train(training)
    reference = copy.deepcopy(layer)
    x = torch.randn(4, 8, 5, 6, dtype=torch.float64, device=device) * 2 + 1
    out_weight = torch.randn(4, 8, 5, 6, dtype=torch.float64, device=device)
    lam_weight = torch.randn(4, 4, dtype=torch.float64, device=device)

    got = _gradients_of_call_sequence(
        layer, _layer_forward_and_weights, x.clone().requires_grad_(), steps, out_weight, lam_weight
    )
    expected = _gradients_of_call_sequence(
        reference, reference_forward_and_weights, x.clone().requires_grad_(), steps, out_weight, lam_weight
    )
    assert [len(g) for g in got] == [len(e) for e in expected]
    for call, (step, grads, grads_expected) in enumerate(zip(steps, got, expected, strict=True)):
        for index, (grad, grad_expected) in enumerate(zip(grads, grads_expected, strict=True)):
            torch.testing.assert_close(grad, grad_expected, msg=f"call {call} ({step}), gradient {index}")


# -- double backward --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["input", "parameters", "backward"])
def test_double_backward_in_the_fast_path_is_an_error_that_names_the_layer(second):
    torch.manual_seed(12)
    layer = AttentiveNorm2d(8, 3).double()
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    (first,) = torch.autograd.grad((layer(x) * weight).sum(), x, create_graph=True)
    (plain,) = torch.autograd.grad((layer(x) * weight).sum(), x)
    torch.testing.assert_close(first, plain)  # create_graph=True alone still gives the first derivative

    penalty = first.square().sum()
    with pytest.raises(RuntimeError, match=r"AttentiveNorm2d does not support double backward \(create_graph=True\)"):
        if second == "backward":
            penalty.backward()
        else:
            torch.autograd.grad(penalty, [x] if second == "input" else list(layer.parameters()))


@pytest.mark.parametrize(
    ("norm", "head", "activation"),
    [("batch", "a2", "hsigmoid"), ("group", "a1", "softmax"), ("instance", "a1", "sigmoid")],
)
def test_double_backward_option_gives_correct_second_derivatives(norm, head, activation):
    torch.manual_seed(13)
    layer = AttentiveNorm2d(8, 3, norm=norm, groups=4, head=head, activation=activation, double_backward=True)
    layer = layer.double()
    x = torch.randn(3, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    names = ("gamma", "beta", "attention.fc.weight")
    params = [dict(layer.named_parameters())[name].detach().clone().requires_grad_() for name in names]

    def function(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(function, (x, *params))
    assert torch.autograd.gradgradcheck(function, (x, *params))
    fast = copy.deepcopy(layer)
    fast.double_backward = False
    torch.testing.assert_close(layer(x), fast(x))
