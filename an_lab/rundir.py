"""The run directory is the ledger: what a run is, how far it got, and its result, readable without torch.

runs/<run_id>/
    config.json       resolved config (written first)
    started.json      host, pid and time of the latest attempt
    last.ckpt         latest checkpoint (Lightning's format), replaced atomically
    metrics.csv       per-epoch metrics (Lightning's CSV logger)
    failed.json       why the latest attempt failed (removed when a later attempt starts)
    result.json       written once, atomically, at the very end: its presence means "done"
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from pathlib import Path

CONFIG, STARTED, FAILED, RESULT, CHECKPOINT, METRICS = (
    "config.json",
    "started.json",
    "failed.json",
    "result.json",
    "last.ckpt",
    "metrics.csv",
)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside the target and rename: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark_started(run_dir: Path) -> None:
    (run_dir / FAILED).unlink(missing_ok=True)
    write_json_atomic(run_dir / STARTED, {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})


def mark_failed(run_dir: Path, reason: str) -> None:
    write_json_atomic(run_dir / FAILED, {"reason": reason, "time": time.time()})


def _alive_here(started: dict) -> bool:
    if started.get("host") != socket.gethostname():
        return True  # another machine's process: trust it (the scheduler's view refines this)
    try:
        os.kill(int(started["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    return True


def state(run_dir: Path) -> tuple[str, str | None]:
    """(state, detail): done, failed (with the reason), running, interrupted (may resume) or pending."""
    if (run_dir / RESULT).exists():
        return "done", None
    failed = read_json(run_dir / FAILED)
    if failed is not None:
        return "failed", failed.get("reason")
    started = read_json(run_dir / STARTED)
    if started is None:
        return "pending", None
    if _alive_here(started):
        return "running", None
    return "interrupted", "resumes from last.ckpt" if (run_dir / CHECKPOINT).exists() else None


def attempt_logs(directory: Path) -> list[Path]:
    return sorted((directory / "logs").glob("attempt-*"), key=lambda p: int(p.name.split("-")[1]))


def epoch_metrics(directory: Path) -> list[dict]:
    """Per-epoch rows over all attempts' CSV logs; an epoch logged again after a resume replaces the old row."""
    merged: dict[int, dict] = {}
    for attempt in attempt_logs(directory):
        path = attempt / METRICS
        if not path.exists():
            continue
        with path.open() as handle:
            for row in csv.DictReader(handle):
                epoch = int(float(row["epoch"]))
                merged.setdefault(epoch, {}).update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return [merged[epoch] for epoch in sorted(merged)]
