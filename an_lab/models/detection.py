"""Mask R-CNN + FPN with the papers' normalizations: the model part of COCO fine-tuning (AN paper, Table 2 rows);
with ``detector="cascade_mask_rcnn"`` or ``"htc"`` the RoI heads of Cascade Mask R-CNN or HTC
(models.detection_cascade) on the same backbone, FPN and RPN.

``build_mask_rcnn(backbone, num_classes=..., backbone_norm=..., head_norm=...)`` returns a plain torchvision
``MaskRCNN`` whose backbone is an ``an_lab.models.create()`` classification network wrapped as a torchvision FPN
backbone, so that classification checkpoints map onto it key for key (``map_classification_state``).

Backbone normalization (``backbone_norm``):

- ``bn_frozen`` (BN*): every BatchNorm2d becomes ``torchvision.ops.FrozenBatchNorm2d`` (statistics and affine fixed,
  kept as buffers), torchvision's own choice for detectors fine-tuned from ImageNet weights.
- ``gn``: GroupNorm (32 groups) everywhere, trained.
- ``syncbn``: BatchNorm converted by ``nn.SyncBatchNorm.convert_sync_batchnorm``. It synchronizes only under an
  initialized process group; without one (CPU tests, a single process) it runs as plain batch norm.
- ``an``: AN w/ BN at the papers' sites (``create(norm="an")``, bn2 of each bottleneck, the depthwise norm of each
  MobileNet-v2 block), under the papers' fine-tuning rule (``apply_an_finetuning_rule``): each AN layer keeps its
  K gammas and betas and its running statistics fixed and stays in eval mode for good, its attention head trains;
  the remaining BatchNorm2d layers become FrozenBatchNorm2d as in BN*. Eval mode covers the whole layer, the a2
  attention head's BatchNorm1d included (its statistics are fixed, its affine weights train), as the reference
  code's ``norm_eval`` does: it puts every ``_BatchNorm`` of the backbone, AN and its attention's BN included, in
  eval mode. With batch statistics off, a per-GPU batch of one image also works (a2 heads cannot train on 1).

In every mode the first stages are frozen as in the papers (``trainable_layers``, torchvision's meaning: 3 for a
ResNet freezes the stem and layer1). BatchNorm layers whose parameters are all frozen that way are turned into
FrozenBatchNorm2d too (detectron2 does the same), so a frozen stage of a SyncBN backbone does not keep updating
its running statistics.

Heads (``head_norm``, chosen apart from the backbone):

- ``none``: torchvision's default detector, no norm in the FPN or the heads (box head: TwoMLPHead, the "2fc" head).
- ``gn``: GroupNorm (32) in the FPN, the 4conv1fc box head (4 3x3 convs of 256 channels and one fc of 1024) and
  the 4-conv mask head, as in the GN paper's Mask R-CNN.
- ``an_gn``: as ``gn``, with AN w/ GN (32 groups, a1 attention head with hard sigmoid, the rsd pooling) after the
  convs of the box head. K follows the AN reference configuration (``mask_rcnn_r50_an_conv_head_attn_gn_fpn_2x``):
  one K per box-head conv, 10, 10, 20, 20 (``HEAD_K``); its mask head and FPN keep plain GN. ``k_head`` sets one K
  for all four convs or four of them; ``an_mask_head=True`` also puts AN w/ GN (same K) in the mask head (an
  empty batch of RoIs, when no image of a batch has a detection, gives AttentiveNorm2d an empty input: fine).

``box_head="4conv1fc"`` with ``head_norm="none"`` gives the reference's rows without head norms (its BN* and AN
backbones are run with a 4conv1fc box head whose convs have biases and no norm).

MobileNet-v2: the FPN takes the last block of each resolution, features 3, 6, 13 and 18 (strides 4, 8, 16, 32;
24, 32, 96 and 1280 channels), so that the ResNet detector's five anchor levels and four RoIAlign levels apply
unchanged. torchvision's ``_mobilenet_extractor`` returns the first (strided) block of each stage instead and by
default only two levels, both at stride 32, which do not fit Mask R-CNN's default RoI poolers and anchors. Stage
freezing follows ``_mobilenet_extractor``: the stages start at features 0 and at each strided block, the last
layer counts as a stage of its own (6 in all); ``trainable_layers`` of them, counted from the end, train (3, the
default, freezes features 0-6, i.e. everything up to stride 8, like torchvision's MobileNet detectors).

AOGNet-12M / 40M: the four stages into the FPN (128, 256, 512, 824 and 224, 448, 896, 1400 channels, strides 4-32,
the authors' FPN in_channels); the stem and the four stages are its five layers, ``trainable_layers=3`` freezing the
stem and stage0 (the authors' frozen_stages=1). Their detection backbones keep the stage drop rates (Dropout2d).

Parameter counts (``parameter_counts``) add the weight and bias of FrozenBatchNorm2d layers, which torchvision
keeps as buffers: the BN* ResNet-50 detector then counts 44,454,513, the figure of torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` (which, without weights, keeps trainable BN).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from an_lab.catalog import (
    BOX_HEADS,
    DETECTOR_SIZES,
    DETECTORS,
    HEAD_GROUPS,
    HEAD_K,
    HEAD_NORMS,
    TRAINABLE_STAGES,
    check_choice,
)
from an_lab.catalog import DETECTION_BACKBONES as BACKBONES
from an_lab.catalog import DETECTION_NORMS as BACKBONE_NORMS
from an_lab.catalog import HEAD_CONVS as _HEAD_CONVS  # convs of the 4conv1fc box head and of the mask head
from an_lab.models.convert import replace_layer
from an_lab.models.detection_cascade import CascadeRoIHeads, stage_heads
from an_lab.models.registry import create
from an_lab.nn import AttentiveNorm2d

# HEAD_K (catalog): K of the AN w/ GN layers after the four convs of the box head, in order (the AN reference
# configuration).

FPN_CHANNELS = DETECTOR_SIZES["fpn_channels"][0]  # torchvision's FPN width; the RPN head and the heads' convs follow it
_BOX_FC = DETECTOR_SIZES["box_fc_channels"][0]  # torchvision's representation size: the box head's fc layers
_ANCHOR = DETECTOR_SIZES["anchor_size"][0]  # torchvision's smallest anchor, doubled at each of the 5 FPN levels
_ASPECT_RATIOS = (0.5, 1.0, 2.0)  # torchvision's, at every level
_ANCHOR_LEVELS = 5  # strides 4 to 32 of every backbone's FPN and the max-pooled level above them
_BOX_ROI = 7  # MaskRCNN's default box RoIAlign output

_CREATE_NORM = {"bn_frozen": "bn", "gn": "gn", "syncbn": "bn", "an": "an"}

# State-dict prefix of the classification network inside the detector (BackboneWithFPN.body).
BODY_PREFIX = "backbone.body."
# Keys of a create() model that the detector has no place for: the classifiers, dropped by map_classification_state.
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
_MOBILENET_FEATURES = "features."


# -- normalization conversions -----------------------------------------------------------------------------------


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(HEAD_GROUPS, channels)


def _frozen_twin(bn: nn.BatchNorm2d | nn.SyncBatchNorm) -> FrozenBatchNorm2d:
    """A FrozenBatchNorm2d that computes what `bn` computes in eval mode."""
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    source = bn.running_mean if bn.running_mean is not None else bn.weight
    if source is not None:
        frozen.to(device=source.device)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def freeze_batch_norms(module: nn.Module, select: Callable[[nn.Module], bool] | None = None) -> nn.Module:
    """Replace each BatchNorm2d and SyncBatchNorm inside `module` (those `select` accepts) by FrozenBatchNorm2d.

    In place; returns `module`. Other norms stay, the BatchNorm1d of AN's a2 attention head included.
    """
    names = [
        name
        for name, layer in module.named_modules()
        if name and isinstance(layer, nn.BatchNorm2d | nn.SyncBatchNorm) and (select is None or select(layer))
    ]
    for name in names:
        replace_layer(module, name, _frozen_twin(module.get_submodule(name)))
    return module


def _all_parameters_frozen(layer: nn.Module) -> bool:
    parameters = list(layer.parameters())
    return bool(parameters) and not any(parameter.requires_grad for parameter in parameters)


class FineTunedAttentiveNorm2d(AttentiveNorm2d):
    """AttentiveNorm2d under the papers' fine-tuning rule: always in eval mode, whatever train() asks.

    Eval mode standardizes with the running statistics and leaves them alone, and keeps the a2 attention head's
    BatchNorm1d on its running statistics too. The state dict is AttentiveNorm2d's, key for key.
    """

    def train(self, mode: bool = True) -> FineTunedAttentiveNorm2d:
        return super().train(False)


def apply_an_finetuning_rule(module: nn.Module) -> nn.Module:
    """The AN papers' fine-tuning rule for a backbone, in place; returns `module`.

    Every AttentiveNorm2d becomes a FineTunedAttentiveNorm2d (permanent eval mode: running statistics used and
    never updated) with its mixture parameters gamma and beta frozen (requires_grad False); its attention head keeps
    training. Every remaining BatchNorm2d / SyncBatchNorm becomes FrozenBatchNorm2d, as in BN*. Apply it to the
    backbone, not to a whole detector: AN w/ GN heads are trained in full. The class is switched in place (as
    torch.nn.utils.parametrize does), so weights, hooks and options carry over; a later model.train() cannot undo
    it, so no training loop needs to re-freeze anything.
    """
    for layer in module.modules():
        if not isinstance(layer, AttentiveNorm2d):
            continue
        if type(layer) is AttentiveNorm2d:
            layer.__class__ = FineTunedAttentiveNorm2d
        elif not isinstance(layer, FineTunedAttentiveNorm2d):
            raise TypeError(
                f"apply_an_finetuning_rule converts AttentiveNorm2d layers, not {type(layer).__name__}; apply it to "
                "a backbone (the AN w/ GN layers of the RoI heads train in full)"
            )
        layer.gamma.requires_grad_(False)
        layer.beta.requires_grad_(False)
        layer.eval()
    return freeze_batch_norms(module)


# -- backbones ------------------------------------------------------------------------------------------------


class Widths(NamedTuple):
    """The detector's widths: the FPN's channels (also the RPN head's and the heads' convs') and the box head's fc
    channels. torchvision's are 256 and 1024; a narrower detector suits small images with few objects."""

    fpn: int = FPN_CHANNELS
    box_fc: int = _BOX_FC


def _resnet_backbone(classifier: nn.Module, trainable_layers: int, fpn_norm, fpn_channels: int) -> BackboneWithFPN:
    """torchvision's ResNet-FPN extractor: layer1-4 into the FPN plus LastLevelMaxPool, the first stages frozen. It
    builds a 256-channel FPN; another width gets an FPN of its own on the same layers."""
    backbone = _resnet_fpn_extractor(classifier, trainable_layers, norm_layer=fpn_norm)
    if fpn_channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, LastLevelMaxPool(), norm_layer=fpn_norm)
        backbone.out_channels = fpn_channels
    return backbone


def _mobilenet_backbone(classifier: nn.Module, trainable_layers: int, fpn_norm, fpn_channels: int) -> BackboneWithFPN:
    """MobileNet-v2 features, the last block of each of strides 4-32 into the FPN (module docstring: why)."""
    features = classifier.features
    strided = [index for index, block in enumerate(features) if getattr(block, "_is_cn", False)]
    stage_starts = [0, *strided, len(features) - 1]
    if not 0 <= trainable_layers <= len(stage_starts):
        raise ValueError(
            f"trainable_layers={trainable_layers} is not valid for mobilenet_v2; it must be in [0, {len(stage_starts)}]"
        )
    freeze_before = len(features) if trainable_layers == 0 else stage_starts[len(stage_starts) - trainable_layers]
    for block in features[:freeze_before]:
        block.requires_grad_(False)
    stage_ends = [start - 1 for start in strided[1:]] + [len(features) - 1]
    return_layers = {str(index): str(level) for level, index in enumerate(stage_ends)}
    in_channels = [features[index].out_channels for index in stage_ends]
    return BackboneWithFPN(features, return_layers, in_channels, fpn_channels, norm_layer=fpn_norm)


def _aognet_backbone(classifier: nn.Module, trainable_layers: int, fpn_norm, fpn_channels: int) -> BackboneWithFPN:
    """An AOGNet's four stages into the FPN (strides 4-32; AOGNet-12M 128, 256, 512, 824 channels, AOGNet-40M 224,
    448, 896, 1400: the authors' FPN in_channels). Its layers are the stem and the four stages (5, like a ResNet's
    stem and layer1-4); ``trainable_layers`` of them, counted from the end, train: 3, the default, freezes the stem
    and stage0 (the authors' frozen_stages=1)."""
    layers = ["stem", *(f"stage{s}" for s in range(classifier.config.num_stages))]
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(
            f"trainable_layers={trainable_layers} is not valid for an AOGNet; it must be in [0, {len(layers)}]"
        )
    for name in layers[: len(layers) - trainable_layers]:
        classifier.get_submodule(name).requires_grad_(False)
    return_layers = {name: str(level) for level, name in enumerate(layers[1:])}
    in_channels = list(classifier.config.filter_list[1:])
    return BackboneWithFPN(classifier, return_layers, in_channels, fpn_channels, norm_layer=fpn_norm)


def _build_backbone(
    name: str, backbone_norm: str, k, trainable_layers: int, fpn_norm, fpn_channels: int, create_options: dict[str, Any]
) -> BackboneWithFPN:
    classifier = create(name, norm=_CREATE_NORM[backbone_norm], k=k, num_classes=1000, **create_options)
    if backbone_norm == "bn_frozen":
        freeze_batch_norms(classifier)
    elif backbone_norm == "an":
        apply_an_finetuning_rule(classifier)
    extract = {"mobilenet_v2": _mobilenet_backbone, "aognet_12m": _aognet_backbone, "aognet_40m": _aognet_backbone}
    backbone = extract.get(name, _resnet_backbone)(classifier, trainable_layers, fpn_norm, fpn_channels)
    # Frozen stages keep their statistics too: their (Sync)BatchNorm layers become FrozenBatchNorm2d.
    freeze_batch_norms(backbone.body, select=_all_parameters_frozen)
    if backbone_norm == "syncbn":
        backbone.body = nn.SyncBatchNorm.convert_sync_batchnorm(backbone.body)
    return backbone


# -- heads ----------------------------------------------------------------------------------------------------


def _resolve_head_k(k_head: int | Iterable[int] | None) -> tuple[int, ...]:
    if k_head is None:
        return HEAD_K
    ks = (k_head,) * len(HEAD_K) if isinstance(k_head, int) else tuple(k_head)
    if len(ks) != len(HEAD_K) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in ks):
        raise ValueError(
            f"k_head={k_head!r} is not valid; give one integer K >= 1 or one per box-head conv, e.g. {HEAD_K}"
        )
    return ks


def _attentive_group_norms(ks: tuple[int, ...]) -> Callable[[int], AttentiveNorm2d]:
    """A norm_layer for torchvision's heads: each call builds the next AN w/ GN layer, with the next K."""
    remaining = iter(ks)

    def make(channels: int) -> AttentiveNorm2d:
        return AttentiveNorm2d(
            channels, next(remaining), norm="group", groups=HEAD_GROUPS, head="a1", activation="hsigmoid"
        )

    return make


def _box_head(box_head: str, head_norm: str, head_ks: tuple[int, ...], widths: Widths) -> nn.Module:
    """The 2fc head (TwoMLPHead) or the 4conv1fc head, its convs normalized as head_norm says."""
    fpn, box_fc = widths
    if box_head == "2fc":
        return TwoMLPHead(fpn * _BOX_ROI**2, box_fc)
    norm = {"none": None, "gn": _group_norm, "an_gn": _attentive_group_norms(head_ks)}[head_norm]
    return FastRCNNConvFCHead((fpn, _BOX_ROI, _BOX_ROI), [fpn] * _HEAD_CONVS, [box_fc], norm_layer=norm)


def _mask_convs(head_norm: str, head_ks: tuple[int, ...], an_mask_head: bool, widths: Widths) -> nn.Module:
    """The mask head's four convs: plain, GN, or AN w/ GN with an_mask_head."""
    norm = None if head_norm == "none" else _attentive_group_norms(head_ks) if an_mask_head else _group_norm
    return MaskRCNNHeads(widths.fpn, [widths.fpn] * _HEAD_CONVS, 1, norm_layer=norm)


def _heads(
    head_norm: str, box_head: str, head_ks: tuple[int, ...], an_mask_head: bool, widths: Widths, num_classes: int
) -> dict[str, Any]:
    """MaskRCNN's head arguments (and num_classes); the heads left out take torchvision's defaults, which are sized
    for its widths: another width brings every head, and then the predictors carry the classes."""
    heads: dict[str, Any] = {"num_classes": num_classes}
    narrow = widths != Widths()
    if box_head == "4conv1fc" or narrow:
        heads["box_head"] = _box_head(box_head, head_norm, head_ks, widths)
    if head_norm != "none" or narrow:
        heads["mask_head"] = _mask_convs(head_norm, head_ks, an_mask_head, widths)
    if narrow:
        heads["box_predictor"] = FastRCNNPredictor(widths.box_fc, num_classes)
        heads["mask_predictor"] = MaskRCNNPredictor(widths.fpn, widths.fpn, num_classes)
        heads["num_classes"] = None  # MaskRCNN takes the classes from the predictors
    return heads


def _cascade_heads(
    detector: str,
    num_classes: int,
    head_norm: str,
    box_head: str,
    head_ks: tuple[int, ...],
    an_mask_head: bool,
    widths: Widths,
) -> dict[str, list[nn.Module]]:
    """A fresh box head, predictor and mask head per cascade stage, built as _heads builds Mask R-CNN's."""
    return stage_heads(
        num_classes,
        lambda: _box_head(box_head, head_norm, head_ks, widths),
        widths.box_fc,
        lambda: _mask_convs(head_norm, head_ks, an_mask_head, widths),
        lambda: MaskRCNNPredictor(widths.fpn, widths.fpn, num_classes),
        htc=detector == "htc",
        mask_channels=widths.fpn,
    )


# -- the detector ---------------------------------------------------------------------------------------------


def _size(name: str, value: Any) -> int:
    default, least, most = DETECTOR_SIZES[name]
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise ValueError(
            f"{name}={value!r} is not valid; give an integer from {least} to {most} (torchvision's: {default})"
        )
    return value


def build_mask_rcnn(
    backbone: str,
    *,
    num_classes: int,
    detector: str = "mask_rcnn",
    backbone_norm: str = "bn_frozen",
    head_norm: str = "none",
    k: int | tuple[int, ...] | None = None,
    k_head: int | tuple[int, ...] | None = None,
    box_head: str | None = None,
    an_mask_head: bool = False,
    trainable_layers: int = TRAINABLE_STAGES,
    min_size: int = 800,
    max_size: int = 1333,
    detector_options: Mapping[str, Any] | None = None,
    **an_options,
) -> MaskRCNN:
    """Mask R-CNN + FPN with `backbone` (resnet50, resnet101, mobilenet_v2, aognet_12m, aognet_40m) and the chosen
    norms (module docstring); detector="cascade_mask_rcnn" or "htc" puts the RoI heads of Cascade Mask R-CNN or HTC
    (models.detection_cascade) on the same backbone, FPN and RPN.

    num_classes counts the background. k: the backbone's AN K per stage (create()'s; None: the paper's schedule),
    for backbone_norm="an" only. k_head: the AN w/ GN heads' K, one or one per box-head conv (None: HEAD_K), for
    head_norm="an_gn" only. box_head: "2fc" (TwoMLPHead) or "4conv1fc"; None picks 2fc without head norms and
    4conv1fc with them (the only one that has convs to normalize); a cascade builds one per stage. trainable_layers:
    torchvision's count of trainable stages from the top (ResNets and AOGNets 0-5, MobileNet-v2 0-6). min_size,
    max_size: the resize of GeneralizedRCNNTransform. detector_options: further MaskRCNN arguments (RPN and RoI
    sampling, thresholds; a cascade takes its RoI sampling, score threshold, NMS and detections per image from them
    too), and the sizes (catalog.DETECTOR_SIZES): fpn_channels (the FPN's, the RPN head's and the convs of the
    heads; 256), box_fc_channels (the box head's fc layers; 1024) and anchor_size (the smallest anchor's side, on the
    stride-4 level, doubled at each level; 32). an_options go to create() (pooling, head, activation, placement, stem,
    zero_init_residual); zero_init_residual defaults to False here: the backbone is meant to receive classification
    weights, and with them absent a zero gamma in a frozen norm would silence its residual branch for good.
    """
    box_head = _checked_choices(detector, backbone, backbone_norm, head_norm, box_head, k, k_head, an_mask_head)
    head_ks = _resolve_head_k(k_head)

    options = dict(detector_options or {})
    fpn_channels, box_fc, anchor = (_size(name, options.pop(name, size[0])) for name, size in DETECTOR_SIZES.items())
    widths = Widths(fpn_channels, box_fc)
    if anchor != _ANCHOR:  # torchvision's generator otherwise: sizes 32 to 512 over the 5 levels
        sizes = tuple((anchor * 2**level,) for level in range(_ANCHOR_LEVELS))
        options["rpn_anchor_generator"] = AnchorGenerator(sizes, (_ASPECT_RATIOS,) * _ANCHOR_LEVELS)

    fpn_norm = None if head_norm == "none" else _group_norm
    create_options = {"zero_init_residual": False, **an_options}
    body = _build_backbone(backbone, backbone_norm, k, trainable_layers, fpn_norm, widths.fpn, create_options)
    if detector == "mask_rcnn":
        heads = _heads(head_norm, box_head, head_ks, an_mask_head, widths, num_classes)
    else:  # a cascade replaces Mask R-CNN's RoI heads below: these only need to fit the FPN's width
        heads = _heads("none", "2fc", head_ks, False, widths, num_classes)
    model = MaskRCNN(body, min_size=min_size, max_size=max_size, **heads, **options)
    if detector != "mask_rcnn":
        heads = _cascade_heads(detector, num_classes, head_norm, box_head, head_ks, an_mask_head, widths)
        model.roi_heads = _cascade_roi_heads(model.roi_heads, heads, htc=detector == "htc")
    return model


def _checked_choices(detector, backbone, backbone_norm, head_norm, box_head, k, k_head, an_mask_head) -> str:
    """build_mask_rcnn's choices checked together (ValueError naming the argument); returns the box head (None:
    2fc without head norms, 4conv1fc with them)."""
    check_choice("detector", detector, DETECTORS)
    check_choice("backbone", backbone, BACKBONES)
    check_choice("backbone_norm", backbone_norm, BACKBONE_NORMS)
    check_choice("head_norm", head_norm, HEAD_NORMS)
    if box_head is None:
        box_head = "2fc" if head_norm == "none" else "4conv1fc"
    check_choice("box_head", box_head, BOX_HEADS)
    if box_head == "2fc" and head_norm != "none":
        raise ValueError(f"head_norm={head_norm!r} needs box_head='4conv1fc': the 2fc head has no convs to normalize")
    if k is not None and backbone_norm != "an":
        raise ValueError(f"k sets the backbone's AN layers; it applies to backbone_norm='an', not {backbone_norm!r}")
    if (k_head is not None or an_mask_head) and head_norm != "an_gn":
        raise ValueError(f"k_head and an_mask_head apply to head_norm='an_gn', not {head_norm!r}")
    return box_head


def _cascade_roi_heads(single, heads: dict, htc: bool) -> CascadeRoIHeads:
    """The RoI heads of Cascade Mask R-CNN or HTC in place of Mask R-CNN's (`single`), whose RoI pools, sampling and
    test settings carry over."""
    return CascadeRoIHeads(
        **heads,
        htc=htc,
        box_roi_pool=single.box_roi_pool,
        mask_roi_pool=single.mask_roi_pool,
        batch_size_per_image=single.fg_bg_sampler.batch_size_per_image,
        positive_fraction=single.fg_bg_sampler.positive_fraction,
        score_thresh=single.score_thresh,
        nms_thresh=single.nms_thresh,
        detections_per_img=single.detections_per_img,
    )


# -- parameter counts and checkpoint mapping --------------------------------------------------------------------


class ParameterCounts(NamedTuple):
    total: int  # every parameter, plus the weight and bias of FrozenBatchNorm2d layers (buffers in torchvision)
    trainable: int  # parameters with requires_grad
    frozen_affine: int  # the FrozenBatchNorm2d weights and biases included in total


def parameter_counts(model: nn.Module) -> ParameterCounts:
    """Parameter counts of `model` with FrozenBatchNorm2d's affine counted as parameters (they are BN's weights)."""
    frozen = sum(
        layer.weight.numel() + layer.bias.numel() for layer in model.modules() if isinstance(layer, FrozenBatchNorm2d)
    )
    parameters = list(model.parameters())
    return ParameterCounts(
        total=sum(p.numel() for p in parameters) + frozen,
        trainable=sum(p.numel() for p in parameters if p.requires_grad),
        frozen_affine=frozen,
    )


def backbone_state_keys(detector: nn.Module) -> list[str]:
    """State-dict keys of the classification network inside `detector` (all start with BODY_PREFIX)."""
    return [key for key in detector.state_dict() if key.startswith(BODY_PREFIX)]


def _detector_key(key: str, targets: Mapping[str, torch.Tensor]) -> str | None:
    # A ResNet's modules sit directly in the body; MobileNet-v2's body is its `features` Sequential.
    candidates = [BODY_PREFIX + key]
    if key.startswith(_MOBILENET_FEATURES):
        candidates.append(BODY_PREFIX + key.removeprefix(_MOBILENET_FEATURES))
    return next((candidate for candidate in candidates if candidate in targets), None)


def map_classification_state(
    state: Mapping[str, torch.Tensor], detector: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Map the state dict of a create() classification model onto `detector`'s backbone.

    Returns (mapped, missing, unexpected): `mapped` for ``detector.load_state_dict(mapped, strict=False)``;
    `missing`: backbone keys of the detector that `state` does not fill; `unexpected`: keys of `state` with no
    place in the detector (e.g. the weight and bias of a BN checkpoint's bn2 offered to an AN detector, whose bn2
    takes the running statistics only) or whose tensor has another shape than the detector's (an AN checkpoint of
    another K), left out of `mapped` so that loading does not fail. Dropped without a report, as expected-unused:
    the classifier (``fc.*``, ``classifier.*``) and the ``num_batches_tracked`` counters of layers that are
    FrozenBatchNorm2d in the detector (which has none). Keys with a ``module.`` or Lightning prefix are not
    stripped: pass the bare model's state dict.
    """
    targets = detector.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        if key.startswith(CLASSIFIER_PREFIXES):
            continue
        destination = _detector_key(key, targets)
        if destination is None:
            owner, _, leaf = key.rpartition(".")
            if leaf == "num_batches_tracked" and _detector_key(f"{owner}.running_mean", targets) is not None:
                continue  # a FrozenBatchNorm2d in the detector
            unexpected.append(key)
        elif targets[destination].shape != value.shape:
            unexpected.append(key)
        else:
            mapped[destination] = value
    missing = [key for key in backbone_state_keys(detector) if key not in mapped]
    return mapped, missing, unexpected
