"""Swap chosen normalization layers of any model for AttentiveNorm2d, as SyncBatchNorm's converter does."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from an_lab.nn import AttentiveNorm2d

Selector = None | Collection[str] | Callable[[str, nn.Module], bool]
KChoice = int | Mapping[str, int] | Callable[[str], int]


def convertible_norms(model: nn.Module) -> dict[str, nn.Module]:
    """The layers convert_norms can replace: 2D batch norms (their running statistics carry over) and group norms."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.GroupNorm)
        or (isinstance(module, _BatchNorm) and not isinstance(module, nn.BatchNorm1d))
    }


def replace_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Put `layer` in place of the submodule called `name` (a qualified name such as layer1.0.bn2)."""
    parent_name, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attribute, layer)


def _selected(candidates: dict[str, nn.Module], select: Selector) -> list[str]:
    if select is None:
        return list(candidates)
    if callable(select):
        return [name for name, module in candidates.items() if select(name, module)]
    unknown = sorted(set(select) - set(candidates))
    if unknown:
        raise ValueError(
            f"select names {unknown} that are not BatchNorm2d or GroupNorm layers of this model; "
            f"convertible layers are: {', '.join(candidates) or 'none'}"
        )
    return [name for name in candidates if name in set(select)]


def _k_for(name: str, k: KChoice) -> int:
    if isinstance(k, Mapping):
        return k[name]
    return k(name) if callable(k) else k


def attentive_twin(layer: nn.Module, k: int, **an_options) -> AttentiveNorm2d:
    """An AttentiveNorm2d that standardizes like `layer` and starts from its running statistics."""
    if isinstance(layer, nn.GroupNorm):
        twin = AttentiveNorm2d(
            layer.num_channels, k, norm="group", groups=layer.num_groups, eps=layer.eps, **an_options
        )
        reference = layer.weight
    else:
        twin = AttentiveNorm2d(
            layer.num_features,
            k,
            norm="batch",
            eps=layer.eps,
            momentum=layer.momentum,
            track_running_stats=layer.track_running_stats,
            **an_options,
        )
        if layer.track_running_stats:
            twin.running_mean.copy_(layer.running_mean)
            twin.running_var.copy_(layer.running_var)
            twin.num_batches_tracked.copy_(layer.num_batches_tracked)
        reference = layer.running_mean if layer.running_mean is not None else layer.weight
    if reference is not None:
        twin.to(device=reference.device)
    return twin


def convert_norms(model: nn.Module, *, select: Selector = None, k: KChoice = 10, **an_options) -> nn.Module:
    """Replace the chosen norm layers of `model` in place by AttentiveNorm2d and return the model.

    select: None for every BatchNorm2d / GroupNorm, a collection of qualified layer names, or a predicate
    (name, module) -> bool. k: one K for all, or a mapping / function from layer name to K.
    an_options: pooling, head, activation (AttentiveNorm2d's keyword arguments).
    """
    candidates = convertible_norms(model)
    for name in _selected(candidates, select):
        replace_layer(model, name, attentive_twin(candidates[name], _k_for(name, k), **an_options))
    return model
