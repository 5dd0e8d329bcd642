"""The executors, by the name a sweep file's `launcher.executor` and `--executor` give: one line each. A new executor
is a module in an_lab.launch (an Executor subclass with its `for_sweep`) and a line here; nothing above names one."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself is read by the CLI's argument parser: no imports beyond the standard library
    from an_lab.launch.base import Executor

EXECUTORS = {
    "local": "an_lab.launch.local:LocalExecutor",  # child processes on this machine
    "slurm": "an_lab.launch.slurm:SlurmExecutor",  # job arrays on a SLURM cluster, through submitit
}
NAMES = tuple(EXECUTORS)
# Those whose runs are a scheduler's jobs (their class says scheduled = True; tests/launch checks the two agree),
# known without importing them: `plan` words its estimate in device-hours and a time limit for them.
SCHEDULED = frozenset({"slurm"})


def executor_class(name: str) -> type[Executor]:
    """The Executor subclass of a name in EXECUTORS (imported only now: the SLURM one brings submitit)."""
    module, _, attribute = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
