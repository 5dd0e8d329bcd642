"""Cascade Mask R-CNN and HTC (models.detection_cascade) and the AOGNet detection backbones: the papers' parameter
counts, the cascade's design, its losses and detections, AOGNet checkpoints onto the detector."""

import pytest
import torch
from test_detection import CHEAP, SIZE, _batch, _calibrate, _meta_detector, _small_detector
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from an_lab.models import create
from an_lab.models.detection import (
    FineTunedAttentiveNorm2d,
    build_mask_rcnn,
    map_classification_state,
    parameter_counts,
)
from an_lab.models.detection_cascade import (
    STAGE_BOX_WEIGHTS,
    STAGE_IOUS,
    STAGE_LOSS_WEIGHTS,
    CascadePredictor,
    CascadeRoIHeads,
)
from an_lab.nn import AttentiveNorm2d


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _coco(detector, backbone, norm, head_norm="none", box_head=None):
    """The papers' builds: 80 COCO categories (81 classes with the background)."""
    with torch.device("meta"):
        model = build_mask_rcnn(
            backbone, num_classes=81, detector=detector, backbone_norm=norm, head_norm=head_norm, box_head=box_head
        )
    return parameter_counts(model).total


# (detector, backbone, backbone norm, head norm, box head) -> (parameters, the paper's #Params in millions)
PAPER_COUNTS = {
    # Second paper, Table 5 (Cascade Mask R-CNN, 2fc heads). R101 BN*: body 42,500,160 (105,344 of it frozen BN
    # affine), FPN 3,344,384, RPN 593,935, 3 x (2fc head 13,895,680 + 81-way classifier 83,025 + class-agnostic
    # regressor 4,100), 3 x (4-conv mask head 2,360,320 + deconv 262,400 + 81-way mask logits 20,817).
    ("cascade_mask_rcnn", "resnet101", "bn_frozen", "none", "2fc"): (96_317_505, 96.32),
    ("cascade_mask_rcnn", "resnet101", "an", "none", "2fc"): (96_768_989, 96.77),
    ("cascade_mask_rcnn", "aognet_40m", "bn_frozen", "none", "2fc"): (92_346_117, 92.35),
    ("cascade_mask_rcnn", "aognet_40m", "an", "none", "2fc"): (92_581_993, 92.58),
    # Second paper, Table 4 (Mask R-CNN, 4conv1fc box head): BN*, AN (w/ BN), AN (w/ BN) + AN (w/ GN) heads.
    ("mask_rcnn", "aognet_12m", "bn_frozen", "none", "4conv1fc"): (33_094_760, 33.09),
    ("mask_rcnn", "aognet_12m", "an", "none", "4conv1fc"): (33_209_016, 33.21),
    ("mask_rcnn", "aognet_12m", "an", "an_gn", "4conv1fc"): (33_257_204, 33.26),
    ("mask_rcnn", "aognet_40m", "bn_frozen", "none", "4conv1fc"): (60_732_153, 60.73),
    ("mask_rcnn", "aognet_40m", "an", "none", "4conv1fc"): (60_968_029, 60.97),
    ("mask_rcnn", "aognet_40m", "an", "an_gn", "4conv1fc"): (61_016_217, 61.02),
    # HTC without its semantic branch (first paper, Table 3, which gives no count): the cascade plus two 1x1 flow
    # convs of 65,792 (mmdetection v1 builds a third, unused, in the first stage's mask head: 96,514,881).
    ("htc", "resnet101", "bn_frozen", "none", "2fc"): (96_449_089, 96.45),
}


@pytest.mark.parametrize("key", list(PAPER_COUNTS), ids=lambda key: "-".join(key))
def test_detectors_count_the_papers_parameters(key):
    total = _coco(*key)
    exact, paper_millions = PAPER_COUNTS[key]
    assert total == exact
    assert round(total / 1e6, 2) == paper_millions


def test_the_cascade_is_built_to_the_authors_configuration():
    heads = _meta_detector("resnet50", detector="cascade_mask_rcnn").roi_heads
    assert isinstance(heads, CascadeRoIHeads) and heads.num_stages == 3 and not heads.htc
    assert [m.high_threshold for m in heads.matchers] == [m.low_threshold for m in heads.matchers] == [0.5, 0.6, 0.7]
    assert not any(m.allow_low_quality_matches for m in heads.matchers)
    assert [c.weights for c in heads.box_coders] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert STAGE_IOUS == (0.5, 0.6, 0.7) and STAGE_LOSS_WEIGHTS == (1, 0.5, 0.25) and len(STAGE_BOX_WEIGHTS) == 3
    assert heads.stage_loss_weights == (1.0, 0.5, 0.25)
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (512, 0.25)
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.5, 100)
    for predictor in heads.box_predictor:  # 91 classes here (torchvision's COCO ids), regression class-agnostic
        assert isinstance(predictor, CascadePredictor)
        assert (predictor.cls_score.out_features, predictor.bbox_pred.out_features) == (91, 4)
    real = build_mask_rcnn("mobilenet_v2", num_classes=81, detector="cascade_mask_rcnn").roi_heads.box_predictor[2]
    assert 0.009 < real.cls_score.weight.std() < 0.011 and 0.0009 < real.bbox_pred.weight.std() < 0.0011
    assert not real.cls_score.bias.any() and not real.bbox_pred.bias.any()  # mmdetection's BBoxHead init
    fc6 = [head.fc6.out_features for head in heads.box_head]
    assert fc6 == [1024] * 3 and len({id(head) for head in heads.box_head}) == 3  # one head per stage, not shared
    assert all(head.flow is None for head in heads.mask_head)
    htc = _meta_detector("resnet50", detector="htc").roi_heads
    assert htc.htc and [head.flow is None for head in htc.mask_head] == [True, False, False]
    # Head norms and the 4conv1fc box head apply per stage as in Mask R-CNN.
    normed = _meta_detector("resnet50", detector="cascade_mask_rcnn", head_norm="gn").roi_heads
    assert all(sum(isinstance(m, nn.GroupNorm) for m in head.modules()) == 4 for head in normed.box_head)
    assert all(sum(isinstance(m, nn.GroupNorm) for m in head.modules()) == 4 for head in normed.mask_head)


@pytest.mark.parametrize("detector", ["cascade_mask_rcnn", "htc"])
def test_cascade_losses_train_every_stage_and_detections_have_masks(detector):
    torch.manual_seed(0)
    model = _small_detector("resnet50", detector=detector, backbone_norm="bn_frozen")
    images, targets = _batch()
    _calibrate(model, images)
    model.train()
    losses = model(images, targets)
    stage_losses = {f"loss_{part}_s{stage}" for part in ("classifier", "box_reg", "mask") for stage in range(3)}
    assert set(losses) == stage_losses | {"loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(value) and value.ndim == 0 for value in losses.values()), losses
    sum(losses.values()).backward()
    heads = model.roi_heads
    for stage in range(3):  # every stage's box and mask head received a gradient
        assert heads.box_head[stage].fc7.weight.grad.abs().sum() > 0, stage
        assert heads.box_predictor[stage].bbox_pred.weight.grad.abs().sum() > 0, stage
        assert heads.mask_head[stage].predictor.mask_fcn_logits.weight.grad.abs().sum() > 0, stage
    if detector == "htc":  # the mask information flow carries gradient into stages 1 and 2
        assert all(heads.mask_head[stage].flow[0].weight.grad.abs().sum() > 0 for stage in (1, 2))

    model.eval()
    with torch.no_grad():
        detections = model(images)
    for image, found in zip(images, detections, strict=True):
        count = len(found["boxes"])
        assert 0 < count <= CHEAP["box_detections_per_img"]
        assert found["boxes"].shape == (count, 4) and found["masks"].shape == (count, 1, *image.shape[1:])
        assert found["labels"].min() >= 1 and found["scores"].max() <= 1
        assert found["masks"].min() >= 0 and found["masks"].max() <= 1


def test_the_test_time_scores_average_the_stages_logits_then_softmax():
    torch.manual_seed(0)
    model = _small_detector("resnet50", detector="cascade_mask_rcnn", backbone_norm="bn_frozen")
    model.eval()
    biases = torch.tensor([[0.0, 4.0, 0.0, 1.0, 0.0], [0.0, 0.0, 3.0, 1.0, 0.0], [0.0, -2.0, 3.0, 1.0, 2.0]])
    with torch.no_grad():
        for predictor, bias in zip(model.roi_heads.box_predictor, biases, strict=True):
            predictor.cls_score.weight.zero_()  # every RoI gets the stage's logits `bias`
            predictor.cls_score.bias.copy_(bias)
        (found,) = model([torch.rand(3, SIZE, SIZE)])
    expected = torch.softmax(biases.mean(0), -1)  # [.., 0.2119, 0.3162, 0.2119, 0.1043]: not any one stage's
    assert len(found["scores"]) > 0
    assert torch.allclose(found["scores"], expected[found["labels"]])
    assert set(found["labels"].tolist()) <= {1, 2, 3, 4}


def test_an_aognet_backbone_takes_its_classification_checkpoint_and_freezes_stem_and_stage0():
    torch.manual_seed(0)
    classifier = create("aognet_12m", norm="an", zero_init_residual=False)
    detector = build_mask_rcnn("aognet_12m", num_classes=5, backbone_norm="an", min_size=SIZE, max_size=SIZE)
    mapped, missing, unexpected = map_classification_state(classifier.state_dict(), detector)
    assert missing == [] and unexpected == []
    body = detector.backbone.body
    assert list(body.return_layers) == ["stage0", "stage1", "stage2", "stage3"]
    fpn_inputs = [m.in_channels for m in detector.backbone.fpn.inner_blocks.modules() if isinstance(m, nn.Conv2d)]
    assert fpn_inputs == [128, 256, 512, 824]  # the authors' FPN in_channels for AOGNet-12M
    assert not any(p.requires_grad for p in [*body.stem.parameters(), *body.stage0.parameters()])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())  # BN* everywhere but the AN sites
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.stage0.modules()) > 0
    assert all(type(m) is FineTunedAttentiveNorm2d for m in body.modules() if isinstance(m, AttentiveNorm2d))
    assert body.stage1.transition[0].weight.requires_grad
    assert "fc" not in dict(body.named_children())  # the classifier is left out
    detector.load_state_dict(mapped, strict=False)
    features = detector.backbone(torch.rand(1, 3, 64, 64))
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"detector": "retinanet"},
            "detector='retinanet' is not valid; choose one of mask_rcnn, cascade_mask_rcnn, htc",
        ),
        ({"detector": "htc", "head_norm": "gn", "box_head": "2fc"}, "needs box_head='4conv1fc'"),
        ({"backbone": "aognet_40m", "trainable_layers": 6}, r"not valid for an AOGNet; it must be in \[0, 5\]"),
        ({"backbone": "aognet_12m", "backbone_norm": "bn"}, "backbone_norm='bn' is not valid"),
    ],
)
def test_bad_detector_input_names_the_choices(kwargs, message):
    kwargs = {"backbone": "resnet50", "num_classes": 81, **kwargs}
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        build_mask_rcnn(**kwargs)
