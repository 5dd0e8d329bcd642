"""A generated COCO-format instance segmentation data set: shapes of several classes on textured backgrounds.

Layout (as COCO 2017): ROOT/train2017/*.png, ROOT/val2017/*.png, ROOT/annotations/instances_train2017.json and
ROOT/annotations/instances_val2017.json, with exact instance masks (RLE); a fixed seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from an_lab.data_sources import TRAIN_FOLDER, VAL_FOLDER, annotation_path
from an_lab.errors import UsageError

SHAPE_CLASSES = ("circle", "square", "triangle", "star")
SHAPES_VERSION = 1
# The generated data set of data.name "shapes": 240 training and 60 validation images of 96 x 96 pixels.
SHAPES_SETTINGS = {"train_images": 240, "val_images": 60, "image_size": 96}
SHAPES_MARKER = "shapes.json"
MIN_VISIBLE_PIXELS = 12  # an instance hidden down to fewer pixels than this is not annotated

# --------------------------------------------------------------------------------------------- the shapes data set


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured float RGB canvas: a gradient, stripes, a checkerboard or smooth blotches between two colours."""
    first, second = rng.uniform(0, 255, size=(2, 3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    kind = int(rng.integers(4))
    if kind == 0:
        mix = (along - along.min()) / max(float(along.max() - along.min()), 1.0)
    elif kind == 1:
        period = rng.uniform(5, 20)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * along / period + rng.uniform(0, 2 * math.pi))
    elif kind == 2:
        cell = int(rng.integers(5, 17))
        mix = ((xs // cell + ys // cell) % 2).astype(np.float32)
    else:
        coarse = (rng.uniform(0, 255, size=(int(rng.integers(3, 8)), int(rng.integers(3, 8))))).astype(np.uint8)
        mix = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32) / 255.0
    return first + mix[..., None] * (second - first)


def _shape_mask(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One shape at a random place, size and rotation, rasterised to a boolean mask (may leave the frame)."""
    size = rng.uniform(0.2, 0.5) * min(height, width)
    cx = rng.uniform(0.25 * size, width - 0.25 * size)
    cy = rng.uniform(0.25 * size, height - 0.25 * size)
    turn = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    radius = size / 2
    if kind == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        if kind == "square":
            radii, corners = [radius], 4
        elif kind == "triangle":
            radii, corners = [radius * 1.15], 3
        else:  # a five-pointed star: outer and inner corners alternate
            radii, corners = [radius * 1.15, radius * 0.5], 10
        points = []
        for i in range(corners):
            reach, towards = radii[i % len(radii)], turn + 2 * math.pi * i / corners
            points.append((cx + reach * math.cos(towards), cy + reach * math.sin(towards)))
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 0


def _shapes_image(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """An RGB uint8 image and its visible instances (category index, boolean mask), in drawing order."""
    short = round(image_size * 0.75)
    height, width = [(image_size, image_size), (short, image_size), (image_size, short)][int(rng.integers(3))]
    canvas = _background(rng, height, width)
    drawn: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 5))):
        category = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _shape_mask(SHAPE_CLASSES[category], rng, height, width)
        if not mask.any():
            continue
        under = canvas[mask].mean(axis=0)
        for _attempt in range(8):  # a colour that stands out from what it covers, so every instance can be seen
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - under) > 80:
                break
        canvas[mask] = colour * rng.uniform(0.85, 1.0) + rng.normal(0, 6, size=(int(mask.sum()), 3))
        drawn.append((category, mask))
    canvas += rng.normal(0, rng.uniform(4, 14), size=canvas.shape)
    image = np.clip(canvas, 0, 255).round().astype(np.uint8)
    visible: list[tuple[int, np.ndarray]] = []
    covered = np.zeros((height, width), bool)
    for category, mask in reversed(drawn):  # later shapes lie on top of earlier ones
        seen = mask & ~covered
        covered |= mask
        if seen.sum() >= MIN_VISIBLE_PIXELS:
            visible.append((category, seen))
    return image, visible[::-1]


def _annotation(mask: np.ndarray, category: int, image_id: int, annotation_id: int) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category + 1,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": int(mask.sum()),
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "iscrowd": 0,
    }


def _write_split(folder: Path, split: int, count: int, first_id: int, image_size: int, seed: int) -> dict:
    folder.mkdir(parents=True)
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, split, index])  # image k is the same whatever the split's size
        pixels, instances = _shapes_image(rng, image_size)
        image_id = first_id + index
        name = f"{image_id:012d}.png"
        Image.fromarray(pixels, "RGB").save(folder / name, compress_level=1)
        images.append({"id": image_id, "file_name": name, "height": pixels.shape[0], "width": pixels.shape[1]})
        for category, mask in instances:
            annotations.append(_annotation(mask, category, image_id, len(annotations) + 1))
    return {
        "info": {"description": "an_lab generated shapes", "version": str(SHAPES_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPE_CLASSES)],
    }


def write_shapes_dataset(
    root: Path | str, *, train_images: int = 240, val_images: int = 60, image_size: int = 96, seed: int = 0
) -> dict:
    """Write a COCO-format instance segmentation set of shapes (circle, square, triangle, star) under `root`.

    Each image (longer side `image_size`; a third square, a third 4:3 landscape, a third 3:4 portrait) has a
    textured background (gradient, stripes, checkerboard or blotches, plus pixel noise) and 1 to 4 shapes of random
    colour, size and rotation that may overlap or leave the frame. Masks are the exact visible pixels (COCO RLE),
    boxes and areas are those of the visible mask, and instances left with fewer than MIN_VISIBLE_PIXELS pixels are
    not annotated. The content is a function of the parameters alone. The set is written beside `root` and renamed
    into place; the marker file (ROOT/shapes.json) records the parameters, and a complete set with the same ones is
    reused. Returns the marker's content: the parameters, the category names and each split's counts.
    """
    root = Path(root)
    parameters = {"train_images": train_images, "val_images": val_images, "image_size": image_size, "seed": seed}
    for key, value in parameters.items():
        least = 0 if key == "seed" else 1 if key.endswith("images") else 16
        if not isinstance(value, int) or value < least:
            raise UsageError(
                f"shapes data set {root}: {key}={value!r} is not valid; give an integer of {least} or more"
            )
    wanted = {"version": SHAPES_VERSION, "parameters": parameters}
    existing = _reusable_shapes(root, wanted)
    if existing is not None:
        return existing
    root.parent.mkdir(parents=True, exist_ok=True)
    temporary = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        splits = {}
        for split, (folder, count, first_id) in enumerate(
            ((TRAIN_FOLDER, train_images, 1), (VAL_FOLDER, val_images, train_images + 1))
        ):
            content = _write_split(temporary / folder, split, count, first_id, image_size, seed)
            (temporary / "annotations").mkdir(exist_ok=True)
            annotation_path(temporary, folder).write_text(json.dumps(content, separators=(",", ":")))
            splits[folder] = {"images": len(content["images"]), "annotations": len(content["annotations"])}
        marker = {**wanted, "categories": list(SHAPE_CLASSES), "splits": splits}
        (temporary / SHAPES_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(temporary, root)  # replaces an empty folder; fails on a full one
        except OSError:
            existing = _reusable_shapes(root, wanted)  # another process finished the same set first
            if existing is None:
                raise
            return existing
        return marker
    except OSError as error:
        raise UsageError(
            f"shapes data set {root}: cannot write it ({error.strerror or error}); nothing was changed"
        ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _reusable_shapes(root: Path, wanted: dict) -> dict | None:
    """The marker of a complete set with the wanted parameters; None when `root` is absent or empty."""
    marker = root / SHAPES_MARKER
    if marker.is_file():
        recorded: Any = None
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(marker.read_text())
        if isinstance(recorded, dict) and all(recorded.get(key) == value for key, value in wanted.items()):
            return recorded
        found = (
            f"records {recorded.get('parameters')} (format version {recorded.get('version')})"
            if isinstance(recorded, dict)
            else "cannot be read"
        )
        raise UsageError(
            f"shapes data set {root}: {marker} {found}, not the requested {wanted['parameters']} (format version "
            f"{SHAPES_VERSION}); remove {root} to write it again, or choose another folder"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(
            f"shapes data set {root}: the path exists and is not a complete shapes data set (no {SHAPES_MARKER}); "
            "choose an empty or absent folder, so that nothing there is overwritten"
        )
    return None
