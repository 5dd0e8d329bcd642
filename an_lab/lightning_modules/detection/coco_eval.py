"""COCOeval for Mask R-CNN outputs: box and mask AP, AP50, AP75 and the size splits, in percent."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from an_lab.data_sources import few
from an_lab.lightning_modules.data.coco import load_coco

METRIC_NAMES = ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")  # COCOeval.stats[0..5]
MASK_THRESHOLD = 0.5

# ------------------------------------------------------------------------------------------------------ evaluation


def _results(predictions: Iterable[tuple[int, Mapping]], label_to_category) -> tuple[list[dict], list[dict], bool]:
    """COCO result entries (boxes, masks) of the model's outputs; the flag says whether every output had masks."""
    boxes_out, masks_out, with_masks = [], [], True
    for image_id, output in predictions:
        boxes = torch.as_tensor(output["boxes"]).detach().float().cpu().reshape(-1, 4)
        scores = torch.as_tensor(output["scores"]).detach().float().cpu().tolist()
        categories = [label_to_category[int(label)] for label in torch.as_tensor(output["labels"]).tolist()]
        boxes[:, 2:] -= boxes[:, :2]
        for box, score, category in zip(boxes.tolist(), scores, categories, strict=True):
            boxes_out.append({"image_id": image_id, "category_id": category, "bbox": box, "score": score})
        if "masks" not in output and "rles" not in output:
            with_masks = False
            continue
        if not len(categories):
            continue
        rles = output["rles"] if "rles" in output else encode_masks(output["masks"])
        for rle, score, category in zip(rles, scores, categories, strict=True):
            masks_out.append({"image_id": image_id, "category_id": category, "segmentation": rle, "score": score})
    return boxes_out, masks_out, with_masks


def encode_masks(masks) -> list[dict]:
    """COCO run-length encodings of Mask R-CNN's masks (Nx1xHxW or NxHxW; probabilities are cut at 0.5), a few
    bytes per mask where the masks themselves take H x W each."""
    masks = torch.as_tensor(masks).detach().cpu()
    if masks.ndim == 4:
        masks = masks[:, 0]
    binary = (masks > MASK_THRESHOLD if masks.is_floating_point() else masks != 0).numpy().astype(np.uint8)
    return mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []


def _stats(coco_gt: COCO, results: list[dict], kind: str, image_ids: list[int]) -> list[float]:
    if results:
        detections = coco_gt.loadRes(results)
    else:  # pycocotools cannot load an empty result list: an index with no detections scores AP 0
        detections = COCO()
        detections.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": coco_gt.dataset["categories"],
            "annotations": [],
        }
        detections.createIndex()
    evaluation = COCOeval(coco_gt, detections, kind)
    evaluation.params.imgIds = image_ids
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return [float("nan") if value < 0 else float(value) * 100.0 for value in evaluation.stats[: len(METRIC_NAMES)]]


def evaluate_coco(
    coco_gt: COCO | Path | str,
    predictions: Mapping[int, Mapping] | Sequence[Mapping],
    label_to_category: Mapping[int, int] | Sequence[int],
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """COCO box and mask AP, in percent, of Mask R-CNN outputs.

    `predictions`: {image_id: output} or a list of outputs that each carry an `image_id`; an output holds `boxes`
    (Nx4 XYXY in the pixels of the annotated image), `labels` (model labels, mapped to category ids through
    `label_to_category`), `scores` and, for mask AP, `masks` (Nx1xHxW or NxHxW probabilities, cut at 0.5) or
    `rles` (their encode_masks). The images evaluated are `image_ids`, by default those predicted (all of the
    ground truth's when there are none), so an image predicted with no detection counts. Returns bbox_ap,
    bbox_ap50, bbox_ap75, bbox_ap_s, bbox_ap_m, bbox_ap_l and the same with segm_ (COCOeval.stats[0:6] x 100): NaN
    where the ground truth has no object of that size, and NaN for every segm_ key when an output lacks masks.
    COCOeval's prints are swallowed.
    """
    if not isinstance(coco_gt, COCO):
        coco_gt = load_coco(coco_gt)
    if isinstance(predictions, Mapping):
        pairs = [(int(image_id), output) for image_id, output in predictions.items()]
    else:
        pairs = [(int(output["image_id"]), output) for output in predictions]
    unknown = sorted({image_id for image_id, _ in pairs} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"predictions for image ids the ground truth does not hold: {few(unknown)}")
    if image_ids is None:
        image_ids = sorted({image_id for image_id, _ in pairs}) or sorted(coco_gt.getImgIds())
    image_ids = sorted(int(i) for i in image_ids)
    boxes, masks, with_masks = _results(pairs, label_to_category)
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for kind, results in (("bbox", boxes), ("segm", masks)):
            if kind == "segm" and not with_masks:
                values = [float("nan")] * len(METRIC_NAMES)
            else:
                values = _stats(coco_gt, results, kind, image_ids)
            metrics.update({f"{kind}_{name}": value for name, value in zip(METRIC_NAMES, values, strict=True)})
    return metrics
