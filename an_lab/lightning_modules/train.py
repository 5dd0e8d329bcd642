"""One run: config -> run directory -> Lightning Trainer -> result.json. Resumes from last.ckpt; never retrains.

The concerns of a run, one module each (as Lightning's trainer connectors): the claim and the resume point
(claims.py), the W&B logger (wandb_logging.py), the Trainer (trainer.py), result.json (result.py)."""

from __future__ import annotations

import contextlib
import errno
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from an_lab.config import RunConfig
from an_lab.data_sources import check_data
from an_lab.errors import UsageError
from an_lab.identity import remember_data, run_dir, run_id
from an_lab.lightning_modules.callbacks import AtomicLastCheckpoint, DivergenceError, SigtermStop, Throughput
from an_lab.lightning_modules.claims import RunBusy, resume_point, set_aside_corrupt_result, take_claim
from an_lab.lightning_modules.classifier import ImageClassifier
from an_lab.lightning_modules.data.classification import ImageClassificationData
from an_lab.lightning_modules.result import classification_result, detection_result, write_metrics_csv
from an_lab.lightning_modules.trainer import build_trainer
from an_lab.lightning_modules.wandb_logging import close_wandb, start_wandb_logger
from an_lab.migrate import note_scheme
from an_lab.rundir import (
    CONFIG,
    METRICS,
    PREVIOUS_CHECKPOINT,
    RESULT,
    attempt_logs,
    epoch_metrics,
    mark_failed,
    mark_interrupted,
    mark_started,
    read_result,
    write_json_atomic,
)

# A full or read-only file system stops a run from outside, like a signal: it resumes once there is room.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


class RunFailed(RuntimeError):
    """The run stopped without a result; the reason is in the run directory's failed.json."""


class RunInterrupted(RuntimeError):
    """The run was stopped from outside (the disk filled up); interrupted.json says why and it resumes later."""


def train(config: RunConfig, *, plugins: list | None = None, progress: bool = True, say=print) -> dict:
    """Train one run to completion (resuming if it was interrupted) and return its result.

    Raises RunBusy when another process owns the run, RunFailed when it fails by itself (failed.json says why) and
    RunInterrupted when the disk fills up (interrupted.json says why; the previous checkpoint stays intact).
    """
    directory = run_dir(config)
    existing, _ = read_result(directory)
    if existing is not None:
        return existing
    check_data(config.data)
    note_scheme(directory.parent)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the run folder {directory}: {error.strerror or error}") from None
    remember_data(config)
    claim = take_claim(directory)
    try:
        existing = set_aside_corrupt_result(directory, say)
        if existing is not None:  # finished while this process waited for its turn
            return existing
        write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
        mark_started(directory)
        return _fit(config, directory, plugins, progress, say)
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            _record_failure(directory, error)
            raise
        written = str(error.filename or "")
        reason = f"{error.strerror} writing {written if written.startswith(str(directory)) else directory}"
        with contextlib.suppress(UsageError):
            mark_interrupted(directory, reason)
        raise RunInterrupted(f"run {run_id(config)} stopped: {reason}; the last good checkpoint is kept") from None
    except (RunFailed, RunBusy, RunInterrupted):
        raise  # each recorded its own reason
    except Exception as error:  # a Python error, or a run set up wrongly (a backbone not finished): its own words
        _record_failure(directory, error)
        raise
    finally:
        if claim is not None:
            claim.release()


def _record_failure(directory: Path, error: BaseException) -> None:
    """failed.json names the exception itself (type and message), not whatever the log printed last."""
    message = " ".join(str(error).split()) or "(no message)"
    kind = "" if isinstance(error, UsageError) else f"{type(error).__name__}: "
    with contextlib.suppress(UsageError):
        mark_failed(directory, f"{kind}{message[:400]}")


def _parts(config: RunConfig, resuming: bool, say) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The task's data module (set up) and Lightning module; a detection run that starts fresh takes its backbone's
    weights from model.backbone_init."""
    if config.task == "detection":
        from an_lab.lightning_modules.detection.data import CocoDetectionData
        from an_lab.lightning_modules.detection.detector import MaskRCNNModule, load_backbone

        data = CocoDetectionData(config)
        data.prepare_data()
        data.setup("fit")
        module = MaskRCNNModule(config, data.num_classes, data.label_to_category, data.val_set.coco)
        source = config.model.backbone_init
        if source is not None and not resuming:
            ignored = load_backbone(module.model, str(source), config.model.backbone_init_ignore)
            skipped = [key for keys in ignored for key in keys]
            say(
                f"backbone initialised from {source}" + (f" ({len(skipped)} listed key(s) left out)" if skipped else "")
            )
        return data, module
    data = ImageClassificationData(config.data, seed=config.trainer.seed)
    data.prepare_data()
    data.setup("fit")
    return data, ImageClassifier(config, data.num_classes)


def _fit(config: RunConfig, directory: Path, plugins: list | None, progress: bool, say) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(config.trainer.cpu_threads)
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    resume_from = resume_point(directory, say)
    data, module = _parts(config, resume_from is not None, say)

    # One CSV log per attempt: Lightning's CSV logger would overwrite an earlier attempt's rows on resume.
    attempt = len(attempt_logs(directory))
    # Rows are flushed every step so that a search's orchestrator sees each epoch's validation metrics.
    loggers = [CSVLogger(directory, name="logs", version=f"attempt-{attempt}", flush_logs_every_n_steps=1)]
    wandb_logger = start_wandb_logger(config, directory, say)  # W&B writes into <run>/wandb/
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    throughput = Throughput()
    stop = SigtermStop(
        lambda: [close_wandb(logger, exit_code=SigtermStop.EXIT_CODE, say=say, leaving=True) for logger in loggers]
    )
    trainer = build_trainer(config, loggers, [throughput, AtomicLastCheckpoint(directory)], plugins, progress)
    try:
        with stop:
            trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    except DivergenceError as error:
        mark_failed(directory, f"diverged: {error}")
        raise RunFailed(f"run {run_id(config)} diverged: {error}") from None
    except BaseException:  # a requeue's sys.exit, a signal: the process is leaving, W&B's service may go first
        if wandb_logger is not None:
            close_wandb(wandb_logger, say=say, leaving=True)
        raise
    finally:
        if wandb_logger is not None:
            close_wandb(wandb_logger, say=say)

    if not trainer.is_global_zero:
        # DDP (e.g. srun tasks of a SLURM job): rank 0 reads the CSV logs only it writes and writes the one result.
        return {"run_id": run_id(config), "status": "done", "global_rank": trainer.global_rank}
    summarize = detection_result if config.task == "detection" else classification_result
    result = summarize(config, trainer, module, throughput, time.perf_counter() - started, say)
    if config.trainer.diagnostics and config.task == "classification":
        from an_lab.lightning_modules.diagnostics import save_diagnostics

        result["diagnostics"] = [p.name for p in save_diagnostics(module.model, data, directory)]
    write_metrics_csv(directory / METRICS, epoch_metrics(directory))
    write_json_atomic(directory / RESULT, result)
    (directory / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)  # a finished run resumes from nothing
    return result
