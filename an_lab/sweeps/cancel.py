"""`an-lab cancel`: cancel a sweep's SLURM jobs (its detached orchestrator first, so that it submits nothing more, then
every job the sweep submitted), wait until they have left the queue, and say what was cancelled. The command line
prints what this returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from an_lab.launch.slurm_orchestrator import recorded_orchestrator
from an_lab.launch.slurm_queue import cancel, submitted_jobs
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.sweeps.manifest import load_target
from an_lab.sweeps.records import Manifest


@dataclass
class CancelReport:
    """What cancelling did: `lines` for stdout, then `errors` for stderr; the exit code is 1 when there is an error."""

    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return 1 if self.errors else 0


def cancel_target(target: str | Path, overrides: list[str] | tuple[str, ...] = ()):
    """(manifest, the sweep's folder, its launcher.slurm settings: the defaults for a sweep folder), the sweep file
    read once."""
    manifest, sweep = load_target(target, overrides)
    if Path(target).is_dir():
        return manifest, Path(target), SlurmSettings()
    folder = Path(manifest["output_dir"]) / "sweeps" / str(manifest["name"])
    return manifest, folder, (sweep.spec.launcher.slurm if sweep is not None else None) or SlurmSettings()


def cancel_sweep(
    target: str | Path, overrides: list[str] | tuple[str, ...] = (), wait_s: float | None = None
) -> CancelReport:
    """Cancel the SLURM jobs of the sweep `target` (a sweep file or folder), waiting up to wait_s seconds for them to
    leave the queue (default: launcher.slurm.cancel_wait_s). Returns what happened."""
    manifest, folder, settings = cancel_target(target, overrides)
    wait = wait_s if wait_s is not None else settings.cancel_wait_s
    return cancel_jobs(manifest, folder, wait)


def cancel_jobs(manifest: Manifest, folder: Path, wait_s: float) -> CancelReport:
    """Cancel the orchestrator recorded in the sweep folder, then every job the sweep submitted."""
    said = CancelReport()
    # every job the sweep submitted, not only each run's latest: a duplicate submission is cancelled too
    runs = {job_id: run_id for run_id, jobs in submitted_jobs(folder).items() for job_id, _ in jobs}
    orchestrator = recorded_orchestrator(folder)
    if orchestrator is not None:  # first, so that it submits nothing more
        stopped, _ = cancel([orchestrator], wait_s=30)
        for job in stopped:
            said.lines.append(f"orchestrator: slurm {job.job_id} cancelled (was {job.state.lower()})")
    if not runs:
        said.lines.append(f"sweep {manifest['name']}: no SLURM jobs recorded in {folder}; nothing to cancel")
        return said
    cancelled, error = cancel(runs, wait_s=wait_s)
    if error and not cancelled:
        said.errors.append(f"error: could not cancel the jobs of sweep {manifest['name']}: {error}")
        return said
    if not cancelled:
        said.lines.append(f"sweep {manifest['name']}: none of its {len(runs)} recorded SLURM jobs is queued or running")
        return said
    labels = {run["run_id"]: cell["label"] for cell in manifest["cells"] for run in cell["runs"]}
    for job in cancelled:
        run_id = runs.get(job.job_id, "?")
        said.lines.append(
            f"{labels.get(run_id, run_id)} [{run_id}]: slurm {job.job_id} cancelled (was {job.state.lower()})"
        )
    arrays = sorted({job.job_id.split("_")[0] for job in cancelled})
    said.lines.append(
        f"cancelled {len(cancelled)} job(s) of sweep {manifest['name']} (scancel {' '.join(arrays)}); the runs keep "
        "their last.ckpt and resume on the next `an-lab sweep`"
    )
    if error:
        said.errors.append(f"error: {error}")
    return said
