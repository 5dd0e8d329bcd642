"""Callbacks that make a run resumable, reproducible and honest about failure."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar

from an_lab.rundir import CHECKPOINT, PREVIOUS_CHECKPOINT


class SigtermStop:
    """Around `trainer.fit` (`with stop:`): SIGTERM closes the loggers (`on_stop`), leaves the last complete
    checkpoint in place and ends the process with exit 143 (128 + SIGTERM), however the stop surfaces.

    The handler raises SystemExit(143) where the signal lands. Python prints and drops an exception raised inside a
    weakref callback or a `__del__`, and a signal may land there: Lightning's own SIGTERM notifier (which calls this
    handler) then raises its SIGTERMException, a SystemExit without a code (exit 0), at the next batch. Any exit that
    leaves the block after a SIGTERM leaves it as 143, so the launcher always reads "interrupted"."""

    EXIT_CODE = 143

    def __init__(self, on_stop: Callable[[], object] = lambda: None) -> None:
        self.on_stop = on_stop
        self.received = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        first, self.received = not self.received, True
        if first:
            self.on_stop()
        raise SystemExit(self.EXIT_CODE)

    def __enter__(self) -> SigtermStop:
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        signal.signal(signal.SIGTERM, self._previous)
        if self.received and isinstance(error, SystemExit) and error.code != self.EXIT_CODE:
            raise SystemExit(self.EXIT_CODE) from None


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


class ReseedEachEpoch(pl.Callback):
    """Seed every RNG from (seed, epoch) before each epoch's data order and augmentations are drawn.

    An epoch is then a function of the weights at its start alone, so a run resumed from an epoch-end checkpoint
    continues exactly as the uninterrupted run would have.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_seed = (self.seed * 100_003 + trainer.current_epoch) % 2**31
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)


class AtomicLastCheckpoint(pl.Callback):
    """Save last.ckpt at the end of every training epoch, written beside it and renamed into place; the checkpoint it
    replaces is kept as previous.ckpt. A failed write (a full disk) removes its temporary file and leaves both intact.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / CHECKPOINT
        self.previous = run_dir / PREVIOUS_CHECKPOINT

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            trainer.save_checkpoint(temporary)  # every rank calls it; rank 0 writes
            if trainer.is_global_zero:
                if self.path.exists():
                    os.replace(self.path, self.previous)
                os.replace(temporary, self.path)
        except OSError:
            if trainer.is_global_zero:
                with contextlib.suppress(OSError):
                    temporary.unlink()
            raise
        trainer.strategy.barrier("last-checkpoint")


class DivergenceGuard(pl.Callback):
    """Stop at the first NaN or infinite training loss instead of training on garbage."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            raise DivergenceError(
                f"training loss became {float(loss)} at epoch {trainer.current_epoch}, step {batch_idx}"
            )


class Throughput(pl.Callback):
    """Training images per second, data loading included and validation excluded; the first epoch is left out
    when there are several (warm-up, compilation)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._start = self._last = 0.0
        self._epoch_images = 0
        self.epochs_seen = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_images = 0
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._epoch_images += len(batch[1]) * trainer.world_size
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        elapsed = self._last - self._start
        self.epochs_seen += 1
        if self.epochs_seen == 2:  # drop the warm-up epoch once a second one exists
            self.images, self.seconds = 0, 0.0
        self.images += self._epoch_images
        self.seconds += elapsed

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


class RunProgressBar(RichProgressBar):
    """Lightning's bar as people read it: epochs counted from 1 (`Epoch 1/15`), without the logger's `v_num`."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs is not None else ""
        return f"Epoch {current_epoch + 1}{total}"
