"""`an-lab cancel`: cancel the jobs a sweep's launches submitted to a scheduler (its detached orchestrator first, so
that it submits nothing more, then every job of its runs), wait until they have left the queue, and say what was
cancelled. Each scheduled executor's records know its own jobs (an_lab.launch.registry.RECORDS). The command line
prints what this returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from an_lab.launch.registry import job_records
from an_lab.sweep_folder import target_folder
from an_lab.sweeps.manifest import load_target


@dataclass
class CancelReport:
    """What cancelling did: `lines` for stdout, then `errors` for stderr; the exit code is 1 when there is an error."""

    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        return 1 if self.errors else 0


def cancel_sweep(
    target: str | Path, overrides: list[str] | tuple[str, ...] = (), wait_s: float | None = None
) -> CancelReport:
    """Cancel the scheduled jobs of the sweep `target` (a sweep file, read once, or a sweep folder), waiting up to
    wait_s seconds for them to leave the queue (default: the sweep file's launcher settings, e.g.
    launcher.slurm.cancel_wait_s). Returns what happened."""
    manifest, sweep = load_target(target, overrides)
    folder = target_folder(target, manifest)
    launcher = sweep.spec.launcher if sweep is not None else None
    labels = {run["run_id"]: cell["label"] for cell in manifest["cells"] for run in cell["runs"]}
    said = CancelReport()
    for records in job_records():
        wait = wait_s if wait_s is not None else records.cancel_wait_s(launcher)
        lines, errors = records.cancel(folder, str(manifest["name"]), labels, wait)
        said.lines += lines
        said.errors += errors
    return said
