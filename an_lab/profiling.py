"""Parameter and multiply-accumulate counts, as in the papers' #Params and FLOPS columns (which count MACs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from an_lab.catalog import INPUT_SIZE
from an_lab.models import create
from an_lab.nn import AttentiveNorm2d


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int) -> int:
    """MACs of one eval-mode forward pass of a single 3-channel image, from PyTorch's FLOP counter (the image takes
    the model's own dtype and device, so that a bf16 or GPU model is counted as it is)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    weight = next(model.parameters(), None)
    like = {"dtype": weight.dtype, "device": weight.device} if weight is not None else {}
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, input_size, input_size, **like))
    model.train(was_training)
    return counter.get_total_flops() // 2  # the counter counts a multiply-add as 2 FLOPs


def profile(name: str, *, input_size: int | None = None, **create_kwargs) -> dict:
    """Counts for create(name, **create_kwargs), with the same network on plain BN for comparison."""
    size = input_size or INPUT_SIZE[name]
    model = create(name, **create_kwargs)
    baseline_kwargs = {key: create_kwargs[key] for key in ("num_classes", "stem") if key in create_kwargs}
    baseline = count_parameters(create(name, norm="bn", **baseline_kwargs))
    params = count_parameters(model)
    return {
        "model": name,
        "norm": create_kwargs.get("norm", "bn"),
        "input_size": size,
        "params": params,
        "macs": count_macs(model, size),
        "params_over_bn": params - baseline,
        "an_layers": sum(isinstance(m, AttentiveNorm2d) for m in model.modules()),
    }
