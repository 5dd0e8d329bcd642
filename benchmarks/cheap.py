"""Measuring the cheap commands (plan, status, table) as users run them: a fresh process each, its wall time and its
peak resident memory, with no torch in the measuring process (benchmarks/common.py imports torch).

The peak is the child's own: a small Python wrapper starts the command, waits for it and reads
resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, which then holds that one child's maximum resident set size.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WRAPPER = """\
import json, resource, subprocess, sys, time
out = open(sys.argv[1], "wb") if sys.argv[1] != "-" else subprocess.DEVNULL
start = time.perf_counter()
done = subprocess.run(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL)
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "peak_mb": peak_kib / 1024, "rc": done.returncode}))
"""


def cli() -> list[str]:
    """How to start an-lab: the installed script, else the module (both honour PYTHONPATH)."""
    return [shutil.which("an-lab")] if shutil.which("an-lab") else [sys.executable, "-m", "an_lab.cli"]


def measure(command: list[str], output: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one fresh process of `command`; its stdout goes to `output` when given.
    A command that fails raises, so that a broken command is never timed."""
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(output) if output else "-", *command],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(done.stdout)
    if figures["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {figures['rc']}")
    return figures["wall"], figures["peak_mb"]


def medians(command: list[str], rounds: int, output: Path | None = None) -> tuple[float, float]:
    """Median wall time and the largest peak memory of `rounds` fresh processes, after one warm-up (which writes the
    command's output to `output`, when given)."""
    measure(command, output)
    samples = [measure(command) for _ in range(rounds)]
    return statistics.median(wall for wall, _ in samples), max(peak for _, peak in samples)


def load() -> float:
    """The 1-minute load average (what else shares the machine while measuring)."""
    return os.getloadavg()[0]
