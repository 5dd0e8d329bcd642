"""What `an-lab sweep --executor slurm` recorded in a sweep's folder, read and acted on without submitting anything:
the job of each run (the job list beside the sweep's logs, a run folder's slurm.json) and a detached orchestrator's.
`status` refines the runs' states with one squeue and one sacct call; `cancel` cancels the jobs with one scancel.
Torch-free and submitit-free (an_lab.launch.slurm_queue), so that `an-lab status` stays fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from an_lab.launch.base import JobRecords
from an_lab.launch.slurm_orchestrator import recorded_orchestrator
from an_lab.launch.slurm_queue import cancel, last_error_line, log_file, query, recorded_jobs, submitted_jobs
from an_lab.launch.slurm_settings import SlurmSettings


class SlurmRecords(JobRecords):
    def refine(self, sweep_dir: Path, rows: list[Any], progress: Callable[[str], str | None]) -> list[str]:
        """Queued and running jobs override what the run folder says (pending, requeued, running, stuck); a job that
        ended badly makes its run failed with the scheduler's reason; a cancelled job leaves its run interrupted
        (resumable). Only runs that are not done are asked about; without accounting, ended jobs keep the state of
        their run folder, with a note."""
        by_id = {row["run_id"]: row for row in rows}
        unfinished = {
            run_id: job
            for run_id, job in recorded_jobs(sweep_dir).items()
            if run_id in by_id and by_id[run_id]["state"] != "done"
        }
        if not unfinished:
            return []
        view = query(unfinished.values())
        for run_id, job_id in unfinished.items():
            row, job = by_id[run_id], view.jobs.get(job_id)
            if job is None:
                if row["state"] == "pending":
                    row["detail"] = f"submitted as slurm {job_id}"
                continue
            folder_reason = row["detail"] if row["state"] == "failed" else None
            if job.active:
                row["state"], row["detail"] = _active(job, progress(run_id))
            elif row["state"] == "failed" or job.failed:
                log = log_file(sweep_dir, job_id)
                reason = folder_reason or last_error_line(log) or f"see {log}"
                row["state"], row["detail"] = "failed", f"{reason}; {job.describe()}"
            else:  # cancelled, preempted without requeue, or ended without a result: resumable
                row["state"] = "interrupted"
                row["detail"] = f"{job.describe()}; resumes on the next launch"
        known = sum(job in view.jobs for job in unfinished.values())
        return [f"slurm: {known} of {len(unfinished)} unfinished runs' jobs known to the scheduler", *view.notes]

    def orchestrator_line(self, sweep_dir: Path) -> str | None:
        job_id = recorded_orchestrator(sweep_dir)
        if job_id is None:
            return None
        job = query([job_id]).jobs.get(job_id)
        return f"orchestrator: {job.describe() if job else f'slurm {job_id} (not known to the scheduler)'}"

    def cancel(self, sweep_dir: Path, sweep: str, labels: dict[str, str], wait_s: float) -> tuple[list[str], list[str]]:
        lines: list[str] = []
        # every job the sweep submitted, not only each run's latest: a duplicate submission is cancelled too
        runs = {job_id: run_id for run_id, jobs in submitted_jobs(sweep_dir).items() for job_id, _ in jobs}
        orchestrator = recorded_orchestrator(sweep_dir)
        if orchestrator is not None:  # first, so that it submits nothing more
            stopped, _ = cancel([orchestrator], wait_s=30)
            lines += [f"orchestrator: slurm {job.job_id} cancelled (was {job.state.lower()})" for job in stopped]
        if not runs:
            return [*lines, f"sweep {sweep}: no SLURM jobs recorded in {sweep_dir}; nothing to cancel"], []
        cancelled, error = cancel(runs, wait_s=wait_s)
        if error and not cancelled:
            return lines, [f"error: could not cancel the jobs of sweep {sweep}: {error}"]
        if not cancelled:
            return [*lines, f"sweep {sweep}: none of its {len(runs)} recorded SLURM jobs is queued or running"], []
        for job in cancelled:
            run_id = runs.get(job.job_id, "?")
            lines.append(
                f"{labels.get(run_id, run_id)} [{run_id}]: slurm {job.job_id} cancelled (was {job.state.lower()})"
            )
        arrays = sorted({job.job_id.split("_")[0] for job in cancelled})
        lines.append(
            f"cancelled {len(cancelled)} job(s) of sweep {sweep} (scancel {' '.join(arrays)}); the runs keep "
            "their last.ckpt and resume on the next `an-lab sweep`"
        )
        return lines, [f"error: {error}"] if error else []

    def cancel_wait_s(self, launcher: Any) -> float:
        settings = getattr(launcher, "slurm", None) or SlurmSettings()
        return settings.cancel_wait_s


def _active(job, progress: str | None) -> tuple[str, str]:
    """(state, detail) of a run whose job is queued or running."""
    detail = job.describe()
    if job.state in ("RUNNING", "COMPLETING", "CONFIGURING"):
        return "running", "; ".join(filter(None, (detail, progress)))
    if job.stuck:
        return "stuck", detail + ": it can never start as submitted; an-lab cancel, fix launcher.slurm, launch again"
    if job.requeues or job.state.startswith("REQUEUE") or job.reason == "BeginTime":
        return "requeued", detail
    return "pending", detail
