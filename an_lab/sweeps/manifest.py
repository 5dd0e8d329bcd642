"""The sweep manifest: which cells a sweep has and which runs make each cell, kept beside the runs.

    <output_dir>/sweeps/<name>/manifest.json
    {"name", "mode", "sweep_file", "output_dir", "updated",
     "cells": [{"index", "kind", "name", "label", "changes": {dotted key: value}, "tags": [...],
                "runs": [{"run_id", "seed"}]}]}

Runs live in <output_dir>/<run_id>/ (an_lab.rundir). `status`, `table` and `plot` read a manifest from a sweep
folder, or build the same dictionary from a sweep file without writing anything.
"""

from __future__ import annotations

import time
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.rundir import read_json, write_json_atomic
from an_lab.sweeps.expand import PlannedRun, expand
from an_lab.sweeps.spec import Sweep, load_sweep

MANIFEST = "manifest.json"


def build_manifest(sweep: Sweep, runs: list[PlannedRun]) -> dict:
    cells: dict[int, dict] = {}
    for run in runs:
        cell = run.cell
        entry = cells.setdefault(
            cell.index,
            {
                "index": cell.index,
                "kind": cell.kind,
                "name": cell.name,
                "label": cell.label,
                "changes": {key: _plain(value) for key, value in cell.changes.items()},
                "tags": list(cell.tags),
                "runs": [],
            },
        )
        entry["runs"].append({"run_id": run.run_id, "seed": run.seed})
    return {
        "name": sweep.name,
        "mode": sweep.mode,
        "sweep_file": str(sweep.path.resolve()),
        "output_dir": str(sweep.output_dir.resolve()),
        "updated": time.time(),
        "cells": [cells[index] for index in sorted(cells)],
    }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def write_manifest(sweep: Sweep, runs: list[PlannedRun]) -> Path:
    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep.sweep_dir / MANIFEST
    write_json_atomic(path, build_manifest(sweep, runs))
    return path


def load_manifest(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A sweep file (expanded on the fly) or a sweep folder holding manifest.json."""
    path = Path(target)
    if path.is_dir():
        manifest = read_json(path / MANIFEST)
        if manifest is None:
            raise UsageError(
                f"{path}: no readable {MANIFEST} here; give the sweep file, or the folder "
                "<output_dir>/sweeps/<name>/ that `an-lab sweep` wrote"
            )
        return manifest
    sweep = load_sweep(path, overrides)
    return build_manifest(sweep, expand(sweep))


def run_dirs(manifest: dict) -> dict[str, Path]:
    root = Path(manifest["output_dir"])
    return {run["run_id"]: root / run["run_id"] for cell in manifest["cells"] for run in cell["runs"]}
