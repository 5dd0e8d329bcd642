"""`an-lab status`: the state of every run of a sweep, read from the run directories (no daemon, no torch)."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from an_lab.rundir import RESULT, read_json, state
from an_lab.sweeps.manifest import run_dirs
from an_lab.sweeps.plan import align, state_text


def collect(manifest: dict) -> list[dict]:
    """One row per run: cell, seed, run id, state, detail, final top-1 error when done."""
    directories = run_dirs(manifest)
    rows = []
    for cell in manifest["cells"]:
        for run in cell["runs"]:
            directory: Path = directories[run["run_id"]]
            current, detail = state(directory)
            result = read_json(directory / RESULT) if current == "done" else None
            rows.append(
                {
                    "cell": cell["label"],
                    "cell_index": cell["index"],
                    "seed": run["seed"],
                    "run_id": run["run_id"],
                    "state": current,
                    "detail": detail,
                    "top1_err": result["final"]["top1_err"] if result else None,
                }
            )
    return rows


def best_cell(rows: list[dict]) -> tuple[str, float, int] | None:
    """(label, mean final top-1 error, runs done) of the cell with the lowest mean over its finished runs."""
    errors: dict[str, list[float]] = {}
    for row in rows:
        if row["top1_err"] is not None:
            errors.setdefault(row["cell"], []).append(row["top1_err"])
    if not errors:
        return None
    label = min(errors, key=lambda cell: statistics.fmean(errors[cell]))
    return label, statistics.fmean(errors[label]), len(errors[label])


def render_status(manifest: dict, rows: list[dict]) -> str:
    table = [("cell", "seed", "run id", "top-1 err", "state")]
    for row in rows:
        error = f"{row['top1_err']:.2f}" if row["top1_err"] is not None else ""
        table.append((row["cell"], str(row["seed"]), row["run_id"], error, state_text(row["state"], row["detail"])))
    counts = Counter(row["state"] for row in rows)
    summary = ", ".join(f"{name} {counts[name]}" for name in ("done", "running", "interrupted", "failed", "pending"))
    lines = [f"sweep {manifest['name']}: {len(rows)} runs in {manifest['output_dir']}/", "", *align(table), "", summary]
    best = best_cell(rows)
    if best is not None:
        label, error, done = best
        lines.append(f"best so far: {label} at {error:.2f}% top-1 error (mean of {done} finished run(s))")
    if counts["failed"]:
        lines.append("failed runs relaunch with: an-lab sweep SWEEP.yaml --retry-failed")
    return "\n".join(lines)
