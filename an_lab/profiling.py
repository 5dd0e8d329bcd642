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


# Detectors are counted as mmdetection's get_flops counts them (its forward_dummy): backbone, FPN and RPN head on one
# image, then every box head on 1000 RoIs and every mask head on 100 (RoIAlign itself has no multiply-adds here).
DETECTOR_BOX_ROIS = 1000
DETECTOR_MASK_ROIS = 100
SIZE_DIVISOR = 32  # GeneralizedRCNNTransform pads each side to a multiple of 32


def detector_image(min_size: int, max_size: int | None = None) -> tuple[int, int]:
    """(height, width) of the image a detector is counted at: min_size x max_size (COCO: 800 x 1333, the largest
    landscape image the resize gives), each side padded to a multiple of 32 as the model's transform pads it."""
    width = max_size or round(min_size * 1333 / 800)
    return tuple(-(-side // SIZE_DIVISOR) * SIZE_DIVISOR for side in (min_size, width))  # type: ignore[return-value]


def count_detector_macs(model: nn.Module, height: int, width: int) -> int:
    """MACs of a Mask R-CNN, Cascade Mask R-CNN or HTC (models.detection) under mmdetection's get_flops convention
    (DETECTOR_BOX_ROIS, DETECTOR_MASK_ROIS), on a padded image of height x width.

    A model built on the meta device is counted without computing anything: it gets uninitialized CPU storage
    (``to_empty``) and runs under torch's FakeTensorMode, which propagates shapes only (a plain meta forward cannot
    run AN, which asks autocast about its input's device).
    """
    from an_lab.models.detection_cascade import CascadeRoIHeads

    if next(model.parameters()).is_meta:
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode(allow_non_fake_inputs=True):
            return count_detector_macs(model.to_empty(device="cpu"), height, width)
    weight = next(model.parameters())
    like = {"dtype": weight.dtype, "device": weight.device}
    heads = model.roi_heads
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            features = model.backbone(torch.zeros(1, 3, height, width, **like))
            model.rpn.head(list(features.values()))
            channels = model.backbone.out_channels
            boxes = torch.zeros(DETECTOR_BOX_ROIS, channels, 7, 7, **like)
            masks = torch.zeros(DETECTOR_MASK_ROIS, channels, 14, 14, **like)
            if isinstance(heads, CascadeRoIHeads):
                for head, predictor in zip(heads.box_head, heads.box_predictor, strict=True):
                    predictor(head(boxes))
                previous = None
                for mask_head in heads.mask_head:
                    _, previous = mask_head(masks, previous if heads.htc else None)
            else:
                heads.box_predictor(heads.box_head(boxes))
                heads.mask_predictor(heads.mask_head(masks))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_detector(
    detector: str,
    backbone: str,
    *,
    num_classes: int = 80,
    input_size: int = 800,
    max_size: int | None = None,
    **options,
) -> dict:
    """Counts of a detector (models.detection.build_mask_rcnn options: backbone_norm, head_norm, box_head, ...) for
    `num_classes` categories (the background added), built on the meta device."""
    from an_lab.models.detection import build_mask_rcnn, parameter_counts

    if options.get("box_head") is None:  # build_mask_rcnn's default, named in the counts
        options["box_head"] = "2fc" if options.get("head_norm", "none") == "none" else "4conv1fc"
    with torch.device("meta"):
        model = build_mask_rcnn(backbone, num_classes=num_classes + 1, detector=detector, **options)
    counts = parameter_counts(model)
    height, width = detector_image(input_size, max_size)
    return {
        "model": detector,
        "backbone": backbone,
        "norm": options.get("backbone_norm", "bn_frozen"),
        "head_norm": options.get("head_norm", "none"),
        "box_head": options["box_head"],
        "num_classes": num_classes,
        "image": [height, width],
        "params": counts.total,
        "trainable_params": counts.trainable,
        "macs": count_detector_macs(model, height, width),
        "box_rois": DETECTOR_BOX_ROIS,
        "mask_rois": DETECTOR_MASK_ROIS,
        "an_layers": sum(isinstance(m, AttentiveNorm2d) for m in model.modules()),
    }


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
