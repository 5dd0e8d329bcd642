"""The one entry point that trains a run, for every executor: `an-lab train`, the local executor's child processes and
the SLURM executor's jobs all call `execute()`; exit codes tell the launcher how the run ended.

    python -m an_lab.launch.entry RUN_FOLDER/config.json      # what the local executor starts
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass

from an_lab.errors import UsageError
from an_lab.rundir import EXIT_BUSY, EXIT_INTERRUPTED

EXIT_FAILED = 1
VERBOSE_ENV = "AN_LAB_VERBOSE"  # 1: keep third-party notices in run logs
# Notices that say nothing about the run: Lightning's hardware summary and tips (INFO on its logger), the srun hint
# under SLURM (an-lab starts tasks with srun itself), and deprecations inside the libraries.
KNOWN_NOISE = (
    r"The `srun` command is available on your system but is not used",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`weights_only` was not set",
    r".*does not have many workers which may be a bottleneck",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # Detection keeps frozen BN and AN layers in eval mode on purpose (the papers' fine-tuning rule)
    r"Found \d+ module\(s\) in eval mode at the start of training",
)


def quiet_third_parties() -> None:
    """Hide Lightning's INFO notices and the known warnings above (an-lab's own messages and real warnings stay)."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    # W&B's banner, its "anonymous setting" warning and its run summary: the result lines say what matters
    os.environ.setdefault("WANDB_SILENT", "true")
    import lightning.pytorch  # noqa: F401  (it sets its loggers to INFO when imported: import it first)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


@dataclass
class Outcome:
    code: int  # 0 done, 1 failed, EXIT_BUSY another process owns the run, EXIT_INTERRUPTED stopped from outside
    result: dict | None = None
    message: str | None = None


def execute(config, *, plugins: list | None = None, progress: bool = False) -> Outcome:
    """Train the run of `config` (a RunConfig) in this process, resuming it if it was interrupted."""
    from an_lab.lightning_modules.train import RunBusy, RunFailed, RunInterrupted, train

    try:
        return Outcome(0, train(config, plugins=plugins, progress=progress))
    except RunFailed as error:
        return Outcome(EXIT_FAILED, message=f"error: {error}")
    except RunBusy as error:
        return Outcome(EXIT_BUSY, message=f"note: {error}")
    except RunInterrupted as error:
        return Outcome(EXIT_INTERRUPTED, message=f"error: {error}")


def load_run_config(path: str):
    """A run folder's config.json, checked to still resolve to that folder: a run id follows the data (its location
    and fingerprint, an_lab.identity), so data that changed after the run was planned would train into another
    folder; that is refused, naming both ids."""
    from pathlib import Path

    from an_lab.config import load_config
    from an_lab.identity import run_id
    from an_lab.rundir import mark_failed

    config = load_config(path)
    folder = Path(path).parent.name
    if (now := run_id(config)) != folder:
        message = (
            f"{path}: this run's config resolves to the run id {now} today, not {folder}: its data "
            f"({config.data.root}) or its backbone changed after the run was planned; launch the sweep again to plan "
            "it anew"
        )
        with contextlib.suppress(UsageError):
            mark_failed(Path(path).parent, message)
        raise UsageError(message)
    return config


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m an_lab.launch.entry RUN_FOLDER/config.json", file=sys.stderr)
        return 2
    quiet_third_parties()
    try:
        outcome = execute(load_run_config(args[0]))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    if outcome.message:
        print(outcome.message, file=sys.stderr, flush=True)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
