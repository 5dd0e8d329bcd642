"""`an-lab sweep`: write the manifest, launch only the runs that are not done, report as they finish."""

from __future__ import annotations

from dataclasses import dataclass

from an_lab.rundir import CONFIG, state, write_json_atomic
from an_lab.sweeps.expand import PlannedRun, check_data_paths, expand
from an_lab.sweeps.manifest import write_manifest
from an_lab.sweeps.spec import Sweep

LAUNCHABLE = {"pending", "interrupted"}


@dataclass(frozen=True)
class Selection:
    launch: list[PlannedRun]
    done: list[PlannedRun]
    failed: list[PlannedRun]  # left alone unless --retry-failed
    running: list[PlannedRun]  # another process is on them


def select_runs(runs: list[PlannedRun], retry_failed: bool) -> Selection:
    launch, done, failed, running = [], [], [], []
    for run in runs:
        current, _ = state(run.run_dir)
        if current in LAUNCHABLE or (current == "failed" and retry_failed):
            launch.append(run)
        elif current == "done":
            done.append(run)
        elif current == "failed":
            failed.append(run)
        else:
            running.append(run)
    return Selection(launch, done, failed, running)


def prepare(sweep: Sweep, retry_failed: bool) -> Selection:
    """Validate everything, record the manifest and each run's config; nothing is started here."""
    runs = expand(sweep)
    check_data_paths(sweep, runs)
    selection = select_runs(runs, retry_failed)
    write_manifest(sweep, runs)
    for run in selection.launch:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run.run_dir / CONFIG, run.config.model_dump(mode="json"))
    return selection
