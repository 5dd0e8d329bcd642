"""The SLURM executor: runs become tasks of submitit job arrays, one array per job shape and at most MaxArraySize tasks,
as many as MaxSubmitJobs lets this user queue; the rest wait for room.

What a submission leaves behind, so that no process has to stay alive on the login node:

    <home>/code/<hash>/an_lab/      the code the jobs import (a snapshot, once per content hash)
    <home>/slurm/jobs.json          every submission: its sbatch job id and run id -> job id
    <home>/slurm/logs/<job id>/     submitit's pickles and each task's stdout/stderr
    <run folder>/slurm.json         this run's job: {job_id, array_job_id, submitted_at, ...}
    <run folder>/slurm-attempts.jsonl   one line per start of the job (rank 0): requeues show here

`home` is the sweep folder; the executor knows folders and runs, not sweeps. Job shapes and the partition's limits:
slurm_shape.py; the sbatch parameters: slurm_sbatch.py; the code snapshot: slurm_snapshot.py; the detached
orchestrator: slurm_orchestrator.py. Tasks run under srun.

Following: one squeue call per poll for every run in flight (jobs that left the queue have ended; their run folders
say how), every `poll_interval_s` (30 s by default), doubling up to 8 times that while nothing changes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.launch import slurm_queue as queue
from an_lab.launch.base import DONE, LEFT, STOPPED, Executor, Handle, LaunchError, RunRequest
from an_lab.launch.slurm_job import TrainRun
from an_lab.launch.slurm_queue import JOBS_FILE, LOGS_DIR, ClusterLimits
from an_lab.launch.slurm_sbatch import JOB_ID, MAX_TIMEOUT_REQUEUES, outside_allocation, sbatch_parameters
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.launch.slurm_shape import Shape, fit_problem, job_shape, refusal, time_minutes
from an_lab.launch.slurm_snapshot import snapshot_code
from an_lab.rundir import CONFIG, read_json, state, write_json_atomic

RUN_JOB = "slurm.json"
BACKOFF = 8  # the poll interval grows up to this many times launcher.slurm.poll_interval_s while nothing changes
NO_LIMIT = 10**9


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

    @classmethod
    def for_sweep(cls, home, job_name, launcher, max_parallel, poll_s, follow) -> SlurmExecutor:
        return cls(home, job_name, launcher.slurm, max_parallel, poll_interval_s=poll_s, wait=follow)

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
    scheduled = True
    can_detach = True
    claimant = "slurm submission"
    place = "on SLURM"

    @classmethod
    def queued_since(cls, run_dir: Path, since: float) -> bool:
        entry = read_json(run_dir / RUN_JOB)
        return isinstance(entry, dict) and float(entry.get("submitted_at") or 0) > since

    @classmethod
    def training_jobs(cls, run_dirs: list[Path]) -> tuple[dict[Path, str], str | None]:
        return training_jobs(run_dirs)

    @classmethod
    def submit_orchestrator(cls, home, job_name, launcher, argv) -> str:
        from an_lab.launch.slurm_orchestrator import submit_orchestrator

        return submit_orchestrator(home, job_name, launcher.slurm, argv)

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
