"""COCOeval of Mask R-CNN outputs in percent: the ground truth scores 100, shifted boxes and wrong labels much less,
nothing scores 0. On a small generated shapes set; no model, no network."""

import math

import pytest
import torch

from an_lab.data_sources import VAL_FOLDER, annotation_path
from an_lab.lightning_modules.data.coco import CocoDetection
from an_lab.lightning_modules.data.coco_shapes import SHAPE_CLASSES
from an_lab.lightning_modules.detection.coco_eval import evaluate_coco

# pycocotools' mask decoding trips numpy 2's __array__(copy=...) deprecation inside pycocotools itself
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("no_network"),  # tests/conftest.py; `shapes` (SMALL_SHAPES) comes from there too
]
METRIC_KEYS = {f"{kind}_{name}" for kind in ("bbox", "segm") for name in ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")}


def _ground_truth_as_predictions(dataset: CocoDetection, shift: float = 0.0) -> dict[int, dict]:
    predictions = {}
    for index in range(len(dataset)):
        _, target = dataset[index]
        boxes, masks = target["boxes"].as_subclass(torch.Tensor).clone(), target["masks"].float()
        if shift and len(boxes):
            widths = boxes[:, 2] - boxes[:, 0]
            boxes[:, [0, 2]] += (widths * shift)[:, None]
            moved = [torch.roll(m, round(float(w) * shift), dims=-1) for m, w in zip(masks, widths, strict=True)]
            masks = torch.stack(moved)
        predictions[target["image_id"]] = {
            "boxes": boxes,
            "labels": target["labels"],
            "scores": torch.ones(len(boxes)),
            "masks": masks[:, None] * 0.9,  # probabilities above the 0.5 cut
        }
    return predictions


def test_ground_truth_scores_100_and_shifted_boxes_much_less(shapes):
    dataset = CocoDetection(shapes, VAL_FOLDER, annotation_path(shapes, VAL_FOLDER))
    perfect = evaluate_coco(dataset.coco, _ground_truth_as_predictions(dataset), dataset.label_to_category)
    assert set(perfect) == METRIC_KEYS
    assert perfect["bbox_ap"] > 99.9 and perfect["segm_ap"] > 99.9 and perfect["bbox_ap50"] > 99.9
    assert math.isnan(perfect["bbox_ap_l"])  # no object of COCO's large size in 64-pixel images
    as_list = [{**output, "image_id": image_id} for image_id, output in _ground_truth_as_predictions(dataset).items()]
    assert evaluate_coco(annotation_path(shapes, VAL_FOLDER), as_list, dataset.label_to_category)["bbox_ap"] > 99.9

    shifted = evaluate_coco(dataset.coco, _ground_truth_as_predictions(dataset, 0.5), dataset.label_to_category)
    assert shifted["bbox_ap"] < 20 and shifted["segm_ap"] < 30

    wrong = {
        i: {**p, "labels": p["labels"] % len(SHAPE_CLASSES) + 1}
        for i, p in _ground_truth_as_predictions(dataset).items()
    }
    assert evaluate_coco(dataset.coco, wrong, dataset.label_to_category)["bbox_ap"] < 1


def test_empty_predictions_score_zero(shapes):
    dataset = CocoDetection(shapes, VAL_FOLDER, annotation_path(shapes, VAL_FOLDER))
    nothing = evaluate_coco(dataset.coco, {}, dataset.label_to_category)
    assert set(nothing) == METRIC_KEYS and nothing["bbox_ap"] == 0.0 and nothing["segm_ap"] == 0.0
    empty = {}
    for image_id, info in dataset.coco.imgs.items():
        empty[image_id] = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, info["height"], info["width"]),
        }
    assert evaluate_coco(dataset.coco, empty, dataset.label_to_category)["segm_ap"] == 0.0

    boxes_only = {
        i: {k: v for k, v in p.items() if k != "masks"} for i, p in _ground_truth_as_predictions(dataset).items()
    }
    metrics = evaluate_coco(dataset.coco, boxes_only, dataset.label_to_category)
    assert metrics["bbox_ap"] > 99.9 and math.isnan(metrics["segm_ap"])
    with pytest.raises(ValueError, match="999999"):
        evaluate_coco(dataset.coco, {999999: empty[next(iter(empty))]}, dataset.label_to_category)
