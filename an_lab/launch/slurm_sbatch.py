"""The sbatch parameters of a job array (every setting from launcher.slurm and the job shape), the afterok
dependency on the jobs it waits for, the checks that keep the job script to #SBATCH lines, and submitting from
outside the current allocation.
"""

from __future__ import annotations

import contextlib
import os
import re
import reprlib
import shlex
from pathlib import Path

from an_lab.config import control_character
from an_lab.launch.base import LaunchError
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.launch.slurm_shape import Shape, time_minutes

# Time-limit requeues per job before submitit gives up (preemptions do not count). Each attempt ends at an epoch
# boundary at worst, so a run makes progress as long as one epoch fits in the time limit.
MAX_TIMEOUT_REQUEUES = 20
JOB_ID = re.compile(r"[0-9]{1,12}(?:_[0-9]{1,9})?")  # a job, or one task of an array: 123 or 123_4


@contextlib.contextmanager
def outside_allocation():
    """Submit as from a login shell, also from inside a job (a detached orchestrator): without the SLURM_* variables of
    the job this process runs in. sbatch exports the environment, and an inherited SLURM_MEM_PER_NODE beside the new
    job's SLURM_MEM_PER_CPU makes every srun of the new job fail ("mutually exclusive"). SLURM_CONF stays."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("SLURM_") and key != "SLURM_CONF"}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def dependency(job_ids: tuple[str, ...] | list[str]) -> str:
    """sbatch's --dependency value that starts a job once all these jobs completed successfully: `afterok:1_0:2`.

    Built here from job ids that an-lab recorded at submission, never from user text; each must be a job id (digits,
    or digits_digits for an array task), so the value can hold nothing else."""
    ids = sorted({str(job_id) for job_id in job_ids}, key=lambda text: (len(text), text))
    for job_id in ids:
        if not JOB_ID.fullmatch(job_id):
            raise LaunchError(
                f"cannot make a job wait for SLURM job {reprlib.repr(job_id)}: that is no job id (digits, or "
                "digits_digits for a task of an array); see the run folder's slurm.json"
            )
    if not ids:
        raise ValueError("a dependency needs at least one job id")
    return "afterok:" + ":".join(ids)


def _add_dependency(parameters: dict, after: tuple[str, ...]) -> None:
    """Start the jobs once `after` completed successfully; cancel them if one of those fails (kill_on_invalid_dep),
    rather than leave them pending forever (DependencyNeverSatisfied): the next launch submits them again."""
    extra = parameters["additional_parameters"]
    taken = [key for key in extra if key.startswith("dep") and "dependency".startswith(key)]
    if taken:
        raise LaunchError(
            f"launcher.slurm.additional_parameters.{taken[0]} sets sbatch --dependency, which an-lab sets itself for "
            f"runs that wait for their backbone's job ({dependency(after)}); remove it",
            ("launcher", "slurm", "additional_parameters"),
        )
    parameters["dependency"] = dependency(after)
    extra.setdefault("kill_on_invalid_dep", "yes")


def sbatch_parameters(
    settings: SlurmSettings,
    shape: Shape,
    code: Path,
    count: int,
    job_name: str,
    max_parallel: int,
    after: tuple[str, ...] = (),
) -> dict:
    """submitit SlurmExecutor parameters: every sbatch setting comes from launcher.slurm and the job shape; `after`:
    the jobs these must wait for (an afterok dependency).

    submitit writes each parameter as an `#SBATCH --key=value` line of a bash script (the value shell-quoted, the key
    as it is), and the code folder into #SBATCH lines and the srun command line. SlurmSettings has checked every value
    against what sbatch accepts; `_job_script_problem` checks the result again, so that a line break can never reach
    the script, also from settings built without validation.
    """
    if (char := control_character(str(code))) is not None:
        raise LaunchError(
            f"the sweep folder {reprlib.repr(str(code.parent.parent))} holds the control character {char!r}, which a "
            "SLURM job script cannot hold (submitit writes the folder into it); choose another output_dir"
        )
    minutes = time_minutes(settings)
    parallel = settings.array_parallelism or max_parallel
    setup = [
        # The jobs import the snapshot, not the working tree; PYTHONSAFEPATH keeps the job's working directory
        # (often the checkout itself) off sys.path.
        f"export PYTHONPATH={shlex.quote(str(code))}${{PYTHONPATH:+:$PYTHONPATH}}",
        "export PYTHONSAFEPATH=1",
        "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}",
    ]
    extra = dict(settings.additional_parameters)
    if "no_requeue" not in extra:  # --no-requeue and --requeue together: sbatch would take the later, --requeue
        extra.setdefault("requeue", True)  # clusters with JobRequeue=0 refuse `scontrol requeue` otherwise
    parameters: dict = {
        "job_name": job_name,
        "time": minutes,
        "nodes": shape.nodes,
        "ntasks_per_node": shape.tasks_per_node,
        "cpus_per_task": shape.cpus_per_task,
        "array_parallelism": max(1, min(parallel, count)),
        # USR2 this long before the time limit (SLURM may send it up to a minute early): a quarter of short limits.
        "signal_delay_s": min(90, max(15, minutes * 15)),
        "setup": setup,
        "additional_parameters": extra,
    }
    optional = {
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "gpus_per_node": shape.gpus_per_node or None,
        "mem": settings.mem,
        "constraint": settings.constraint,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    if after:
        _add_dependency(parameters, after)
    if (problem := _job_script_problem(parameters)) is not None:
        raise LaunchError(f"launcher.slurm: {problem}", ("launcher", "slurm"))
    return parameters


def _job_script_problem(parameters: dict) -> str | None:
    """Why a key or value of the sbatch parameters cannot go onto an #SBATCH line: a control character (a line break
    would end the comment line and make the rest a command of the job), or a key that is no option name; else None."""
    options = {key: value for key, value in parameters.items() if key not in ("setup", "additional_parameters")}
    options.update(parameters.get("additional_parameters", {}))
    for key, value in options.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(key)):
            return f"{reprlib.repr(key)} is not an sbatch option name"
        if (char := control_character(str(value))) is not None:
            return f"{key}: {reprlib.repr(value)} holds the control character {char!r}, which a job script cannot hold"
    return None
