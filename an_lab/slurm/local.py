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

from an_lab.rundir import CONFIG, FAILED, mark_failed, read_json

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
    log = (job.run_dir / LOG).open("a")
    command = [sys.executable, "-m", "an_lab.cli", "train", str(job.run_dir / CONFIG), "--quiet"]
    job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()


def _record_failure(job: LocalJob) -> None:
    """Keep the run's own reason (e.g. divergence); otherwise the exit code and the log's last line."""
    if read_json(job.run_dir / FAILED) is not None:
        return
    lines = (job.run_dir / LOG).read_text(errors="replace").strip().splitlines() if (job.run_dir / LOG).exists() else []
    last = lines[-1] if lines else "no output"
    mark_failed(job.run_dir, f"exit code {job.returncode}: {last[:300]} (log: {job.run_dir / LOG})")


def run_local(
    next_job: Callable[[], LocalJob | None],
    max_parallel: int,
    on_finish: Callable[[LocalJob], None] = lambda job: None,
    should_stop: Callable[[LocalJob], bool] = lambda job: False,
) -> None:
    """Run jobs from next_job (None: no more) until all ended; should_stop is asked about each running job on
    every poll and stops it with SIGTERM. Interrupts stop the children first."""
    gpus = visible_gpus()
    parallel = max(1, min(max_parallel, len(gpus) or max_parallel))
    threads = max(1, (os.cpu_count() or 1) // parallel)
    running: list[LocalJob] = []
    free_gpus = list(gpus[:parallel])
    exhausted = False

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        while running or not exhausted:
            while not exhausted and len(running) < parallel:
                job = next_job()
                if job is None:
                    exhausted = True
                    break
                job.gpu = free_gpus.pop(0) if free_gpus else None
                _start(job, threads)
                running.append(job)
            time.sleep(0.2)
            for job in running:
                if not job.stopped and job.process.poll() is None and should_stop(job):
                    job.stopped = True
                    os.killpg(job.process.pid, signal.SIGTERM)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                job.returncode = job.process.returncode
                if job.gpu is not None:
                    free_gpus.append(job.gpu)
                if job.returncode != 0 and not job.stopped:
                    _record_failure(job)
                on_finish(job)
    except KeyboardInterrupt:
        for job in running:
            if job.process.poll() is None:
                os.killpg(job.process.pid, signal.SIGTERM)
        for job in running:
            job.process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
