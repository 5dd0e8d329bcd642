"""The COCO side of detection: the generated shapes set, the dataset and its transforms, the grouped batch sampler
and the pre-launch check of a COCO folder (COCOeval in percent: tests/lightning_modules/detection/test_coco_eval.py).
Small sets, no model, no network."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_SHAPES
from pycocotools import mask as mask_utils
from torch.utils.data import DistributedSampler, RandomSampler, SequentialSampler, Subset
from torchvision import tv_tensors

from an_lab.data_sources import TRAIN_FOLDER, VAL_FOLDER, annotation_path, check_coco
from an_lab.errors import UsageError
from an_lab.lightning_modules.data.classification import EpochSeededSampler
from an_lab.lightning_modules.data.coco import (
    CocoDetection,
    GroupedBatchSampler,
    aspect_ratio_groups,
    collate,
    detection_transforms,
)
from an_lab.lightning_modules.data.coco_shapes import SHAPE_CLASSES, SHAPES_MARKER, write_shapes_dataset

# pycocotools' mask decoding trips numpy 2's __array__(copy=...) deprecation inside pycocotools itself
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("no_network"),  # tests/conftest.py; `shapes` (SMALL_SHAPES) comes from there too
]


@pytest.fixture
def shapes_copy(shapes, tmp_path) -> Path:
    """A copy to damage."""
    return Path(shutil.copytree(shapes, tmp_path / "shapes"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _mask_box(mask: torch.Tensor) -> list[float]:
    """XYXY box of a mask's pixels, pixel edges included (COCO's convention)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


# ------------------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_atomic_and_reused(shapes, tmp_path):
    again = tmp_path / "again"
    summary = write_shapes_dataset(again, **SMALL_SHAPES)
    assert _files(again) == _files(shapes)  # same seed: the same JSON and image bytes
    assert summary["parameters"] == SMALL_SHAPES and summary["categories"] == list(SHAPE_CLASSES)
    assert summary["splits"][TRAIN_FOLDER]["images"] == SMALL_SHAPES["train_images"]
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary folder left beside it

    stamps = {path: path.stat().st_mtime_ns for path in again.rglob("*")}
    assert write_shapes_dataset(again, **SMALL_SHAPES) == summary  # reused, not written again
    assert {path: path.stat().st_mtime_ns for path in again.rglob("*")} == stamps

    other = write_shapes_dataset(tmp_path / "other", **{**SMALL_SHAPES, "seed": 4})
    assert (
        _files(tmp_path / "other")[f"{TRAIN_FOLDER}/000000000001.png"]
        != _files(shapes)[f"{TRAIN_FOLDER}/000000000001.png"]
    )
    assert other["parameters"]["seed"] == 4

    with pytest.raises(UsageError, match=SHAPES_MARKER):
        write_shapes_dataset(again, **{**SMALL_SHAPES, "seed": 5})
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a complete shapes data set"):
        write_shapes_dataset(tmp_path / "occupied", **SMALL_SHAPES)
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    write_shapes_dataset(tmp_path / "empty", **SMALL_SHAPES)  # an empty folder is taken
    assert (tmp_path / "empty" / SHAPES_MARKER).is_file()


def test_generated_masks_boxes_and_categories_agree(shapes):
    contents = {
        folder: json.loads(annotation_path(shapes, folder).read_text()) for folder in (TRAIN_FOLDER, VAL_FOLDER)
    }
    assert contents[TRAIN_FOLDER]["categories"] == contents[VAL_FOLDER]["categories"]
    assert [c["id"] for c in contents[TRAIN_FOLDER]["categories"]] == list(range(1, len(SHAPE_CLASSES) + 1))
    assert [c["name"] for c in contents[TRAIN_FOLDER]["categories"]] == list(SHAPE_CLASSES)
    train_ids = {image["id"] for image in contents[TRAIN_FOLDER]["images"]}
    assert not train_ids & {image["id"] for image in contents[VAL_FOLDER]["images"]}
    seen_classes = set()
    for folder, content in contents.items():
        images = {image["id"]: image for image in content["images"]}
        assert len(images) == SMALL_SHAPES[f"{folder[:-4]}_images"]
        per_image = {image_id: 0 for image_id in images}
        for annotation in content["annotations"]:
            image = images[annotation["image_id"]]
            mask = mask_utils.decode(annotation["segmentation"])
            assert mask.shape == (image["height"], image["width"])
            ys, xs = np.nonzero(mask)
            x, y, w, h = annotation["bbox"]
            assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert annotation["area"] == mask.sum() > 0
            assert annotation["iscrowd"] == 0
            assert list(mask_utils.toBbox(annotation["segmentation"])) == annotation["bbox"]
            per_image[annotation["image_id"]] += 1
            seen_classes.add(annotation["category_id"])
        assert max(per_image.values()) <= 4 and sum(per_image.values()) >= len(images)
        for image in images.values():
            assert max(image["width"], image["height"]) == SMALL_SHAPES["image_size"]
    assert seen_classes == set(range(1, len(SHAPE_CLASSES) + 1))


def test_occluded_instances_own_disjoint_pixels(shapes):
    """An instance's mask is what is left visible: masks of overlapping instances never share a pixel."""
    content = json.loads(annotation_path(shapes, TRAIN_FOLDER).read_text())
    by_image: dict[int, list[np.ndarray]] = {}
    for annotation in content["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(mask_utils.decode(annotation["segmentation"]))
    for masks in by_image.values():
        assert np.stack(masks).sum(axis=0).max() <= 1


# --------------------------------------------------------------------------------------------- dataset, transforms


def test_dataset_returns_tv_tensors_with_matching_shapes(shapes):
    dataset = CocoDetection(shapes, VAL_FOLDER, annotation_path(shapes, VAL_FOLDER))
    assert len(dataset) == SMALL_SHAPES["val_images"]
    assert dataset.num_classes == len(SHAPE_CLASSES) + 1 and dataset.classes[1:] == list(SHAPE_CLASSES)
    assert dataset.label_to_category == {i: i for i in range(1, len(SHAPE_CLASSES) + 1)}
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
        height, width = image.shape[-2:]
        info = dataset.coco.imgs[target["image_id"]]
        assert image.shape == (3, info["height"], info["width"])
        count = len(dataset.coco.imgToAnns[target["image_id"]])
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].shape == (count, 4)
        assert target["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
        assert tuple(target["boxes"].canvas_size) == (height, width)
        assert isinstance(target["masks"], tv_tensors.Mask) and target["masks"].shape == (count, height, width)
        assert target["masks"].dtype == torch.uint8
        assert target["labels"].dtype == torch.int64 and target["labels"].shape == (count,)
        assert target["area"].shape == target["iscrowd"].shape == (count,)
        for box, mask, area in zip(target["boxes"], target["masks"], target["area"], strict=True):
            assert box.tolist() == _mask_box(mask)
            assert float(area) == float(mask.sum())
    images, targets = collate([dataset[0], dataset[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2


def test_images_without_annotations_are_dropped_in_training_only(shapes_copy):
    path = annotation_path(shapes_copy, TRAIN_FOLDER)
    content = json.loads(path.read_text())
    bare = content["images"][0]["id"]
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] != bare]
    path.write_text(json.dumps(content))
    train = CocoDetection(shapes_copy, TRAIN_FOLDER, path, train=True)
    assert bare not in train.ids and len(train) == SMALL_SHAPES["train_images"] - 1
    kept = CocoDetection(shapes_copy, TRAIN_FOLDER, path)
    image, target = kept[kept.ids.index(bare)]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, *image.shape[-2:])


def test_flip_moves_boxes_and_masks_together(shapes):
    plain = CocoDetection(shapes, TRAIN_FOLDER, annotation_path(shapes, TRAIN_FOLDER), train=True)
    flipping = CocoDetection(shapes, TRAIN_FOLDER, annotation_path(shapes, TRAIN_FOLDER), detection_transforms(True))
    outcomes = set()
    for seed in range(8):
        torch.manual_seed(seed)
        image, target = flipping[2]
        original, reference = plain[2]
        flipped = not torch.equal(image, original)
        outcomes.add(flipped)
        expected_image = original.flip(-1) if flipped else original
        assert torch.equal(image, expected_image)
        assert torch.equal(target["masks"], reference["masks"].flip(-1) if flipped else reference["masks"])
        assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and isinstance(target["masks"], tv_tensors.Mask)
        for box, mask in zip(target["boxes"], target["masks"], strict=True):
            assert box.tolist() == _mask_box(mask)  # the box is still the mask's box after the flip
        assert torch.equal(target["labels"], reference["labels"])
    assert outcomes == {True, False}

    resizing = CocoDetection(
        shapes, TRAIN_FOLDER, annotation_path(shapes, TRAIN_FOLDER), detection_transforms(True, min_sizes=[96])
    )
    image, target = resizing[2]
    assert min(image.shape[-2:]) == 96 and target["masks"].shape[-2:] == image.shape[-2:]
    for box, mask in zip(target["boxes"], target["masks"], strict=True):
        assert np.allclose(box.tolist(), _mask_box(mask), atol=2.0)
    assert isinstance(detection_transforms(False)(image, target)[1]["boxes"], tv_tensors.BoundingBoxes)


# ------------------------------------------------------------------------------------------------------- batching


def _check_batches(batches: list[list], groups: list[int], expected_keys: list) -> None:
    for batch in batches:
        indices = [key[-1] if isinstance(key, tuple) else key for key in batch]
        assert len({groups[i] for i in indices}) == 1, f"batch {batch} mixes aspect-ratio groups"
    assert sorted(key for batch in batches for key in batch) == sorted(expected_keys)  # every key exactly once


def test_grouped_batches_never_mix_groups_and_cover_every_index_once(shapes):
    dataset = CocoDetection(shapes, TRAIN_FOLDER, annotation_path(shapes, TRAIN_FOLDER), train=True)
    groups = aspect_ratio_groups(dataset)
    for group, ratio in zip(groups, dataset.aspect_ratios(), strict=True):
        assert group == (0 if ratio < 1 else 1)
    assert set(groups) == {0, 1}
    fine = aspect_ratio_groups(dataset, group_factor=2)
    by_ratio = sorted(zip(dataset.aspect_ratios(), fine, strict=True))
    assert [group for _, group in by_ratio] == sorted(fine)  # groups follow the ratio
    assert min(fine) > 0 and len(set(fine)) == 2  # bins 0.5 .. 2: 3:4 lies below 1, 1:1 and 4:3 from 1 to 1.41
    assert aspect_ratio_groups(Subset(dataset, [3, 1])) == [groups[3], groups[1]]

    n = len(dataset)
    for batch_size in (1, 3, 4, 7, 64):
        sampler = GroupedBatchSampler(
            RandomSampler(range(n), generator=torch.Generator().manual_seed(0)), groups, batch_size
        )
        batches = list(sampler)
        _check_batches(batches, groups, list(range(n)))
        assert len(batches) == len(sampler) == min(math.ceil(n / batch_size) + 1, n)
        assert all(len(batch) <= batch_size for batch in batches)
        again = GroupedBatchSampler(
            RandomSampler(range(n), generator=torch.Generator().manual_seed(0)), groups, batch_size
        )
        assert list(again) == batches  # the same seed, the same batches

    dropping = GroupedBatchSampler(SequentialSampler(range(n)), groups, 4, drop_last=True)
    batches = list(dropping)
    assert len(batches) == len(dropping) and all(len(batch) == 4 for batch in batches)
    assert len({i for batch in batches for i in batch}) == 4 * len(batches)


def test_grouped_batches_over_epoch_keys_and_shards(shapes):
    dataset = CocoDetection(shapes, TRAIN_FOLDER, annotation_path(shapes, TRAIN_FOLDER), train=True)
    groups, n = aspect_ratio_groups(dataset), len(dataset)
    epochs = GroupedBatchSampler(EpochSeededSampler(n, seed=1), groups, 4)
    first = list(epochs)
    _check_batches(first, groups, [(0, i) for i in range(n)])
    epochs.set_epoch(1)
    second = list(epochs)
    _check_batches(second, groups, [(1, i) for i in range(n)])
    assert [[i for _, i in b] for b in first] != [[i for _, i in b] for b in second]

    shards = [
        GroupedBatchSampler(DistributedSampler(range(n), num_replicas=3, rank=rank, seed=2), groups, 3)
        for rank in range(3)
    ]
    lengths = {len(list(shard)) for shard in shards} | {len(shard) for shard in shards}
    assert len(lengths) == 1  # every rank takes as many steps
    for shard in shards:
        _check_batches(list(shard), groups, list(shard.sampler))


# ---------------------------------------------------------------------------------------------- pre-launch check


def _truncate_json(root: Path) -> str:
    path = annotation_path(root, TRAIN_FOLDER)
    path.write_text(path.read_text()[:500])
    return rf"instances_{TRAIN_FOLDER}\.json: not valid JSON at line 1, column \d+"


def _delete_image(root: Path) -> str:
    (root / VAL_FOLDER / f"{SMALL_SHAPES['train_images'] + 2:012d}.png").unlink()
    listed = SMALL_SHAPES["val_images"]
    return rf"{VAL_FOLDER}: 1 of the {listed} images listed in .*instances_{VAL_FOLDER}\.json are missing: "


def _rename_category(root: Path) -> str:
    path = annotation_path(root, VAL_FOLDER)
    content = json.loads(path.read_text())
    content["categories"][1]["name"] = "rhombus"
    path.write_text(json.dumps(content))
    return r"instances_val2017\.json: its categories differ .*only in train2017: 2: square; only in val2017: 2: rhombus"


def _unknown_image(root: Path) -> str:
    path = annotation_path(root, TRAIN_FOLDER)
    content = json.loads(path.read_text())
    content["annotations"][0]["image_id"] = 777777
    path.write_text(json.dumps(content))
    return (
        rf"instances_{TRAIN_FOLDER}\.json: 1 annotation\(s\) name an unknown image id \(image_id 777777; annotation id"
    )


def _unknown_category(root: Path) -> str:
    path = annotation_path(root, VAL_FOLDER)
    content = json.loads(path.read_text())
    content["annotations"][2]["category_id"] = 42
    path.write_text(json.dumps(content))
    return r"instances_val2017\.json: 1 annotation\(s\) name an unknown category id \(category_id 42"


def _drop_key(root: Path) -> str:
    path = annotation_path(root, VAL_FOLDER)
    content = json.loads(path.read_text())
    del content["categories"]
    path.write_text(json.dumps(content))
    return r"instances_val2017\.json: the key\(s\) categories are missing"


def _drop_file(root: Path) -> str:
    annotation_path(root, VAL_FOLDER).unlink()
    return r"instances_val2017\.json: the annotation file is missing"


def _edit(root: Path, folder: str, change) -> None:
    path = annotation_path(root, folder)
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def _no_val_images(root: Path) -> str:
    _edit(root, VAL_FOLDER, lambda content: content.update(images=[], annotations=[]))
    return r"instances_val2017\.json: the validation split lists no images: there would be nothing to evaluate"


def _no_val_annotations(root: Path) -> str:
    _edit(root, VAL_FOLDER, lambda content: content.update(annotations=[]))
    return r"instances_val2017\.json: the validation split has no annotations to score against: every AP"


def _crowd_only_training(root: Path) -> str:
    _edit(root, TRAIN_FOLDER, lambda content: [a.update(iscrowd=1) for a in content["annotations"]])
    return r"instances_train2017\.json: the training split has no annotations to learn from \(all of them are crowd"


def _no_segmentation(root: Path) -> str:
    _edit(root, TRAIN_FOLDER, lambda content: [a.pop("segmentation", None) for a in content["annotations"][:3]])
    return r"instances_train2017\.json: 3 annotation\(s\) have no segmentation \(ids "


def _unmatchable_boxes(root: Path) -> str:
    def change(content):
        content["annotations"][0]["bbox"] = [10, 10, 0, 5]  # no width
        content["annotations"][1]["bbox"] = [5000, 5000, 10, 10]  # outside its image

    _edit(root, VAL_FOLDER, change)
    return r"instances_val2017\.json: 2 box\(es\) can never be matched by a detection"


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_json,
        _delete_image,
        _rename_category,
        _unknown_image,
        _unknown_category,
        _drop_key,
        _drop_file,
        _no_val_images,
        _no_val_annotations,
        _crowd_only_training,
        _no_segmentation,
        _unmatchable_boxes,
    ],
    ids=lambda damage: damage.__name__.strip("_"),
)
def test_check_coco_names_the_file_and_the_problem(shapes_copy, damage):
    check_coco(shapes_copy, TRAIN_FOLDER, VAL_FOLDER)
    expected = damage(shapes_copy)
    with pytest.raises(UsageError, match=expected) as caught:
        check_coco(shapes_copy, TRAIN_FOLDER, VAL_FOLDER)
    assert str(shapes_copy) in str(caught.value)


def test_check_coco_reports_every_problem_in_its_own_paragraph(shapes_copy, tmp_path):
    _delete_image(shapes_copy)
    _unknown_image(shapes_copy)
    with pytest.raises(UsageError) as caught:
        check_coco(shapes_copy, TRAIN_FOLDER, VAL_FOLDER)
    paragraphs = str(caught.value).split("\n\n")
    assert len(paragraphs) == 2 and all("\n" not in paragraph for paragraph in paragraphs)
    with pytest.raises(UsageError, match="does not exist"):
        check_coco(tmp_path / "nowhere", TRAIN_FOLDER, VAL_FOLDER)
