"""Checks that a run's data is where the config says, before anything heavy is built (torch-free)."""

from __future__ import annotations

from pathlib import Path

from an_lab.config import DataConfig
from an_lab.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


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
