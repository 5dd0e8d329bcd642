"""Measuring the cheap commands (plan, status, table) as users run them: a fresh process each, its wall time and its
peak resident memory, with no torch in the measuring process (benchmarks/common.py imports torch).

The peak is the child's own: a small Python wrapper starts the command, waits for it and reads
resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, which then holds that one child's maximum resident set size.
"""

from __future__ import annotations

import json
import os
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


def measure(command: list[str], output: Path | None = None, code: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one fresh process of `command`; its stdout goes to `output` when given;
    `code`: a checkout whose an_lab the command imports (PYTHONPATH) instead of this one's. A command that fails
    raises, so that a broken command is never timed."""
    environment = {**os.environ, "PYTHONPATH": str(code or ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(output) if output else "-", *command],
        cwd=code or ROOT,  # `python -m` puts the working directory first on the path
        check=True,
        capture_output=True,
        text=True,
        env=environment,
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


def against(command: list[str], other: Path, rounds: int, output: Path | None = None) -> dict[str, float]:
    """This checkout's command and the same command on another checkout's code (`other`), alternating round by round
    so that the machine's load hits both alike: median wall times, largest peaks and the ratio of the medians. The
    other version's output goes beside `output` as <name>.against.txt; `same_output` says whether they match."""
    theirs = output.with_suffix(".against.txt") if output else None
    measure(command, output)
    measure(command, theirs, other)
    mine, others = [], []
    for _ in range(rounds):
        mine.append(measure(command))
        others.append(measure(command, code=other))
    figures = {
        "wall": statistics.median(wall for wall, _ in mine),
        "peak_mb": max(peak for _, peak in mine),
        "against_wall": statistics.median(wall for wall, _ in others),
        "against_peak_mb": max(peak for _, peak in others),
    }
    figures["speedup"] = figures["against_wall"] / figures["wall"]
    if output and theirs:
        figures["same_output"] = float(output.read_bytes() == theirs.read_bytes())
    return figures


def against_lines(figures: dict[str, dict[str, float]]) -> list[str]:
    """A table of against() figures, one line a command."""
    lines = [f"{'command':45} {'this s':>8} {'MB':>6} {'other s':>8} {'MB':>6} {'speed-up':>8}  same output"]
    for name, found in figures.items():
        same = {1.0: "yes", 0.0: "NO"}.get(found.get("same_output", -1.0), "not saved")
        lines.append(
            f"{name:45} {found['wall']:8.2f} {found['peak_mb']:6.0f} {found['against_wall']:8.2f} "
            f"{found['against_peak_mb']:6.0f} {found['speedup']:7.1f}x  {same}"
        )
    return lines


def load() -> float:
    """The 1-minute load average (what else shares the machine while measuring)."""
    return os.getloadavg()[0]
