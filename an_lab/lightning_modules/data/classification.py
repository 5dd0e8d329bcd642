"""LightningDataModules for the runs' data sets, with the papers' crops and torchvision's transforms v2."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from an_lab.config import DataConfig
from an_lab.rundir import write_json_atomic

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR_STATS = ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))
DIGITS_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def materialize_digits(root: Path) -> Path:
    """Write scikit-learn's handwritten digits (1,797 8x8 scans) as PNG files in an imagefolder layout.

    A stratified 80/20 split with a fixed seed; the folder is reused once complete (a marker file comes last).
    """
    target = root / "digits"
    marker = target / "complete.json"
    if marker.exists():
        return target
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    indices = np.arange(len(images))
    train, val = train_test_split(indices, test_size=0.2, random_state=0, stratify=digits.target)
    for split, members in (("train", train), ("val", val)):
        for index in members:
            folder = target / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index], mode="L").save(folder / f"{index:04d}.png")
    write_json_atomic(marker, {"train": len(train), "val": len(val)})
    return target


class EpochSeededSampler(Sampler):
    """Shuffled (epoch, index) keys; the order is a function of (seed, epoch) alone, set by Lightning's set_epoch.

    A resumed fit builds its data iterator at another moment than a fresh one (before set_epoch), so nothing may
    be drawn when the iterator is built: the permutation is drawn from its own generator on first use, and the
    epoch travels with every index to the dataset, which seeds each sample's augmentation from it.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        epoch = self.epoch
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return ((epoch, index) for index in order.tolist())


class SeededSamples(Dataset):
    """Loads sample `index` with its augmentation randomness seeded from (seed, epoch, index), in any process."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**63)
            return self.dataset[index]


def _finish(stats) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(*stats)]


def _transforms(data: DataConfig) -> tuple[v2.Compose, v2.Compose]:
    size = data.image_size
    if data.name == "imagefolder":
        train = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        val = [v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)]
        stats = IMAGENET_STATS
    elif data.name == "digits":  # no flips: a mirrored digit is another glyph
        rgb = v2.RGB()
        train = [rgb, v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=size // 8)]
        val = [rgb, v2.Resize(size, antialias=True)]
        stats = DIGITS_STATS
    elif data.name == "shapes":  # object crops, normalized as the detector normalizes the images they come from
        train = [v2.Resize((size, size), antialias=True), v2.RandomHorizontalFlip()]
        val = [v2.Resize((size, size), antialias=True)]
        stats = IMAGENET_STATS
    elif data.name in ("cifar10", "cifar100"):
        train = [v2.RandomCrop(size, padding=size // 8), v2.RandomHorizontalFlip()]
        val = []
        stats = CIFAR_STATS
    else:  # fake
        train, val, stats = [], [], IMAGENET_STATS
    return v2.Compose(train + _finish(stats)), v2.Compose(val + _finish(stats))


class ImageClassificationData(pl.LightningDataModule):
    def __init__(self, data: DataConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = data
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.num_classes = data.num_classes

    def prepare_data(self) -> None:
        if self.config.name == "digits":
            materialize_digits(Path(self.config.root))
        elif self.config.name == "shapes":
            from an_lab.lightning_modules.data.coco_shapes import SHAPES_SETTINGS, write_shapes_dataset

            write_shapes_dataset(Path(self.config.root), **SHAPES_SETTINGS)
        elif self.config.name in ("cifar10", "cifar100") and self.config.download:
            dataset = getattr(torchvision.datasets, self.config.name.upper())
            for train in (True, False):
                dataset(self.config.root, train=train, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set, self.val_set = self._datasets()
        classes = getattr(self.train_set, "classes", None)
        if self.num_classes is None:
            self.num_classes = len(classes) if classes else 10

    def _datasets(self) -> tuple[Dataset, Dataset]:
        config = self.config
        train_tf, val_tf = _transforms(config)
        root = Path(config.root)
        if config.name in ("digits", "imagefolder"):
            folder = materialize_digits(root) if config.name == "digits" else root
            return (
                torchvision.datasets.ImageFolder(folder / "train", transform=train_tf),
                torchvision.datasets.ImageFolder(folder / "val", transform=val_tf),
            )
        if config.name == "shapes":  # the shapes detection set's objects, one crop each
            from an_lab.lightning_modules.data.object_crops import ObjectCrops

            return ObjectCrops(root, config.train, train_tf), ObjectCrops(root, config.val, val_tf)
        if config.name in ("cifar10", "cifar100"):
            dataset = getattr(torchvision.datasets, config.name.upper())
            return dataset(root, train=True, transform=train_tf), dataset(root, train=False, transform=val_tf)
        shape = (3, config.image_size, config.image_size)
        classes = config.num_classes or 1000
        return (
            torchvision.datasets.FakeData(config.fake_size, shape, classes, transform=train_tf, random_offset=0),
            torchvision.datasets.FakeData(
                max(config.fake_size // 8, 1), shape, classes, transform=val_tf, random_offset=1
            ),
        )

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.config.num_workers
        sampler = None
        if shuffle:
            dataset, sampler = SeededSamples(dataset, self.seed), EpochSeededSampler(len(dataset), self.seed)
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            generator=torch.Generator(),  # building the iterator must not draw from the global RNG
            drop_last=shuffle and len(dataset) > self.config.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
