"""Classification data from a COCO-format detection set: one sample per annotated object, the image cut around its
box with some context, labelled by its category. `data.name: shapes` in a classification run reads the generated
shapes set this way, so that a detector's backbone can be pretrained on the images it will detect in (as the papers'
backbones are pretrained on ImageNet before COCO)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from an_lab.lightning_modules.data.coco import annotation_path, load_coco

CONTEXT = 1.5  # the crop's side, in units of the object box's longer side


class ObjectCrops(Dataset):
    """(image, label) per non-crowd annotation of ROOT/<split_folder>; labels 0..C-1 in the order of category ids,
    `classes` their names. The crop is square, centred on the box, CONTEXT times its longer side (clipped to the
    image); `transform` gets the PIL crop."""

    def __init__(self, root: Path | str, split_folder: str, transform=None) -> None:
        self.folder = Path(root) / split_folder
        self.transform = transform
        coco = load_coco(annotation_path(root, split_folder))
        categories = sorted(coco.getCatIds())
        self.classes = [coco.cats[category]["name"] for category in categories]
        label = {category: index for index, category in enumerate(categories)}
        self.samples = [
            (coco.imgs[a["image_id"]]["file_name"], a["bbox"], label[a["category_id"]])
            for a in sorted(coco.dataset["annotations"], key=lambda a: a["id"])
            if not a.get("iscrowd", 0) and min(a["bbox"][2:]) >= 1
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        file_name, (x, y, width, height), label = self.samples[index]
        half = CONTEXT * max(width, height) / 2
        cx, cy = x + width / 2, y + height / 2
        with Image.open(self.folder / file_name) as image:
            box = (max(0, cx - half), max(0, cy - half), min(image.width, cx + half), min(image.height, cy + half))
            crop = image.convert("RGB").crop(tuple(round(v) for v in box))
        return (self.transform(crop) if self.transform is not None else crop), label
