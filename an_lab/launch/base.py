"""What every executor offers: take runs, start them, say which ended, stop one, and leave or stop the rest.

An executor knows runs (a run folder with its resolved config), never sweeps. `an_lab.sweeps.run` drives one through
a single loop for every mode: ask `slots()`, `submit()` that many runs, `poll()` for the ones that ended, `stop()` one
(a pruned trial), and on Ctrl-C `interrupt()`. Executors are torch-free: they start, watch and stop processes or jobs.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from an_lab.config import RunConfig
from an_lab.errors import UsageError
from an_lab.rundir import Claim

# How a run's process or job ended, as the executor saw it (the run folder holds the run's own account).
DONE, FAILED, INTERRUPTED, BUSY, STOPPED, NOT_STARTED, LEFT = (
    "done",
    "failed",
    "interrupted",
    "busy",  # another process owned the run: it trains it, once
    "stopped",  # stopped on purpose (a pruned trial)
    "not started",
    "left the queue",  # a SLURM job that is no longer queued; its run folder says how it ended
)


class LaunchError(UsageError):
    """A setting the executor cannot use; `key` is where it sits under the sweep file's `launcher` section."""

    def __init__(self, message: str, key: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class RunRequest:
    """One run to start: its folder (holding config.json) and resolved config; `claim` goes to the process that trains
    it (local executor) and is released once its end is recorded."""

    run_id: str
    run_dir: Path
    config: RunConfig
    label: str = ""
    claim: Claim | None = None
    payload: Any = None  # the caller's own data, e.g. an Optuna trial
    # SLURM job ids ("123" or "123_4") that must complete successfully before this run starts (sbatch --dependency
    # afterok): the jobs training a detection run's backbone. Only the SLURM executor can wait; others get none.
    after: tuple[str, ...] = ()


@dataclass
class Handle:
    """A submitted run: `job_id` is the executor's name for it (a pid, or a SLURM job id like 123_4)."""

    request: RunRequest
    job_id: str
    submitted_at: float = field(default_factory=time.time)
    outcome: str | None = None  # one of the words above once it ended
    returncode: int | None = None
    note: str | None = None  # a problem met while recording the end (a full disk), or why it could not start
    stopping: bool = False

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @property
    def run_dir(self) -> Path:
        return self.request.run_dir


def hand_over(request: RunRequest, claim: Claim, keep: bool) -> RunRequest:
    """Give the run's claim to the process that will train it (keep: the local executor's children inherit it), or
    release it (a SLURM job claims the run itself when it starts)."""
    if keep:
        request.claim = claim
    else:
        claim.release()
    return request


class Executor(abc.ABC):
    """What the sweeps layer drives; callers never ask which executor they have: what differs is said here.

    name is for people (messages, the `--executor` choice); the attributes and methods below carry every difference
    a caller needs, with the local executor's answers as defaults."""

    name: str
    max_parallel: int  # runs in flight at once (local processes, or SLURM array tasks)
    holds_claims: bool = False  # whether the processes it starts inherit the launcher's claim on their run
    tick_s: float = 0.2  # how often the driving loop comes back (display refresh, prune checks)
    follows: bool = True  # whether the driving loop follows the runs to their end (SLURM: with --wait only)
    can_wait_for_jobs: bool = False  # whether a run can be submitted to start after other jobs (SLURM afterok)
    # whether its runs are a scheduler's jobs: a followed sweep then ends with the queue's view, and a run still
    # "running" at the end is a job that ended without its record (locally: another launcher is training it)
    scheduled: bool = False
    can_detach: bool = False  # whether it can run a sweep's own orchestrator as one of its jobs (--detach)
    scheduler_calls: int = 0  # how often it asked a scheduler (squeue, sacct, sinfo)
    claimant: str = "local launcher"  # who holds a run's claim while it is handed over, as a claim file names it
    place: str = "on this machine"  # where its runs run, for messages ("queued or running on SLURM")

    @classmethod
    def queued_since(cls, run_dir: Path, since: float) -> bool:
        """Whether another launch of the sweep queued this run after `since` (a run submitted twice would train
        twice); never, where runs are not queued."""
        return False

    @classmethod
    def training_jobs(cls, run_dirs: list[Path]) -> tuple[dict[Path, str], str | None]:
        """The job queued or running each of these runs, for runs that must wait for them (can_wait_for_jobs):
        (run folder -> job id, None), or ({}, why the queue could not be read); none where nothing can wait."""
        return {}, None

    @classmethod
    def submit_orchestrator(cls, home: Path, job_name: str, launcher: Any, argv: list[str]) -> str:
        """Submit `an-lab ARGV` (a sweep followed to its end) as its own job; returns the job id (can_detach)."""
        raise UsageError(f"the {cls.name} executor cannot run a sweep's orchestrator as a job (--detach)")

    @classmethod
    @abc.abstractmethod
    def for_sweep(
        cls, home: Path, job_name: str, launcher: Any, max_parallel: int, poll_s: float | None, follow: bool
    ) -> Executor:
        """The executor of one sweep: home its folder, job_name what the scheduler calls its jobs, launcher the sweep
        file's launcher section (its own settings under its name, e.g. launcher.slurm), follow whether to follow the
        runs to their end (--wait, a search)."""

    @property
    def refused(self) -> set[str]:
        """Run ids whose earlier job the scheduler ended as failed (relaunched only with --retry-failed)."""
        return set()

    def interrupted_words(self) -> str:
        """What Ctrl-C of the driving loop leaves behind, for its message."""
        return "running runs were stopped and resume on the next launch"

    def in_flight_words(self, adopted: int, running: int) -> str:
        """The launch line's count of runs already in flight (adopted: followed from an earlier launch)."""
        return f"{running} running"

    def followed_lines(self, seconds: float) -> list[str]:
        """What following cost, after the loop ends (SLURM: scheduler calls); nothing by default."""
        return []

    def submitted_lines(self, home: Path) -> list[str]:
        """What was submitted and not followed (a plain SLURM submission), and where to look; nothing by default."""
        return []

    @abc.abstractmethod
    def slots(self) -> int:
        """How many more runs may be submitted now."""

    @abc.abstractmethod
    def submit(self, requests: list[RunRequest]) -> list[Handle]:
        """Start (or queue) the runs; returns their handles (those that could not start have outcome NOT_STARTED)."""

    @abc.abstractmethod
    def poll(self) -> list[Handle]:
        """The handles that ended since the last call, each with its outcome."""

    @abc.abstractmethod
    def in_flight(self) -> list[Handle]:
        """Handles submitted and not yet reported ended."""

    @abc.abstractmethod
    def stop(self, handle: Handle) -> None:
        """Stop one run on purpose (a pruned trial); poll() reports it as STOPPED."""

    def check(self, requests: list[RunRequest]) -> None:
        """Refuse, before anything is submitted, runs this executor can never start (LaunchError); nothing by
        default."""
        return None

    def adopt(self, requests: list[RunRequest]) -> list[Handle]:
        """Handles for runs that this executor already has in flight from an earlier launch (none by default)."""
        return []

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM of the driving process: stop what must not outlive it (nothing by default)."""
        return None

    def close(self) -> None:
        """The driving loop is done with this executor (the local one stops its forkserver); nothing by default."""
        return None

    def describe(self, handle: Handle) -> str:
        """The executor's view of a run for progress lines: e.g. `pid 1234` or `slurm 123_4`."""
        return handle.job_id


class JobRecords(abc.ABC):
    """What a scheduled executor recorded in a sweep's folder (the jobs of its runs, a detached orchestrator), read
    and acted on without submitting anything: `status` refines run states with the scheduler's view of them, `cancel`
    stops them. One subclass per scheduled executor (an_lab.launch.registry.RECORDS), in a module that imports neither
    the executor nor its job library, so that `status` stays fast. Each finds nothing in a folder it did not write."""

    @abc.abstractmethod
    def refine(self, sweep_dir: Path, rows: list[Any], progress: Callable[[str], str | None]) -> list[str]:
        """Refine, in place, the status rows (keys run_id, state, detail) of runs it submitted with what the scheduler
        says of their jobs; returns notes. progress: run id -> how far a running run has got ("epoch 3/15")."""

    @abc.abstractmethod
    def orchestrator_line(self, sweep_dir: Path) -> str | None:
        """`orchestrator: ...` for a sweep whose orchestrator runs as one of its jobs (--detach); else None."""

    @abc.abstractmethod
    def cancel(self, sweep_dir: Path, sweep: str, labels: dict[str, str], wait_s: float) -> tuple[list[str], list[str]]:
        """Cancel the recorded orchestrator, then every job submitted for the sweep's runs, waiting up to wait_s
        seconds for them to leave the queue; (lines saying what was cancelled, errors). labels: run id -> cell."""

    @abc.abstractmethod
    def cancel_wait_s(self, launcher: Any) -> float:
        """How long `cancel` waits by default: from the sweep file's launcher section (None: a sweep folder)."""
