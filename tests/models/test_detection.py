"""Mask R-CNN with AN backbones and heads: counts to the unit, the AN fine-tuning rule, losses, checkpoint mapping.

Parameter counts are taken on the meta device (no memory, no init time); the forward tests build real models at
96 px with few proposals and RoIs, so that the whole file runs in well under a minute on two cores.
"""

import copy
import functools
import re

import pytest
import torch
from torch import nn
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from an_lab.models import create
from an_lab.models.detection import (
    BACKBONE_NORMS,
    BACKBONES,
    HEAD_K,
    HEAD_NORMS,
    FineTunedAttentiveNorm2d,
    apply_an_finetuning_rule,
    backbone_state_keys,
    build_mask_rcnn,
    map_classification_state,
    parameter_counts,
)
from an_lab.nn import AttentiveNorm2d

SIZE = 96
# Few proposals and RoIs: the 4conv1fc box head and the mask head cost ~0.1 and ~0.5 GMACs per RoI.
CHEAP = {
    "rpn_pre_nms_top_n_train": 50,
    "rpn_post_nms_top_n_train": 20,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 8,
    "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 4,  # one positive RoI per image for the mask head
    "box_detections_per_img": 2,
    "box_score_thresh": 0.0,  # random weights score low: keep detections so that the mask branch runs in eval
}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on two shared cores, two threads waiting on each other made these small convolutions
    several times slower (72 s against 20 s for this file). scripts/test.sh's workers already run with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache  # shared by the tests, which only read them
def _meta_detector(backbone="resnet50", **kwargs) -> MaskRCNN:
    with torch.device("meta"):
        return build_mask_rcnn(backbone, num_classes=91, **kwargs)


def _small_detector(backbone, **kwargs) -> MaskRCNN:
    return build_mask_rcnn(backbone, num_classes=5, min_size=SIZE, max_size=SIZE, detector_options=CHEAP, **kwargs)


def _batch(seed: int = 0):
    """Two images (96x96 and 80x96) with three boxes each and the boxes' rectangles as masks."""
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for height in (SIZE, SIZE - 16):
        images.append(torch.rand(3, height, SIZE, generator=generator))
        corner = torch.rand(3, 2, generator=generator) * torch.tensor([SIZE / 2, height / 2])
        size = 16 + torch.rand(3, 2, generator=generator) * 24
        boxes = torch.cat([corner, corner + size], dim=1).floor()
        masks = torch.zeros(3, height, SIZE, dtype=torch.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist(), strict=True):
            mask[y1:y2, x1:x2] = 1
        labels = torch.randint(1, 5, (3,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return images, targets


@torch.no_grad()
def _calibrate(detector: MaskRCNN, images) -> None:
    """Give every backbone norm that standardizes with running statistics those of `images`, layer by layer.

    A randomly initialized backbone whose norms are frozen at mean 0 / variance 1 runs unnormalized through 50
    layers, and its losses reach 1e12; a classification checkpoint supplies real statistics, this stands in for it.
    """

    def use_input_statistics(layer, args):
        layer.running_mean.copy_(args[0].mean(dim=(0, 2, 3)))
        layer.running_var.copy_(args[0].var(dim=(0, 2, 3)))

    kinds = FrozenBatchNorm2d | nn.BatchNorm2d | nn.SyncBatchNorm | AttentiveNorm2d
    layers = [m for m in detector.backbone.body.modules() if isinstance(m, kinds) and m.running_mean is not None]
    handles = [layer.register_forward_pre_hook(use_input_statistics) for layer in layers]
    was_training = detector.training
    detector.eval()
    try:
        detector.backbone.body(detector.transform(images)[0].tensors)
    finally:
        for handle in handles:
            handle.remove()
        detector.train(was_training)


# -- 1. parameter counts -----------------------------------------------------------------------------------------

# The Table-2 models (R50 and R101) and the MobileNet-v2 ones; COCO's 91 torchvision classes.
# total counts FrozenBatchNorm2d's weight and bias (buffers in torchvision); trainable: requires_grad parameters.
COUNTS = {
    # BN*: torchvision's maskrcnn_resnet50_fpn to the unit (44,401,393 parameters + 53,120 frozen BN affine).
    # Trainable: less the stem conv (9,408) and layer1 (212,992 conv weights) frozen by trainable_layers=3.
    ("resnet50", "bn_frozen", "none"): (44_454_513, 44_178_993),
    # GN backbone + GN FPN and heads: +2,048 in the FPN (8 GN affine of 512 replace 8 conv biases of 256),
    # +1,311,744 for the 4conv1fc box head over TwoMLPHead (4 x 589,824 conv weights + 4 x 512 GN, fc6 alike,
    # no fc7: 1,049,600), +1,024 in the mask head (4 GN of 512 replace 4 conv biases of 256).
    ("resnet50", "gn", "gn"): (45_769_329, 45_543_985),
    # AN w/ BN backbone: +198,388 (create("resnet50", norm="an") over norm="bn"); 45,568 frozen BN affine left.
    # Trainable also loses the 16 AN layers' gamma and beta in layers 2-4 (2 x K x C: 133,120) and layer1 in full.
    ("resnet50", "an", "none"): (44_652_901, 44_245_993),
    # ... + GN FPN, GN mask head, 4conv1fc box head with AN w/ GN (K 10, 10, 20, 20: 2 x 7,690 + 2 x 15,380 in
    # place of 4 x 512 GN affine, +44,092 over the GN box head).
    ("resnet50", "an", "an_gn"): (46_011_809, 45_604_901),
    # R101 BN*: torchvision's Mask R-CNN R101-FPN (ResNet-101 body 42,500,160 with 105,344 frozen BN affine).
    ("resnet101", "bn_frozen", "none"): (63_446_641, 63_118_897),
    ("resnet101", "an", "none"): (63_898_125, 63_273_617),
    # The SyncBN backbone's frozen stem and layer1 norms (2,944) become FrozenBatchNorm2d; layers 2-4 train.
    ("resnet50", "syncbn", "none"): (44_454_513, 44_229_169),
    # MobileNet-v2 (features 0-6 frozen by trainable_layers=3; FPN from 24, 32, 96, 1280 channels).
    ("mobilenet_v2", "bn_frozen", "none"): (22_553_905, 22_467_825),
    ("mobilenet_v2", "an", "an_gn"): (24_080_701, 23_883_553),
}


@pytest.mark.parametrize(("backbone", "backbone_norm", "head_norm"), list(COUNTS))
def test_parameter_counts(backbone, backbone_norm, head_norm):
    counts = parameter_counts(_meta_detector(backbone, backbone_norm=backbone_norm, head_norm=head_norm))
    print(f"{backbone} {backbone_norm} {head_norm}: total {counts.total:,} trainable {counts.trainable:,}")
    assert (counts.total, counts.trainable) == COUNTS[backbone, backbone_norm, head_norm]


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_bn_star_is_torchvisions_mask_rcnn(name):
    ours = _meta_detector(name)
    with torch.device("meta"):
        # torchvision's fine-tuning setup: FrozenBatchNorm2d and trainable_layers=3 (what ImageNet weights select).
        frozen = MaskRCNN(resnet_fpn_backbone(backbone_name=name, weights=None), num_classes=91)
    assert parameter_counts(frozen) == parameter_counts(ours)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in frozen.state_dict().items()}
    trainable = [key for key, p in ours.named_parameters() if p.requires_grad]
    assert trainable == [key for key, p in frozen.named_parameters() if p.requires_grad]


def test_bn_star_resnet50_counts_as_many_as_maskrcnn_resnet50_fpn():
    with torch.device("meta"):
        # Without weights torchvision keeps trainable BatchNorm2d and trains all stages: every tensor a parameter.
        reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    assert sum(p.numel() for p in reference.parameters()) == 44_454_513 == parameter_counts(_meta_detector()).total


def test_head_parts():
    def part_counts(detector):
        heads = detector.roi_heads
        return [parameter_counts(m).total for m in (detector.backbone.fpn, heads.box_head, heads.mask_head)]

    assert part_counts(_meta_detector(head_norm="none")) == [3_344_384, 13_895_680, 2_360_320]
    assert part_counts(_meta_detector(head_norm="gn")) == [3_346_432, 15_207_424, 2_361_344]
    assert part_counts(_meta_detector(head_norm="an_gn")) == [3_346_432, 15_251_516, 2_361_344]
    # The reference's rows without head norms: 4conv1fc box head with conv biases, plain FPN and mask head.
    assert part_counts(_meta_detector(head_norm="none", box_head="4conv1fc")) == [3_344_384, 15_206_400, 2_360_320]
    # One K = 10 everywhere and AN w/ GN in the mask head as well.
    variant = _meta_detector(head_norm="an_gn", k_head=10, an_mask_head=True)
    assert part_counts(variant) == [3_346_432, 15_236_136, 2_390_056]

    heads = _meta_detector(head_norm="an_gn").roi_heads
    box_norms = [m for m in heads.box_head.modules() if isinstance(m, AttentiveNorm2d)]
    assert [m.k for m in box_norms] == list(HEAD_K)
    assert all(
        (m.norm, m.groups, m.head, m.activation, m.pooling) == ("group", 32, "a1", "hsigmoid", "rsd") for m in box_norms
    )
    assert not any(isinstance(m, AttentiveNorm2d) for m in heads.mask_head.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in heads.mask_head.modules()) == 4


def test_backbone_norm_layers_and_frozen_stages():
    syncbn = _meta_detector(backbone_norm="syncbn").backbone.body
    assert isinstance(syncbn.bn1, FrozenBatchNorm2d) and isinstance(syncbn.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(syncbn.layer2[0].bn1, nn.SyncBatchNorm) and isinstance(syncbn.layer4[2].bn3, nn.SyncBatchNorm)

    an = _meta_detector(backbone_norm="an").backbone.body
    assert sum(isinstance(m, FineTunedAttentiveNorm2d) for m in an.modules()) == 16
    assert not any(isinstance(m, nn.BatchNorm2d | nn.SyncBatchNorm) for m in an.modules())
    assert isinstance(an.layer3[0].downsample[1], FrozenBatchNorm2d)

    gn = _meta_detector(backbone_norm="gn").backbone.body
    assert sum(isinstance(m, nn.GroupNorm) for m in gn.modules()) == 53
    assert not any(p.requires_grad for p in gn.layer1.parameters()) and gn.layer2[0].bn1.weight.requires_grad

    mobilenet = _meta_detector("mobilenet_v2").backbone
    assert mobilenet.body.return_layers == {"3": "0", "6": "1", "13": "2", "18": "3"}
    assert [m.in_channels for m in mobilenet.fpn.inner_blocks.modules() if isinstance(m, nn.Conv2d)] == [
        24,
        32,
        96,
        1280,
    ]
    frozen = [not any(p.requires_grad for p in block.parameters()) for block in mobilenet.body.values()]
    assert frozen == [True] * 7 + [False] * 12
    everything = _meta_detector("mobilenet_v2", trainable_layers=6).backbone.body
    assert all(p.requires_grad for p in everything.parameters())


# -- 2. the AN fine-tuning rule ------------------------------------------------------------------------------------


def test_an_backbone_follows_the_fine_tuning_rule_through_a_training_step():
    torch.manual_seed(0)
    detector = _small_detector("resnet50", backbone_norm="an", head_norm="an_gn")
    images, targets = (batch[:1] for batch in _batch())  # one image: the a2 heads run on running statistics
    _calibrate(detector, images)
    body = detector.backbone.body
    before = {k: v.clone() for k, v in detector.state_dict().items()}

    detector.eval()
    detector.train()
    an_layers = {name: m for name, m in body.named_modules() if isinstance(m, AttentiveNorm2d)}
    assert len(an_layers) == 16 and all(type(m) is FineTunedAttentiveNorm2d for m in an_layers.values())
    assert all(not m.training and not m.attention.training for m in an_layers.values())
    assert detector.training and detector.roi_heads.box_head.training

    trainable = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
    losses = detector(images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    after = detector.state_dict()

    def changed(key: str) -> bool:
        return not torch.equal(before[key], after[key])

    prefix = "backbone.body."
    for name, layer in an_layers.items():
        fixed = ["gamma", "beta", "running_mean", "running_var", "num_batches_tracked"]
        fixed += ["attention.norm.running_mean", "attention.norm.running_var"]  # the a2 head's BatchNorm1d
        assert not any(changed(f"{prefix}{name}.{leaf}") for leaf in fixed), name
        assert layer.gamma.grad is None and not layer.gamma.requires_grad
        trained = changed(f"{prefix}{name}.attention.fc.weight")
        assert trained == (not name.startswith("layer1")), name  # layer1 is a frozen stage
    frozen_bn = [n for n, m in body.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen_bn) == 1 + 16 + 16 + 4  # stem, bn1 and bn3 of each block, downsample norms
    assert not any(
        changed(f"{prefix}{n}.{leaf}") for n in frozen_bn for leaf in ("weight", "bias", "running_mean", "running_var")
    )
    stem_and_layer1 = [k for k in before if k.startswith((f"{prefix}conv1", f"{prefix}layer1"))]
    assert not any(changed(k) for k in stem_and_layer1)
    assert not any(p.requires_grad for p in [*body.conv1.parameters(), *body.layer1.parameters()])
    assert changed(f"{prefix}layer2.0.conv1.weight") and changed(f"{prefix}layer4.2.conv3.weight")
    # The heads' AN w/ GN layers train in full, mixtures included.
    assert changed("roi_heads.box_head.0.1.gamma") and changed("roi_heads.box_head.3.1.beta")


def test_fine_tuning_rule_on_a_single_layer():
    layer = AttentiveNorm2d(8, 4, groups=4)
    plain = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), layer)
    apply_an_finetuning_rule(plain)
    plain.train()
    assert (
        type(plain[2]) is FineTunedAttentiveNorm2d and not plain[2].training and isinstance(plain[1], FrozenBatchNorm2d)
    )
    out = plain(torch.randn(1, 3, 5, 5))  # batch of 1: the a2 head runs on its running statistics
    assert out.shape == (1, 8, 5, 5)
    assert apply_an_finetuning_rule(plain) is plain  # idempotent
    twin = copy.deepcopy(plain)
    assert type(twin[2]) is FineTunedAttentiveNorm2d and set(twin.state_dict()) == set(plain.state_dict())


# -- 3. losses and detections -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "backbone_norm", "head_norm"),
    [
        ("resnet50", "bn_frozen", "none"),
        ("resnet50", "gn", "gn"),
        ("mobilenet_v2", "syncbn", "gn"),
        ("mobilenet_v2", "an", "an_gn"),
    ],
)
def test_train_losses_and_eval_detections(backbone, backbone_norm, head_norm):
    torch.manual_seed(0)
    detector = _small_detector(backbone, backbone_norm=backbone_norm, head_norm=head_norm)
    images, targets = _batch()
    _calibrate(detector, images)
    detector.train()
    with torch.no_grad():
        losses = detector(images, targets)
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values()), losses
    assert losses["loss_classifier"] < 20, losses  # calibrated: the size of a fresh classifier's loss

    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2
    for image, found in zip(images, detections, strict=True):
        assert set(found) == {"boxes", "labels", "scores", "masks"}
        count = len(found["boxes"])
        assert 0 < count <= CHEAP["box_detections_per_img"]
        assert found["boxes"].shape == (count, 4) and found["labels"].shape == found["scores"].shape == (count,)
        assert found["masks"].shape == (count, 1, *image.shape[1:])
        assert found["masks"].min() >= 0 and found["masks"].max() <= 1


# -- narrower detectors (detector_options fpn_channels, box_fc_channels) -------------------------------------------


def _conv(c_in: int, c_out: int, kernel: int) -> int:
    return c_in * c_out * kernel * kernel + c_out


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v2"])
def test_the_fpn_rpn_and_heads_follow_the_widths(backbone):
    fpn, fc, classes = 64, 256, 91
    narrow = _meta_detector(backbone, detector_options=(("fpn_channels", fpn), ("box_fc_channels", fc)))
    levels = {"resnet50": (256, 512, 1024, 2048), "mobilenet_v2": (24, 32, 96, 1280)}[backbone]
    heads = narrow.roi_heads
    expected = {
        "fpn": sum(_conv(c, fpn, 1) + _conv(fpn, fpn, 3) for c in levels),
        "rpn": _conv(fpn, fpn, 3) + _conv(fpn, 3, 1) + _conv(fpn, 12, 1),  # 3 anchor shapes per place
        "box_head": (fpn * 49 * fc + fc) + (fc * fc + fc),
        "box_predictor": (fc * classes + classes) + (fc * 4 * classes + 4 * classes),
        "mask_head": 4 * _conv(fpn, fpn, 3),
        "mask_predictor": _conv(fpn, fpn, 2) + _conv(fpn, classes, 1),  # the 2x2 transposed conv, the 1x1 logits
    }
    parts = {
        "fpn": narrow.backbone.fpn,
        "rpn": narrow.rpn.head,
        "box_head": heads.box_head,
        "box_predictor": heads.box_predictor,
        "mask_head": heads.mask_head,
        "mask_predictor": heads.mask_predictor,
    }
    assert {name: parameter_counts(part).total for name, part in parts.items()} == expected
    assert narrow.backbone.out_channels == fpn
    # The body is the same network at any width.
    default = _meta_detector(backbone)
    assert parameter_counts(narrow.backbone.body) == parameter_counts(default.backbone.body)


def test_anchor_size_sets_the_smallest_anchor_and_doubles_it_per_level():
    small = _meta_detector("mobilenet_v2", detector_options=(("anchor_size", 16),)).rpn.anchor_generator
    assert small.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert small.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    assert _meta_detector("mobilenet_v2").rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    # a real forward pass puts the anchors on the image: 3 per place of each level of a 64 x 64 input
    torch.manual_seed(0)
    model = build_mask_rcnn(
        "mobilenet_v2", num_classes=5, min_size=64, max_size=64, detector_options={"anchor_size": 8}
    )
    model.eval()
    images = model.transform([torch.rand(3, 64, 64)])[0]
    features = list(model.backbone(images.tensors).values())
    anchors = model.rpn.anchor_generator(images, features)[0]
    places = sum(f.shape[-2] * f.shape[-1] for f in features)
    assert anchors.shape == (3 * places, 4)
    sides = (anchors[:, 2:] - anchors[:, :2]).prod(dim=1).sqrt()
    assert torch.allclose(sides.min(), torch.tensor(8.0), atol=0.01)
    assert torch.allclose(sides.max(), torch.tensor(128.0), atol=0.01)


def test_torchvisions_widths_given_explicitly_build_the_default_detector():
    named = _meta_detector("mobilenet_v2", detector_options=(("fpn_channels", 256), ("box_fc_channels", 1024)))
    assert parameter_counts(named) == parameter_counts(_meta_detector("mobilenet_v2"))


@pytest.mark.parametrize(
    ("detector", "head_norm"),
    [("mask_rcnn", "none"), ("mask_rcnn", "an_gn"), ("cascade_mask_rcnn", "gn"), ("htc", "none")],
)
def test_a_narrow_detector_trains_and_detects(detector, head_norm):
    torch.manual_seed(0)
    options = {**CHEAP, "fpn_channels": 32, "box_fc_channels": 64}
    model = build_mask_rcnn(
        "mobilenet_v2",
        num_classes=5,
        detector=detector,
        head_norm=head_norm,
        min_size=SIZE,
        max_size=SIZE,
        detector_options=options,
    )
    images, targets = _batch()
    _calibrate(model, images)
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    trainable = [p for p in [*model.roi_heads.parameters(), *model.rpn.parameters()] if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    model.eval()
    with torch.no_grad():
        (found, _) = model(images)
    assert 0 < len(found["boxes"]) <= CHEAP["box_detections_per_img"]
    assert found["masks"].shape[1:] == (1, *images[0].shape[1:])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("fpn_channels", 4, "from 8 to 4096"),
        ("fpn_channels", 5000, "from 8 to 4096"),
        ("box_fc_channels", 64.0, "from 8 to 4096"),
        ("fpn_channels", True, "from 8 to 4096"),
        ("anchor_size", 2, "from 4 to 1024"),
    ],
)
def test_a_size_out_of_range_is_refused_with_the_range(option, value, message):
    refused = pytest.raises(ValueError, match=rf"{option}=.* is not valid; give an integer {message}")
    with refused, torch.device("meta"):
        build_mask_rcnn("mobilenet_v2", num_classes=5, detector_options={option: value})


def test_an_mask_head_takes_an_empty_batch_of_rois():
    detector = _small_detector("mobilenet_v2", head_norm="an_gn", an_mask_head=True)
    assert sum(isinstance(m, AttentiveNorm2d) for m in detector.roi_heads.mask_head.modules()) == 4
    detector.roi_heads.score_thresh = 1.1  # no detection: the mask head gets zero RoIs
    detector.eval()
    with torch.no_grad():
        (found,) = detector([torch.rand(3, SIZE, SIZE)])
    assert found["boxes"].shape == (0, 4) and found["masks"].shape == (0, 1, SIZE, SIZE)

    norm = AttentiveNorm2d(256, 10, norm="group", head="a1")
    norm(torch.zeros(0, 256, 14, 14, requires_grad=True)).sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in norm.parameters())


# -- checkpoint mapping ------------------------------------------------------------------------------------------


def _meta_classifier(name, norm):
    with torch.device("meta"):
        return create(name, norm=norm, zero_init_residual=False)


def test_classification_state_maps_onto_the_detector():
    for name, norm, backbone_norm in [("resnet50", "an", "an"), ("resnet50", "bn", "bn_frozen")]:
        detector = _meta_detector(name, backbone_norm=backbone_norm)
        mapped, missing, unexpected = map_classification_state(_meta_classifier(name, norm).state_dict(), detector)
        assert missing == [] and unexpected == [], (name, norm)
        assert set(mapped) == set(backbone_state_keys(detector))
        assert all(key.startswith("backbone.body.") for key in mapped)

    # BN weights offered to an AN detector: bn2's statistics carry over, its weight and bias have no place.
    detector = _meta_detector("resnet50", backbone_norm="an")
    mapped, missing, unexpected = map_classification_state(_meta_classifier("resnet50", "bn").state_dict(), detector)
    assert len(unexpected) == 32 and all(key.endswith(("bn2.weight", "bn2.bias")) for key in unexpected)
    assert len(missing) == 16 * 8  # gamma, beta, attention fc weight, the a2 head's BatchNorm1d (5 entries)
    assert "backbone.body.layer1.0.bn2.running_mean" in mapped


def test_mobilenet_checkpoint_loads_into_the_detector():
    torch.manual_seed(0)
    classifier = create("mobilenet_v2", norm="an")
    detector = build_mask_rcnn("mobilenet_v2", num_classes=5, backbone_norm="an", head_norm="none")
    mapped, missing, unexpected = map_classification_state(classifier.state_dict(), detector)
    assert missing == [] and unexpected == []
    assert "backbone.body.18.0.weight" in mapped  # features.18.0.weight
    result = detector.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and not set(result.missing_keys) & set(mapped)
    loaded = detector.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in mapped.items())


# -- 4. bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"backbone": "resnet18"},
            re.escape("backbone='resnet18' is not valid; choose one of " + ", ".join(BACKBONES)),
        ),
        (
            {"backbone_norm": "bn"},
            re.escape("backbone_norm='bn' is not valid; choose one of " + ", ".join(BACKBONE_NORMS)),
        ),
        ({"head_norm": "an"}, re.escape("head_norm='an' is not valid; choose one of " + ", ".join(HEAD_NORMS))),
        ({"box_head": "3fc"}, "box_head='3fc' is not valid; choose one of 2fc, 4conv1fc"),
        ({"head_norm": "gn", "box_head": "2fc"}, "needs box_head='4conv1fc'"),
        ({"k": 5}, "applies to backbone_norm='an'"),
        ({"head_norm": "gn", "k_head": 5}, "apply to head_norm='an_gn'"),
        ({"head_norm": "an_gn", "k_head": (10, 20)}, "one per box-head conv"),
        ({"backbone": "mobilenet_v2", "trainable_layers": 7}, r"must be in \[0, 6\]"),
        ({"trainable_layers": 6}, r"range \[0,5\]"),
    ],
)
def test_bad_input_names_the_choices(kwargs, message):
    kwargs = {"backbone": "resnet50", "num_classes": 91, **kwargs}
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        build_mask_rcnn(**kwargs)


@pytest.mark.parametrize(
    ("backbone", "options", "paper_millions"),
    [
        ("resnet50", {"backbone_norm": "bn_frozen", "box_head": "4conv1fc"}, 45.71),
        ("resnet50", {"backbone_norm": "gn", "head_norm": "gn"}, 45.72),
        ("resnet50", {"backbone_norm": "an", "box_head": "4conv1fc"}, 45.91),
        ("resnet50", {"backbone_norm": "an", "head_norm": "an_gn"}, 45.96),
        ("resnet101", {"backbone_norm": "bn_frozen", "box_head": "4conv1fc"}, 64.70),
        ("resnet101", {"backbone_norm": "gn", "head_norm": "gn"}, 64.71),
        ("resnet101", {"backbone_norm": "an", "head_norm": "an_gn"}, 65.20),
    ],
)
def test_coco_models_count_the_papers_parameters(backbone, options, paper_millions):
    """The second paper's Table 4 #Params (mmdetection builds, 80 COCO categories, the 4conv1fc box head in every
    row), to its 0.01M."""
    counts = parameter_counts(build_mask_rcnn(backbone, num_classes=81, **options))
    assert round(counts.total / 1e6, 2) == paper_millions
