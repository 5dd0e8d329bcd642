"""The SLURM executor: all runs of a sweep that are not done as ONE submitit job array (one sbatch call).

    an-lab sweep SWEEP.yaml --executor slurm [--wait]

What a submission leaves behind, so that no process has to stay alive on the login node:

    <output_dir>/sweeps/<name>/code/<hash>/an_lab/   the code the jobs import (a snapshot, once per content hash)
    <output_dir>/sweeps/<name>/slurm/jobs.json       every submission: its sbatch job id and run id -> job id
    <output_dir>/sweeps/<name>/slurm/logs/<job id>/  submitit's pickles and each task's stdout/stderr
    <output_dir>/<run_id>/slurm.json                 this run's job: {job_id, array_job_id, submitted_at, ...}
    <output_dir>/<run_id>/slurm-attempts.jsonl       one line per start of the job (rank 0): requeues show here

Each array task calls `TrainRun(config_path)`, which trains the run in-process (`train()`, resuming from last.ckpt).
On time limits and preemption submitit's signal handler (global rank 0 only) calls `TrainRun.checkpoint()`, which
returns the same call: the requeued job simply resumes from the last epoch-end checkpoint (nothing is saved inside
the signal handler, so no collective runs there), and W&B continues under the run id.

Job shape: one task per GPU, `tasks_per_node = gpus_per_node = trainer.devices`, `nodes = trainer.num_nodes`; with
`gpus_per_node: 0` (CPU jobs) tasks_per_node is taken from `trainer.devices` (DDP over gloo). Tasks run under srun,
Lightning gets `SLURMEnvironment(auto_requeue=False)` (submitit alone requeues), MASTER_PORT comes from the job id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import shlex
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from an_lab.config import control_character
from an_lab.errors import UsageError
from an_lab.rundir import CONFIG, read_json, state, write_json_atomic
from an_lab.slurm import scheduler
from an_lab.slurm.scheduler import JOBS_FILE, LOGS_DIR
from an_lab.sweeps.expand import PlannedRun
from an_lab.sweeps.spec import SlurmSettings, Sweep

RUN_JOB = "slurm.json"
ATTEMPTS = "slurm-attempts.jsonl"
CODE_DIR = "code"
# Time-limit requeues per job before submitit gives up (preemptions do not count). Each attempt ends at an epoch
# boundary at worst, so a run makes progress as long as one epoch fits in the time limit.
MAX_TIMEOUT_REQUEUES = 20
# After a SIGTERM, how long a task waits for the USR2 that follows it on preemption (submitit checkpoints and requeues
# on USR2). scancel sends SIGTERM alone: the task then exits 143 after this grace, well inside SLURM's KillWait.
PREEMPT_GRACE_S = 3.0
PORT_BASE, PORT_SPAN = 20000, 20000


def master_port(job_id: int) -> int:
    """The DDP rendezvous port of a job: distinct for jobs sharing a node unless their ids differ by 20000."""
    return PORT_BASE + job_id % PORT_SPAN


# ---------------------------------------------------------------------------------------------------------------------
# Settings -> sbatch parameters


def parse_minutes(value: str | int) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes, rounded up."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"{value!r} is not a SLURM time limit (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = (int(part) if part else None for part in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = first * 3600 + second * 60 + third
    elif second is not None:  # MM:SS
        seconds = first * 60 + second
    else:  # minutes
        seconds = first * 60
    if seconds <= 0:
        raise ValueError(f"time limit {value!r} is not positive")
    return -(-seconds // 60)


def _partition_minutes(partition: str | None) -> int | None:
    """The default (else maximum) time limit of the partition from one sinfo call; None when infinite or unreadable."""
    out, _ = scheduler._run(["sinfo", "--noheader", "--format", "%P|%L|%l"])
    for line in (out or "").splitlines():
        name, _, limits = line.partition("|")
        default = name.endswith("*")
        if (partition is None and default) or name.rstrip("*") == partition:
            for limit in limits.split("|"):
                if limit.strip().lower() not in ("n/a", "infinite", "unlimited", ""):
                    try:
                        return parse_minutes(limit)
                    except ValueError:
                        continue
            return None
    return None


def job_shape(sweep: Sweep, runs: list[PlannedRun], settings: SlurmSettings) -> int:
    """Tasks per node of the array, after refusing any run whose Trainer does not match the job's shape."""
    where = ("launcher", "slurm", "gpus_per_node")
    tasks: set[int] = set()
    for run in runs:
        trainer = run.config.trainer
        name = f"run {run.run_id} ({run.cell.label})"
        if trainer.devices == "auto":
            raise sweep.error(
                f"{name}: trainer.devices is 'auto'; under SLURM give the processes per node as a number "
                f"(= launcher.slurm.gpus_per_node, or CPU processes when gpus_per_node is 0)",
                where,
            )
        if trainer.num_nodes != settings.nodes:
            raise sweep.error(
                f"{name}: trainer.num_nodes is {trainer.num_nodes} but launcher.slurm.nodes is {settings.nodes}; "
                "they must be equal",
                ("launcher", "slurm", "nodes"),
            )
        if settings.gpus_per_node > 0:
            if trainer.accelerator == "cpu":
                raise sweep.error(
                    f"{name}: trainer.accelerator is cpu but launcher.slurm.gpus_per_node is "
                    f"{settings.gpus_per_node}; set launcher.slurm.gpus_per_node: 0 for CPU jobs",
                    where,
                )
            if trainer.devices != settings.gpus_per_node:
                raise sweep.error(
                    f"{name}: trainer.devices is {trainer.devices} but launcher.slurm.gpus_per_node is "
                    f"{settings.gpus_per_node}; one task per GPU needs them equal",
                    where,
                )
        elif trainer.accelerator == "gpu":
            raise sweep.error(
                f"{name}: trainer.accelerator is gpu but launcher.slurm.gpus_per_node is 0; ask for GPUs", where
            )
        tasks.add(int(trainer.devices))
    if len(tasks) > 1:
        raise sweep.error(
            f"the runs to launch ask for different trainer.devices ({sorted(tasks)}); one job array has one shape: "
            "launch them as separate sweeps",
            where,
        )
    return tasks.pop() if tasks else max(1, settings.gpus_per_node)


def sbatch_parameters(sweep: Sweep, settings: SlurmSettings, tasks_per_node: int, code: Path, count: int) -> dict:
    """submitit SlurmExecutor parameters: every sbatch setting comes from the sweep file's launcher.slurm.

    submitit writes each parameter as an `#SBATCH --key=value` line of a bash script (the value shell-quoted, the key
    as it is), and the sweep folder into #SBATCH lines and the srun command line. SlurmSettings has checked every value
    against what sbatch accepts; `_job_script_problem` checks the result again, so that a line break can never reach
    the script, also from settings built without validation.
    """
    if (char := control_character(str(code))) is not None:
        raise sweep.error(
            f"the sweep folder {reprlib.repr(str(code.parent.parent))} holds the control character {char!r}, which a "
            "SLURM job script cannot hold (submitit writes the folder into it); choose another output_dir",
            ("output_dir",),
            ("base", "output_dir"),
        )
    if settings.time is not None:
        try:
            minutes = parse_minutes(settings.time)
        except ValueError as error:
            raise sweep.error(f"launcher.slurm.time: {error}", ("launcher", "slurm", "time")) from None
    else:  # submitit always writes a --time; take the partition's own default rather than submitit's 5 minutes
        minutes = _partition_minutes(settings.partition) or 365 * 24 * 60
    parallel = settings.array_parallelism or sweep.spec.launcher.max_parallel
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
        "job_name": f"an-lab-{sweep.name}",
        "time": minutes,
        "nodes": settings.nodes,
        "ntasks_per_node": tasks_per_node,
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
        "cpus_per_task": settings.cpus_per_task,
        "gpus_per_node": settings.gpus_per_node or None,
        "mem": settings.mem,
        "constraint": settings.constraint,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    if (problem := _job_script_problem(parameters)) is not None:
        raise sweep.error(f"launcher.slurm: {problem}", ("launcher", "slurm"))
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
# The job's callable


class TrainRun:
    """What each array task runs: train one run, in this process, from its config file.

    Checkpointable in submitit's sense: on a time limit or a preemption submitit calls `checkpoint()` on global rank 0
    and requeues the job with the call it returns, which is this same call; `train()` then resumes from last.ckpt.
    """

    def __init__(self, workdir: str, grace_s: float = PREEMPT_GRACE_S) -> None:
        self.workdir = workdir  # relative paths in run configs are relative to where the sweep was submitted
        self.grace_s = grace_s

    def __call__(self, config_path: str) -> dict:
        os.chdir(self.workdir)
        job_id = os.environ.get("SLURM_JOB_ID")
        if job_id and job_id.isdigit():
            os.environ["MASTER_PORT"] = str(master_port(int(job_id)))  # never the submitting shell's port
        from an_lab.config import load_config, run_dir

        config = load_config(config_path)
        if int(os.environ.get("SLURM_PROCID", "0")) == 0:
            _record_attempt(run_dir(config))
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        from an_lab.lightning_modules.train import RunBusy, train

        plugins = [SLURMEnvironment(auto_requeue=False)] if "SLURM_NTASKS" in os.environ else None
        preempt = _PreemptSignal()
        try:
            result = train(config, plugins=plugins, progress=False)
        except RunBusy as busy:  # another launcher trains this run: it is trained once, by that owner
            print(f"note: {busy}", flush=True)
            return {"run_id": run_dir(config).name, "busy": str(busy)}
        except SystemExit as stop:
            # train() exits 143 on SIGTERM. submitit's preemption sends SIGTERM and then USR2, whose handler
            # (rank 0) checkpoints, requeues and exits: give it the time to arrive.
            if stop.code == 143:
                preempt.wait(self.grace_s)
            raise
        finally:
            preempt.restore()
        return {"run_id": result.get("run_id"), "final": result.get("final")}

    def checkpoint(self, config_path: str):
        """Called by submitit in the signal handler of global rank 0: no collective, no saving here."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config_path)


class _PreemptSignal:
    """Notes whether submitit's requeue signal came, passing it on to submitit's own handler."""

    def __init__(self) -> None:
        self.number = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        self.seen = False
        self.previous = signal.getsignal(self.number)
        signal.signal(self.number, self._relay)

    def _relay(self, signum, frame) -> None:
        self.seen = True
        if callable(self.previous):
            self.previous(signum, frame)  # rank 0: checkpoint, requeue and sys.exit

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.seen and time.monotonic() < deadline:
            time.sleep(0.05)

    def restore(self) -> None:
        signal.signal(self.number, self.previous)


def _record_attempt(directory: Path) -> None:
    import an_lab

    directory.mkdir(parents=True, exist_ok=True)
    env = os.environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    entry = {
        "job_id": f"{array}_{task}" if array and task else env.get("SLURM_JOB_ID"),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "restart": int(env.get("SLURM_RESTART_COUNT", "0") or 0),
        "tasks": int(env.get("SLURM_NTASKS", "1") or 1),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "an_lab": an_lab.__file__,  # the snapshot the job imported
        "master_port": env.get("MASTER_PORT"),
        "started_at": time.time(),
    }
    with (directory / ATTEMPTS).open("a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Submission


@dataclass
class Submission:
    job_id: str  # what sbatch returned: the array's id, or a plain job's id for a single run
    runs: dict[str, str]  # run id -> job id ("<array>_<task>", or the plain id)
    code: Path
    logs: Path
    submitted_at: float
    seconds: float


def submit(sweep: Sweep, runs: list[PlannedRun]) -> Submission:
    """Submit the runs as one job array (one sbatch call) and record the job ids; returns once they are queued."""
    settings = sweep.spec.launcher.slurm or SlurmSettings()
    tasks_per_node = job_shape(sweep, runs, settings)
    started = time.perf_counter()
    sweep_dir = sweep.sweep_dir.resolve()
    code = snapshot_code(sweep_dir)
    parameters = sbatch_parameters(sweep, settings, tasks_per_node, code, len(runs))
    import submitit
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    logs = sweep_dir / LOGS_DIR
    try:
        executor = submitit.SlurmExecutor(folder=logs / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    except RuntimeError as error:
        raise UsageError(f"--executor slurm: {error} (run on a SLURM login node, or use --executor local)") from None
    try:
        executor.update_parameters(**parameters)
    except ValueError as error:
        raise sweep.error(f"launcher.slurm: {str(error).splitlines()[0]}", ("launcher", "slurm")) from None
    runner = TrainRun(os.getcwd())
    configs = [str((run.run_dir / CONFIG).resolve()) for run in runs]
    try:
        jobs = executor.map_array(runner, configs)
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        detail = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no output")
        raise UsageError(f"sbatch refused the job array of sweep {sweep.name}: {detail.strip()}") from None
    submitted_at = time.time()
    job_ids = {run.run_id: str(job.job_id) for run, job in zip(runs, jobs, strict=True)}
    submission = Submission(
        job_id=scheduler.array_id(next(iter(job_ids.values()))),
        runs=job_ids,
        code=code,
        logs=logs,
        submitted_at=submitted_at,
        seconds=0.0,
    )
    _record(sweep_dir, runs, submission, parameters)
    submission.seconds = time.perf_counter() - started
    return submission


def _record(sweep_dir: Path, runs: list[PlannedRun], submission: Submission, parameters: dict) -> None:
    path = sweep_dir / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = read_json(path) or {"submissions": []}
    is_array = len(runs) > 1
    record["submissions"].append(
        {
            "job_id": submission.job_id,
            "array": is_array,
            "tasks": len(runs),
            "submitted_at": submission.submitted_at,
            "code": str(submission.code),
            "logs": str(submission.logs),
            "sbatch": {k: v for k, v in parameters.items() if k != "setup"},
            "runs": submission.runs,
        }
    )
    write_json_atomic(path, record)
    for run in runs:
        job_id = submission.runs[run.run_id]
        previous = read_json(run.run_dir / RUN_JOB)
        history = [*previous.pop("previous", []), previous] if previous else []
        entry = {
            "job_id": job_id,
            "array_job_id": submission.job_id if is_array else None,
            "array_task_id": int(job_id.split("_", 1)[1]) if is_array else None,
            "submitted_at": submission.submitted_at,
            "sweep_dir": str(sweep_dir),
            "code": str(submission.code),
            "log": str(scheduler.log_file(sweep_dir, job_id, "out")),
            "previous": history,
        }
        write_json_atomic(run.run_dir / RUN_JOB, entry)


# ---------------------------------------------------------------------------------------------------------------------
# `an-lab sweep --executor slurm`


def launch_sweep(sweep: Sweep, retry_failed: bool, wait: bool) -> dict[str, str]:
    """Prepare the sweep, submit what is missing as one array, print what happened; returns the run id -> job id of
    every run that has a job queued or running now (to follow with --wait).

    The sweep's launch lock is held from selection to the recorded submission, so two launches of one sweep never
    queue a run twice; runs another process is training (their claim is held) are left to it."""
    from an_lab.sweeps.launch import prepare, sweep_lock

    if sweep.mode == "search":
        raise UsageError(
            f"{sweep.path}: a search sweep asks Optuna between trials from one process; run it with --executor local"
        )
    with sweep_lock(sweep):
        selection = prepare(sweep, retry_failed)
        return _submit_missing(sweep, selection, retry_failed, wait)


def _submit_missing(sweep: Sweep, selection, retry_failed: bool, wait: bool) -> dict[str, str]:
    from an_lab.sweeps.launch import claim_run

    recorded = scheduler.recorded_jobs(sweep.sweep_dir)
    candidates = {
        run.run_id: recorded[run.run_id] for run in selection.launch + selection.running if run.run_id in recorded
    }
    view = scheduler.query(candidates.values()) if candidates else scheduler.QueueView()
    for note in view.notes:
        print(f"note: {note}")
    queued = {run_id: job for run_id, job in candidates.items() if job in view.jobs and view.jobs[job].active}
    failed_by_scheduler = {
        run_id for run_id, job in candidates.items() if job in view.jobs and view.jobs[job].failed and not retry_failed
    }
    launch = [run for run in selection.launch if run.run_id not in queued and run.run_id not in failed_by_scheduler]
    failed = len(selection.failed) + len([run for run in selection.launch if run.run_id in failed_by_scheduler])
    settings = sweep.spec.launcher.slurm or SlurmSettings()
    job_shape(sweep, launch, settings)  # refuse a mismatched shape before anything is submitted or printed
    if settings.time is not None:
        try:
            parse_minutes(settings.time)
        except ValueError as error:
            raise sweep.error(f"launcher.slurm.time: {error}", ("launcher", "slurm", "time")) from None
    ready, elsewhere = [], 0
    for run in launch:  # a brief claim: the config is written under it; the job claims the run again when it starts
        claim = claim_run(run, retry_failed, "slurm submission")
        if claim is None:
            elsewhere += 1
            continue
        claim.release()
        ready.append(run)
    print(
        f"sweep {sweep.name}: {len(ready)} to run, {len(selection.done)} done, "
        f"{failed} failed or corrupt (kept; --retry-failed relaunches them), {len(queued)} queued or running on SLURM"
        + (f", {elsewhere} being trained by other processes" if elsewhere else "")
    )
    if ready:
        submission = submit(sweep, ready)
        kind = f"job array {submission.job_id} ({len(ready)} tasks)" if len(ready) > 1 else f"job {submission.job_id}"
        print(f"submitted {kind} with one sbatch call in {submission.seconds:.2f} s")
        print(f"  code snapshot: {submission.code}")
        print(f"  logs:          {submission.logs}/<job id>/")
        queued.update(submission.runs)
    if queued and not wait:
        print(f"follow with: an-lab status {sweep.path}   (stop with: an-lab cancel {sweep.path})")
    return queued


def follow(sweep: Sweep, jobs: dict[str, str], poll_s: float = 1.0) -> None:
    """Show the jobs' progress until none is queued or running (one squeue call per poll)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from an_lab.rundir import RESULT
    from an_lab.sweeps.manifest import load_manifest

    directories = {run_id: sweep.output_dir / run_id for run_id in jobs}
    manifest = load_manifest(sweep.sweep_dir)
    labels = {run["run_id"]: cell["label"] for cell in manifest["cells"] for run in cell["runs"]}
    reported: set[str] = set()
    failures = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"{sweep.name}: runs", total=len(jobs))
        try:
            while True:
                active, error = scheduler.active(jobs.values())
                for run_id, directory in directories.items():
                    if run_id in reported:
                        continue
                    result = read_json(directory / RESULT)
                    if result is None and (active is None or jobs[run_id] in active):
                        continue  # still queued or running (a retried run keeps its old failed.json until it starts)
                    reported.add(run_id)
                    current, detail = state(directory)
                    outcome = f"top-1 err {result['final']['top1_err']:.2f}%" if result else f"{current} ({detail})"
                    line = f"{labels.get(run_id, run_id)} [{run_id}] slurm {jobs[run_id]}: {outcome}"
                    bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
                counts: dict[str, int] = {}
                for job in (active or {}).values():
                    word = "requeued" if job.state == "PENDING" and job.reason == "BeginTime" else job.state.lower()
                    counts[word] = counts.get(word, 0) + 1
                words = ", ".join(f"{count} {word}" for word, count in sorted(counts.items()))
                bar.update(task, completed=len(reported), description=f"{sweep.name}: {words or 'ending'}")
                if active is None:
                    failures += 1
                    if failures >= 5:
                        bar.console.print(f"stopped following: {error}")
                        return
                elif not active:
                    break
                else:
                    failures = 0
                time.sleep(poll_s)
        except KeyboardInterrupt:
            raise UsageError(
                "stopped following; the jobs keep running on the cluster (an-lab status / an-lab cancel)"
            ) from None
    # sacct lags squeue by a few seconds: give the accounting a moment so that the status shows how the jobs ended.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        view = scheduler.query(jobs.values())
        if not view.sacct_ok or all(job in view.jobs and not view.jobs[job].active for job in jobs.values()):
            break
        time.sleep(0.5)
