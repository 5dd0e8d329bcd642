"""Cascade Mask R-CNN (Cai & Vasconcelos) and Hybrid Task Cascade (Chen et al.) RoI heads from torchvision parts.

``CascadeRoIHeads`` takes the place of torchvision's ``RoIHeads`` inside a ``MaskRCNN`` (``GeneralizedRCNN`` calls
it the same way and pastes its masks into the image the same way), so that the backbone, FPN, RPN, transform and
the training loop stay those of the Mask R-CNN detector. It follows the mmdetection (v1) design the AN papers used
(the authors' ``cascade_mask_rcnn_r101_*_fpn_20e`` and ``cascade_mask_aognet_40m_*`` configurations):

- three box stages, each with its own box head (the 2fc head of 1024: TwoMLPHead, unless the detector asks for
  4conv1fc), an ``num_classes``-way classifier and a class-agnostic regressor (4 outputs); proposals are matched at
  IoU 0.5, 0.6, 0.7 (positive at or above, negative below, no low-quality matches), 512 RoIs per image sampled with a
  quarter positive and the ground-truth boxes added to the proposals at every stage; the regression targets are
  encoded with box-coder weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15) (mmdetection's target_stds
  0.1/0.2, 0.05/0.1, 0.033/0.067, the last rounded as detectron2 does); classification by cross entropy and
  regression by smooth L1 with beta 1 (the configurations' SmoothL1Loss(beta=1.0), where torchvision's Mask R-CNN
  uses 1/9) over the positive RoIs, divided by all sampled RoIs; stage losses weighted 1, 0.5, 0.25.
- between stages, the sampled RoIs are regressed by the stage just trained (no gradient) and the ones that were
  ground-truth boxes are dropped (the next stage adds the ground truth again), as mmdetection's refine_bboxes.
- one mask head per stage (4 convs of 256, a 2x deconvolution and an ``num_classes``-way 1x1 conv: the
  configurations' one FCNMaskHead, which mmdetection builds once per stage), trained on the positive RoIs of its
  stage with the stage's loss weight.
- at test time the RoIs run through the three stages (each stage regresses the previous one's boxes); the class
  logits of the three stages are averaged and go through a softmax (mmdetection averages the raw scores, then
  applies softmax), the boxes are the last stage's; per class a score threshold (0.05), NMS at 0.5 and the 100 best
  per image; the masks of the detections are the average of the three mask heads' probabilities.

HTC (``htc=True``) changes two things, as mmdetection's HybridTaskCascade with ``interleaved=True,
mask_info_flow=True``:

- interleaved execution: in training, a stage's mask head learns from the RoIs its own box head has just regressed
  (re-matched and re-sampled at the stage's IoU), which are also the next stage's proposals.
- mask information flow: the mask head of stage t adds to its RoI features the last conv features of the mask head
  of stage t - 1, through a 1x1 conv + ReLU (``flow``; stages 1 and 2: mmdetection v1 also builds one for stage 0,
  which it never uses, 65,792 parameters more); in training the earlier heads run on stage t's RoIs to give that
  feature, at test time the heads are chained on the detections and their probabilities averaged.

HTC's semantic segmentation branch is not built: it needs COCO-stuff annotations (stuffthingmaps), which COCO
detection folders do not have; so this is HTC without the semantic branch (mmdetection's
``htc_without_semantic_*`` configurations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import maskrcnn_loss
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

STAGE_IOUS = (0.5, 0.6, 0.7)
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
STAGE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
BOX_SMOOTH_L1_BETA = 1.0
RPN_TEST_PROPOSALS = 1000  # mmdetection's get_flops convention: the box heads on 1000 RoIs, the mask heads on 100


class CascadePredictor(nn.Module):
    """Class logits (num_classes, the background at 0) and class-agnostic box deltas (4) from a box head's output,
    initialized as mmdetection's BBoxHead: weights normal with std 0.01 (classifier) and 0.001 (regressor), biases 0."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        for layer, std in ((self.cls_score, 0.01), (self.bbox_pred, 0.001)):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


class StageMaskHead(nn.Module):
    """One stage's mask branch: convs (MaskRCNNHeads), predictor (MaskRCNNPredictor) and, for HTC after the first
    stage, ``flow``: the 1x1 conv + ReLU that brings in the previous stage's mask features."""

    def __init__(self, convs: nn.Module, predictor: nn.Module, flow_channels: int | None = None) -> None:
        super().__init__()
        self.convs = convs
        self.predictor = predictor
        self.flow = None
        if flow_channels is not None:
            self.flow = nn.Sequential(nn.Conv2d(flow_channels, flow_channels, 1), nn.ReLU(inplace=True))

    def features(self, x: Tensor, previous: Tensor | None = None) -> Tensor:
        if self.flow is not None and previous is not None:
            x = x + self.flow(previous)
        return self.convs(x)

    def forward(self, x: Tensor, previous: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = self.features(x, previous)
        return self.predictor(features), features


class CascadeRoIHeads(nn.Module):
    """The RoI heads of Cascade Mask R-CNN or HTC (module docstring); a drop-in for torchvision's RoIHeads."""

    def __init__(
        self,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        mask_heads: Sequence[StageMaskHead],
        *,
        htc: bool = False,
        box_roi_pool: MultiScaleRoIAlign | None = None,
        mask_roi_pool: MultiScaleRoIAlign | None = None,
        ious: Sequence[float] = STAGE_IOUS,
        stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS,
        box_weights: Sequence[Sequence[float]] = STAGE_BOX_WEIGHTS,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        stages = len(box_heads)
        if not stages or {
            len(box_predictors),
            len(mask_heads),
            len(ious),
            len(stage_loss_weights),
            len(box_weights),
        } != {stages}:
            raise ValueError(
                "a cascade needs one box head, predictor, mask head, IoU, loss weight and box coder per stage"
            )
        features = ["0", "1", "2", "3"]
        self.box_roi_pool = box_roi_pool or MultiScaleRoIAlign(features, 7, 2)
        self.mask_roi_pool = mask_roi_pool or MultiScaleRoIAlign(features, 14, 2)
        self.box_head = nn.ModuleList(box_heads)
        self.box_predictor = nn.ModuleList(box_predictors)
        self.mask_head = nn.ModuleList(mask_heads)
        self.htc = htc
        self.matchers = [det_utils.Matcher(iou, iou, allow_low_quality_matches=False) for iou in ious]
        self.box_coders = [det_utils.BoxCoder(tuple(weights)) for weights in box_weights]
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img

    @property
    def num_stages(self) -> int:
        return len(self.box_head)

    # -- training ------------------------------------------------------------------------------------------------

    def _sample(self, stage: int, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, list]:
        """Match the proposals (plus the ground truth) at the stage's IoU and sample them, per image: the RoIs, their
        labels (0: background), matched ground-truth index, regression targets and whether each was a ground truth."""
        sampled: dict[str, list] = {key: [] for key in ("rois", "labels", "matched", "targets", "is_gt")}
        labels_per_image, matched_per_image, candidates = [], [], []
        for boxes, target in zip(proposals, targets, strict=True):
            gt_boxes, gt_labels = target["boxes"].to(boxes.dtype), target["labels"]
            every = torch.cat([boxes, gt_boxes])
            is_gt = torch.cat(
                [
                    torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device),
                    torch.ones_like(gt_labels, dtype=torch.bool),
                ]
            )
            if gt_boxes.numel() == 0:
                matched = torch.zeros(len(every), dtype=torch.int64, device=boxes.device)
                labels = torch.zeros(len(every), dtype=torch.int64, device=boxes.device)
            else:
                quality = box_ops.box_iou(gt_boxes, every)
                found = self.matchers[stage](quality)
                matched = found.clamp(min=0)
                labels = gt_labels[matched].to(torch.int64)
                labels[found == det_utils.Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[found == det_utils.Matcher.BETWEEN_THRESHOLDS] = -1
            labels_per_image.append(labels)
            matched_per_image.append(matched)
            candidates.append((every, is_gt, gt_boxes))
        positives, negatives = self.sampler(labels_per_image)
        for (every, is_gt, gt_boxes), labels, matched, pos, neg in zip(
            candidates, labels_per_image, matched_per_image, positives, negatives, strict=True
        ):
            keep = torch.where(pos | neg)[0]
            rois = every[keep]
            if gt_boxes.numel() == 0:
                gt_boxes = torch.zeros((1, 4), dtype=rois.dtype, device=rois.device)
            sampled["rois"].append(rois)
            sampled["labels"].append(labels[keep])
            sampled["matched"].append(matched[keep])
            sampled["is_gt"].append(is_gt[keep])
            sampled["targets"].append(self.box_coders[stage].encode_single(gt_boxes[matched[keep]], rois))
        return sampled

    def _box_forward(self, stage: int, features: dict[str, Tensor], rois: list[Tensor], image_shapes) -> tuple:
        pooled = self.box_roi_pool(features, rois, image_shapes)
        return self.box_predictor[stage](self.box_head[stage](pooled))

    def _refine(self, stage: int, rois: list[Tensor], deltas: Tensor, image_shapes, drop: list[Tensor] | None):
        """The stage's regression applied to its RoIs, clipped to the image, without gradient; `drop` marks RoIs to
        leave out (those that were ground-truth boxes)."""
        counts = [len(r) for r in rois]
        decoded = self.box_coders[stage].decode(deltas.detach(), rois).reshape(-1, 4)
        refined = []
        for index, (boxes, shape) in enumerate(zip(decoded.split(counts), image_shapes, strict=True)):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            refined.append(boxes if drop is None else boxes[~drop[index]])
        return refined

    def _box_loss(self, stage: int, logits: Tensor, deltas: Tensor, sampled: dict) -> tuple[Tensor, Tensor]:
        labels = torch.cat(sampled["labels"])
        targets = torch.cat(sampled["targets"])
        classification = F.cross_entropy(logits, labels)
        positive = torch.where(labels > 0)[0]
        regression = F.smooth_l1_loss(
            deltas[positive], targets[positive], beta=BOX_SMOOTH_L1_BETA, reduction="sum"
        ) / max(labels.numel(), 1)
        return classification, regression

    def _mask_loss(self, stage: int, features, sampled: dict, targets, image_shapes) -> Tensor:
        positive_rois, matched = [], []
        for rois, labels, found in zip(sampled["rois"], sampled["labels"], sampled["matched"], strict=True):
            keep = torch.where(labels > 0)[0]
            positive_rois.append(rois[keep])
            matched.append(found[keep])
        pooled = self.mask_roi_pool(features, positive_rois, image_shapes)
        previous = None
        if self.htc:
            for earlier in range(stage):
                previous = self.mask_head[earlier].features(pooled, previous)
        logits, _ = self.mask_head[stage](pooled, previous)
        gt_masks = [target["masks"] for target in targets]
        gt_labels = [target["labels"] for target in targets]
        return maskrcnn_loss(logits, positive_rois, gt_masks, gt_labels, matched)

    def _train(self, features, proposals, image_shapes, targets) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        rois = [boxes.detach() for boxes in proposals]
        for stage in range(self.num_stages):
            weight = self.stage_loss_weights[stage]
            sampled = self._sample(stage, rois, targets)
            logits, deltas = self._box_forward(stage, features, sampled["rois"], image_shapes)
            classification, regression = self._box_loss(stage, logits, deltas, sampled)
            losses[f"loss_classifier_s{stage}"] = classification * weight
            losses[f"loss_box_reg_s{stage}"] = regression * weight
            last = stage == self.num_stages - 1
            if self.htc:
                # interleaved: the mask head learns from the boxes its own stage has just regressed
                with torch.no_grad():
                    rois = self._refine(stage, sampled["rois"], deltas, image_shapes, sampled["is_gt"])
                    sampled = self._sample(stage, rois, targets)
            elif not last:
                with torch.no_grad():
                    next_rois = self._refine(stage, sampled["rois"], deltas, image_shapes, sampled["is_gt"])
            losses[f"loss_mask_s{stage}"] = self._mask_loss(stage, features, sampled, targets, image_shapes) * weight
            if not self.htc and not last:
                rois = next_rois
        return losses

    # -- inference -----------------------------------------------------------------------------------------------

    def _detect(self, features, proposals, image_shapes) -> list[dict[str, Tensor]]:
        rois = list(proposals)
        scores = []
        for stage in range(self.num_stages):
            logits, deltas = self._box_forward(stage, features, rois, image_shapes)
            scores.append(logits)
            if stage < self.num_stages - 1:
                rois = self._refine(stage, rois, deltas, image_shapes, None)
        probabilities = F.softmax(torch.stack(scores).mean(0), -1)
        boxes = self._refine(self.num_stages - 1, rois, deltas, image_shapes, None)
        results = []
        counts = [len(r) for r in rois]
        for image_boxes, image_scores in zip(boxes, probabilities.split(counts), strict=True):
            classes = image_scores.shape[1]
            labels = torch.arange(classes, device=image_scores.device).expand_as(image_scores)[:, 1:].reshape(-1)
            flat_boxes = image_boxes[:, None, :].expand(-1, classes - 1, 4).reshape(-1, 4)
            flat_scores = image_scores[:, 1:].reshape(-1)
            keep = torch.where(flat_scores > self.score_thresh)[0]
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(flat_boxes, min_size=1e-2)
            flat_boxes, flat_scores, labels = flat_boxes[keep], flat_scores[keep], labels[keep]
            keep = box_ops.batched_nms(flat_boxes, flat_scores, labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": flat_boxes[keep], "scores": flat_scores[keep], "labels": labels[keep]})
        return results

    def _masks(self, features, results, image_shapes) -> None:
        """Each detection's mask probabilities (28 x 28, of its class): the mean of the stages' mask heads."""
        pooled = self.mask_roi_pool(features, [r["boxes"] for r in results], image_shapes)
        labels = torch.cat([r["labels"] for r in results])
        previous, probabilities = None, []
        for head in self.mask_head:
            logits, features_out = head(pooled, previous if self.htc else None)
            previous = features_out
            chosen = logits[torch.arange(len(labels), device=labels.device), labels]
            probabilities.append(chosen.sigmoid())
        mean = torch.stack(probabilities).mean(0)[:, None]
        for result, masks in zip(results, mean.split([len(r["labels"]) for r in results]), strict=True):
            result["masks"] = masks

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("a cascade's RoI heads need targets in training")
            return [], self._train(features, proposals, image_shapes, targets)
        results = self._detect(features, proposals, image_shapes)
        self._masks(features, results, image_shapes)
        return results, {}


def stage_heads(
    num_classes: int,
    box_head: Callable[[], nn.Module],
    box_out: int,
    mask_convs: Callable[[], nn.Module],
    mask_predictor: Callable[[], nn.Module],
    *,
    htc: bool,
    stages: int = len(STAGE_IOUS),
    mask_channels: int = 256,
) -> dict[str, list[nn.Module]]:
    """The per-stage modules of a cascade: a fresh box head, predictor and mask head for each stage."""
    return {
        "box_heads": [box_head() for _ in range(stages)],
        "box_predictors": [CascadePredictor(box_out, num_classes) for _ in range(stages)],
        "mask_heads": [
            StageMaskHead(mask_convs(), mask_predictor(), mask_channels if htc and stage > 0 else None)
            for stage in range(stages)
        ],
    }
