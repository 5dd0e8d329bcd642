"""COCO-format detection data for Lightning, trained by iterations.

Detection schedules count iterations, not epochs (COCO 1x: 90k iterations of 16 images, about 12 passes over the
data). The training batches form one deterministic stream: pass p over the data is a permutation drawn from
(seed, p), cut into aspect-ratio grouped batches of the global batch size (an image's group: tall or wide), each
global batch split among the ranks. A Lightning "epoch" is one stretch of `checkpoint_every` iterations of that
stream, so a run resumed from the checkpoint written at the end of a stretch continues with exactly the batches, the
augmentations (each sample's flip is seeded from its place in the stream) and, through ReseedEachEpoch, the random
draws of the uninterrupted run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from an_lab.config import RunConfig, checkpoint_interval
from an_lab.lightning_modules.data.classification import SeededSamples
from an_lab.lightning_modules.data.coco import CocoDetection, aspect_ratio_groups, collate, detection_transforms


class IterationBatches(Sampler):
    """The batches of one stretch of the training stream for one rank (module docstring): `stretch` batches of
    (stream position, index) keys, the stretch chosen by set_epoch."""

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        *,
        seed: int,
        stretch: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not group_ids:
            raise ValueError("the training split holds no image with an annotation to learn from")
        self.group_ids = list(group_ids)
        self.batch_size, self.seed, self.stretch = batch_size, seed, stretch
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.stretch

    def _global_batches(self) -> Iterator[list[int]]:
        size = self.batch_size * self.world_size
        filling: dict[int, list[int]] = defaultdict(list)
        for stream_pass in range(2**62):
            generator = torch.Generator().manual_seed(self.seed * 100_003 + stream_pass)
            for index in torch.randperm(len(self.group_ids), generator=generator).tolist():
                group = filling[self.group_ids[index]]
                group.append(index)
                if len(group) == size:
                    yield group.copy()
                    group.clear()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        first = self.epoch * self.stretch
        start, stop = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for position, batch in enumerate(self._global_batches()):
            if position >= first + self.stretch:
                return
            if position >= first:
                yield [(position, index) for index in batch[start:stop]]


class ShardedBatches(Sampler):
    """Evaluation batches in order, each rank taking every world_size-th image (no image twice, none left out)."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start : start + self.batch_size]


class CocoDetectionData(pl.LightningDataModule):
    """train / val of a COCO folder (data.name coco) or of the generated shapes set (data.name shapes, written to
    data.root on first use)."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__()
        self.config = config
        self.data = config.data
        self.train_set: Dataset | None = None
        self.val_set: CocoDetection | None = None
        self.stretch = checkpoint_interval(config.trainer)

    @property
    def root(self) -> Path:
        return Path(self.data.root)

    def prepare_data(self) -> None:
        if self.data.name == "shapes":
            from an_lab.lightning_modules.data.coco_shapes import SHAPES_SETTINGS, write_shapes_dataset

            write_shapes_dataset(self.root, **SHAPES_SETTINGS)

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        # Mask R-CNN resizes inside the model (data.image_size, data.max_size); the data only flips.
        train = CocoDetection(self.root, self.data.train, transforms=detection_transforms(True), train=True)
        self.train_set = SeededSamples(train, self.config.trainer.seed)
        self.group_ids = aspect_ratio_groups(train)
        self.val_set = CocoDetection(self.root, self.data.val)
        self.num_classes = train.num_classes
        self.label_to_category = train.label_to_category

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        batches = IterationBatches(
            self.group_ids,
            self.data.batch_size,
            seed=self.config.trainer.seed,
            stretch=self.stretch,
            rank=rank,
            world_size=world_size,
        )
        return self._loader(self.train_set, batches)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._rank()
        return self._loader(self.val_set, ShardedBatches(len(self.val_set), self.data.batch_size, rank, world_size))

    def _loader(self, dataset: Dataset, batches: Sampler) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            # Building an iterator must not draw from the global RNG: a resumed fit builds it at another moment than
            # an uninterrupted one, and the RPN and RoI samplers draw from that RNG.
            generator=torch.Generator(),
        )
