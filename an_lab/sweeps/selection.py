"""Which runs of a sweep to start: write the manifest, select the runs that are not done, claim each before it starts.

Claims make concurrent launches safe: any number of `an-lab sweep` processes (local or SLURM, on one machine or on
nodes sharing the file system) may work on one sweep; each run is claimed (an_lab.rundir.try_claim) by exactly one
of them, its state is read again under the claim, and only then is it started. Launches of one sweep also take the
sweep's own lock while they select and submit, so that two SLURM submissions never queue the same run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.identity import remember_data
from an_lab.migrate import note_scheme
from an_lab.rundir import CONFIG, Claim, claim_owner, describe_owner, state, try_claim, write_json_atomic
from an_lab.sweeps.expand import PlannedRun, check_data_paths
from an_lab.sweeps.manifest import write_manifest
from an_lab.sweeps.seeding import planned_runs
from an_lab.sweeps.spec import Sweep

LAUNCHABLE = {"pending", "interrupted"}
RETRYABLE = {"failed", "corrupt"}  # relaunched only with --retry-failed
SWEEP_LOCK = "launch.lock"
SWEEP_LOCK_WAIT_S = 120.0


@dataclass(frozen=True)
class Selection:
    launch: list[PlannedRun]
    done: list[PlannedRun]
    failed: list[PlannedRun]  # failed or corrupt: left alone unless --retry-failed
    running: list[PlannedRun]  # another process is on them


def launchable(current: str, retry_failed: bool) -> bool:
    return current in LAUNCHABLE or (current in RETRYABLE and retry_failed)


def select_runs(runs: list[PlannedRun], retry_failed: bool) -> Selection:
    launch, done, failed, running = [], [], [], []
    for run in runs:
        current, _ = state(run.run_dir)
        if launchable(current, retry_failed):
            launch.append(run)
        elif current == "done":
            done.append(run)
        elif current in RETRYABLE:
            failed.append(run)
        else:
            running.append(run)
    return Selection(launch, done, failed, running)


def validate(sweep: Sweep, extra: dict[int, list[int]] | None = None) -> list[PlannedRun]:
    """The runs the sweep wants now (with extra: these seeds of these cells besides), after checking that their data
    is there."""
    runs = planned_runs(sweep, extra)
    check_data_paths(sweep, runs)
    return runs


def prepare(sweep: Sweep, retry_failed: bool, runs: list[PlannedRun] | None = None) -> Selection:
    """Validate everything and record the manifest; nothing is started here (configs are written under claims)."""
    runs = validate(sweep) if runs is None else runs
    selection = select_runs(runs, retry_failed)
    write_manifest(sweep, runs)
    return selection


def make_run_dir(directory: Path) -> None:
    note_scheme(directory.parent)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the run folder {directory}: {error.strerror or error}") from None


def claim_run(run: PlannedRun, retry_failed: bool, role: str) -> Claim | None:
    """Claim a run for this launcher and write its config, or None when it is not (or no longer) ours to start:
    another process holds it, or it finished (or failed) since it was selected."""
    make_run_dir(run.run_dir)
    remember_data(run.config)
    claim = try_claim(run.run_dir, role)
    if claim is None:
        return None
    current, _ = state(run.run_dir)
    if current != "running" and not launchable(current, retry_failed):
        claim.release()
        return None
    try:
        write_json_atomic(run.run_dir / CONFIG, run.config.model_dump(mode="json"))
    except UsageError:
        claim.release()
        raise
    return claim


def holder(run: PlannedRun) -> str:
    return describe_owner(claim_owner(run.run_dir))


@contextlib.contextmanager
def sweep_lock(sweep: Sweep, wait_s: float = SWEEP_LOCK_WAIT_S):
    """The sweep's launch lock (<sweep folder>/launch.lock), waited for at most wait_s seconds."""
    folder: Path = sweep.sweep_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / SWEEP_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise UsageError(f"cannot create the sweep folder {folder}: {error.strerror or error}") from None
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(
                        f"another `an-lab sweep` of {sweep.name} has held {folder / SWEEP_LOCK} for over "
                        f"{wait_s:.0f} s; try again when it has submitted its runs"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
