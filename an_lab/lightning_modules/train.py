"""One run: config -> run directory -> Lightning Trainer -> result.json. Resumes from last.ckpt; never retrains."""

from __future__ import annotations

import contextlib
import csv
import errno
import math
import os
import platform
import subprocess
import time
import zipfile
from pathlib import Path

import lightning
import lightning.pytorch as pl
import torch
import torchvision
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from an_lab.config import RunConfig, checkpoint_interval
from an_lab.data_sources import check_data
from an_lab.errors import UsageError
from an_lab.identity import config_hash, remember_data, run_dir, run_id
from an_lab.lightning_modules.callbacks import (
    AtomicLastCheckpoint,
    DivergenceError,
    DivergenceGuard,
    ReseedEachEpoch,
    RunProgressBar,
    SigtermStop,
    Throughput,
)
from an_lab.lightning_modules.classifier import ImageClassifier
from an_lab.lightning_modules.data import ImageClassificationData
from an_lab.metrics import TASK_METRICS
from an_lab.migrate import note_scheme
from an_lab.profiling import count_macs, count_parameters
from an_lab.rundir import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    PREVIOUS_CHECKPOINT,
    RESULT,
    Claim,
    attempt_logs,
    claim_owner,
    describe_owner,
    epoch_metrics,
    inherited_claim,
    mark_failed,
    mark_interrupted,
    mark_started,
    read_result,
    set_aside,
    try_claim,
    write_json_atomic,
)

# A full or read-only file system stops a run from outside, like a signal: it resumes once there is room.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


TAIL_EPOCHS = 5  # epochs of the validation curve kept in result.json


class RunFailed(RuntimeError):
    """The run stopped without a result; the reason is in the run directory's failed.json."""


class RunBusy(RuntimeError):
    """Another process owns the run (its claim is held): this process did not start it."""


class RunInterrupted(RuntimeError):
    """The run was stopped from outside (the disk filled up); interrupted.json says why and it resumes later."""


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


def _wandb_logger(config: RunConfig, directory: Path, say=print) -> WandbLogger | None:
    """W&B observes the run and never holds it up: an online start that fails or outlasts wandb.init_timeout (no
    network, a silent server, no API key) falls back to offline logging with one warning line."""
    settings = config.wandb
    if settings.mode == "disabled":
        return None
    directory.mkdir(parents=True, exist_ok=True)
    if settings.mode == "online":
        import wandb

        logger = _make_wandb_logger(
            config, directory, "online", settings=wandb.Settings(init_timeout=settings.init_timeout)
        )
        try:
            logger.experiment  # noqa: B018 - start the run now, where a failure can still be handled
            return logger
        except Exception as error:  # any failure to start: W&B is an observer, the run goes on offline
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            say(f"warning: W&B could not start online ({reason}); logging offline (`an-lab sync` uploads it)")
            with contextlib.suppress(Exception):  # end the half-started session, or its run id stays "in use"
                wandb.finish(exit_code=1, quiet=True)
            with contextlib.suppress(Exception):
                wandb.teardown()
    # Offline runs make no connection at all only with these set in the environment.
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    return _make_wandb_logger(config, directory, "offline")


def _make_wandb_logger(config: RunConfig, directory: Path, mode: str, **extra) -> WandbLogger:
    settings, model = config.wandb, config.model
    # W&B renames config keys that clash with run fields (sweep, group, tags): the sweep and cell get a prefix.
    context = {"an_lab_sweep": settings.group, "an_lab_cell": settings.job_type, "seed": config.trainer.seed}
    logger = WandbLogger(
        id=run_id(config),  # relaunches and requeues continue the same W&B run
        name=settings.name or run_id(config),
        project=settings.project,
        entity=settings.entity,
        group=settings.group,
        job_type=settings.job_type,
        tags=[model.name, model.norm, *settings.tags],
        save_dir=str(directory),
        mode=mode,
        resume="allow",
        config={**config.model_dump(mode="json"), **context},
        **extra,
    )
    # Lightning passes anonymous=None to wandb.init, which W&B 0.31 warns about on every run ("no effect"): leave it out
    logger._wandb_init.pop("anonymous", None)
    return logger


def _write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda key: (key != "epoch", key))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _result(config: RunConfig, trainer: pl.Trainer, module: ImageClassifier, throughput, seconds: float, say) -> dict:
    skipped: list[str] = []
    rows = [row for row in epoch_metrics(run_dir(config), skipped) if "val_top1_err" in row]
    if skipped:
        say(f"warning: skipped {len(skipped)} damaged row(s) of the metric logs: {', '.join(skipped[:3])}")
    final = rows[-1]
    best = min(rows, key=lambda row: row["val_top1_err"])
    tail = rows[-TAIL_EPOCHS:]
    return {
        **_identity_fields(config),
        "final": {
            "top1_err": final["val_top1_err"],
            "top5_err": final["val_top5_err"],
            "val_loss": final["val_loss"],
            "train_loss": final.get("train_loss"),
        },
        "best": {"top1_err": best["val_top1_err"], "top5_err": best["val_top5_err"], "epoch": int(best["epoch"])},
        # The last epochs' curve, so that tables can tell a converged run from one still improving without
        # reading every run's CSV log.
        "tail": {
            "epoch": [int(row["epoch"]) for row in tail],
            **{key: [row.get(key) for row in tail] for key in ("val_top1_err", "train_loss")},
        },
        "params": count_parameters(module.model),
        "macs": count_macs(module.model, config.data.image_size),
        "epochs": trainer.current_epoch,
        # the error's resolution: it moves in steps of 100 / val_images points (tables never claim more precision)
        "val_images": _validation_size(trainer),
        **_run_facts(config, trainer, throughput, seconds),
    }


def _validation_size(trainer: pl.Trainer) -> int | None:
    found = getattr(getattr(trainer, "datamodule", None), "val_set", None)
    try:
        return len(found) if found is not None else None
    except TypeError:
        return None


def _identity_fields(config: RunConfig) -> dict:
    return {"run_id": run_id(config), "config_hash": config_hash(config), "status": "done"}


def _run_facts(config: RunConfig, trainer: pl.Trainer, throughput, seconds: float) -> dict:
    """What every result.json records about how the run was made."""
    return {
        "wall_time_s": round(seconds, 3),
        "images_per_s": throughput.images_per_second,
        "device": _device(trainer),
        "precision": config.trainer.precision,
        "cpu_threads": config.trainer.cpu_threads,
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


def _detection_result(config: RunConfig, trainer: pl.Trainer, module, throughput, seconds: float, say) -> dict:
    """result.json of a detection run: the last evaluation's AP (percent) in "final", the evaluation with the highest
    box AP in "best", the last evaluations in "tail"."""
    from an_lab.lightning_modules.detector import detector_macs
    from an_lab.models.detection import parameter_counts

    skipped: list[str] = []
    every = epoch_metrics(run_dir(config), skipped)
    if skipped:
        say(f"warning: skipped {len(skipped)} damaged row(s) of the metric logs: {', '.join(skipped[:3])}")
    rows = [row for row in every if "val_bbox_ap" in row]
    names = TASK_METRICS["detection"]
    final, tail = rows[-1], rows[-TAIL_EPOCHS:]
    best = max(rows, key=lambda row: row["val_bbox_ap"] if math.isfinite(row["val_bbox_ap"]) else -math.inf)
    counts = parameter_counts(module.model)
    return {
        **_identity_fields(config),
        "task": "detection",
        "final": {
            **{name: _number_or_none(final.get(f"val_{name}")) for name in names},
            "train_loss": every[-1].get("train_loss"),
        },
        "best": {**{name: _number_or_none(best.get(f"val_{name}")) for name in names}, "epoch": int(best["epoch"])},
        "tail": {
            "epoch": [int(row["epoch"]) for row in tail],
            **{
                key: [_number_or_none(row.get(key)) for row in tail]
                for key in ("val_bbox_ap", "val_segm_ap", "train_loss")
            },
        },
        "params": counts.total,
        "trainable_params": counts.trainable,
        "macs": detector_macs(config, module.num_classes),  # mmdetection's get_flops convention (profiling)
        "epochs": trainer.current_epoch,
        "iterations": trainer.global_step,
        **_run_facts(config, trainer, throughput, seconds),
    }


def _number_or_none(value) -> float | None:
    """A metric for result.json: None where COCO has no value (AP of a size the data lacks) rather than NaN."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("an-lab")
    return "unknown"


_CLOSED_WANDB_RUNS: set[int] = set()  # ids of the W&B runs close_wandb has closed (or tried to) in this process


def close_wandb(logger, exit_code: int | None = None, say=print, leaving: bool = False) -> None:
    """Finish the W&B run of a logger, if it started one (a second call does nothing).

    A job that SLURM requeues or cancels loses W&B's service process with its step (slurmstepd signals every process
    of the step): finishing then fails on a lost connection. That is one line in the job log, not two tracebacks
    (the failed finish and W&B's atexit teardown, which `wandb.teardown()` unregisters); the offline files keep
    what the service wrote, and the resumed attempt logs on under the same W&B id.

    `leaving`: the process is on its way out (a signal, a requeue's exit). The service may still be alive when the
    run finishes and be killed a moment later, before the interpreter exits: W&B's atexit teardown would then fail
    with a traceback. Tearing the connection down here unregisters that hook whatever happens next."""
    run = logger._experiment if isinstance(logger, WandbLogger) else None
    if run is None or id(run) in _CLOSED_WANDB_RUNS:
        return
    _CLOSED_WANDB_RUNS.add(id(run))
    import wandb

    try:
        run.finish(exit_code=exit_code)
    except Exception as error:  # a lost connection, an abandoned handle: W&B observes and never fails the run
        leaving = True
        say(
            f"note: W&B could not close the run ({type(error).__name__}: its service process ended with the job); "
            "what it wrote is kept"
        )
    if leaving:
        with contextlib.suppress(Exception):
            wandb.teardown()


def _global_rank_from_env() -> int:
    """This process's rank in a DDP job before Lightning is set up: srun, torchrun and Lightning's own launcher."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if os.environ.get("LOCAL_RANK", "").isdigit() else 0


def _claim(directory: Path) -> Claim | None:
    """Rank 0 owns the run: it adopts the claim its launcher handed over, or claims the run itself. Other ranks of
    the same job train under rank 0's claim."""
    if _global_rank_from_env() != 0:
        return None
    claim = inherited_claim(directory) or try_claim(directory, "an-lab train")
    if claim is None:
        raise RunBusy(
            f"run {directory.name} is being trained by {describe_owner(claim_owner(directory))}; "
            "this process did not start it (one owner per run)"
        )
    claim.update(trainer_pid=os.getpid(), trainer_host=platform.node())
    return claim


def _set_aside_corrupt_result(directory: Path, say) -> dict | None:
    """The valid result of a finished run, or None after moving a damaged result.json aside (kept as .corrupt)."""
    result, problem = read_result(directory)
    if problem is not None:
        kept = set_aside(directory / RESULT)
        say(f"warning: {problem}; kept as {kept.name}, the run is trained again (resuming from its checkpoint)")
    return result


def _checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a truncated or damaged zip archive), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"not a readable checkpoint ({error})"
    return f"member {bad} fails its checksum" if bad else None


def _resume_point(directory: Path, say) -> Path | None:
    """last.ckpt, or previous.ckpt when last.ckpt is damaged, or None (from scratch); damaged files are kept aside."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = directory / name
        if not path.exists():
            continue
        problem = _checkpoint_problem(path)
        if problem is None:
            say(f"resuming from {'the previous good checkpoint ' if name != CHECKPOINT else ''}{path}")
            return path
        kept = set_aside(path)
        say(f"warning: {path} is damaged: {problem}; kept as {kept.name}")
    if any(directory.glob("*.ckpt.corrupt")):
        say(f"no usable checkpoint left in {directory}: restarting the run from scratch")
    return None


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
    claim = _claim(directory)
    try:
        existing = _set_aside_corrupt_result(directory, say)
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
        from an_lab.lightning_modules.detection_data import CocoDetectionData
        from an_lab.lightning_modules.detector import MaskRCNNModule, load_backbone

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
    resume_from = _resume_point(directory, say)
    data, module = _parts(config, resume_from is not None, say)

    # One CSV log per attempt: Lightning's CSV logger would overwrite an earlier attempt's rows on resume.
    attempt = len(attempt_logs(directory))
    # Rows are flushed every step so that a search's orchestrator sees each epoch's validation metrics.
    loggers = [CSVLogger(directory, name="logs", version=f"attempt-{attempt}", flush_logs_every_n_steps=1)]
    wandb_logger = _wandb_logger(config, directory, say)  # W&B writes into <run>/wandb/
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    throughput = Throughput()
    stop = SigtermStop(
        lambda: [close_wandb(logger, exit_code=SigtermStop.EXIT_CODE, say=say, leaving=True) for logger in loggers]
    )
    trainer = _trainer(config, loggers, [throughput, AtomicLastCheckpoint(directory)], plugins, progress)
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
    summarize = _detection_result if config.task == "detection" else _result
    result = summarize(config, trainer, module, throughput, time.perf_counter() - started, say)
    if config.trainer.diagnostics and config.task == "classification":
        from an_lab.lightning_modules.diagnostics import save_diagnostics

        result["diagnostics"] = [p.name for p in save_diagnostics(module.model, data, directory)]
    _write_metrics_csv(directory / METRICS, epoch_metrics(directory))
    write_json_atomic(directory / RESULT, result)
    (directory / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)  # a finished run resumes from nothing
    return result


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


def _trainer(config: RunConfig, loggers: list, callbacks: list, plugins: list | None, progress: bool) -> pl.Trainer:
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
