"""an_lab.launch.slurm_queue without a SLURM cluster: its parsers on captured output, and its command calls through
fake `squeue`, `sacct`, `scontrol`, `sinfo`, `sacctmgr` and `scancel` executables.

The fakes are real processes: small shell scripts, alone on PATH, that print a captured output, exit with a given
code and log their arguments (one line per call) so that a test can count the calls. A command a test does not fake
is missing from PATH, as on a machine without SLURM client commands.

Output marked "captured" was produced by the project's local cluster (scripts/local-slurm.sh, slurm-wlm 22.05.8,
one node `vm`, MinJobAge=120): two `sbatch --wrap 'sleep 30'` jobs (19842150, requeued with `scontrol requeue`,
and 19842151, cancelled by root), an `sbatch --array=0-5%2 --wrap 'sleep 20'` array (19842152) and a
`sbatch --wrap 'exit 3'` job (19842153). Output marked "literal" is what a GPU cluster with accounting limits and
preemption prints, which the local cluster cannot produce.
"""

import json
import shlex
import shutil
from pathlib import Path

import pytest

from an_lab.launch import slurm_queue as queue
from an_lab.launch.slurm_queue import (
    ClusterLimits,
    JobState,
    _limit,
    array_id,
    expand_ids,
    last_error_line,
    log_file,
    parse_config,
    parse_gres,
    parse_submit_limits,
    recorded_jobs,
)

SQUEUE_FORMAT = "%i|%T|%r|%N"
SACCT_FORMAT = "JobID,State,ExitCode,Reason,NodeList"

# ---------------------------------------------------------------------------------------------------------------------
# Captured on the local cluster

# `squeue --noheader --array --jobs 19842150,19842151,19842152,19842153 --format '%i|%T|%r|%N'` four seconds after
# `scontrol requeue 19842150` and `scancel 19842151`: the array's pending tasks come one per line (--array).
SQUEUE_AFTER_REQUEUE = """\
19842150|PENDING|BeginTime|
19842152_2|PENDING|JobArrayTaskLimit|
19842152_3|PENDING|JobArrayTaskLimit|
19842152_4|PENDING|JobArrayTaskLimit|
19842152_5|PENDING|JobArrayTaskLimit|
19842153|PENDING|Resources|
19842152_0|RUNNING|None|vm
19842152_1|RUNNING|None|vm
"""

# `sacct --noheader --parsable2 --allocations --duplicates --jobs ... --format JobID,State,ExitCode,Reason,NodeList`
# at the same moment. The array's pending record still names tasks 0 and 1 (slurmdbd updates it a few seconds later)
# and the requeued job has one record per attempt, the new attempt last.
SACCT_AFTER_REQUEUE = """\
19842150|REQUEUED|0:0|None|vm
19842151|CANCELLED by 0|0:0|None|vm
19842153|PENDING|0:0|None|None assigned
19842152_0|RUNNING|0:0|None|vm
19842152_1|RUNNING|0:0|None|vm
19842152_[0-5%2]|PENDING|0:0|None|None assigned
19842150|PENDING|0:0|BeginTime|None assigned
"""

# The same sacct call once every job had ended (squeue then printed nothing and exited 0).
SACCT_ENDED = """\
19842150|REQUEUED|0:0|None|vm
19842151|CANCELLED by 0|0:0|None|vm
19842153|FAILED|3:0|None|vm
19842152_0|COMPLETED|0:0|None|vm
19842152_1|COMPLETED|0:0|None|vm
19842152_2|COMPLETED|0:0|JobArrayTaskLimit|vm
19842152_3|COMPLETED|0:0|JobArrayTaskLimit|vm
19842152_4|COMPLETED|0:0|JobArrayTaskLimit|vm
19842152_5|COMPLETED|0:0|JobArrayTaskLimit|vm
19842150|COMPLETED|0:0|BeginTime|vm
"""

# `squeue --me --array --noheader --format %i` with the four jobs above just submitted.
SQUEUE_ME = """\
19842152_0
19842152_1
19842152_2
19842152_3
19842152_4
19842152_5
19842153
19842150
19842151
"""

# What squeue and sacct print for a job id that slurmctld has forgotten (the job ended more than MinJobAge ago):
# squeue exits 1 when the --jobs list holds that one id only (with several ids it filters and exits 0); sacct exits 0.
SQUEUE_INVALID_ID = "slurm_load_jobs error: Invalid job id specified\n"

# An excerpt of `scontrol show config` (the header line, key = value lines, the trailing blank line and status line).
CONFIG_LOCAL = """\
Configuration data as of 2026-11-29T20:42:59
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = none
AccountingStorageHost   = localhost
AccountingStorageTRES   = cpu,mem,energy,node,billing,fs/disk,vmem,pages
AccountingStorageType   = accounting_storage/slurmdbd
AuthInfo                = cred_expire=10
ClusterName             = anlab
GresTypes               = (null)
JobRequeue              = 1
MaxArraySize            = 1001
MaxJobCount             = 10000
MinJobAge               = 120 sec
SchedulerParameters     = batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
SLURM_VERSION           = 22.05.8
SuspendTime             = INFINITE
TaskPluginParam         = (null type)
X11Parameters           = (null)

Slurmctld(primary) at vm is UP
"""

SINFO_LOCAL = "debug*|(null)\n"  # `sinfo --noheader --format '%P|%G'`
SACCTMGR_ASSOC_LOCAL = "|normal\n"  # `sacctmgr -nP show assoc user=root format=MaxSubmit,QOS`: no limit
SACCTMGR_QOS_LOCAL = "normal|\n"  # `sacctmgr -nP show qos format=Name,MaxSubmitPU`: no limit

# A job's stderr file (submitit's <job>_0_log.err) after its function raised under srun, as submitit wrote it on the
# local cluster (the virtual environment's path shortened): submitit's log line, the traceback, then srun's own line.
SUBMITIT_FAILURE_ERR = """\
submitit ERROR (2026-11-29 20:47:42,481) - Submitted job triggered an exception
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/opt/venv/lib/python3.11/site-packages/submitit/core/_submit.py", line 11, in <module>
    submitit_main()
  File "/opt/venv/lib/python3.11/site-packages/submitit/core/submission.py", line 76, in submitit_main
    process_job(args.folder)
  File "/opt/venv/lib/python3.11/site-packages/submitit/core/submission.py", line 69, in process_job
    raise error
  File "/opt/venv/lib/python3.11/site-packages/submitit/core/submission.py", line 55, in process_job
    result = delayed.result()
             ^^^^^^^^^^^^^^^^
  File "/opt/venv/lib/python3.11/site-packages/submitit/core/utils.py", line 137, in result
    self._result = self.function(*self.args, **self.kwargs)
                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "<dynamic-code>", line 3, in boom
RuntimeError: loss became nan at step 1
srun: error: vm: task 0: Exited with exit code 1
"""

# ---------------------------------------------------------------------------------------------------------------------
# Literal: a GPU cluster with preemption and accounting limits

CONFIG_GPU_CLUSTER = """\
Configuration data as of 2025-03-14T09:12:44
AccountingStorageBackupHost = (null)
AccountingStorageEnforce = associations,limits,qos
AccountingStorageHost   = slurmdbd-01
AccountingStorageType   = accounting_storage/slurmdbd
ClusterName             = vision
GresTypes               = gpu
JobRequeue              = 1
MaxArraySize            = 1001
MaxJobCount             = 100000
PreemptMode             = REQUEUE
PreemptType             = preempt/qos
SLURM_VERSION           = 23.11.4

Cgroup Support Configuration:
AllowedRAMSpace         = 100.0%
ConstrainDevices        = yes

MPI Plugins Configuration:
PMIxCliTmpDirBase       = (null)

Slurmctld(primary) at slurm-ctl-01 is UP
Slurmctld(backup) at slurm-ctl-02 is UP
"""

SINFO_GPU_CLUSTER = """\
gpu*|gpu:a100:8(S:0-1)
cpu|(null)
debug|gpu:4
"""

SACCTMGR_ASSOC_GPU = "2000|normal\n"
SACCTMGR_QOS_GPU = """\
normal|500
long|50
preempt|UNLIMITED
"""

# Array 7781230 on a cluster with PreemptMode=REQUEUE: task 1 preempted twice, task 2 requeued (submitit's own
# requeue ahead of its time limit) and timed out on its second attempt, task 3 cancelled by an administrator, tasks 4-7
# still pending; job 7781231 requeued once, then failed.
SACCT_PREEMPTION = """\
7781230_0|COMPLETED|0:0|None|gpu-a100-03
7781230_1|PREEMPTED|0:15|None|gpu-a100-07
7781230_1|PREEMPTED|0:15|None|gpu-a100-02
7781230_1|RUNNING|0:0|None|gpu-a100-05
7781230_2|REQUEUED|0:0|None|gpu-a100-04
7781230_2|TIMEOUT|0:0|None|gpu-a100-04
7781230_3|CANCELLED by 0|0:0|None|gpu-a100-01
7781230_[4-7%4]|PENDING|0:0|Priority|None assigned
7781231|REQUEUED|0:0|None|gpu-a100-06
7781231|FAILED|1:0|None|gpu-a100-06
"""
SQUEUE_PREEMPTION = """\
7781230_4|PENDING|Priority|
7781230_5|PENDING|Priority|
7781230_6|PENDING|Priority|
7781230_7|PENDING|Priority|
7781230_1|RUNNING|None|gpu-a100-05
"""


# ---------------------------------------------------------------------------------------------------------------------
# Fake SLURM commands


class FakeSlurm:
    """Executable shell scripts in one folder that becomes the whole PATH: each logs its arguments, then prints the
    stdout and stderr and exits with the code of its first output whose `when` word is one of its arguments (else of
    its default output, registered without `when`)."""

    def __init__(self, folder: Path):
        self.bin = folder / "bin"
        self.data = folder / "data"
        self.bin.mkdir(parents=True)
        self.data.mkdir()
        self.log = folder / "calls.log"
        self.cat = shutil.which("cat")  # resolved before PATH holds only the fakes
        assert self.cat is not None
        self.branches: dict[str, list[tuple[str | None, str]]] = {}

    def command(self, name: str, stdout: str = "", stderr: str = "", code: int = 0, when: str | None = None) -> None:
        index = sum(len(branches) for branches in self.branches.values())
        out, err = self.data / f"{name}-{index}.out", self.data / f"{name}-{index}.err"
        out.write_text(stdout)
        err.write_text(stderr)
        action = f"{self.cat} {shlex.quote(str(out))}; {self.cat} {shlex.quote(str(err))} >&2; exit {code}"
        self.branches.setdefault(name, []).append((when, action))
        ordered = sorted(self.branches[name], key=lambda branch: branch[0] is None)  # the default branch last
        patterns = ["*" if when is None else f"*{shlex.quote(f' {when} ')}*" for when, _ in ordered]
        cases = "".join(f"  {pattern}) {action};;\n" for pattern, (_, action) in zip(patterns, ordered, strict=True))
        log = shlex.quote(str(self.log))
        script = (
            "#!/bin/sh\n"
            f"{{ printf '%s' {name}; for arg in \"$@\"; do printf '\\t%s' \"$arg\"; done; printf '\\n'; }} >> {log}\n"
            f'case " $* " in\n{cases}esac\n'
            "exit 0\n"
        )
        path = self.bin / name
        path.write_text(script)
        path.chmod(0o755)

    def calls(self, name: str) -> list[list[str]]:
        """The argument lists of every call of `name`, in order."""
        if not self.log.exists():
            return []
        rows = [line.split("\t") for line in self.log.read_text().splitlines()]
        return [row[1:] for row in rows if row[0] == name]


@pytest.fixture
def slurm(tmp_path, monkeypatch) -> FakeSlurm:
    fake = FakeSlurm(tmp_path / "fake-slurm")
    monkeypatch.setenv("PATH", str(fake.bin))
    return fake


def squeue_call(arrays: str) -> list[str]:
    return ["--noheader", "--array", "--jobs", arrays, "--format", SQUEUE_FORMAT]


def sacct_call(arrays: str) -> list[str]:
    return ["--noheader", "--parsable2", "--allocations", "--duplicates", "--jobs", arrays, "--format", SACCT_FORMAT]


# ---------------------------------------------------------------------------------------------------------------------
# Pure parsers


def test_fake_commands_log_each_call_and_answer_by_argument(slurm):
    slurm.command("sacctmgr", stdout="assoc output\n", when="assoc")
    slurm.command("sacctmgr", stdout="default output\n", code=3)
    assert queue._run(["sacctmgr", "-nP", "show", "assoc", "format=MaxSubmit,QOS"]) == ("assoc output\n", None)
    assert queue._run(["sacctmgr", "show", "qos"]) == (None, "sacctmgr exited 3: default output")
    assert slurm.calls("sacctmgr") == [["-nP", "show", "assoc", "format=MaxSubmit,QOS"], ["show", "qos"]]


@pytest.mark.parametrize(
    ("field", "ids"),
    [
        ("19842150", ["19842150"]),
        ("19842152_3", ["19842152_3"]),
        (" 19842153\n", ["19842153"]),
        ("19842152_[0-5%2]", [f"19842152_{task}" for task in range(6)]),
        ("19842152_[2-5%2]", ["19842152_2", "19842152_3", "19842152_4", "19842152_5"]),
        ("19842166_[0-3,7,10-12%2]", [f"19842166_{task}" for task in (0, 1, 2, 3, 7, 10, 11, 12)]),
        ("19842167_[0,2,4,6,8%2]", [f"19842167_{task}" for task in (0, 2, 4, 6, 8)]),
        ("7781230_[4-7]", ["7781230_4", "7781230_5", "7781230_6", "7781230_7"]),
        ("7781230_[9]", ["7781230_9"]),
    ],
)
def test_expand_ids(field, ids):
    assert expand_ids(field) == ids


def test_expand_ids_reads_a_stepped_range():
    # Captured: sacct's and squeue's JobID for `sbatch --hold --array=0-40:2` (squeue --array lists 0, 2, ..., 40).
    assert expand_ids("19842165_[0-40:2]") == [f"19842165_{task}" for task in range(0, 41, 2)]


@pytest.mark.parametrize(
    ("job_id", "array"),
    [("19842152_4", "19842152"), ("19842150", "19842150"), (19842150, "19842150"), ("19842152_[2-5%2]", "19842152")],
)
def test_array_id(job_id, array):
    assert array_id(job_id) == array


def test_log_file_is_submitits_per_task_file(tmp_path):
    assert log_file(tmp_path, "7781230_4") == tmp_path / "slurm/logs/7781230_4/7781230_4_0_log.err"
    assert log_file(str(tmp_path), "19842150", "out", task=1) == tmp_path / "slurm/logs/19842150/19842150_1_log.out"


def test_recorded_jobs_keeps_the_latest_submission_of_each_run(tmp_path):
    path = tmp_path / "slurm" / "jobs.json"
    path.parent.mkdir()
    first = {"job_id": "7781230", "array": True, "tasks": 2, "runs": {"a1f3": "7781230_0", "b7c2": "7781230_1"}}
    retry = {"job_id": "7781245", "array": True, "tasks": 1, "runs": {"b7c2": "7781245_0"}}
    path.write_text(json.dumps({"submissions": [first, {"job_id": "7781240", "tasks": 0}, retry]}))
    assert recorded_jobs(tmp_path) == {"a1f3": "7781230_0", "b7c2": "7781245_0"}


@pytest.mark.parametrize("content", [None, "", '{"submissions": [{"runs": {"a1f3": "77', "[]", '{"other": 1}'])
def test_recorded_jobs_of_a_missing_or_unreadable_file_is_empty(tmp_path, content):
    if content is not None:
        (tmp_path / "slurm").mkdir()
        (tmp_path / "slurm" / "jobs.json").write_text(content)
    assert recorded_jobs(tmp_path) == {}


def test_last_error_line_without_srun_line_is_the_exception(tmp_path):
    path = tmp_path / "19842170_0_log.err"
    path.write_text(SUBMITIT_FAILURE_ERR.replace("srun: error: vm: task 0: Exited with exit code 1\n", ""))
    assert last_error_line(path) == "RuntimeError: loss became nan at step 1"


def test_last_error_line_of_a_job_that_raised_under_srun_is_the_exception(tmp_path):
    path = tmp_path / "19842170_0_log.err"
    path.write_text(SUBMITIT_FAILURE_ERR)
    assert last_error_line(path) == "RuntimeError: loss became nan at step 1"


@pytest.mark.parametrize(
    ("log", "line"),
    [
        (  # killed for memory: no Python exception, srun's line says why
            "slurmstepd: error: Detected 1 oom_kill event in StepId=7781230_2.0. Some of the step tasks have been "
            "OOM Killed.\nsrun: error: gpu-a100-04: task 0: Out Of Memory\n",
            "srun: error: gpu-a100-04: task 0: Out Of Memory",
        ),
        (
            'Traceback (most recent call last):\n  File "train.py", line 3, in <module>\n'
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
            "  warnings.warn(\nUserWarning: an ordinary warning after the error\n",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
        ),
        ("Traceback (most recent call last):\nKeyboardInterrupt\n", "KeyboardInterrupt"),
        ("ERROR: could not open /data/imagenet/train\n", "ERROR: could not open /data/imagenet/train"),
        (f"RuntimeError: {'x' * 400}\n", f"RuntimeError: {'x' * 286}"),
    ],
)
def test_last_error_line_picks_the_last_error_like_line(tmp_path, log, line):
    path = tmp_path / "job.err"
    path.write_text(log)
    assert last_error_line(path) == line


def test_last_error_line_reads_only_the_end_of_the_file(tmp_path):
    path = tmp_path / "job.err"
    path.write_text("ValueError: early in a long log\n" + "epoch 1 step 10 loss 2.30\n" * 4000)  # 104 kB after it
    assert last_error_line(path) is None
    assert last_error_line(path, limit=200 * 1024) == "ValueError: early in a long log"


def test_last_error_line_of_a_missing_or_quiet_file_is_none(tmp_path):
    quiet = tmp_path / "quiet.err"
    quiet.write_text("submitit INFO (2026-11-29 20:47:35,033) - Starting with JobEnvironment(job_id=19842169)\n")
    assert last_error_line(tmp_path / "missing.err") is None
    assert last_error_line(quiet) is None


@pytest.mark.parametrize(
    ("state", "active", "failed"),
    [
        ("PENDING", True, False),
        ("RUNNING", True, False),
        ("COMPLETING", True, False),
        ("REQUEUED", True, False),
        ("SUSPENDED", True, False),
        ("COMPLETED", False, False),
        ("CANCELLED", False, False),
        ("PREEMPTED", False, False),
        ("FAILED", False, True),
        ("TIMEOUT", False, True),
        ("OUT_OF_MEMORY", False, True),
        ("NODE_FAIL", False, True),
    ],
)
def test_job_state_active_and_failed(state, active, failed):
    job = JobState("7781230_2", state)
    assert (job.active, job.failed) == (active, failed)


@pytest.mark.parametrize(
    ("job", "text"),
    [
        (JobState("19842152_3", "PENDING", "JobArrayTaskLimit"), "slurm 19842152_3 PENDING (JobArrayTaskLimit)"),
        (JobState("19842152_0", "RUNNING", "None", node="vm"), "slurm 19842152_0 RUNNING"),
        (JobState("19842153", "FAILED", "None", "3:0", "vm"), "slurm 19842153 FAILED, exit code 3:0"),
        (JobState("19842151", "CANCELLED", "None", "0:0", "vm"), "slurm 19842151 CANCELLED"),
        (JobState("7781230_4", "PENDING", "(null)"), "slurm 7781230_4 PENDING"),
        (JobState("7781230_1", "RUNNING", None, "0:15", requeues=2), "slurm 7781230_1 RUNNING, requeued 2x"),
        (
            JobState("7781231", "FAILED", "None", "1:0", requeues=1),
            "slurm 7781231 FAILED, exit code 1:0, requeued 1x",
        ),
        (JobState("7781230_2", "TIMEOUT", None, "0:0", requeues=1), "slurm 7781230_2 TIMEOUT, requeued 1x"),
    ],
)
def test_job_state_describe(job, text):
    assert job.describe() == text


def test_parse_config_of_the_local_cluster():
    config = parse_config(CONFIG_LOCAL)
    assert config["MaxArraySize"] == "1001"
    assert config["AccountingStorageEnforce"] == "none"
    assert config["AuthInfo"] == "cred_expire=10"  # split at the first "=" only
    assert config["SchedulerParameters"] == "batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1"
    assert config["MinJobAge"] == "120 sec"
    assert config["SLURM_VERSION"] == "22.05.8"
    assert len(config) == 17  # the header, the blank line and the status line are not settings


def test_parse_config_of_a_cluster_with_plugin_sections():
    config = parse_config(CONFIG_GPU_CLUSTER)
    assert config["AccountingStorageEnforce"] == "associations,limits,qos"
    assert config["MaxArraySize"] == "1001"
    assert config["AllowedRAMSpace"] == "100.0%"
    assert config["PMIxCliTmpDirBase"] == "(null)"
    assert "Cgroup Support Configuration:" not in config
    assert parse_config("Node Features plugins = (null)\nGresTypes = gpu\n") == {"GresTypes": "gpu"}


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        ("1001", 1001),
        ("500", 500),
        (" 42 ", 42),
        ("120 sec", 120),
        ("", None),
        (None, None),
        ("0", None),
        ("UNLIMITED", None),
        ("(null)", None),
        ("-1", None),
    ],
)
def test_limit(value, limit):
    assert _limit(value) == limit


@pytest.mark.parametrize(
    ("assoc", "qos", "expected"),
    [
        (SACCTMGR_ASSOC_LOCAL, SACCTMGR_QOS_LOCAL, (None, None)),
        (SACCTMGR_ASSOC_GPU, SACCTMGR_QOS_GPU, (500, "QOS normal's MaxSubmitJobsPerUser")),  # `long` is not the user's
        ("2000|normal\n", "normal|\n", (2000, "the association's MaxSubmitJobs")),
        ("300|normal\n", "normal|500\n", (300, "the association's MaxSubmitJobs")),
        ("500|normal\n", "normal|500\n", (500, "the association's MaxSubmitJobs")),  # a tie keeps the association
        ("3000|normal\n1500|normal,long\n", SACCTMGR_QOS_GPU, (50, "QOS long's MaxSubmitJobsPerUser")),
        ("3000|normal\n1500|normal,preempt\n", SACCTMGR_QOS_GPU, (500, "QOS normal's MaxSubmitJobsPerUser")),
        ("", SACCTMGR_QOS_GPU, (50, "QOS long's MaxSubmitJobsPerUser")),  # no association read: every QOS counts
        ("UNLIMITED|preempt\n", SACCTMGR_QOS_GPU, (None, None)),
        ("", "", (None, None)),
    ],
)
def test_parse_submit_limits(assoc, qos, expected):
    assert parse_submit_limits(assoc, qos) == expected


@pytest.mark.parametrize(
    ("text", "partition", "gpus"),
    [
        (SINFO_LOCAL, None, False),
        (SINFO_LOCAL, "debug", False),
        (SINFO_LOCAL, "gpu", None),  # not a partition of this cluster
        (SINFO_GPU_CLUSTER, None, True),  # the default partition, gpu*
        (SINFO_GPU_CLUSTER, "gpu", True),
        (SINFO_GPU_CLUSTER, "debug", True),
        (SINFO_GPU_CLUSTER, "cpu", False),
        (SINFO_GPU_CLUSTER, "cpu,debug", True),
        ("gpu|(null)\ngpu|gpu:v100:2(S:0)\ncpu*|(null)\n", "gpu", True),  # nodes with and without GPUs
        ("gpu|gpu:4\ncpu|(null)\n", None, None),  # no default partition
        ("cpu*|bandwidth:lustre:no_consume:4G\n", None, False),
        ("", None, None),
    ],
)
def test_parse_gres(text, partition, gpus):
    assert parse_gres(text, partition) is gpus


# ---------------------------------------------------------------------------------------------------------------------
# query(): one squeue and one sacct call


def test_query_reads_queued_and_ended_jobs_of_several_arrays_in_one_squeue_and_one_sacct_call(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("sacct", stdout=SACCT_AFTER_REQUEUE)
    wanted = ["19842150", "19842151", "19842153", *(f"19842152_{task}" for task in range(6))]
    view = queue.query(wanted)

    assert slurm.calls("squeue") == [squeue_call("19842150,19842151,19842152,19842153")]
    assert slurm.calls("sacct") == [sacct_call("19842150,19842151,19842152,19842153")]
    assert (view.squeue_ok, view.sacct_ok, view.notes) == (True, True, [])
    assert sorted(view.jobs) == sorted(wanted)
    requeued = view.jobs["19842150"]
    assert (requeued.state, requeued.reason, requeued.requeues, requeued.exit_code) == (
        "PENDING",
        "BeginTime",
        1,
        "0:0",
    )
    assert requeued.describe() == "slurm 19842150 PENDING (BeginTime), requeued 1x"
    # Left the queue: sacct's record, first word of "CANCELLED by 0".
    cancelled = view.jobs["19842151"]
    assert (cancelled.state, cancelled.active, cancelled.failed) == ("CANCELLED", False, False)
    assert cancelled.describe() == "slurm 19842151 CANCELLED"
    # squeue is the truth for queued jobs: task 0 is running although sacct's pending record still names it.
    running = view.jobs["19842152_0"]
    assert (running.state, running.node, running.reason, running.requeues) == ("RUNNING", "vm", "None", 0)
    assert view.jobs["19842152_3"].describe() == "slurm 19842152_3 PENDING (JobArrayTaskLimit)"
    assert view.jobs["19842153"].reason == "Resources"


def test_query_of_many_tasks_across_arrays_makes_one_call_of_each(slurm):
    squeue_lines = [f"{array}_{task}|PENDING|Priority|" for array in ("998", "1000", "1001") for task in range(40)]
    slurm.command("squeue", stdout="\n".join(squeue_lines) + "\n")
    slurm.command("sacct", stdout="998_[0-39%8]|PENDING|0:0|Priority|None assigned\n")
    wanted = [line.split("|")[0] for line in squeue_lines] + ["1002"]
    view = queue.query(wanted)
    assert len(slurm.calls("squeue")) == 1 and len(slurm.calls("sacct")) == 1
    assert slurm.calls("squeue")[0][3] == slurm.calls("sacct")[0][5] == "998,1000,1001,1002"  # by length, then text
    assert len(view.jobs) == 120 and "1002" not in view.jobs
    assert {job.state for job in view.jobs.values()} == {"PENDING"}
    assert view.jobs["998_39"].exit_code == "0:0" and view.jobs["1001_0"].exit_code is None


def test_query_of_ended_jobs_comes_from_the_accounting(slurm):
    slurm.command("squeue", stdout="")
    slurm.command("sacct", stdout=SACCT_ENDED)
    view = queue.query(["19842150", "19842151", "19842153", "19842152_4"])
    assert (view.squeue_ok, view.sacct_ok, view.notes) == (True, True, [])
    failed = view.jobs["19842153"]
    assert (failed.state, failed.exit_code, failed.node, failed.failed) == ("FAILED", "3:0", "vm", True)
    assert failed.describe() == "slurm 19842153 FAILED, exit code 3:0"
    assert (view.jobs["19842150"].state, view.jobs["19842150"].requeues) == ("COMPLETED", 1)
    assert view.jobs["19842151"].state == "CANCELLED"
    assert (view.jobs["19842152_4"].state, view.jobs["19842152_4"].exit_code) == ("COMPLETED", "0:0")


def test_query_counts_requeues_from_the_sacct_history(slurm):
    slurm.command("squeue", stdout=SQUEUE_PREEMPTION)
    slurm.command("sacct", stdout=SACCT_PREEMPTION)
    view = queue.query([f"7781230_{task}" for task in range(8)] + ["7781231"])
    assert {job_id: job.requeues for job_id, job in view.jobs.items()} == {
        "7781230_0": 0,
        "7781230_1": 2,
        "7781230_2": 1,
        "7781230_3": 0,
        "7781230_4": 0,
        "7781230_5": 0,
        "7781230_6": 0,
        "7781230_7": 0,
        "7781231": 1,
    }
    assert view.jobs["7781230_1"].describe() == "slurm 7781230_1 RUNNING, requeued 2x"
    assert (view.jobs["7781230_1"].exit_code, view.jobs["7781230_1"].node) == ("0:0", "gpu-a100-05")
    assert view.jobs["7781230_2"].describe() == "slurm 7781230_2 TIMEOUT, requeued 1x"
    assert view.jobs["7781230_2"].failed
    assert view.jobs["7781231"].describe() == "slurm 7781231 FAILED, exit code 1:0, requeued 1x"
    assert view.jobs["7781230_3"].describe() == "slurm 7781230_3 CANCELLED"
    assert view.jobs["7781230_6"].describe() == "slurm 7781230_6 PENDING (Priority)"


def test_query_leaves_out_a_job_that_left_the_queue_before_the_accounting_recorded_its_end(slurm):
    slurm.command("squeue", stdout="19842152_5|RUNNING|None|vm\n")
    slurm.command("sacct", stdout=SACCT_ENDED.replace("19842152_4|COMPLETED", "19842152_4|RUNNING"))
    view = queue.query(["19842152_4", "19842152_5", "19842153"])
    assert sorted(view.jobs) == ["19842152_5", "19842153"]  # the run folder knows more about 19842152_4
    assert view.jobs["19842152_5"].state == "RUNNING" and view.jobs["19842153"].state == "FAILED"


def test_query_without_squeue_keeps_the_accounting_view_with_a_note(slurm):
    slurm.command("sacct", stdout=SACCT_AFTER_REQUEUE)
    view = queue.query(["19842150", "19842152_4"])
    assert (view.squeue_ok, view.sacct_ok) == (False, True)
    assert view.notes == ["the queue could not be read (squeue not found (no SLURM client commands on this machine))"]
    assert (view.jobs["19842150"].state, view.jobs["19842150"].requeues) == ("PENDING", 1)
    assert (view.jobs["19842152_4"].state, view.jobs["19842152_4"].reason) == ("PENDING", "None")


def test_query_without_accounting_shows_the_queue_with_a_note(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("sacct", stderr="sacct: error: Problem talking to the database: Connection refused\n", code=1)
    view = queue.query(["19842150", "19842151", "19842152_0"])
    assert (view.squeue_ok, view.sacct_ok) == (True, False)
    assert view.notes == [
        "SLURM accounting is not available (sacct exited 1: sacct: error: Problem talking to the database: "
        "Connection refused): ended jobs show the state their run folders recorded"
    ]
    assert sorted(view.jobs) == ["19842150", "19842152_0"]
    assert (view.jobs["19842150"].requeues, view.jobs["19842150"].exit_code) == (0, None)


def test_query_on_a_machine_without_slurm_gives_notes_and_no_jobs(slurm):
    view = queue.query(["19842150", "19842152_3"])
    assert (view.jobs, view.squeue_ok, view.sacct_ok) == ({}, False, False)
    assert view.notes == [
        "the queue could not be read (squeue not found (no SLURM client commands on this machine))",
        "SLURM accounting is not available (sacct not found (no SLURM client commands on this machine)): ended jobs "
        "show the state their run folders recorded",
    ]


def test_query_with_a_non_executable_squeue_gives_a_note(slurm):
    (slurm.bin / "squeue").write_text("#!/bin/sh\necho never\n")
    (slurm.bin / "squeue").chmod(0o644)
    slurm.command("sacct", stdout=SACCT_ENDED)
    view = queue.query(["19842153"])
    assert view.squeue_ok is False and view.jobs["19842153"].state == "FAILED"
    assert len(view.notes) == 1
    assert view.notes[0].startswith("the queue could not be read (squeue: ") and "Permission denied" in view.notes[0]


def test_query_without_accounting_asked_makes_no_sacct_call(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("sacct", stdout=SACCT_AFTER_REQUEUE)
    view = queue.query(["19842152_1", "19842152_2"], accounting=False)
    assert slurm.calls("sacct") == [] and len(slurm.calls("squeue")) == 1
    assert (view.squeue_ok, view.sacct_ok, view.notes) == (True, False, [])
    assert {job_id: job.state for job_id, job in view.jobs.items()} == {
        "19842152_1": "RUNNING",
        "19842152_2": "PENDING",
    }


def test_query_of_no_jobs_calls_nothing(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("sacct", stdout=SACCT_AFTER_REQUEUE)
    view = queue.query([])
    assert (view.jobs, view.notes, view.squeue_ok, view.sacct_ok) == ({}, [], False, False)
    assert slurm.log.exists() is False


def test_squeue_and_sacct_lines_that_are_not_records_are_skipped(slurm):
    slurm.command("squeue", stdout="squeue: warning: the partition gpu is down\n7781230_5|PENDING|Priority|\n")
    slurm.command("sacct", stdout="7781230_5|PENDING|0:0\n7781230_[4-5]|PENDING|0:0|Priority|None assigned\n")
    view = queue.query(["7781230_5"])
    job = view.jobs["7781230_5"]
    assert (job.state, job.reason, job.node, job.exit_code, job.requeues) == ("PENDING", "Priority", None, "0:0", 0)


def test_query_survives_sacct_cutting_a_long_pending_array_expression(slurm):
    # Captured: `sbatch --hold --array=0-199%2`, then `scancel` of tasks 1, 4, 7, ..., 199 one by one (what
    # SlurmExecutor.stop does through cancel_one); squeue --array lists the 133 pending tasks, sacct cuts the range.
    pending = [task for task in range(200) if task % 3 != 1]
    slurm.command("squeue", stdout="".join(f"19842168_{task}|PENDING|JobHeldUser|\n" for task in pending))
    slurm.command(
        "sacct",
        stdout="19842168_[0,2-3,5-6,8-9,11-12,14-15,17-18,20-21,23-24,26-27,29-30,32-3...%2]|PENDING|0:0|JobHeldUser|"
        "None assigned\n",
    )
    view = queue.query(["19842168_0", "19842168_2", "19842168_197"])
    assert view.squeue_ok is True
    assert {job_id: job.state for job_id, job in view.jobs.items()} == dict.fromkeys(
        ["19842168_0", "19842168_2", "19842168_197"], "PENDING"
    )


def test_query_of_one_array_the_controller_has_forgotten(slurm):
    slurm.command("squeue", stderr=SQUEUE_INVALID_ID, code=1)
    slurm.command("sacct", stdout=SACCT_ENDED)
    view = queue.query(["19842152_2", "19842152_3"])
    assert {job_id: job.state for job_id, job in view.jobs.items()} == dict.fromkeys(
        ["19842152_2", "19842152_3"], "COMPLETED"
    )
    assert (view.squeue_ok, view.notes) == (True, [])


# ---------------------------------------------------------------------------------------------------------------------
# active(), cancel(), queued_count()


def test_active_keeps_the_wanted_queued_jobs_from_one_squeue_call(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("sacct", stdout=SACCT_AFTER_REQUEUE)
    running, error = queue.active(["19842150", "19842151", "19842152_0", "19842152_5"])
    assert error is None
    assert {job_id: (job.state, job.reason) for job_id, job in running.items()} == {
        "19842150": ("PENDING", "BeginTime"),
        "19842152_0": ("RUNNING", "None"),
        "19842152_5": ("PENDING", "JobArrayTaskLimit"),
    }
    assert slurm.calls("squeue") == [squeue_call("19842150,19842151,19842152")]
    assert slurm.calls("sacct") == []


def test_active_of_no_jobs_calls_nothing(slurm):
    assert queue.active([]) == ({}, None)
    assert slurm.log.exists() is False


@pytest.mark.parametrize(
    ("stdout", "stderr", "code", "error"),
    [
        (
            "",
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
            1,
            "squeue exited 1: slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
        ),
        ("", "", 2, "squeue exited 2: no output"),
        ("squeue: error: Invalid --format\n", "", 1, "squeue exited 1: squeue: error: Invalid --format"),
    ],
)
def test_active_when_squeue_fails(slurm, stdout, stderr, code, error):
    slurm.command("squeue", stdout=stdout, stderr=stderr, code=code)
    assert queue.active(["19842150"]) == (None, error)


def test_active_without_squeue(slurm):
    assert queue.active(["19842150"]) == (None, "squeue not found (no SLURM client commands on this machine)")


def test_active_of_one_array_the_controller_has_forgotten(slurm):
    slurm.command("squeue", stderr=SQUEUE_INVALID_ID, code=1)
    assert queue.active(["19842152_2", "19842152_3"]) == ({}, None)


def test_cancel_sends_one_scancel_for_the_arrays_of_the_active_jobs(slurm):
    slurm.command("squeue", stdout=SQUEUE_AFTER_REQUEUE)
    slurm.command("scancel")
    cancelled, error = queue.cancel(["19842152_5", "19842152_0", "19842150", "19842151"], wait_s=0.2, poll_s=0.05)
    assert [(job.job_id, job.state) for job in cancelled] == [
        ("19842150", "PENDING"),
        ("19842152_0", "RUNNING"),
        ("19842152_5", "PENDING"),
    ]
    assert slurm.calls("scancel") == [["19842150", "19842152"]]
    # The fake squeue keeps answering the same queue, so the jobs never leave it.
    assert error == "3 job(s) had not left the queue after 0 s (they are ending: see an-lab status)"
    assert len(slurm.calls("squeue")) >= 2


def test_cancel_reports_scancel_failing(slurm):
    slurm.command("squeue", stdout="7781230_1|RUNNING|None|gpu-a100-05\n")
    slurm.command(
        "scancel", stderr="scancel: error: Kill job error on job id 7781230: Access/permission denied\n", code=1
    )
    cancelled, error = queue.cancel(["7781230_1"])
    assert [job.job_id for job in cancelled] == ["7781230_1"]
    assert error == "scancel exited 1: scancel: error: Kill job error on job id 7781230: Access/permission denied"


def test_cancel_of_one_array_the_controller_has_forgotten(slurm):
    slurm.command("squeue", stderr=SQUEUE_INVALID_ID, code=1)
    slurm.command("scancel")
    assert queue.cancel(["19842152_2", "19842152_3"]) == ([], None)


def test_queued_count_counts_each_array_task(slurm):
    slurm.command("squeue", stdout=SQUEUE_ME + "\n")
    assert queue.queued_count() == 9
    assert slurm.calls("squeue") == [["--me", "--array", "--noheader", "--format", "%i"]]


def test_queued_count_of_an_empty_queue_is_zero(slurm):
    slurm.command("squeue", stdout="")
    assert queue.queued_count() == 0


def test_queued_count_is_none_when_squeue_fails_or_is_missing(slurm):
    assert queue.queued_count() is None
    slurm.command(
        "squeue", stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", code=1
    )
    assert queue.queued_count() is None
    assert len(slurm.calls("squeue")) == 1


# ---------------------------------------------------------------------------------------------------------------------
# cluster_limits()


def test_cluster_limits_of_the_local_cluster(slurm, monkeypatch):
    monkeypatch.setenv("USER", "root")
    slurm.command("scontrol", stdout=CONFIG_LOCAL)
    slurm.command("sinfo", stdout=SINFO_LOCAL)
    slurm.command("sacctmgr", stdout=SACCTMGR_ASSOC_LOCAL, when="assoc")
    slurm.command("sacctmgr", stdout=SACCTMGR_QOS_LOCAL, when="qos")
    assert queue.cluster_limits(None) == ClusterLimits(1001, None, None, False)
    assert slurm.calls("scontrol") == [["show", "config"]]
    assert slurm.calls("sinfo") == [["--noheader", "--format", "%P|%G"]]
    assert slurm.calls("sacctmgr") == []  # AccountingStorageEnforce = none: limits are not enforced


def test_cluster_limits_reads_the_submit_limits_where_they_are_enforced(slurm, monkeypatch):
    monkeypatch.setenv("USER", "alice")
    slurm.command("scontrol", stdout=CONFIG_GPU_CLUSTER)
    slurm.command("sinfo", stdout=SINFO_GPU_CLUSTER)
    slurm.command("sacctmgr", stdout=SACCTMGR_ASSOC_GPU, when="assoc")
    slurm.command("sacctmgr", stdout=SACCTMGR_QOS_GPU, when="qos")
    assert queue.cluster_limits("gpu") == ClusterLimits(1001, 500, "QOS normal's MaxSubmitJobsPerUser", True)
    assert slurm.calls("sacctmgr") == [
        ["--noheader", "--parsable2", "show", "assoc", "user=alice", "format=MaxSubmit,QOS"],
        ["--noheader", "--parsable2", "show", "qos", "format=Name,MaxSubmitPU"],
    ]
    assert queue.cluster_limits("cpu").gpus is False


def test_cluster_limits_names_the_user_from_logname_without_user(slurm, monkeypatch):
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.setenv("LOGNAME", "bob")
    slurm.command("scontrol", stdout=CONFIG_GPU_CLUSTER)
    slurm.command("sacctmgr", stdout="", when="assoc")
    slurm.command("sacctmgr", stdout=SACCTMGR_QOS_GPU, when="qos")
    limits = queue.cluster_limits(None)
    assert limits == ClusterLimits(1001, 50, "QOS long's MaxSubmitJobsPerUser", None)  # sinfo missing: gpus unknown
    assert slurm.calls("sacctmgr")[0][4] == "user=bob"


def test_cluster_limits_with_failing_sacctmgr_and_sinfo(slurm, monkeypatch):
    monkeypatch.setenv("USER", "alice")
    slurm.command("scontrol", stdout=CONFIG_GPU_CLUSTER)
    slurm.command("sacctmgr", stderr="sacctmgr: error: Problem talking to the database: Connection refused\n", code=1)
    slurm.command("sinfo", stderr="sinfo: error: slurm_receive_msg: Socket timed out on send/recv operation\n", code=1)
    assert queue.cluster_limits("gpu") == ClusterLimits(1001, None, None, None)
    assert len(slurm.calls("sacctmgr")) == 2 and len(slurm.calls("sinfo")) == 1


def test_cluster_limits_on_a_machine_without_slurm(slurm):
    assert queue.cluster_limits("gpu") == ClusterLimits(None, None, None, None)


def test_cluster_limits_when_scontrol_fails(slurm):
    slurm.command("scontrol", stderr="slurm_load_ctl_conf error: Unable to contact slurm controller\n", code=1)
    slurm.command("sinfo", stdout=SINFO_GPU_CLUSTER)
    assert queue.cluster_limits("a100") == ClusterLimits(None, None, None, None)  # a100 is not a partition
    assert queue.cluster_limits(None) == ClusterLimits(None, None, None, True)
    assert slurm.calls("sacctmgr") == []


# `sinfo --noheader --format %P|%l|%L|%D|%c|%m|%G|%s` on the local cluster, and on a site with a capped GPU partition
# of two node kinds (one line per partition and node kind).
SINFO_LOCAL = "debug*|infinite|n/a|1|2|24105|(null)|1-infinite\nshort|5:00|n/a|1|2|24105|(null)|1-infinite\n"
SINFO_SITE = (
    "cpu*|2-00:00:00|1:00:00|40|64|257000|(null)|1-16\n"
    "gpu|1-00:00:00|n/a|8|32|515000|gpu:a100:4|1-4\n"
    "gpu|1-00:00:00|n/a|4|48|1031000+|gpu:h100:8(S:0-1)|1-4\n"
)


def test_parse_partitions_reads_limits_per_partition_and_the_largest_node():
    local = queue.parse_partitions(SINFO_LOCAL)
    assert local[""] == local["debug"] == queue.Partition("debug", None, None, 1, None, 2, 24105, False)
    assert local["short"].max_minutes == 5 and local["short"].node_limit == 1
    site = queue.parse_partitions(SINFO_SITE)
    assert site[""].name == "cpu" and (site["cpu"].max_minutes, site["cpu"].default_minutes) == (2880, 60)
    assert site["cpu"].node_limit == 16 and not site["cpu"].gpus
    gpu = site["gpu"]
    assert (gpu.nodes, gpu.node_limit, gpu.cpus_per_node, gpu.memory_mb, gpu.gpus) == (12, 4, 48, 1031000, True)
    assert queue.parse_partitions("") == {}


@pytest.mark.parametrize(
    ("settings", "shape", "words"),
    [
        ({"time": "1-00:00:01"}, (1, 1, 0, 4), "asks 1-00:01:00 per job but partition gpu allows at most 1-00:00:00"),
        ({}, (5, 1, 4, 4), "launcher.slurm.nodes is 5 but partition gpu gives one job at most 4 node(s)"),
        ({}, (1, 8, 8, 7), "a job needs 56 CPUs per node (8 task(s) x 7 CPUs"),
        ({"mem": "2T"}, (1, 1, 1, 4), "launcher.slurm.mem is 2T per node but the largest node of partition gpu has"),
        ({"time": 60}, (1, 1, 0, 4), None),
        ({"mem": "1000G", "time": "23:59:59"}, (4, 8, 8, 6), None),
    ],
)
def test_fit_problem_names_the_limit_a_job_can_never_meet(settings, shape, words):
    from an_lab.launch.slurm_settings import SlurmSettings
    from an_lab.launch.slurm_shape import Shape, fit_problem, time_minutes

    partition = queue.parse_partitions(SINFO_SITE)["gpu"]
    chosen = SlurmSettings(partition="gpu", **settings)
    problem = fit_problem(Shape(*shape), time_minutes(chosen, partition), chosen, partition)
    assert (str(problem) if problem else None) == words or (words and words in str(problem)), problem


def test_gpus_asked_on_a_partition_without_them_are_refused_however_they_are_asked():
    from an_lab.launch.slurm_settings import SlurmSettings
    from an_lab.launch.slurm_shape import Shape, fit_problem

    partition = queue.parse_partitions(SINFO_SITE)["cpu"]
    for extra in ({"gres": "gpu:1"}, {"gpus": 2}, {"gpus_per_task": "1"}):
        settings = SlurmSettings(additional_parameters=extra)
        problem = fit_problem(Shape(1, 1, 0, 1), 60, settings, partition)
        assert problem is not None and "asks for GPUs but no node of partition cpu has GRES gpu" in str(problem)
        assert problem.key == ("launcher", "slurm", "additional_parameters")
    problem = fit_problem(Shape(1, 1, 2, 1), 60, SlurmSettings(), partition)
    assert "gpus_per_node 2 asks for GPUs" in str(problem) and problem.key == ("launcher", "slurm", "gpus_per_node")
    assert (
        fit_problem(Shape(1, 1, 0, 1), 60, SlurmSettings(additional_parameters={"gres": "tmp:10G"}), partition) is None
    )
