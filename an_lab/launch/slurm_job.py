"""What runs inside a SLURM job: `TrainRun`, the callable submitit pickles for each array task.

Each task trains its run in-process through the one entry point (`an_lab.launch.entry.execute`), resuming from
last.ckpt. On time limits and preemption submitit's signal handler (global rank 0 only) calls `TrainRun.checkpoint()`,
which returns the same call: the requeued job resumes from the last epoch-end checkpoint (nothing is saved inside the
signal handler, so no collective runs there), and W&B continues under the run id. Lightning gets
`SLURMEnvironment(auto_requeue=False)` (submitit alone requeues); MASTER_PORT comes from the job id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from an_lab.errors import Interrupted, UsageError
from an_lab.identity import run_dir
from an_lab.launch.entry import execute, load_run_config, quiet_third_parties
from an_lab.rundir import EXIT_BUSY, RESULT, mark_failed

ATTEMPTS = "slurm-attempts.jsonl"  # in the run folder: one line per start of the job (rank 0): requeues show here
# After a SIGTERM, how long a task waits for the USR2 that follows it on preemption (submitit checkpoints and requeues
# on USR2). scancel sends SIGTERM alone: the task then exits 143 after this grace, well inside SLURM's KillWait.
PREEMPT_GRACE_S = 3.0
PORT_BASE, PORT_SPAN = 20000, 20000


def master_port(job_id: int) -> int:
    """The DDP rendezvous port of a job: distinct for jobs sharing a node unless their ids differ by 20000."""
    return PORT_BASE + job_id % PORT_SPAN


class JobFailed(RuntimeError):
    """The run failed inside its job; its folder's failed.json says why (one line in the job log, no long trace)."""


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
        rank0 = int(os.environ.get("SLURM_PROCID", "0")) == 0
        try:
            config = load_run_config(config_path)
            if rank0:
                _record_attempt(run_dir(config))
            return self._train(config, config_path)
        except UsageError as error:  # the run cannot train as configured (a missing data root, a bad backbone):
            if rank0:  # recorded in its folder by the job itself, so no launch resubmits it without --retry-failed
                with contextlib.suppress(UsageError):
                    mark_failed(Path(config_path).parent, str(error))
            raise JobFailed(str(error)) from None

    def _train(self, config, config_path: str) -> dict:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        quiet_third_parties()
        plugins = [SLURMEnvironment(auto_requeue=False)] if "SLURM_NTASKS" in os.environ else None
        result_file = run_dir(config) / RESULT
        preempt = _PreemptSignal(finished=result_file.exists)
        try:
            outcome = execute(config, plugins=plugins, progress=False)
        except SystemExit as stop:
            # train() exits 143 on SIGTERM. submitit's preemption sends SIGTERM and then USR2, whose handler
            # (rank 0) checkpoints, requeues and exits: give it the time to arrive.
            if stop.code == 143:
                preempt.wait(self.grace_s)
            raise
        finally:
            preempt.restore()
        if outcome.code == EXIT_BUSY:  # another launcher trains this run: it is trained once, by that owner
            print(outcome.message, flush=True)
            return {"run_id": run_dir(config).name, "busy": outcome.message}
        if outcome.code != 0:  # failed.json or interrupted.json says why
            raise JobFailed(outcome.message)
        return {"run_id": outcome.result.get("run_id"), "final": outcome.result.get("final")}

    def checkpoint(self, config_path: str):
        """Called by submitit in the signal handler of global rank 0: no collective, no saving here."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, config_path)


def quiet_connection_errors() -> None:
    """From now on, a thread that dies of a lost connection (W&B's client when its service process ends with the job on
    a requeue) leaves one line in the job log instead of a stack; other exceptions keep theirs."""
    import threading

    previous = threading.excepthook

    def hook(args) -> None:
        if isinstance(args.exc_value, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            name = args.thread.name if args.thread is not None else "a thread"
            print(f"note: {name} lost its connection while the job was being requeued", file=sys.stderr, flush=True)
            return
        previous(args)

    threading.excepthook = hook


def requeue_cut_short(error: subprocess.CalledProcessError) -> bool:
    """Whether submitit's `scontrol requeue` was stopped by a signal: scontrol runs inside the job step, which SLURM
    ends (SIGTERM, then SIGKILL) as soon as the requeue is accepted, sometimes before scontrol has returned."""
    command = error.cmd if isinstance(error.cmd, list | tuple) else str(error.cmd).split()
    stopped = error.returncode in (-signal.SIGTERM, -signal.SIGKILL)
    return stopped and len(command) >= 2 and os.path.basename(str(command[0])) == "scontrol" and command[1] == "requeue"


class _PreemptSignal:
    """Notes whether submitit's requeue signal came and passes it on to submitit's own handler, with SIGTERM deferred
    while that handler runs.

    submitit's handler (rank 0) runs `scontrol requeue` and then exits. SLURM may deliver the SIGTERM of that requeue
    before `scontrol` returns; the training's SIGTERM handler would then raise inside submitit's handler and cut the
    requeue short. While the relay runs, a SIGTERM is only noted: the job is on its way out already, by the requeue.
    A signal that comes once the run has finished (its result written) requeues nothing: the job ends as completed.
    """

    def __init__(self, finished=lambda: False) -> None:
        self.number = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        self.seen = False
        self.deferred_term = False
        self.finished = finished
        self.previous = signal.getsignal(self.number)
        signal.signal(self.number, self._relay)

    def _note_term(self, signum, frame) -> None:
        self.deferred_term = True

    def _relay(self, signum, frame) -> None:
        self.seen = True
        if not callable(self.previous) or self.finished():
            return
        quiet_connection_errors()  # the job is about to end: W&B's service goes with it
        term = signal.signal(signal.SIGTERM, self._note_term)
        try:
            self.previous(signum, frame)  # rank 0: checkpoint, requeue and sys.exit
        except subprocess.CalledProcessError as error:
            if not requeue_cut_short(error):
                raise
            # SLURM ended the step, scontrol with it, because of the requeue that scontrol asked for: it took
            print("submitit: requeued (scontrol ended with the job step it requeued); exiting", flush=True)
            raise SystemExit(-1) from None
        finally:
            signal.signal(signal.SIGTERM, term)

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


class Orchestrate:
    """A detached `an-lab sweep`: runs the command line in the job (1 CPU, no GPU) and, when the job is requeued
    (preemption or its time limit), runs it again: the sweep reattaches to its runs in flight."""

    def __init__(self, argv: list[str], workdir: str) -> None:
        self.argv = list(argv)
        self.workdir = workdir

    def __call__(self) -> int:
        import subprocess
        import sys

        os.chdir(self.workdir)
        # A process of its own (the snapshot's `an-lab`, from the job's PYTHONPATH): SIGTERM on a requeue reaches it
        # through the job's process group, and it leaves the trials' jobs running.
        code = subprocess.run([sys.executable, "-m", "an_lab.cli", *self.argv], check=False).returncode
        if code == Interrupted.exit_code:  # stopped by SIGTERM: `an-lab cancel`, or a requeue that starts it again
            print("an-lab: the orchestrator was stopped (cancelled or requeued); its runs keep their state", flush=True)
            return code
        if code not in (0, 1):
            raise JobFailed(f"an-lab {' '.join(self.argv)} exited {code}")
        return code

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)
