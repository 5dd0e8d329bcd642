"""Pictures users of the paper look at: the learned gamma / beta mixtures (Figure 4) and the attention weights
per class (in the spirit of Figure 2), saved as PNG files in the run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import torch
from torch import nn

from an_lab.nn import AttentiveNorm2d


def an_layers(model: nn.Module) -> list[tuple[str, AttentiveNorm2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentiveNorm2d)]


def plot_mixtures(model: nn.Module, path: Path) -> Path | None:
    """One row per AN layer: heatmaps of gamma and beta, K components x C channels."""
    layers = an_layers(model)
    if not layers:
        return None
    fig, axes = plt.subplots(len(layers), 2, figsize=(12, 1.2 + 1.1 * len(layers)), squeeze=False)
    for row, (name, layer) in enumerate(layers):
        for col, (label, values) in enumerate((("gamma", layer.gamma), ("beta", layer.beta))):
            ax = axes[row][col]
            image = ax.imshow(values.detach().float().cpu().numpy(), aspect="auto", cmap="coolwarm")
            ax.set_title(f"{name}: {label} (K={layer.k} x C={layer.num_features})", fontsize=8)
            ax.set_yticks([])
            fig.colorbar(image, ax=ax, fraction=0.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@torch.no_grad()
def attention_by_class(model: nn.Module, loader, layer: AttentiveNorm2d, max_batches: int = 20) -> dict:
    """Attention weights lam (N, K) of one AN layer on validation images, grouped by label."""
    captured: list[torch.Tensor] = []
    hook = layer.attention.register_forward_hook(lambda module, inputs, output: captured.append(output.cpu()))
    labels = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for index, (images, targets) in enumerate(loader):
            if index >= max_batches:
                break
            model(images.to(device))
            labels.append(targets)
    finally:
        hook.remove()
        model.train(was_training)
    weights, labels = torch.cat(captured), torch.cat(labels)
    return {int(c): weights[labels == c] for c in labels.unique()}


def plot_attention_histograms(per_class: dict, title: str, path: Path) -> Path:
    classes = sorted(per_class)
    columns = min(5, len(classes))
    rows = -(-len(classes) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.2 * rows), squeeze=False, sharex=True)
    for ax, label in zip(axes.flat, classes, strict=False):
        ax.hist(per_class[label].flatten().numpy(), bins=30, range=(0, 1), color="tab:blue")
        ax.set_title(f"class {label} ({len(per_class[label])} images)", fontsize=8)
    for ax in axes.flat[len(classes) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_diagnostics(model: nn.Module, data, directory: Path) -> list[Path]:
    saved = []
    mixtures = plot_mixtures(model, directory / "an_mixtures.png")
    if mixtures is not None:
        saved.append(mixtures)
        name, last = an_layers(model)[-1]
        per_class = attention_by_class(model, data.val_dataloader(), last)
        title = f"attention weights of {name} (all K components) per class"
        saved.append(plot_attention_histograms(per_class, title, directory / "an_attention_by_class.png"))
    return saved
