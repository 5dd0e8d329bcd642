"""Parameter and multiply-accumulate counts, as in the papers' #Params and FLOPS columns (which count MACs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from an_lab.catalog import INPUT_SIZE
from an_lab.models import create
from an_lab.nn import AttentiveNorm2d


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_cost(model: nn.Module, input_size: int) -> tuple[int, int]:
    """(MACs, norm and ReLU ops) of one eval-mode forward pass of a single 3-channel image.

    MACs come from PyTorch's FLOP counter (convolutions and linear layers; it counts a multiply-add as 2 FLOPs).
    The second figure is what thop, the counter behind the AOGNet papers' FLOPs, adds on top: 4 operations per
    output element of a BatchNorm / GroupNorm / AN (2 to standardize, 2 for the affine map) and 1 per ReLU output
    element. The image takes the model's own dtype and device, so that a bf16 or GPU model is counted as it is.
    """
    was_training = model.training
    model.eval()
    pointwise = [0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        pointwise[0] += output.numel() * (1 if isinstance(module, nn.ReLU | nn.ReLU6) else 4)

    kinds = (_BatchNorm, nn.GroupNorm, AttentiveNorm2d, nn.ReLU, nn.ReLU6)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    counter = FlopCounterMode(display=False)
    weight = next(model.parameters(), None)
    like = {"dtype": weight.dtype, "device": weight.device} if weight is not None else {}
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, input_size, input_size, **like))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2, pointwise[0]


def count_macs(model: nn.Module, input_size: int) -> int:
    """MACs of one eval-mode forward pass of a single 3-channel image (convolutions and linear layers)."""
    return count_cost(model, input_size)[0]


def profile(name: str, *, input_size: int | None = None, **create_kwargs) -> dict:
    """Counts for create(name, **create_kwargs), with the same network on plain BN for comparison."""
    size = input_size or INPUT_SIZE[name]
    model = create(name, **create_kwargs)
    baseline_kwargs = {key: create_kwargs[key] for key in ("num_classes", "stem") if key in create_kwargs}
    baseline = count_parameters(create(name, norm="bn", **baseline_kwargs))
    params = count_parameters(model)
    macs, pointwise = count_cost(model, size)
    return {
        "model": name,
        "norm": create_kwargs.get("norm", "bn"),
        "input_size": size,
        "params": params,
        "macs": macs,
        "macs_with_pointwise": macs + pointwise,  # thop's convention (norm and ReLU ops too): the AOGNet papers'
        "params_over_bn": params - baseline,
        "an_layers": sum(isinstance(m, AttentiveNorm2d) for m in model.modules()),
    }
