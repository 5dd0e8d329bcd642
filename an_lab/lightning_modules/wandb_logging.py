"""The run's W&B logger: started online within wandb.init_timeout or else offline (W&B observes a run and never holds
it up), and closed once, quietly, however the process leaves."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from an_lab.config import RunConfig
from an_lab.identity import run_id


def start_wandb_logger(config: RunConfig, directory: Path, say=print) -> WandbLogger | None:
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
