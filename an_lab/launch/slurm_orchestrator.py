"""The detached orchestrator: `an-lab sweep --detach` submits the launch itself as a small requeueable SLURM job
(1 CPU, no GPU, up to a week), recorded in <sweep folder>/slurm/orchestrator.json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from an_lab.launch import slurm_queue as queue
from an_lab.launch.base import LaunchError
from an_lab.launch.slurm_job import Orchestrate
from an_lab.launch.slurm_queue import LOGS_DIR
from an_lab.launch.slurm_sbatch import MAX_TIMEOUT_REQUEUES, outside_allocation, sbatch_parameters
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.launch.slurm_shape import Shape, asks_for_gpus, fit_problem
from an_lab.launch.slurm_snapshot import snapshot_code
from an_lab.rundir import read_json, write_json_atomic

ORCHESTRATOR = "slurm/orchestrator.json"  # in `home`: the detached orchestrator's job
ORCHESTRATOR_MINUTES = 7 * 24 * 60  # its time limit; it is requeued at the limit and reattaches


def submit_orchestrator(home: Path, job_name: str, settings: SlurmSettings | None, argv: list[str]) -> str:
    """Submit `an-lab ARGV` as a small requeueable job (1 CPU, no GPU, a week) and record it; returns its job id."""
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    settings = settings or SlurmSettings()
    home = Path(home).resolve()
    shape = Shape(nodes=1, tasks_per_node=1, gpus_per_node=0, cpus_per_task=1)
    partition = queue.partition_info(settings.partition)
    # As long as the partition allows (many cap jobs at 1-2 days): it is requeued at its limit and reattaches.
    minutes = min(ORCHESTRATOR_MINUTES, (partition.max_minutes if partition else None) or ORCHESTRATOR_MINUTES)
    extra = {key: value for key, value in settings.additional_parameters.items() if not asks_for_gpus(key, value)}
    small = settings.model_copy(
        update={"time": minutes, "mem": "2G", "constraint": None, "additional_parameters": extra}
    )
    if partition is not None and (problem := fit_problem(shape, minutes, small, partition)) is not None:
        raise LaunchError(f"--detach: the orchestrator job: {problem}", problem.key)
    code = snapshot_code(home)
    parameters = sbatch_parameters(small, shape, code, 1, f"{job_name}-orchestrator", 1)
    parameters.pop("array_parallelism", None)
    try:
        executor = submitit.SlurmExecutor(folder=home / LOGS_DIR / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
        executor.update_parameters(**parameters)
        with outside_allocation():
            job = executor.submit(Orchestrate(argv, os.getcwd()))
    except RuntimeError as error:
        raise LaunchError(f"--detach: {error} (run on a SLURM login node)") from None
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise LaunchError(f"sbatch refused the orchestrator job: {lines[-1] if lines else 'no output'}") from None
    write_json_atomic(
        home / ORCHESTRATOR,
        {"job_id": str(job.job_id), "argv": argv, "submitted_at": time.time(), "code": str(code)},
    )
    return str(job.job_id)


def recorded_orchestrator(home: Path) -> str | None:
    entry = read_json(Path(home) / ORCHESTRATOR)
    return entry.get("job_id") if isinstance(entry, dict) and isinstance(entry.get("job_id"), str) else None
