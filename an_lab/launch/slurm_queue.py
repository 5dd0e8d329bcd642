"""What SLURM says: the state of jobs (one batched `squeue`, one batched `sacct`), the cluster's limits, and `scancel`.

Torch-free and submitit-free, so that `an-lab status` stays fast. squeue is the truth for jobs that are still queued
or running (sacct lags it by a few seconds); sacct adds the jobs that ended, their exit codes and their requeue
history (`sacct -D` keeps one record per attempt). A cluster without accounting (sacct failing) or a machine without
SLURM commands gives notes, never exceptions: callers then fall back on the run folders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Job states (the first word: "CANCELLED by 0" is CANCELLED) of a job that is not over yet.
ACTIVE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SUSPENDED",
        "STOPPED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
# Ended states that mean the run failed (rather than was stopped on purpose).
FAILED = frozenset({"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "TIMEOUT"})
# Reasons a pending job gives when it can never start as submitted: sbatch accepted it, but a limit of the partition,
# QOS or association rules it out, or what it waits for can never happen. (ReqNodeNotAvail is left out: a node down
# for maintenance comes back.)
NEVER_STARTS = frozenset(
    {
        "PartitionTimeLimit",
        "PartitionNodeLimit",
        "PartitionConfig",
        "BadConstraints",
        "InvalidQOS",
        "InvalidAccount",
        "DependencyNeverSatisfied",
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
        "QOSMaxNodePerJobLimit",
        "AssocMaxNodesPerJob",
        "QOSMaxCpuPerJobLimit",
        "AssocMaxCpuPerJobLimit",
        "QOSMaxMemoryPerJob",
        "QOSMaxGRESPerJob",
    }
)
# An attempt that ended in one of these was followed by another attempt of the same job.
REQUEUE_MARKS = frozenset({"REQUEUED", "PREEMPTED", "REQUEUE_HOLD", "REQUEUE_FED"})
TIMEOUT_S = 30


@dataclass
class JobState:
    job_id: str  # "123_4" for task 4 of array 123, "123" for a plain job
    state: str  # SLURM's state word: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    reason: str | None = None  # why it is pending, or the scheduler's reason for the end
    exit_code: str | None = None  # "1:0" (exit status:signal), from sacct
    node: str | None = None
    requeues: int = 0  # earlier attempts of this job that were requeued (from sacct's history)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def failed(self) -> bool:
        return self.state in FAILED

    @property
    def stuck(self) -> bool:
        """Pending for a reason that cannot resolve itself (NEVER_STARTS): it would pend for ever."""
        return self.state == "PENDING" and (self.reason or "").split(",")[0].strip() in NEVER_STARTS

    def describe(self) -> str:
        """E.g. `slurm 123_4 FAILED, exit code 1:0` or `slurm 123_4 PENDING (Resources)`."""
        text = f"slurm {self.job_id} {self.state}"
        if self.reason and self.reason not in ("None", "(null)"):
            text += f" ({self.reason})"
        if self.exit_code and not self.active and self.exit_code != "0:0":
            text += f", exit code {self.exit_code}"
        if self.requeues:
            text += f", requeued {self.requeues}x"
        return text


@dataclass
class QueueView:
    jobs: dict[str, JobState] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    squeue_ok: bool = False
    sacct_ok: bool = False


def array_id(job_id: str) -> str:
    """The id sbatch returned: `123` for `123_4` and for `123`."""
    return str(job_id).split("_", 1)[0]


def expand_ids(text: str) -> list[str]:
    """Job ids of one squeue/sacct JobID field: `123_[0-3,7%2]` (pending array tasks) -> 123_0 ... 123_3, 123_7.

    Steps (`0-40:2`) are followed. sacct cuts a long task list short with `...` (its 64-character bit string limit):
    the part cut short is dropped, so those tasks are known from squeue instead.
    """
    match = re.fullmatch(r"(\d+)_\[([^\]]*)\]", text.strip())
    if match is None:
        return [text.strip()]
    base, spec = match.group(1), match.group(2).split("%", 1)[0]
    ids = []
    for part in filter(None, spec.split(",")):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?(?::(\d+))?", part.strip())
        if bounds is None:  # cut short ("32-3...") or not a range
            continue
        low, high, step = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1)), int(bounds.group(3) or 1)
        ids.extend(f"{base}_{task}" for task in range(low, high + 1, max(1, step)))
    return ids


def _run(command: list[str]) -> tuple[str | None, str | None]:
    """(stdout, None) or (None, why it failed) -- never raises for a missing or failing command."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        return None, f"{command[0]} not found (no SLURM client commands on this machine)"
    except subprocess.TimeoutExpired:
        return None, f"{command[0]} did not answer within {TIMEOUT_S} s"
    except OSError as error:
        return None, f"{command[0]}: {error}"
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        return None, f"{command[0]} exited {done.returncode}: {message[-1] if message else 'no output'}"
    return done.stdout, None


def _squeue(arrays: list[str]) -> tuple[dict[str, JobState] | None, str | None]:
    out, error = _run(["squeue", "--noheader", "--array", "--jobs", ",".join(arrays), "--format", "%i|%T|%r|%N"])
    if out is None and error is not None and "Invalid job id specified" in error:
        return {}, None  # asked for one job the controller has forgotten (ended over MinJobAge ago): not queued
    if out is None:
        return None, error
    jobs = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        for job_id in expand_ids(parts[0]):
            jobs[job_id] = JobState(job_id, parts[1].split(" ")[0], parts[2] or None, node=parts[3] or None)
    return jobs, None


def _sacct(arrays: list[str]) -> tuple[dict[str, list[JobState]] | None, str | None]:
    out, error = _run(
        [
            "sacct",
            "--noheader",
            "--parsable2",
            "--allocations",
            "--duplicates",
            "--jobs",
            ",".join(arrays),
            "--format",
            "JobID,State,ExitCode,Reason,NodeList",
        ]
    )
    if out is None:
        return None, error
    history: dict[str, list[JobState]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        for job_id in expand_ids(parts[0]):
            record = JobState(job_id, parts[1].split(" ")[0], parts[3] or None, parts[2] or None, parts[4] or None)
            history.setdefault(job_id, []).append(record)
    return history, None


def query(job_ids: Iterable[str], accounting: bool = True) -> QueueView:
    """The state of each job: one squeue call and (with accounting) one sacct call over all their arrays."""
    wanted = {str(job_id) for job_id in job_ids}
    view = QueueView()
    if not wanted:
        return view
    arrays = sorted({array_id(job_id) for job_id in wanted}, key=lambda text: (len(text), text))
    queued, error = _squeue(arrays)
    view.squeue_ok = queued is not None
    if error:
        view.notes.append(f"the queue could not be read ({error})")
    history: dict[str, list[JobState]] = {}
    if accounting:
        found, error = _sacct(arrays)
        view.sacct_ok = found is not None
        if found is not None:
            history = found
        else:
            view.notes.append(
                f"SLURM accounting is not available ({error}): ended jobs show the state their run folders recorded"
            )
    for job_id in wanted:
        attempts = history.get(job_id, [])
        requeues = sum(record.state in REQUEUE_MARKS for record in attempts[:-1])
        if queued is not None and job_id in queued:
            current = queued[job_id]
            current.requeues = requeues
            current.exit_code = attempts[-1].exit_code if attempts else None
            view.jobs[job_id] = current
        elif attempts:
            last = attempts[-1]
            if last.active and view.squeue_ok:
                continue  # left the queue; its end is not in the accounting yet: the run folder knows more
            last.requeues = requeues
            view.jobs[job_id] = last
    return view


def active(job_ids: Iterable[str]) -> tuple[dict[str, JobState] | None, str | None]:
    """Jobs among job_ids that are still queued or running, from one squeue call; (None, why) when it failed."""
    wanted = {str(job_id) for job_id in job_ids}
    if not wanted:
        return {}, None
    queued, error = _squeue(sorted({array_id(job_id) for job_id in wanted}))
    if queued is None:
        return None, error
    return {job_id: state for job_id, state in queued.items() if job_id in wanted and state.active}, None


def cancel(job_ids: Iterable[str], wait_s: float = 0.0, poll_s: float = 1.0) -> tuple[list[JobState], str | None]:
    """scancel, in one call, the arrays (or plain jobs) of those job_ids that are still queued or running, then wait
    up to wait_s seconds (one squeue per poll) until they have left the queue, so that a relaunch right after submits
    them again. Every task of an array that an-lab submitted belongs to the same sweep, so whole arrays are cancelled.
    Returns (the jobs that were active, error or None); the error says so when jobs are still leaving after wait_s.
    """
    wanted = [str(job_id) for job_id in job_ids]
    running, error = active(wanted)
    if not running:
        return [], error
    targets = sorted({array_id(job_id) for job_id in running}, key=lambda text: (len(text), text))
    _, error = _run(["scancel", *targets])
    if error is not None:
        return sorted(running.values(), key=lambda state: state.job_id), error
    deadline = time.monotonic() + wait_s
    left = running
    while left and time.monotonic() < deadline:
        time.sleep(poll_s)
        left, problem = active(list(running))
        left = left if problem is None else left or running
    if left:
        error = f"{len(left)} job(s) had not left the queue after {wait_s:.0f} s (they are ending: see an-lab status)"
    return sorted(running.values(), key=lambda state: state.job_id), error


def cancel_one(job_id: str) -> str | None:
    """scancel one job (one array task); the error, or None."""
    _, error = _run(["scancel", str(job_id)])
    return error


# ---------------------------------------------------------------------------------------------------------------------
# The cluster's limits, read once per launch


@dataclass(frozen=True)
class ClusterLimits:
    max_array_size: int | None = None  # array task ids must be below this (slurm.conf MaxArraySize, default 1001)
    max_submit_jobs: int | None = None  # jobs (each array task counts) one user may have queued or running
    submit_limit_source: str | None = None  # which setting sets max_submit_jobs, for messages
    gpus: bool | None = None  # whether any node of the partition has GPUs (GRES gpu); None: unknown


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config` as key -> value (the `Key = Value` lines)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            values[key.strip()] = value.strip()
    return values


def _limit(value: str | None) -> int | None:
    """A SLURM count limit: an integer; empty, 0-less, `UNLIMITED` or `(null)` mean none."""
    if value is None:
        return None
    match = re.match(r"\s*(\d+)", value)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def parse_submit_limits(assoc: str, qos: str) -> tuple[int | None, str | None]:
    """The tightest MaxSubmitJobs from `sacctmgr -nP show assoc user=U format=MaxSubmit,QOS` and
    `sacctmgr -nP show qos format=Name,MaxSubmitPU` output; (limit, where it comes from)."""
    best: tuple[int | None, str | None] = (None, None)
    qos_names: set[str] = set()
    for line in assoc.splitlines():
        parts = line.split("|")
        value = _limit(parts[0]) if parts else None
        if value is not None and (best[0] is None or value < best[0]):
            best = (value, "the association's MaxSubmitJobs")
        if len(parts) > 1:
            qos_names.update(name for name in parts[1].split(",") if name)
    for line in qos.splitlines():
        name, _, value = line.partition("|")
        limit = _limit(value)
        if limit is not None and (not qos_names or name in qos_names) and (best[0] is None or limit < best[0]):
            best = (limit, f"QOS {name}'s MaxSubmitJobsPerUser")
    return best


def parse_gres(text: str, partition: str | None) -> bool | None:
    """Whether `sinfo --noheader --format %P|%G` shows GPUs (GRES gpu) on the partition (the default one when None)."""
    seen = False
    for line in text.splitlines():
        name, _, gres = line.partition("|")
        default = name.endswith("*")
        if (partition is None and default) or name.rstrip("*") in (partition or "").split(","):
            seen = True
            if re.search(r"(^|,)gpu[:(]|(^|,)gpu$", gres.strip()):
                return True
    return False if seen else None


def cluster_limits(partition: str | None) -> ClusterLimits:
    """MaxArraySize (scontrol), MaxSubmitJobs (sacctmgr: association and QOS, where limits are enforced) and
    whether the partition has GPUs (sinfo). What cannot be read stays None: submission then learns it from sbatch."""
    out, _ = _run(["scontrol", "show", "config"])
    config = parse_config(out or "")
    array = _limit(config.get("MaxArraySize"))
    submit, source = None, None
    if "limits" in config.get("AccountingStorageEnforce", ""):
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or str(os.getuid())
        assoc, _ = _run(
            ["sacctmgr", "--noheader", "--parsable2", "show", "assoc", f"user={user}", "format=MaxSubmit,QOS"]
        )
        qos, _ = _run(["sacctmgr", "--noheader", "--parsable2", "show", "qos", "format=Name,MaxSubmitPU"])
        limit, where = parse_submit_limits(assoc or "", qos or "")
        submit, source = limit, where
    sinfo, _ = _run(["sinfo", "--noheader", "--format", "%P|%G"])
    return ClusterLimits(array, submit, source, parse_gres(sinfo or "", partition) if sinfo is not None else None)


@dataclass(frozen=True)
class Partition:
    """What a partition allows one job, from one sinfo call (PARTITION_FORMAT); None where it sets no limit."""

    name: str
    max_minutes: int | None = None  # MaxTime
    default_minutes: int | None = None  # DefaultTime
    nodes: int = 0  # nodes in the partition
    max_job_nodes: int | None = None  # the upper end of its job size in nodes
    cpus_per_node: int = 0  # on its largest node
    memory_mb: int = 0  # per node, on its largest node
    gpus: bool = False  # whether a node has GRES gpu

    @property
    def node_limit(self) -> int:
        return min(self.nodes, self.max_job_nodes) if self.max_job_nodes is not None else self.nodes


PARTITION_FORMAT = "%P|%l|%L|%D|%c|%m|%G|%s"


def _minutes(text: str) -> int | None:
    from an_lab.launch.slurm_settings import parse_minutes

    if text.strip().lower() in ("n/a", "infinite", "unlimited", "none", ""):
        return None
    try:
        return parse_minutes(text.strip())
    except ValueError:
        return None


def _leading_int(text: str) -> int:
    match = re.match(r"\s*(\d+)", text)
    return int(match.group(1)) if match else 0


def parse_partitions(text: str) -> dict[str, Partition]:
    """`sinfo --noheader --format PARTITION_FORMAT` (one line per partition and node kind) as name -> Partition;
    the default partition also under the key "" (empty)."""
    found: dict[str, Partition] = {}
    default = None
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 8:
            continue
        name = parts[0].rstrip("*")
        if parts[0].endswith("*"):
            default = name
        job_nodes = parts[7].partition("-")[2] if "-" in parts[7] else parts[7]
        current = Partition(
            name,
            _minutes(parts[1]),
            _minutes(parts[2]),
            _leading_int(parts[3]),
            None if job_nodes.strip().lower() in ("infinite", "unlimited", "") else _leading_int(job_nodes),
            _leading_int(parts[4]),
            _leading_int(parts[5]),
            bool(re.search(r"(^|,)gpu([:(]|$)", parts[6].strip())),
        )
        if name in found:  # another kind of node in the same partition: the counts add up, the largest node counts
            known = found[name]
            current = Partition(
                name,
                known.max_minutes,
                known.default_minutes,
                known.nodes + current.nodes,
                known.max_job_nodes,
                max(known.cpus_per_node, current.cpus_per_node),
                max(known.memory_mb, current.memory_mb),
                known.gpus or current.gpus,
            )
        found[name] = current
    if default is not None:
        found[""] = found[default]
    return found


def partition_info(partition: str | None) -> Partition | None:
    """The partition a job goes to (the default one when None) from one sinfo call; None when unknown."""
    out, _ = _run(["sinfo", "--noheader", "--format", PARTITION_FORMAT])
    return None if out is None else parse_partitions(out).get(partition or "")


def queued_count() -> int | None:
    """Jobs of this user in the queue, each array task counted (what MaxSubmitJobs counts); None when unreadable."""
    out, _ = _run(["squeue", "--me", "--array", "--noheader", "--format", "%i"])
    return None if out is None else len([line for line in out.splitlines() if line.strip()])


# ---------------------------------------------------------------------------------------------------------------------
# What an-lab recorded at submission (written by an_lab.launch.slurm), read without submitit.

JOBS_FILE = "slurm/jobs.json"  # in the sweep folder: every submission, in order
LOGS_DIR = "slurm/logs"  # in the sweep folder: submitit's folder, one sub-folder per job


def recorded_jobs(sweep_dir: Path) -> dict[str, str]:
    """run id -> the job id of its latest submission, from <sweep folder>/slurm/jobs.json (empty if none)."""
    try:
        submissions = json.loads((Path(sweep_dir) / JOBS_FILE).read_text()).get("submissions", [])
    except (OSError, ValueError, AttributeError):
        return {}
    latest: dict[str, str] = {}
    for submission in submissions:
        latest.update(submission.get("runs", {}))
    return latest


def submitted_jobs(sweep_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """run id -> every (job id, submission time) that <sweep folder>/slurm/jobs.json records for it, oldest first:
    a run submitted twice has two jobs, and both may still be in the queue."""
    try:
        submissions = json.loads((Path(sweep_dir) / JOBS_FILE).read_text()).get("submissions", [])
    except (OSError, ValueError, AttributeError):
        return {}
    found: dict[str, list[tuple[str, float]]] = {}
    for submission in submissions if isinstance(submissions, list) else []:
        if not isinstance(submission, dict) or not isinstance(submission.get("runs"), dict):
            continue
        at = submission.get("submitted_at")
        for run_id, job_id in submission["runs"].items():
            if isinstance(job_id, str):
                found.setdefault(str(run_id), []).append((job_id, float(at) if isinstance(at, int | float) else 0.0))
    return found


def log_file(sweep_dir: Path, job_id: str, kind: str = "err", task: int = 0) -> Path:
    """submitit's stdout ("out") or stderr ("err") file of one task of a job."""
    return Path(sweep_dir) / LOGS_DIR / job_id / f"{job_id}_{task}_log.{kind}"


def last_error_line(path: Path, limit: int = 64 * 1024) -> str | None:
    """The last line of a job's stderr that looks like an exception or an error, for a failure's reason."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    exception = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b")
    for line in reversed(lines):  # the exception first: srun always adds its own "task 0: Exited" line after it
        if exception.match(text := line.strip()):
            return text[:300]
    for line in reversed(lines):
        if (text := line.strip()).lower().startswith(("error", "srun:")):
            return text[:300]
    return None
