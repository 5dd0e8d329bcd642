"""The executors, by the name a sweep file's `launcher.executor` and `--executor` give: one line each. A new executor
is a module in an_lab.launch (an Executor subclass with its `for_sweep`) and a line here; nothing above names one."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself is read by the CLI's argument parser: no imports beyond the standard library
    from an_lab.launch.base import Executor, JobRecords

EXECUTORS = {
    "local": "an_lab.launch.local:LocalExecutor",  # child processes on this machine
    "slurm": "an_lab.launch.slurm:SlurmExecutor",  # job arrays on a SLURM cluster, through submitit
}
NAMES = tuple(EXECUTORS)
# Those whose runs are a scheduler's jobs (their class says scheduled = True; tests/launch checks the two agree),
# known without importing them: `plan` words its estimate in device-hours and a time limit for them.
SCHEDULED = frozenset({"slurm"})
# Those whose runs can wait for other jobs (can_wait_for_jobs; checked the same way), for messages that say so.
CAN_WAIT = frozenset({"slurm"})
# What each scheduled executor records in a sweep's folder, read by `status` and `cancel` without submitting anything
# (an_lab.launch.base.JobRecords; modules that do not import the executor, so that status stays fast).
RECORDS = {"slurm": "an_lab.launch.slurm_records:SlurmRecords"}


def _load(path: str):
    """The object a "module:attribute" path names, its module imported only now."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def executor_class(name: str) -> type[Executor]:
    """The Executor subclass of a name in EXECUTORS (imported only now: the SLURM one brings submitit)."""
    return _load(EXECUTORS[name])


def job_records() -> list[JobRecords]:
    """One reader of each scheduled executor's records (RECORDS), in the registry's order."""
    return [_load(path)() for path in RECORDS.values()]
