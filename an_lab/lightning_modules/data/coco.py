"""COCO-format instance segmentation data for torchvision's Mask R-CNN: a dataset with transforms v2, an
aspect-ratio grouped batch sampler and a pre-launch check of a COCO folder (the generated shapes data set is in
coco_shapes.py, evaluation in detection/coco_eval.py).

Layout (as COCO 2017): ROOT/train2017/*.png, ROOT/val2017/*.png, ROOT/annotations/instances_train2017.json and
ROOT/annotations/instances_val2017.json. Labels are contiguous (1..C, 0 is Mask R-CNN's background); the dataset
keeps the mapping to COCO category ids and its inverse, which `coco_eval.evaluate_coco` takes to write results.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import BatchSampler, Dataset, Sampler, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from an_lab.data_sources import annotation_path

# ----------------------------------------------------------------------------------------------- dataset, batching


def load_coco(annotation_file: Path | str) -> COCO:
    """pycocotools' COCO index of an annotation file, without its prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(annotation_file))


class CocoDetection(Dataset):
    """(image, target) pairs of a COCO split for torchvision's detection models.

    image: tv_tensors.Image, float32 in [0, 1], 3xHxW. target: `boxes` (tv_tensors.BoundingBoxes, XYXY, float32, in
    pixels of the image), `labels` (int64, 1..C), `masks` (tv_tensors.Mask, uint8, NxHxW), `image_id` (int, the COCO
    id), `area` (float32) and `iscrowd` (int64). With `train=True` images without a usable (non-crowd, non-empty box)
    annotation are dropped and crowd annotations left out, as Mask R-CNN cannot learn from them; otherwise every
    image is kept. `transforms(image, target)` (transforms v2) sees the boxes and masks together.

    `label_to_category[label]` is the COCO category id of a label, `category_to_label` its inverse, `classes[label]`
    the name (`classes[0]` is "__background__"), `num_classes` is C + 1 (Mask R-CNN's `num_classes`).
    """

    def __init__(
        self,
        root: Path | str,
        split_folder: str,
        annotation_file: Path | str | None = None,
        transforms=None,
        *,
        train: bool = False,
    ) -> None:
        self.folder = Path(root) / split_folder
        self.annotation_file = Path(annotation_file or annotation_path(root, split_folder))
        self.transforms, self.train = transforms, train
        self.coco = load_coco(self.annotation_file)
        categories = sorted(self.coco.getCatIds())
        self.label_to_category = {label: category for label, category in enumerate(categories, start=1)}
        self.category_to_label = {category: label for label, category in self.label_to_category.items()}
        self.classes = ["__background__"] + [self.coco.cats[c]["name"] for c in categories]
        self.num_classes = len(self.classes)
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if self._annotations(i)]
        self.ids = ids

    def _annotations(self, image_id: int) -> list[dict]:
        annotations = self.coco.imgToAnns.get(image_id, [])
        if self.train:
            annotations = [a for a in annotations if not a.get("iscrowd", 0) and min(a["bbox"][2:]) >= 1]
        return annotations

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratios(self) -> list[float]:
        """width / height of every image in order, from the annotation file (nothing decoded)."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        with Image.open(self.folder / info["file_name"]) as file:
            pixels = torch.from_numpy(np.array(file.convert("RGB"))).permute(2, 0, 1)
        image = tv_tensors.Image(pixels.float().div_(255.0))
        height, width = image.shape[-2:]
        annotations = self._annotations(image_id)
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = np.stack([self.coco.annToMask(a) for a in annotations]) if annotations else None
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([self.category_to_label[a["category_id"]] for a in annotations], dtype=torch.int64),
            "masks": tv_tensors.Mask(
                torch.from_numpy(masks) if masks is not None else torch.zeros((0, height, width), dtype=torch.uint8)
            ),
            "image_id": image_id,
            "area": torch.tensor([float(a["area"]) for a in annotations], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in annotations], dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def detection_transforms(train: bool, *, min_sizes: Sequence[int] | None = None, max_size: int | None = None):
    """transforms v2 for (image, target): training flips horizontally with probability 0.5 and, given `min_sizes`,
    resizes the shorter side to one of them (at most `max_size` on the longer side); validation changes nothing, so
    that predictions stay in the pixels of the annotation file (Mask R-CNN resizes inside the model and maps its
    outputs back to the input size)."""
    if not train:
        return v2.Identity()
    steps: list = [v2.RandomHorizontalFlip(0.5)]
    if min_sizes:
        steps.append(v2.RandomShortestSize(list(min_sizes), max_size=max_size, antialias=True))
    return v2.Compose(steps)


def collate(batch: Sequence[tuple]) -> tuple[list, list]:
    """Detection batches stay lists (images differ in size): ([image, ...], [target, ...])."""
    return [sample[0] for sample in batch], [sample[1] for sample in batch]


def aspect_ratio_groups(dataset: Dataset, group_factor: int = 0) -> list[int]:
    """A group per sample from its width/height: with group_factor k the ratio is cut at 2 ** linspace(-1, 1, 2k+1)
    (k=0: tall (ratio < 1) is group 0, square and wide are group 1). Accepts a CocoDetection or a Subset of one."""
    if isinstance(dataset, Subset):
        inner = aspect_ratio_groups(dataset.dataset, group_factor)
        return [inner[i] for i in dataset.indices]
    if group_factor < 0:
        raise ValueError(f"group_factor={group_factor}: give 0 or more")
    edges = np.array([1.0]) if group_factor == 0 else 2.0 ** np.linspace(-1, 1, 2 * group_factor + 1)
    return np.searchsorted(edges, np.asarray(dataset.aspect_ratios()), side="right").tolist()


class GroupedBatchSampler(BatchSampler):
    """Batches of the sampler's order in which every batch holds one group only (aspect-ratio groups, as in
    torchvision's detection references), each sampled index exactly once per epoch.

    A batch is filled in the sampler's order, per group; what is left over at the end forms short batches. The
    number of batches is a function of len(sampler) alone: ceil(n / batch_size) + groups - 1 (at most n), reached by
    halving the largest batches; so under DDP every rank takes as many steps (Lightning injects its distributed
    sampler through the `sampler` argument). With drop_last only full batches are kept, max(n // batch_size - groups
    + 1, 0) of them. The sampler may yield indices or (epoch, index) keys (EpochSeededSampler); the order, and so
    the batches, are as deterministic as the sampler is. set_epoch is passed on to the sampler.
    """

    def __init__(self, sampler: Sampler | Iterable, group_ids: Sequence[int], batch_size: int, drop_last=False):
        super().__init__(sampler, batch_size, drop_last)
        self.group_ids = [int(g) for g in group_ids]
        self.groups = len(set(self.group_ids))

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def _group(self, key) -> int:
        return self.group_ids[int(key[-1] if isinstance(key, tuple | list) else key)]

    def __len__(self) -> int:
        n = len(self.sampler)
        if self.drop_last:
            return max(n // self.batch_size - self.groups + 1, 0)
        return min(math.ceil(n / self.batch_size) + self.groups - 1, n)

    def __iter__(self) -> Iterator[list]:
        batches: list[list] = []
        filling: dict[int, list] = defaultdict(list)
        for key in self.sampler:
            group = self._group(key)
            filling[group].append(key)
            if len(filling[group]) == self.batch_size:
                batches.append(filling.pop(group))
        wanted = len(self)
        if self.drop_last:
            yield from batches[:wanted]
            return
        batches += [filling[group] for group in sorted(filling)]
        while len(batches) < wanted:  # halve the largest batch (the first of them) until the count is reached
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches[largest]
            if len(batch) < 2:
                break
            half = (len(batch) + 1) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        yield from batches
