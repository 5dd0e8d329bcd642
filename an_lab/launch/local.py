"""The local executor: each run is its own process, up to max_parallel at a time.

One GPU per process where GPUs exist; on CPU the cores are split between the processes. Torch-free: the
orchestrating process only starts, watches and stops children. Ctrl-C or SIGTERM stops the children with
SIGTERM, which makes them flush W&B and keep their last checkpoint, so the next launch resumes them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from an_lab import rundir
from an_lab.errors import UsageError
from an_lab.launch.base import (
    BUSY,
    DONE,
    FAILED,
    INTERRUPTED,
    NOT_STARTED,
    STOPPED,
    Executor,
    Handle,
    RunRequest,
)
from an_lab.rundir import (
    CLAIM_FD_ENV,
    CONFIG,
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    mark_failed,
    mark_interrupted,
    read_json,
)

LOG = "train.log"
# How runs are started: "forkserver" (the default: forked from a process that imported torch once, see
# an_lab.launch.workers) or "process" (a fresh interpreter per run, which imports torch every time).
STARTER_ENV = "AN_LAB_LOCAL_STARTER"


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


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def _last_log_line(run_dir: Path) -> str:
    """The run's own last error line (`error: ...`, what the entry point prints), else the log's last line."""
    try:
        lines = (run_dir / LOG).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    own = [line for line in lines if line.startswith("error: ")]
    return (own or lines or ["no output"])[-1][:300]


def record_end(run_dir: Path, code: int, started_at: float) -> str:
    """Classify how a child ended, write it into the run folder unless the child's own record says it, and return the
    outcome. Killed by a signal (SIGKILL from the OOM killer, SIGTERM, ...): interrupted, resumes on the next launch.
    Exit 1 and other codes: failed, with the run's own reason (failed.json) or the exit code and the log's last line.
    Raises UsageError when the ledger cannot be written (a full disk)."""
    if code == 0:
        return DONE
    if code == EXIT_BUSY:
        return BUSY
    signum = -code if code < 0 else (code - 128 if 128 < code < 128 + 65 else None)
    if code == EXIT_INTERRUPTED or signum is not None:
        if code == EXIT_INTERRUPTED and read_json(run_dir / rundir.INTERRUPTED) is not None:
            return INTERRUPTED
        if signum is None:  # the run stopped itself for an outside cause (a full disk) but could not say so
            why = f"stopped from outside: {_last_log_line(run_dir)}"
        else:
            why = f"{'killed' if code < 0 else 'stopped'} by {_signal_name(signum)}"
        if signum == signal.SIGKILL:
            why += " (the OOM killer sends this one)"
        mark_interrupted(run_dir, f"{why} (log: {run_dir / LOG})")
        return INTERRUPTED
    own = read_json(run_dir / rundir.FAILED)
    if own is None or float(own.get("time") or 0) < started_at:
        mark_failed(run_dir, f"exit code {code}: {_last_log_line(run_dir)} (log: {run_dir / LOG})")
    return FAILED


class LocalExecutor(Executor):
    """Runs on this machine, up to max_parallel at once: one GPU per run where GPUs exist, else the cores split
    between them. Each run is a child process in its own session (its data loader workers with it), holding the
    run's claim, which it keeps if this launcher dies."""

    name = "local"
    holds_claims = True

    @classmethod
    def for_sweep(cls, home, job_name, launcher, max_parallel, poll_s, follow) -> LocalExecutor:
        return cls(max_parallel)  # it always follows its children; nothing to poll but them

    def __init__(self, max_parallel: int, starter=None) -> None:
        self.gpus = visible_gpus()
        self.max_parallel = max(1, min(max_parallel, len(self.gpus) or max_parallel))
        self.threads = max(1, (os.cpu_count() or 1) // self.max_parallel)
        self.free_gpus = list(self.gpus[: self.max_parallel])
        self.running: list[tuple[Handle, object, str | None]] = []  # handle, process, its GPU
        self.followed: list[tuple[Handle, int]] = []  # runs an earlier launcher started: handle, training pid
        self.starter = starter or default_starter()

    def slots(self) -> int:
        return self.max_parallel - len(self.running) - len(self.followed)

    def adopt(self, requests: list[RunRequest]) -> list[Handle]:
        """Follow the runs that a live process of this machine trains already (started by a launcher that died, or
        by another launch of the sweep): their ends are read from their run folders, as they are not our children."""
        handles = []
        for request in requests:
            started = rundir.read_json(request.run_dir / rundir.STARTED) or {}
            if rundir.state(request.run_dir)[0] != "running" or not isinstance(started.get("pid"), int):
                continue
            handle = Handle(request, job_id=f"pid {started['pid']}")
            self.followed.append((handle, started["pid"]))
            handles.append(handle)
        return handles

    def _poll_followed(self) -> list[Handle]:
        ended = []
        for entry in list(self.followed):
            handle, _ = entry
            current = rundir.state(handle.run_dir)[0]
            if current == "running":
                continue
            self.followed.remove(entry)
            if handle.stopping:
                handle.outcome = STOPPED
            else:
                handle.outcome = {"done": DONE, "failed": FAILED, "corrupt": FAILED}.get(current, INTERRUPTED)
            ended.append(handle)
        return ended

    def submit(self, requests: list[RunRequest]) -> list[Handle]:
        handles = []
        for request in requests:
            gpu = self.free_gpus.pop(0) if self.free_gpus else None
            handle = Handle(request, job_id="")
            try:
                process = self._start(request, gpu)
            except (OSError, UsageError) as error:
                if gpu is not None:
                    self.free_gpus.append(gpu)
                handle.outcome = NOT_STARTED
                handle.note = f"could not start: {getattr(error, 'strerror', None) or error}"
                _release(request)
            else:
                handle.job_id = f"pid {process.pid}"
                self.running.append((handle, process, gpu))
            handles.append(handle)
        return handles

    def _start(self, request: RunRequest, gpu: str | None):
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        fds: tuple[int, ...] = ()
        if request.claim is not None:  # the child holds the same claim, and keeps holding it if this launcher dies
            env[CLAIM_FD_ENV] = str(request.claim.fd)
            fds = (request.claim.fd,)
            request.claim.update(role="local launcher", child_command="an-lab train")
        _log_start(request.run_dir / LOG, request.run_id, gpu)
        process = self.starter(request.run_dir / CONFIG, request.run_dir / LOG, env, fds)
        if request.claim is not None:
            request.claim.update(child_pid=process.pid)
        return process

    def poll(self) -> list[Handle]:
        ended = []
        for entry in list(self.running):
            handle, process, gpu = entry
            code = process.poll()
            if code is None:
                continue
            self.running.remove(entry)
            if gpu is not None:
                self.free_gpus.append(gpu)
            self._ended(handle, code)
            ended.append(handle)
        return ended + self._poll_followed()

    def _ended(self, handle: Handle, code: int) -> None:
        handle.returncode = code
        if handle.stopping:
            handle.outcome = STOPPED
        else:
            try:
                handle.outcome = record_end(handle.run_dir, code, handle.submitted_at)
            except UsageError as error:  # the ledger cannot be written (full disk): say so, keep going
                handle.outcome, handle.note = FAILED if code > 0 else INTERRUPTED, str(error)
        _release(handle.request)

    def in_flight(self) -> list[Handle]:
        return [handle for handle, _, _ in self.running] + [handle for handle, _ in self.followed]

    def stop(self, handle: Handle) -> None:
        for candidate, process, _ in self.running:
            if candidate is handle and process.poll() is None:
                handle.stopping = True
                _kill_group(process.pid, signal.SIGTERM)
        for candidate, pid in self.followed:
            if candidate is handle:
                handle.stopping = True
                _kill_group(pid, signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGTERM to every child (they flush W&B and keep their last checkpoint), wait, record, release."""
        for _, process, _ in self.running:
            if process.poll() is None:
                _kill_group(process.pid, signal.SIGTERM)
        try:
            for handle, process, _ in self.running:
                self._ended(handle, process.wait())
        except KeyboardInterrupt:  # a second Ctrl-C while they save: stop them at once (each resumes from its
            for _, process, _ in self.running:  # last checkpoint), quietly
                if process.poll() is None:
                    _kill_group(process.pid, signal.SIGKILL)
            for handle, process, _ in self.running:
                if handle.outcome is None:
                    self._ended(handle, process.wait())
        self.running.clear()
        self.followed.clear()  # not ours: they train on, as they did when their own launcher died

    def describe(self, handle: Handle) -> str:
        return handle.job_id

    def close(self) -> None:
        """Stop the forkserver, once no run is in flight (runs still in flight keep running, followed without their
        exit status). Without this call it stops when this process ends."""
        close = getattr(self.starter, "close", None)
        if close is not None:
            close()


def _log_start(log: Path, run_id: str, gpu: str | None) -> None:
    """One line per start in the run's log: when, by whom and where. (It also gives the log its first disk block
    before training, so that on a disk that fills up the run's last words still fit.)"""
    where = f"GPU {gpu}" if gpu is not None else "CPU"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with log.open("a") as out:
        out.write(f"an-lab: {stamp} run {run_id} started by the local launcher (pid {os.getpid()}) on {where}\n")


def _kill_group(pid: int, number: int) -> None:
    """Signal a run's process group (each run leads its own session), or the process alone where it leads none."""
    try:
        os.killpg(pid, number)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _release(request: RunRequest) -> None:
    if request.claim is not None:
        request.claim.release()


def default_starter():
    """A forkserver, which falls back on start_process when it cannot start; start_process with STARTER_ENV=process."""
    choice = os.environ.get(STARTER_ENV) or "forkserver"
    if choice == "process":
        return start_process
    if choice != "forkserver":
        raise UsageError(f"{STARTER_ENV}={choice!r}: use 'forkserver' (the default) or 'process'")
    from an_lab.launch.workers import Forkserver

    return Forkserver(fallback=start_process)


def start_process(config: Path, log: Path, env: dict[str, str], fds: tuple[int, ...]) -> subprocess.Popen:
    """A fresh interpreter that trains the run (an_lab.launch.entry), in its own session, output to the run's log."""
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "an_lab.launch.entry", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **env),
            start_new_session=True,
            pass_fds=fds,
        )
