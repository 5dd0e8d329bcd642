"""One run: config -> run directory -> Lightning Trainer -> result.json. Resumes from last.ckpt; never retrains."""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import lightning
import lightning.pytorch as pl
import torch
import torchvision
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from an_lab.config import RunConfig, config_hash, run_dir, run_id
from an_lab.data_sources import check_data
from an_lab.lightning_modules.callbacks import (
    AtomicLastCheckpoint,
    DivergenceError,
    DivergenceGuard,
    ReseedEachEpoch,
    Throughput,
)
from an_lab.lightning_modules.classifier import ImageClassifier
from an_lab.lightning_modules.data import ImageClassificationData
from an_lab.profiling import count_macs, count_parameters
from an_lab.rundir import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    RESULT,
    attempt_logs,
    epoch_metrics,
    mark_failed,
    mark_started,
    read_json,
    write_json_atomic,
)


class RunFailed(RuntimeError):
    """The run stopped without a result; the reason is in the run directory's failed.json."""


def _git_revision() -> str | None:
    package_dir = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _device(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else platform.processor() or platform.machine()
    return f"{trainer.world_size} x {root.type} ({name})"


def _wandb_logger(config: RunConfig, directory: Path) -> WandbLogger | None:
    settings = config.wandb
    if settings.mode == "disabled":
        return None
    # Offline runs make no connection at all only with these set in the environment (ORCHESTRATION-FACTS.md).
    if settings.mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    directory.mkdir(parents=True, exist_ok=True)
    model = config.model
    tags = [model.name, model.norm, f"pooling={model.an.pooling}", f"head={model.an.head}"]
    tags += [f"activation={model.an.activation}", *settings.tags]
    return WandbLogger(
        id=run_id(config),  # relaunches and requeues continue the same W&B run
        name=run_id(config),
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        tags=tags,
        save_dir=str(directory),
        mode=settings.mode,
        resume="allow",
        config=config.model_dump(mode="json"),
    )


def _write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda key: (key != "epoch", key))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _result(config: RunConfig, trainer: pl.Trainer, module: ImageClassifier, throughput, seconds: float) -> dict:
    rows = [row for row in epoch_metrics(run_dir(config)) if "val_top1_err" in row]
    final = rows[-1]
    best = min(rows, key=lambda row: row["val_top1_err"])
    return {
        "run_id": run_id(config),
        "config_hash": config_hash(config),
        "status": "done",
        "final": {
            "top1_err": final["val_top1_err"],
            "top5_err": final["val_top5_err"],
            "val_loss": final["val_loss"],
            "train_loss": final.get("train_loss"),
        },
        "best": {"top1_err": best["val_top1_err"], "top5_err": best["val_top5_err"], "epoch": int(best["epoch"])},
        "params": count_parameters(module.model),
        "macs": count_macs(module.model, config.data.image_size),
        "epochs": trainer.current_epoch,
        "wall_time_s": round(seconds, 3),
        "images_per_s": throughput.images_per_second,
        "device": _device(trainer),
        "precision": config.trainer.precision,
        "versions": {
            "an_lab": _package_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
        "git_revision": _git_revision(),
        "finished_at": time.time(),
    }


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("an-lab")
    return "unknown"


@contextlib.contextmanager
def _sigterm_stops_cleanly(loggers: list):
    """On SIGTERM: flush W&B, leave the last complete checkpoint in place, and exit 143 (128 + SIGTERM)."""

    def handler(signum, frame):
        for logger in loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish(exit_code=143)
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config: RunConfig, *, plugins: list | None = None, progress: bool = True) -> dict:
    """Train one run to completion (resuming if it was interrupted) and return its result."""
    directory = run_dir(config)
    existing = read_json(directory / RESULT)
    if existing is not None:
        return existing
    check_data(config.data)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
    mark_started(directory)

    started = time.perf_counter()
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    data = ImageClassificationData(config.data, seed=config.trainer.seed)
    data.prepare_data()
    data.setup("fit")
    module = ImageClassifier(config, data.num_classes)

    # One CSV log per attempt: Lightning's CSV logger would overwrite an earlier attempt's rows on resume.
    attempt = len(attempt_logs(directory))
    # Rows are flushed every step so that a search's orchestrator sees each epoch's validation metrics.
    loggers = [CSVLogger(directory, name="logs", version=f"attempt-{attempt}", flush_logs_every_n_steps=1)]
    wandb_logger = _wandb_logger(config, directory / "wandb")
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    throughput = Throughput()
    checkpoint = AtomicLastCheckpoint(directory)
    trainer_config = config.trainer
    trainer = pl.Trainer(
        max_epochs=trainer_config.epochs,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        precision=trainer_config.precision,
        deterministic=trainer_config.deterministic,
        limit_train_batches=trainer_config.limit_train_batches,
        logger=loggers,
        callbacks=[ReseedEachEpoch(trainer_config.seed), DivergenceGuard(), throughput, checkpoint],
        enable_checkpointing=False,  # last.ckpt is written by AtomicLastCheckpoint
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        plugins=plugins,
    )
    resume_from = directory / CHECKPOINT
    try:
        with _sigterm_stops_cleanly(loggers):
            trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from.exists() else None)
    except DivergenceError as error:
        mark_failed(directory, f"diverged: {error}")
        raise RunFailed(f"run {run_id(config)} diverged: {error}") from None
    finally:
        if wandb_logger is not None and wandb_logger._experiment is not None:
            wandb_logger.experiment.finish()

    if not trainer.is_global_zero:
        # DDP (e.g. srun tasks of a SLURM job): rank 0 reads the CSV logs only it writes and writes the one result.
        return {"run_id": run_id(config), "status": "done", "global_rank": trainer.global_rank}
    result = _result(config, trainer, module, throughput, time.perf_counter() - started)
    if trainer_config.diagnostics:
        from an_lab.lightning_modules.diagnostics import save_diagnostics

        result["diagnostics"] = [p.name for p in save_diagnostics(module.model, data, directory)]
    _write_metrics_csv(directory / METRICS, epoch_metrics(directory))
    write_json_atomic(directory / RESULT, result)
    return result
