"""One Mask R-CNN R50-FPN training iteration, BN* backbone against AN backbone (and the Table 2 variants), eager,
interleaved in one run; and the parameter count of each Table 2 model.

    python benchmarks/bench_detection.py                          # 2 images of 320 x 427, CPU fp32, 5 rounds
    python benchmarks/bench_detection.py --variants bn_frozen,an,gn_gn,an_an --image-size 800 --rounds 3

An iteration is the model's training forward pass (RPN and RoI losses), backward and an SGD update, with the papers'
fine-tuning settings (first stage frozen; BN* and AN's mixture frozen); the models of one round alternate, so that drift
of the machine hits them alike. The ratio is of the medians. The backbone + FPN step (where AN and BN* differ) is timed
on its own too: the heads' cost follows how many RoIs each model's proposals make positive, which differs between two
randomly initialised models whatever their norms. Variants: bn_frozen (BN*), gn_gn (GN backbone + GN heads),
an (AN w/ BN backbone), an_an (AN w/ BN backbone + AN w/ GN box head), syncbn.
"""

from __future__ import annotations

import argparse

import torch
from common import device_name, interleaved_medians, save
from torchvision.models.detection import maskrcnn_resnet50_fpn

from an_lab.models.detection import build_mask_rcnn, parameter_counts

VARIANTS = {
    "bn_frozen": {"backbone_norm": "bn_frozen", "head_norm": "none"},
    "gn_gn": {"backbone_norm": "gn", "head_norm": "gn"},
    "an": {"backbone_norm": "an", "head_norm": "none"},
    "an_an": {"backbone_norm": "an", "head_norm": "an_gn"},
    "syncbn": {"backbone_norm": "syncbn", "head_norm": "none"},
}
COCO_CLASSES = 91  # torchvision's COCO label space (80 categories, ids up to 90, and the background)


def _inputs(batch: int, size: int, seed: int = 0) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    width = round(size * 4 / 3)
    images = [torch.rand(3, size, width, generator=generator) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        corners = torch.rand(6, 2, generator=generator) * (size * 0.6)
        sides = size * (0.1 + 0.3 * torch.rand(6, 2, generator=generator))
        boxes = torch.cat([corners, corners + sides], dim=1)
        masks = torch.zeros(6, size, width, dtype=torch.uint8)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y0:y1, x0:x1] = 1
        targets.append(
            {"boxes": boxes, "labels": torch.randint(1, COCO_CLASSES, (6,), generator=generator), "masks": masks}
        )
    return images, targets


def _calibrated(model: torch.nn.Module, images: list) -> torch.nn.Module:
    """Frozen statistics of a randomly initialised backbone (BN*, AN's) set from the batch, as a classification
    checkpoint's would be, so that activations stay in range and the timing is of a sane network."""

    def set_statistics(layer, inputs) -> None:
        dims = [d for d in range(inputs[0].ndim) if d != 1]  # every dimension but the channels
        layer.running_mean.copy_(inputs[0].mean(dim=dims))
        layer.running_var.copy_(inputs[0].var(dim=dims) + 1e-3)

    frozen = [m for m in model.backbone.modules() if hasattr(m, "running_var") and not m.training]
    hooks = [layer.register_forward_pre_hook(set_statistics) for layer in frozen]
    with torch.no_grad():
        model.backbone(torch.stack(images))
    for hook in hooks:
        hook.remove()
    return model


def _backbone_step(model, images):
    """The part AN changes: backbone + FPN, forward and backward (of the sum of the FPN outputs' means) and the SGD
    update of its trainable parameters; the heads' cost depends on how many RoIs each model's proposals make
    positive, which differs between any two models, so the whole iteration is timed separately."""
    backbone = model.backbone
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    batch = torch.stack(images)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(level.mean() for level in backbone(batch).values()).backward()
        optimizer.step()

    return run


def _iteration(model, images, targets):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()
        optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="bn_frozen,an")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    size = args.image_size
    images, targets = _inputs(args.batch, size)
    reference = parameter_counts(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)).total
    print(f"device: {device_name()}, torch {torch.__version__}, fp32, NCHW, eager, Mask R-CNN training iteration")
    print(f"torchvision maskrcnn_resnet50_fpn (BN*, {COCO_CLASSES} classes): {reference:,} parameters")
    models, counts = {}, {}
    for name in args.variants.split(","):
        model = build_mask_rcnn(
            "resnet50", num_classes=COCO_CLASSES, min_size=size, max_size=round(size * 4 / 3), **VARIANTS[name]
        )
        counts[name] = parameter_counts(model)._asdict()
        models[name] = _calibrated(model, images).train()
    parts = {"backbone + FPN": {name: _backbone_step(model, images) for name, model in models.items()}}
    parts["whole iteration"] = {name: _iteration(model, images, targets) for name, model in models.items()}
    first = args.variants.split(",")[0]
    print(f"| part | variant | parameters | trainable | s/step | / {first} | spread |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    payload = {"device": device_name(), "batch": args.batch, "image_size": size, "reference_params": reference}
    payload["params"] = counts
    for part, steps in parts.items():
        seconds, spread = interleaved_medians(steps, rounds=args.rounds, iterations=1, warmup=1)
        payload[part] = {"seconds": seconds, "spread": spread}
        for name in models:
            row = f"| {part} | {name} | {counts[name]['total']:,} | {counts[name]['trainable']:,} | {seconds[name]:.3f}"
            print(f"{row} | {seconds[name] / seconds[first]:.3f} | {spread[name]:.0%} |")
    print(f"saved {save(payload, 'detection')}")


if __name__ == "__main__":
    main()
