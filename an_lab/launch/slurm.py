"""The SLURM executor: runs become tasks of submitit job arrays, one array per job shape and at most MaxArraySize tasks,
as many as MaxSubmitJobs lets this user queue; the rest wait for room.

What a submission leaves behind, so that no process has to stay alive on the login node:

    <home>/code/<hash>/an_lab/      the code the jobs import (a snapshot, once per content hash)
    <home>/slurm/jobs.json          every submission: its sbatch job id and run id -> job id
    <home>/slurm/logs/<job id>/     submitit's pickles and each task's stdout/stderr
    <run folder>/slurm.json         this run's job: {job_id, array_job_id, submitted_at, ...}
    <run folder>/slurm-attempts.jsonl   one line per start of the job (rank 0): requeues show here

`home` is the sweep folder; the executor knows folders and runs, not sweeps. Job shape: one task per GPU,
`tasks_per_node = trainer.devices`, `nodes = trainer.num_nodes`; with no GPUs (`gpus_per_node: 0`, or a cluster without
GRES gpu) tasks_per_node is trainer.devices CPU processes (DDP over gloo). Tasks run under srun.

Following: one squeue call per poll for every run in flight (jobs that left the queue have ended; their run folders
say how), every `poll_interval_s` (30 s by default), doubling up to 8 times that while nothing changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import reprlib
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from an_lab.config import control_character
from an_lab.errors import UsageError
from an_lab.launch import slurm_queue as queue
from an_lab.launch.base import DONE, LEFT, STOPPED, Executor, Handle, LaunchError, RunRequest
from an_lab.launch.slurm_job import Orchestrate, TrainRun
from an_lab.launch.slurm_queue import JOBS_FILE, LOGS_DIR, ClusterLimits
from an_lab.launch.slurm_settings import SlurmSettings, parse_minutes
from an_lab.rundir import CONFIG, read_json, state, write_json_atomic

RUN_JOB = "slurm.json"
CODE_DIR = "code"
# Time-limit requeues per job before submitit gives up (preemptions do not count). Each attempt ends at an epoch
# boundary at worst, so a run makes progress as long as one epoch fits in the time limit.
MAX_TIMEOUT_REQUEUES = 20
BACKOFF = 8  # the poll interval grows up to this many times launcher.slurm.poll_interval_s while nothing changes
NO_LIMIT = 10**9
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


# ---------------------------------------------------------------------------------------------------------------------
# Job shapes


@dataclass(frozen=True)
class Shape:
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    cpus_per_task: int

    def describe(self) -> str:
        gpus = f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node else "no GPU"
        return f"{self.nodes} node(s) x {self.tasks_per_node} task(s), {gpus} and {self.cpus_per_task} CPU(s) per task"


GPUS_KEY = ("launcher", "slurm", "gpus_per_node")


def job_shape(request: RunRequest, settings: SlurmSettings, cluster_gpus: bool | None) -> Shape:
    """The job shape a run needs, after refusing a Trainer that does not fit the settings or the cluster."""
    trainer, name = request.config.trainer, f"run {request.run_id} ({request.label or request.run_id})"
    if trainer.num_nodes != settings.nodes:
        raise LaunchError(
            f"{name}: trainer.num_nodes is {trainer.num_nodes} but launcher.slurm.nodes is {settings.nodes}; they "
            "must be equal",
            ("launcher", "slurm", "nodes"),
        )
    devices = 1 if trainer.devices == "auto" else int(trainer.devices)
    gpus = settings.gpus_per_node
    if gpus is None:  # from the cluster: GPUs where the partition has them and the run wants them
        if trainer.accelerator == "gpu" and cluster_gpus is False:
            raise LaunchError(
                f"{name}: trainer.accelerator is gpu but the cluster's partition has no GPUs configured (no GRES gpu "
                "in sinfo); set trainer.accelerator: cpu, or launcher.slurm.gpus_per_node if the partition has GPUs",
                GPUS_KEY,
            )
        gpus = 0 if trainer.accelerator == "cpu" or not cluster_gpus else devices
    elif gpus > 0:
        if trainer.accelerator == "cpu":
            raise LaunchError(
                f"{name}: trainer.accelerator is cpu but launcher.slurm.gpus_per_node is {gpus}; set "
                "launcher.slurm.gpus_per_node: 0 for CPU jobs",
                GPUS_KEY,
            )
        if devices != gpus:
            raise LaunchError(
                f"{name}: trainer.devices is {trainer.devices} but launcher.slurm.gpus_per_node is {gpus}; one task "
                "per GPU needs them equal",
                GPUS_KEY,
            )
    elif trainer.accelerator == "gpu":
        raise LaunchError(
            f"{name}: trainer.accelerator is gpu but launcher.slurm.gpus_per_node is 0; ask for GPUs", GPUS_KEY
        )
    cpus = settings.cpus_per_task or request.config.data.num_workers + 1
    return Shape(settings.nodes, devices, gpus, cpus)


def time_minutes(settings: SlurmSettings, partition: queue.Partition | None = None) -> int:
    if settings.time is not None:
        try:
            return parse_minutes(settings.time)
        except ValueError as error:
            raise LaunchError(f"launcher.slurm.time: {error}", ("launcher", "slurm", "time")) from None
    # submitit always writes a --time; take the partition's own default (else its maximum) rather than submitit's
    # 5 minutes
    if partition is None:
        partition = queue.partition_info(settings.partition)
    found = partition.default_minutes or partition.max_minutes if partition is not None else None
    return found or 365 * 24 * 60


def show_minutes(minutes: int) -> str:
    """A time limit as SLURM writes it: 5:00, 2:00:00, 1-00:00:00."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours}:{mins:02d}:00" if hours else f"{mins}:00"


MEMORY_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_mb(text: str) -> float:
    """A SLURM memory size (64G, 1000, 500M) in megabytes (no unit: megabytes)."""
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    return int(match.group(1)) * MEMORY_UNITS[match.group(2) or "M"] if match else 0.0


def fit_problem(shape: Shape, minutes: int, settings: SlurmSettings, partition: queue.Partition) -> LaunchError | None:
    """Why a job of this shape and time can never start in the partition (sbatch would accept it and leave it
    pending for ever, or refuse it with raw errors), as one paragraph with its key; None when it fits."""
    where = f"partition {partition.name}"
    if partition.max_minutes is not None and minutes > partition.max_minutes:
        return LaunchError(
            f"launcher.slurm.time asks {show_minutes(minutes)} per job but {where} allows at most "
            f"{show_minutes(partition.max_minutes)} (its MaxTime): the job would pend for ever (PartitionTimeLimit). "
            f"Ask for at most {show_minutes(partition.max_minutes)}: a run that needs longer is requeued at its time "
            "limit and resumes from its checkpoint; or choose another partition",
            ("launcher", "slurm", "time"),
        )
    if partition.node_limit and shape.nodes > partition.node_limit:
        return LaunchError(
            f"launcher.slurm.nodes is {shape.nodes} but {where} gives one job at most {partition.node_limit} "
            "node(s); ask for at most that many (and set trainer.num_nodes to match)",
            ("launcher", "slurm", "nodes"),
        )
    cpus = shape.tasks_per_node * shape.cpus_per_task
    if partition.cpus_per_node and cpus > partition.cpus_per_node:
        return LaunchError(
            f"a job needs {cpus} CPUs per node ({shape.tasks_per_node} task(s) x {shape.cpus_per_task} CPUs: "
            f"launcher.slurm.cpus_per_task, else data.num_workers + 1) but the largest node of {where} has "
            f"{partition.cpus_per_node}; lower launcher.slurm.cpus_per_task or data.num_workers",
            ("launcher", "slurm", "cpus_per_task"),
        )
    wanted = memory_mb(settings.mem) if settings.mem else 0.0
    if partition.memory_mb and wanted > partition.memory_mb:
        return LaunchError(
            f"launcher.slurm.mem is {settings.mem} per node but the largest node of {where} has "
            f"{partition.memory_mb} MB; ask for at most {partition.memory_mb}M (0: all of a node's memory)",
            ("launcher", "slurm", "mem"),
        )
    gres = [key for key, value in settings.additional_parameters.items() if _asks_for_gpus(key, value)]
    if not partition.gpus and (shape.gpus_per_node or gres):
        key = ("launcher", "slurm", "additional_parameters") if gres else GPUS_KEY
        what = f"additional_parameters.{gres[0]}" if gres else f"gpus_per_node {shape.gpus_per_node}"
        return LaunchError(
            f"launcher.slurm.{what} asks for GPUs but no node of {where} has GRES gpu (sinfo); remove it for CPU "
            "jobs (trainer.accelerator: cpu), or choose a partition with GPUs",
            key,
        )
    return None


def _asks_for_gpus(key: str, value: object) -> bool:
    lowered = str(key).lower()
    if lowered in ("gpus", "gpus_per_node", "gpus_per_task", "gpus_per_socket", "gpu"):
        return str(value).strip() not in ("0", "")
    return lowered in ("gres", "tres_per_node", "tres_per_task") and "gpu" in str(value).lower()


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


def refusal(detail: str, limits: ClusterLimits, tasks: int) -> str:
    """sbatch's refusal with the cluster limit it most likely hit."""
    lowered = detail.lower()
    if "array" in lowered and limits.max_array_size is not None:
        detail += f" (MaxArraySize is {limits.max_array_size}; this array had {tasks} tasks)"
    elif ("submit" in lowered or "qos" in lowered or "policy" in lowered) and limits.max_submit_jobs is not None:
        detail += f" ({limits.submit_limit_source} is {limits.max_submit_jobs} jobs; each array task counts)"
    return detail


# ---------------------------------------------------------------------------------------------------------------------
# Code snapshot


def package_dir() -> Path:
    import an_lab

    return Path(an_lab.__file__).resolve().parent


def _package_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    )


def snapshot_code(sweep_dir: Path) -> Path:
    """Copy the an_lab package into <sweep folder>/code/<hash of its files>/an_lab once; return that code folder."""
    source = package_dir()
    files = _package_files(source)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    target = Path(sweep_dir).resolve() / CODE_DIR / digest.hexdigest()[:12]
    if (target / "an_lab").is_dir():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for path in files:
        copy = staging / "an_lab" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    try:
        os.replace(staging, target)
    except OSError:  # another submission made the same snapshot first
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------------------------------
# The executor


@dataclass
class Submission:
    job_id: str  # what sbatch returned: the array's id
    runs: dict[str, str]  # run id -> job id ("<array>_<task>")
    shape: Shape
    seconds: float
    after: tuple[str, ...] = ()  # the jobs it waits for (afterok)


class SlurmExecutor(Executor):
    """Submits runs as job arrays and follows them with one squeue call per poll."""

    name = "slurm"

    def __init__(
        self,
        home: Path,
        job_name: str,
        settings: SlurmSettings | None,
        max_parallel: int,
        workdir: Path | None = None,
        limits: ClusterLimits | None = None,
        poll_interval_s: float | None = None,
        wait: bool = True,
    ) -> None:
        self.follows = wait  # --wait: follow the jobs to their end; else submit and leave
        self.home = Path(home).resolve()
        self.job_name = job_name
        self.settings = settings or SlurmSettings()
        self.max_parallel = max_parallel
        self.workdir = str(workdir or os.getcwd())  # relative paths in run configs are relative to the launch folder
        self.limits = limits if limits is not None else queue.cluster_limits(self.settings.partition)
        self.base_interval = poll_interval_s or self.settings.poll_interval_s
        self.interval = self.base_interval
        self.tick_s = min(2.0, self.base_interval)
        self.next_poll = 0.0
        self.flying: dict[str, Handle] = {}  # job id -> handle
        self.last_view: dict[str, str] = {}
        self.queued: int | None = None  # this user's jobs in the queue, as last counted
        self.submissions: list[Submission] = []
        self.scheduler_calls = 0
        self._refused: set[str] = set()  # run ids whose job failed in the scheduler (relaunched with --retry-failed)
        self.notes: list[str] = []

    can_wait_for_jobs = True

    @property
    def refused(self) -> set[str]:
        return self._refused

    def interrupted_words(self) -> str:
        return "the sweep's SLURM jobs were left as they are (an-lab status shows them, an-lab cancel stops them)"

    def in_flight_words(self, adopted: int, running: int) -> str:
        return f"{adopted} queued or running on SLURM"

    def followed_lines(self, seconds: float) -> list[str]:
        minutes = max(seconds, 1.0) / 60
        calls = self.scheduler_calls
        return [f"followed for {minutes:.1f} min with {calls} scheduler calls ({calls / minutes:.1f} per minute)"]

    def submitted_lines(self, home: Path) -> list[str]:
        lines = []
        for submission in self.submissions:
            count = len(submission.runs)
            waits = f", waiting for job(s) {', '.join(submission.after)} (afterok)" if submission.after else ""
            lines.append(
                f"submitted job array {submission.job_id} ({count} task{'s' * (count != 1)}, "
                f"{submission.shape.describe()}{waits}) with one sbatch call in {submission.seconds:.2f} s"
            )
        if self.submissions:
            lines.append(f"  code snapshot and logs: {home}/code/, {home}/slurm/logs/<job id>/")
        return lines

    # -- room under MaxSubmitJobs ---------------------------------------------------------------------------------
    def slots(self) -> int:
        if self.limits.max_submit_jobs is None:
            return NO_LIMIT
        if self.queued is None:
            self.queued = queue.queued_count()
            self.scheduler_calls += 1
        return max(0, self.limits.max_submit_jobs - (self.queued or 0))

    # -- submission -----------------------------------------------------------------------------------------------
    def check(self, requests: list[RunRequest]) -> None:
        """Refuse, before anything is submitted, runs whose shape does not fit the settings, a bad time limit, and
        jobs the partition can never start (time, nodes, CPUs and memory per node, GPUs: fit_problem)."""
        shapes = {job_shape(request, self.settings, self.limits.gpus) for request in requests}
        if not shapes:
            return
        partition = self.partition()
        minutes = time_minutes(self.settings, partition)
        if partition is None:
            return  # sinfo could not tell: sbatch will
        for shape in sorted(shapes, key=lambda shape: shape.describe()):
            if (problem := fit_problem(shape, minutes, self.settings, partition)) is not None:
                raise problem

    def partition(self) -> queue.Partition | None:
        """The partition the jobs go to, read once (one sinfo call)."""
        if not hasattr(self, "_partition"):
            self._partition = queue.partition_info(self.settings.partition)
            self.scheduler_calls += 1
        return self._partition

    def submit(self, requests: list[RunRequest]) -> list[Handle]:
        """One array per job shape and set of jobs to wait for (runs that wait for different backbones' jobs go to
        different arrays: one array has one --dependency)."""
        groups: dict[tuple[Shape, tuple[str, ...]], list[RunRequest]] = {}
        for request in requests:
            shape = job_shape(request, self.settings, self.limits.gpus)
            groups.setdefault((shape, tuple(sorted(set(request.after)))), []).append(request)
        size = self.limits.max_array_size or NO_LIMIT
        handles: list[Handle] = []
        for (shape, after), members in groups.items():
            for start in range(0, len(members), size):
                handles += self._submit_array(shape, members[start : start + size], after)
        return handles

    def _submit_array(self, shape: Shape, requests: list[RunRequest], after: tuple[str, ...] = ()) -> list[Handle]:
        import submitit
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        started = time.perf_counter()
        code = snapshot_code(self.home)
        parameters = sbatch_parameters(
            self.settings, shape, code, len(requests), self.job_name, self.max_parallel, after
        )
        logs = self.home / LOGS_DIR
        try:
            executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
        except RuntimeError as error:
            raise LaunchError(
                f"--executor slurm: {error} (run on a SLURM login node, or use --executor local)"
            ) from None
        try:
            executor.update_parameters(**parameters)
        except ValueError as error:
            raise LaunchError(f"launcher.slurm: {str(error).splitlines()[0]}", ("launcher", "slurm")) from None
        configs = [str((request.run_dir / CONFIG).resolve()) for request in requests]
        try:
            with outside_allocation():
                jobs = executor.map_array(TrainRun(self.workdir), configs)
        except (FailedJobError, FailedSubmissionError, OSError) as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            detail = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no output")
            raise LaunchError(
                f"sbatch refused a job array of {len(requests)} runs of {self.job_name}: "
                f"{refusal(detail.strip(), self.limits, len(requests))}"
            ) from None
        submitted_at = time.time()
        ids = {request.run_id: str(job.job_id) for request, job in zip(requests, jobs, strict=True)}
        submission = Submission(queue.array_id(next(iter(ids.values()))), ids, shape, 0.0, after)
        self._record(requests, submission, parameters, code, submitted_at)
        submission.seconds = time.perf_counter() - started
        self.submissions.append(submission)
        if self.queued is not None:
            self.queued += len(requests)
        handles = []
        for request in requests:
            handle = Handle(request, ids[request.run_id], submitted_at)
            self.flying[handle.job_id] = handle
            handles.append(handle)
        return handles

    def _record(self, requests: list[RunRequest], submission: Submission, parameters: dict, code: Path, at: float):
        path = self.home / JOBS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        record = read_json(path) or {"submissions": []}
        record["submissions"].append(
            {
                "job_id": submission.job_id,
                "array": True,
                "tasks": len(requests),
                "submitted_at": at,
                "code": str(code),
                "logs": str(self.home / LOGS_DIR),
                "sbatch": {k: v for k, v in parameters.items() if k != "setup"},
                "runs": submission.runs,
            }
        )
        write_json_atomic(path, record)
        for request in requests:
            job_id = submission.runs[request.run_id]
            previous = read_json(request.run_dir / RUN_JOB)
            history = [*previous.pop("previous", []), previous] if previous else []
            entry = {
                "job_id": job_id,
                "array_job_id": submission.job_id,
                "array_task_id": int(job_id.split("_", 1)[1]) if "_" in job_id else None,
                "submitted_at": at,
                "sweep_dir": str(self.home),
                "code": str(code),
                "log": str(queue.log_file(self.home, job_id, "out")),
                "previous": history,
            }
            write_json_atomic(request.run_dir / RUN_JOB, entry)

    # -- following ------------------------------------------------------------------------------------------------
    def adopt(self, requests: list[RunRequest]) -> list[Handle]:
        """Runs whose recorded job (slurm.json) is still queued or running: followed, not submitted again. Runs whose
        job ended as failed in the scheduler's accounting go into `refused` (relaunched only with --retry-failed).
        One squeue and one sacct call."""
        recorded = {}
        ledger = queue.submitted_jobs(self.home)  # the sweep's own record: it survives a damaged or deleted run folder
        for request in requests:
            for job_id, submitted_at in ledger.get(request.run_id, []):
                recorded[job_id] = (request, submitted_at)
            entry = read_json(request.run_dir / RUN_JOB)
            if isinstance(entry, dict) and isinstance(entry.get("job_id"), str):
                recorded[entry["job_id"]] = (request, float(entry.get("submitted_at") or time.time()))
        if not recorded:
            return []
        view = queue.query(recorded)
        self.scheduler_calls += 2
        self.notes += view.notes
        handles, followed = [], set()
        for job_id, job in sorted(view.jobs.items(), key=lambda item: -recorded[item[0]][1]):  # the latest first
            request, submitted_at = recorded[job_id]
            if job.active and request.run_id not in followed:
                followed.add(request.run_id)
                _restore(request, job_id, submitted_at, self.home)
                handle = Handle(request, job_id, submitted_at)
                self.flying[job_id] = handle
                handles.append(handle)
            elif job.failed and request.run_id not in followed:
                self._refused.add(request.run_id)
        return handles

    def poll(self) -> list[Handle]:
        if not self.flying or time.monotonic() < self.next_poll:
            return []
        running, _ = queue.active(self.flying)
        self.scheduler_calls += 1
        if running is None:  # the queue could not be read: ask again later, report nothing
            self._backoff(changed=False)
            return []
        self.queued = None  # count again before the next submission
        stuck = sorted((job for job_id, job in running.items() if job_id in self.flying and job.stuck), key=str)
        if stuck:
            raise LaunchError(never_starts(stuck))
        view = {job_id: job.state for job_id, job in running.items()}
        ended = []
        for job_id in [job_id for job_id in self.flying if job_id not in running]:
            handle = self.flying.pop(job_id)
            current, _ = state(handle.run_dir)
            handle.outcome = STOPPED if handle.stopping else DONE if current == "done" else LEFT
            ended.append(handle)
        self._backoff(changed=bool(ended) or view != self.last_view)
        self.last_view = view
        return ended

    def _backoff(self, changed: bool) -> None:
        self.interval = self.base_interval if changed else min(self.interval * 2, self.base_interval * BACKOFF)
        self.next_poll = time.monotonic() + self.interval

    def in_flight(self) -> list[Handle]:
        return list(self.flying.values())

    def stop(self, handle: Handle) -> None:
        handle.stopping = True
        queue.cancel_one(handle.job_id)
        self.next_poll = 0.0  # see it leave at the next poll

    def describe(self, handle: Handle) -> str:
        word = self.last_view.get(handle.job_id)
        return f"slurm {handle.job_id}" + (f" {word.lower()}" if word else "")


def _restore(request: RunRequest, job_id: str, submitted_at: float, home: Path) -> None:
    """A queued job's run folder as the job needs it when it starts: its config.json, and a slurm.json naming the
    job (rewritten when it was damaged or deleted, so that status and the next launch see the job)."""
    try:
        request.run_dir.mkdir(parents=True, exist_ok=True)
        if read_json(request.run_dir / CONFIG) is None:
            write_json_atomic(request.run_dir / CONFIG, request.config.model_dump(mode="json"))
        entry = read_json(request.run_dir / RUN_JOB)
        if not isinstance(entry, dict) or entry.get("job_id") != job_id:
            entry = {
                "job_id": job_id,
                "array_job_id": queue.array_id(job_id),
                "array_task_id": int(job_id.split("_", 1)[1]) if "_" in job_id else None,
                "submitted_at": submitted_at,
                "sweep_dir": str(home),
                "log": str(queue.log_file(home, job_id, "out")),
                "previous": [],
                "restored_from": "the sweep's slurm/jobs.json",
            }
            write_json_atomic(request.run_dir / RUN_JOB, entry)
    except (OSError, UsageError):
        return  # the job itself says what is wrong when it starts


def never_starts(jobs: list) -> str:
    """Why following stops: jobs that the scheduler will never start, and what to do."""
    shown = ", ".join(f"{job.job_id} ({job.reason})" for job in jobs[:5]) + (" ..." if len(jobs) > 5 else "")
    return (
        f"{len(jobs)} job(s) can never start as submitted: {shown}; SLURM keeps them pending for ever. Cancel them "
        "(an-lab cancel SWEEP), change what the reason names (launcher.slurm: time, nodes, partition, qos, account), "
        "then launch again: finished runs are kept and the others resume"
    )


def training_jobs(run_dirs: list[Path]) -> tuple[dict[Path, str], str | None]:
    """The SLURM job that is queued or running each of these runs: the job its folder's slurm.json records (written at
    submission), if one squeue call still lists it as active. Returns (run folder -> job id, None), or ({}, why the
    queue could not be read); runs without such a job are left out."""
    recorded: dict[Path, str] = {}
    for directory in run_dirs:
        entry = read_json(Path(directory) / RUN_JOB)
        job_id = entry.get("job_id") if isinstance(entry, dict) else None
        if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
            recorded[directory] = job_id
    if not recorded:
        return {}, None
    running, error = queue.active(recorded.values())
    if running is None:
        return {}, error
    return {directory: job_id for directory, job_id in recorded.items() if job_id in running}, None


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
    extra = {key: value for key, value in settings.additional_parameters.items() if not _asks_for_gpus(key, value)}
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
