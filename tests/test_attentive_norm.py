"""AttentiveNorm2d against a plain reference written here, and the BatchNorm2d behaviour users rely on."""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from an_lab.catalog import ACTIVATIONS, HEADS, POOLINGS
from an_lab.nn import AttentiveNorm2d


def reference_forward(layer: AttentiveNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The layer the obvious way: BN without affine, pooling on its own, then a separate mixture affine."""
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
    return gamma[:, :, None, None] * standardized + beta[:, :, None, None]


def _randomized(layer: AttentiveNorm2d) -> AttentiveNorm2d:
    with torch.no_grad():
        layer.running_mean.normal_()
        layer.running_var.uniform_(0.5, 2.0)
        if layer.attention.norm is not None:
            layer.attention.norm.weight.uniform_(0.5, 1.5)
            layer.attention.norm.bias.normal_()
    return layer


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("pooling", "head", "activation"), list(itertools.product(POOLINGS, HEADS, ACTIVATIONS)))
def test_matches_reference_fp32(pooling, head, activation, training):
    torch.manual_seed(0)
    layer = _randomized(AttentiveNorm2d(24, 6, pooling=pooling, head=head, activation=activation)).train(training)
    reference = copy.deepcopy(layer)
    x = (torch.randn(8, 24, 9, 11) * 2 + 0.5).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(8, 24, 9, 11)

    out = layer(x)
    expected = reference_forward(reference, x_ref)
    out.backward(grad)
    expected.backward(grad)

    tol = {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(out, expected, **tol)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters(), strict=True):
        # Parameter gradients sum ~20k fp32 terms in a different order: 1e-5 of the gradient's own scale.
        scale = p_ref.grad.abs().max().item()
        torch.testing.assert_close(p.grad, p_ref.grad, atol=1e-5 * scale, rtol=1e-5, msg=f"gradient of {name}")
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_fp32_and_returns_the_input_dtype(dtype):
    torch.manual_seed(7)
    layer = AttentiveNorm2d(8, 3)
    x = torch.randn(4, 8, 6, 6).to(dtype)
    expected = copy.deepcopy(layer)(x.float())
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), atol=0, rtol=0)


def test_channels_last_matches_contiguous():
    torch.manual_seed(8)
    layer = AttentiveNorm2d(16, 4)
    twin = copy.deepcopy(layer)
    x = torch.randn(4, 16, 7, 7, requires_grad=True)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(4, 16, 7, 7)
    layer(x).backward(grad)
    twin(x_cl).backward(grad)
    torch.testing.assert_close(x.grad, x_cl.grad)
    torch.testing.assert_close(layer.gamma.grad, twin.gamma.grad)


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
