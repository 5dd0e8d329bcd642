"""The local executor: each run is its own `an-lab train` process, up to max_parallel at a time.

One GPU per process where GPUs exist; on CPU the cores are split between the processes. Torch-free: the
orchestrating process only starts, watches and stops children. Ctrl-C or SIGTERM stops the children with
SIGTERM, which makes them flush W&B and keep their last checkpoint, so the next launch resumes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.rundir import (
    CLAIM_FD_ENV,
    CONFIG,
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    FAILED,
    INTERRUPTED,
    Claim,
    mark_failed,
    mark_interrupted,
    read_json,
)

LOG = "train.log"


@dataclass
class LocalJob:
    run_id: str
    run_dir: Path
    process: subprocess.Popen | None = None
    gpu: str | None = None
    returncode: int | None = None
    stopped: bool = False  # stopped on purpose (e.g. pruned), not failed
    payload: object = None  # the caller's own data, e.g. an Optuna trial
    claim: Claim | None = None  # released by run_local once the child has ended and its end is recorded
    outcome: str | None = None  # done, failed, interrupted, busy (another owner had the run) or stopped
    note: str | None = None  # a problem met while recording the end (e.g. the disk is full)
    started_at: float = 0.0


def visible_gpus() -> list[str]:
    """GPU indices without importing torch: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def _start(job: LocalJob, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if job.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = job.gpu
    passed: tuple[int, ...] = ()
    if job.claim is not None:  # the child holds the same claim, and keeps holding it if this launcher dies
        env[CLAIM_FD_ENV] = str(job.claim.fd)
        passed = (job.claim.fd,)
        job.claim.update(role="local launcher", child_command="an-lab train")
    with (job.run_dir / LOG).open("a") as log:
        command = [sys.executable, "-m", "an_lab.cli", "train", str(job.run_dir / CONFIG), "--quiet"]
        job.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, pass_fds=passed
        )
    if job.claim is not None:
        job.claim.update(child_pid=job.process.pid)


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _last_log_line(job: LocalJob) -> str:
    path = job.run_dir / LOG
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


def _record_end(job: LocalJob, started_at: float) -> None:
    """Classify how a child ended and write it into the run folder (the child's own record wins).

    Killed by a signal (SIGKILL from the OOM killer, SIGTERM, ...): interrupted, resumes on the next launch.
    Exit 1 and other codes: failed, with the run's own reason (failed.json) or the exit code and the log's last line.
    """
    code = job.returncode
    if code == 0 or code == EXIT_BUSY:
        job.outcome = "done" if code == 0 else "busy"
        return
    signum = -code if code < 0 else (code - 128 if 128 < code < 128 + 65 else None)
    try:
        if code == EXIT_INTERRUPTED or signum is not None:
            job.outcome = "interrupted"
            own = read_json(job.run_dir / INTERRUPTED)
            if code == EXIT_INTERRUPTED and own is not None:
                return
            if signum is None:  # the run stopped itself for an outside cause (a full disk) but could not say so
                why = f"stopped from outside: {_last_log_line(job)}"
            else:
                why = f"{'killed' if code < 0 else 'stopped'} by {_signal_name(signum)}"
            if signum == signal.SIGKILL:
                why += " (the OOM killer sends this one)"
            mark_interrupted(job.run_dir, f"{why} (log: {job.run_dir / LOG})")
            return
        job.outcome = "failed"
        own = read_json(job.run_dir / FAILED)
        if own is not None and float(own.get("time") or 0) >= started_at:
            return
        mark_failed(job.run_dir, f"exit code {code}: {_last_log_line(job)} (log: {job.run_dir / LOG})")
    except UsageError as error:  # the ledger cannot be written (full disk): say so, keep going
        job.note = str(error)


def _release(job: LocalJob) -> None:
    if job.claim is not None:
        job.claim.release()


def run_local(
    next_job: Callable[[], LocalJob | None],
    max_parallel: int,
    on_finish: Callable[[LocalJob], None] = lambda job: None,
    should_stop: Callable[[LocalJob], bool] = lambda job: False,
) -> None:
    """Run jobs from next_job (None: no more) until all ended; should_stop is asked about each running job on
    every poll and stops it with SIGTERM. Interrupts stop the children first. Each job's claim is released once its
    end is recorded and on_finish has seen it. A UsageError from next_job starts nothing more; it is raised once the
    running jobs have ended."""
    gpus = visible_gpus()
    parallel = max(1, min(max_parallel, len(gpus) or max_parallel))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    running: list[LocalJob] = []
    free_gpus = list(gpus[:parallel])

    def finish(job: LocalJob) -> None:
        if job.gpu is not None:
            free_gpus.append(job.gpu)
        try:
            on_finish(job)
        finally:
            _release(job)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    exhausted, problem = False, None
    try:
        while running or not exhausted:
            while not exhausted and len(running) < parallel:
                try:
                    job = next_job()
                except UsageError as error:  # e.g. a full disk: start nothing more, let the running jobs end
                    job, problem = None, error
                exhausted = job is None
                if job is not None:
                    job.gpu = free_gpus.pop(0) if free_gpus else None
                    if _launch(job, threads):
                        running.append(job)
                    else:
                        finish(job)
            time.sleep(0.2)
            for job in running:
                if not job.stopped and job.process.poll() is None and should_stop(job):
                    job.stopped = True
                    os.killpg(job.process.pid, signal.SIGTERM)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                _ended(job)
                finish(job)
        if problem is not None:
            raise problem
    except KeyboardInterrupt:
        for job in running:
            if job.process.poll() is None:
                os.killpg(job.process.pid, signal.SIGTERM)
        for job in running:
            job.process.wait()
            _ended(job)
            _release(job)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _launch(job: LocalJob, threads: int) -> bool:
    """Start the job's child; False (with the reason in job.note) when it cannot be started."""
    job.started_at = time.time()
    try:
        _start(job, threads)
    except (OSError, UsageError) as error:
        job.outcome = "not started"
        job.note = f"could not start: {getattr(error, 'strerror', None) or error}"
        return False
    return True


def _ended(job: LocalJob) -> None:
    job.returncode = job.process.returncode
    if job.stopped:
        job.outcome = "stopped"
    else:
        _record_end(job, job.started_at)
