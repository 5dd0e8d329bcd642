"""Checks that a run's data is where the config says, before anything heavy is built (torch-free)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from an_lab.config import DataConfig
from an_lab.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
TRAIN_FOLDER, VAL_FOLDER = "train2017", "val2017"


def annotation_path(root: Path | str, folder: str) -> Path:
    """COCO's name for a split's annotation file: ROOT/annotations/instances_<folder>.json."""
    return Path(root) / "annotations" / f"instances_{folder}.json"


def _class_folders(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir()) if split.is_dir() else []


def check_data(data: DataConfig, source: str = "config") -> None:
    """Raise a UsageError naming the path and the expected layout when the data cannot be read."""
    root = Path(data.root)
    if data.name == "imagefolder":
        layout = f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
        for split in ("train", "val"):
            folders = _class_folders(root / split)
            if not folders:
                raise UsageError(
                    f"{source}: data.root {str(root)!r} has no class folders in {split}/; "
                    f"an imagefolder data set is laid out as {layout}"
                )
            if not any(f.suffix.lower() in IMAGE_SUFFIXES for folder in folders[:3] for f in folder.iterdir()):
                raise UsageError(
                    f"{source}: data.root {str(root)!r}: the first class folders of {split}/ hold no images "
                    f"({', '.join(IMAGE_SUFFIXES)}); expected layout: {layout}"
                )
    elif data.name in CIFAR_FOLDERS and not data.download and not (root / CIFAR_FOLDERS[data.name]).is_dir():
        raise UsageError(
            f"{source}: data.root {str(root)!r} holds no {data.name} ({root}/{CIFAR_FOLDERS[data.name]} is missing); "
            "set data.download: true to fetch it, or point data.root at a folder that has it"
        )
    elif data.name == "digits" and root.exists() and not root.is_dir():
        raise UsageError(f"{source}: data.root {str(root)!r} is a file; digits are written into a folder there")
    elif data.name == "coco":
        check_coco(root, data.train, data.val)
    elif data.name == "shapes" and root.exists() and not root.is_dir():
        raise UsageError(f"{source}: data.root {str(root)!r} is a file; the shapes data set is written into a folder")


# ------------------------------------------------------------------------------------------------- pre-launch check


def _read_annotations(path: Path, problems: list[str]) -> dict | None:
    """The parsed file, or None after adding a paragraph that says why not."""
    if not path.is_file():
        problems.append(
            f"{path}: the annotation file is missing; a COCO folder holds annotations/instances_<folder>.json "
            "beside each image folder"
        )
        return None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        problems.append(
            f"{path}: not valid JSON at line {error.lineno}, column {error.colno} ({error.msg}); the file may be "
            "truncated or damaged"
        )
        return None
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{path}: cannot be read ({getattr(error, 'strerror', None) or error})")
        return None
    required = {
        "images": ("id", "file_name", "width", "height"),
        "annotations": ("id", "image_id", "category_id", "bbox"),
        "categories": ("id", "name"),
    }
    if not isinstance(content, dict):
        problems.append(f"{path}: holds a {type(content).__name__}, not an object with the keys {', '.join(required)}")
        return None
    missing = [key for key in required if not isinstance(content.get(key), list)]
    if missing:
        problems.append(
            f"{path}: the key(s) {', '.join(missing)} are missing or not lists; a COCO annotation file has "
            f"{', '.join(required)}"
        )
        return None
    for key, fields in required.items():
        for position, entry in enumerate(content[key]):
            absent = [field for field in fields if not isinstance(entry, dict) or field not in entry]
            if absent:
                problems.append(
                    f"{path}: {key}[{position}] lacks {', '.join(absent)} (each entry needs {', '.join(fields)})"
                )
                return None
    return content


def few(items: Sequence, count: int = 5) -> str:
    shown = ", ".join(str(item) for item in items[:count])
    return shown + (f" and {len(items) - count} more" if len(items) > count else "")


def _check_split(root: Path, folder: str, content: dict, path: Path, problems: list[str]) -> None:
    images = root / folder
    image_ids = [image["id"] for image in content["images"]]
    repeated = sorted(i for i, n in Counter(image_ids).items() if n > 1)
    if repeated:
        problems.append(f"{path}: image ids appear more than once: {few(repeated)}")
    if not images.is_dir():
        problems.append(f"{images}: the image folder of {path.name} is missing")
    else:
        present = set(os.listdir(images))
        names = [image["file_name"] for image in content["images"]]
        missing = [
            name for name in names if (name not in present if "/" not in name else not (images / name).is_file())
        ]
        if missing:
            problems.append(
                f"{images}: {len(missing)} of the {len(names)} images listed in {path} are missing: {few(missing)}"
            )
    known_images, known_categories = set(image_ids), {category["id"] for category in content["categories"]}
    for field, known, what in (("image_id", known_images, "image"), ("category_id", known_categories, "category")):
        stray = [a for a in content["annotations"] if a[field] not in known]
        if stray:
            problems.append(
                f"{path}: {len(stray)} annotation(s) name an unknown {what} id ({field} "
                f"{few(sorted({a[field] for a in stray}))}; annotation id(s) {few([a['id'] for a in stray])}); "
                f"every {field} must be the id of an entry of its {what}s list"
            )


def _unmatchable(annotation: dict, sizes: dict) -> bool:
    """A box no detection can match: not four finite numbers, no area, or wholly outside its image."""
    box = annotation.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
        return True
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 1 or h < 1:
        return True
    width, height = sizes.get(annotation["image_id"], (math.inf, math.inf))
    return x >= width or y >= height or x + w <= 0 or y + h <= 0


def _check_learnable(content: dict, path: Path, role: str, problems: list[str]) -> None:
    """What a Mask R-CNN run needs of a split before compute is spent: images to evaluate, non-crowd annotations
    with a segmentation (the mask head trains on it), and boxes that a detection can match."""
    if role == "validation" and not content["images"]:
        problems.append(f"{path}: the validation split lists no images: there would be nothing to evaluate")
        return
    counted = [a for a in content["annotations"] if not a.get("iscrowd")]
    if not counted:
        crowd = " (all of them are crowd regions, iscrowd: 1, which COCO leaves out of training and AP)"
        problems.append(
            f"{path}: the {role} split has no annotations to "
            f"{'learn from' if role == 'training' else 'score against: every AP would be undefined'}"
            f"{crowd if content['annotations'] else ''}"
        )
        return
    bare = [a["id"] for a in counted if not a.get("segmentation")]
    if bare:
        problems.append(
            f"{path}: {len(bare)} annotation(s) have no segmentation (ids {few(bare)}); Mask R-CNN trains and scores "
            "masks from it: add polygons or RLE, or remove them"
        )
    sizes = {
        image["id"]: (float(image["width"]), float(image["height"]))
        for image in content["images"]
        if isinstance(image.get("width"), int | float) and isinstance(image.get("height"), int | float)
    }
    lost = [a["id"] for a in counted if _unmatchable(a, sizes)]
    if lost:
        problems.append(
            f"{path}: {len(lost)} box(es) can never be matched by a detection (ids {few(lost)}): bbox must be "
            "[x, y, width, height] with width and height of at least 1 pixel, inside its image; they would cap AP "
            "silently: fix or remove them"
        )


def check_coco(root: Path | str, train_folder: str = TRAIN_FOLDER, val_folder: str = VAL_FOLDER) -> None:
    """Check a COCO folder before anything is launched, without decoding an image: both annotation files exist and
    parse, hold images/annotations/categories, every listed image file exists, annotations name known image and
    category ids, and both splits have the same categories. Raises one UsageError with a paragraph per problem."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(
            f"{root}: the COCO data folder does not exist (expected {train_folder}/, {val_folder}/ and annotations/)"
        )
    problems: list[str] = []
    contents = {}
    for folder in (train_folder, val_folder):
        path = annotation_path(root, folder)
        content = _read_annotations(path, problems)
        if content is not None:
            contents[folder] = content
            _check_split(root, folder, content, path, problems)
    for folder, role in ((train_folder, "training"), (val_folder, "validation")):
        if folder in contents:
            _check_learnable(contents[folder], annotation_path(root, folder), role, problems)
    if len(contents) == 2:
        train, val = ({c["id"]: c["name"] for c in contents[f]["categories"]} for f in (train_folder, val_folder))
        if train != val:
            only_train = [f"{i}: {n}" for i, n in sorted(train.items()) if val.get(i) != n]
            only_val = [f"{i}: {n}" for i, n in sorted(val.items()) if train.get(i) != n]
            problems.append(
                f"{annotation_path(root, val_folder)}: its categories differ from those of "
                f"{annotation_path(root, train_folder)}: only in {train_folder}: {few(only_train) or 'none'}; "
                f"only in {val_folder}: {few(only_val) or 'none'}; both splits must list the same ids and names"
            )
    if problems:
        raise UsageError("\n\n".join(problems))
