"""The Lightning Trainer of a run: the task's schedule (epochs, or detection's stretches of iterations), the run's
callbacks, loggers and precision."""

from __future__ import annotations

import lightning.pytorch as pl

from an_lab.config import RunConfig, checkpoint_interval
from an_lab.lightning_modules.callbacks import DivergenceGuard, ReseedEachEpoch, RunProgressBar


def _schedule(config: RunConfig) -> dict:
    """Trainer arguments of the task's schedule: epochs for classification; for detection, stretches of
    checkpoint_every iterations as epochs, evaluation every eval_every iterations (the last one included), gradient
    clipping, no sanity evaluation (a COCO evaluation of two batches says nothing), and the data module's own
    per-rank batches instead of Lightning's distributed sampler."""
    settings = config.trainer
    if config.task == "classification":
        return {"max_epochs": settings.epochs}
    stretch = checkpoint_interval(settings)
    return {
        "max_epochs": settings.iterations // stretch,
        "check_val_every_n_epoch": (settings.eval_every or settings.iterations) // stretch,
        "gradient_clip_val": config.optim.clip_grad_norm,
        "gradient_clip_algorithm": "norm",
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
    }


def build_trainer(
    config: RunConfig, loggers: list, callbacks: list, plugins: list | None, progress: bool
) -> pl.Trainer:
    settings = config.trainer
    return pl.Trainer(
        **_schedule(config),
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        precision=settings.precision,
        deterministic=settings.deterministic,
        limit_train_batches=settings.limit_train_batches,
        logger=loggers,
        callbacks=[
            ReseedEachEpoch(settings.seed),
            DivergenceGuard(),
            *([RunProgressBar()] if progress else []),
            *callbacks,
        ],
        enable_checkpointing=False,  # last.ckpt is written by AtomicLastCheckpoint
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        plugins=plugins,
    )
