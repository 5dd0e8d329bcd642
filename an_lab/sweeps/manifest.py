"""The sweep manifest: which cells a sweep has and which runs make each cell, kept beside the runs.

    <output_dir>/sweeps/<name>/manifest.json
    {"name", "mode", "description", "sweep_file", "output_dir", "overrides" (--set), "base_config" (the base cell's
     resolved run config), "convergence" (when a run counts as not converged), "updated",
     "cells": [{"index", "kind", "name", "label", "changes": {dotted key: value}, "tags": [...],
                "runs": [{"run_id", "seed"}]}]}

The sweep folder's file names, reading its manifest and the manifest's checks live in an_lab.sweep_folder.

Runs live in <output_dir>/<run_id>/ (an_lab.rundir). `status`, `table` and `plot` read a manifest from a sweep
folder, or build the same dictionary from a sweep file without writing anything (but `table`, `plot` and `report`
keep the results index of a sweep folder that exists up to date).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.rundir import write_json_atomic
from an_lab.sweep_folder import (
    MANIFEST,
    check_name,
    read_folder,
    say_pending,
)
from an_lab.sweeps.backbones import KEY as BACKBONE_KEY
from an_lab.sweeps.expand import PlannedRun, base_config, expand
from an_lab.sweeps.records import Manifest, ManifestCell
from an_lab.sweeps.spec import Sweep, load_sweep

# Sweep files being expanded in memory to find a backbone: a sweep that names itself would otherwise never end.
_EXPANDING: set[Path] = set()


def build_manifest(sweep: Sweep, runs: list[PlannedRun]) -> Manifest:
    cells: dict[int, ManifestCell] = {}
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
    first = next((run.cell for run in runs if run.cell.kind == "base"), None)
    base = first.config.model_copy(update={"wandb": first.wandb}) if first is not None else None  # W&B as its runs
    tasks = {run.cell.config.task for run in runs} or {base_config(sweep).task}
    return {
        "name": sweep.name,
        "mode": sweep.mode,
        "task": tasks.pop(),  # one task a sweep (expand refuses a mix): its tables, figures and reports follow it
        "description": sweep.spec.description,
        "sweep_file": str(sweep.path.resolve()),
        "output_dir": str(sweep.output_dir.resolve()),
        "overrides": list(sweep.overrides),
        "base_config": base.model_dump(mode="json") if base is not None else None,
        "convergence": sweep.spec.convergence.model_dump(),
        "updated": time.time(),
        "cells": [cells[index] for index in sorted(cells)],
    }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def write_manifest(sweep: Sweep, runs: list[PlannedRun] | Manifest) -> Path:
    """Write the sweep folder's manifest (built from the runs, or given whole); refuse a folder that another sweep
    file of the same name owns (check_owner)."""
    check_owner(sweep)
    try:
        sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the sweep folder {sweep.sweep_dir}: {error.strerror or error}") from None
    path = sweep.sweep_dir / MANIFEST
    write_json_atomic(path, runs if isinstance(runs, dict) else build_manifest(sweep, runs))
    return path


def check_owner(sweep: Sweep) -> None:
    """Two sweep files with one name in one output_dir would share a sweep folder and overwrite each other's
    manifest, reports and recorded --set: the second is refused while the first file is still there."""
    try:
        recorded = json.loads((sweep.sweep_dir / MANIFEST).read_text()).get("sweep_file")
    except (OSError, ValueError, AttributeError):
        return
    mine = str(sweep.path.resolve())
    if isinstance(recorded, str) and recorded != mine and Path(recorded).is_file():
        raise UsageError(
            f"{sweep.path}: the sweep name {sweep.name!r} is taken in {sweep.output_dir} by {recorded}, whose sweep "
            f"folder {sweep.sweep_dir} would be overwritten; give this sweep another name (name: ...), or another "
            "output_dir"
        )


def load_manifest(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Manifest:
    """A sweep file (expanded on the fly) or a sweep folder holding manifest.json (validated: see check_manifest);
    a note on stderr when its output folder still holds runs of an earlier id scheme (an_lab.migrate)."""
    return load_target(target, overrides)[0]


def load_target(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Manifest, Sweep | None]:
    """load_manifest(), with the sweep it read when the target is a sweep file (None for a sweep folder), so that a
    command that needs both reads the file once."""
    found: list[Sweep] = []
    manifest = _load_manifest(target, overrides, found)
    say_pending(manifest)
    return manifest, (found[0] if found else None)


def _load_manifest(
    target: str | Path, overrides: list[str] | tuple[str, ...] = (), found: list | None = None
) -> Manifest:
    folder = read_folder(target, overrides)
    if folder is not None:
        return folder
    path = Path(target)
    sweep = with_recorded_overrides(load_sweep(path, overrides))
    if found is not None:
        found.append(sweep)
    if sweep.mode == "search" and (sweep.sweep_dir / MANIFEST).is_file():
        return _load_manifest(sweep.sweep_dir)  # the trials Optuna asked are known only to the sweep folder
    return build_manifest(sweep, expand(sweep, find=find_sweep))


def with_recorded_overrides(sweep: Sweep, say=None) -> Sweep:
    """The sweep as its last launch ran it: given no --set, the --set overrides its manifest records (`an-lab sweep
    s1.yaml --set seeds=[1]`, then `plan`, `status` or `sweep` of s1.yaml see seed 1); a --set replaces them."""
    if sweep.overrides or not (recorded := recorded_overrides(sweep)):
        return sweep
    if say is not None:
        say(f"note: with the --set overrides the last launch of this sweep recorded: {' '.join(recorded)}")
    return load_sweep(sweep.path, recorded)


def recorded_overrides(sweep: Sweep) -> list[str]:
    """The --set overrides the sweep folder's manifest records for this same sweep file (empty if none)."""
    try:
        manifest = json.loads((sweep.sweep_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict) or manifest.get("sweep_file") != str(sweep.path.resolve()):
        return []
    return [item for item in manifest.get("overrides") or [] if isinstance(item, str)]


def run_dirs(manifest: Manifest) -> dict[str, Path]:
    root = Path(manifest["output_dir"])
    return {run["run_id"]: root / run["run_id"] for cell in manifest["cells"] for run in cell["runs"]}


def load_sweep_target(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """The sweep of a sweep file, or of a sweep folder: the file its manifest names, with the --set overrides the
    sweep was launched with (then these overrides)."""
    path = Path(target)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if not path.is_dir():
        return with_recorded_overrides(load_sweep(path, overrides), lambda line: print(line, file=sys.stderr))
    manifest = load_manifest(path)
    source = manifest.get("sweep_file")
    if not isinstance(source, str) or not Path(source).is_file():
        raise UsageError(
            f"{path / MANIFEST}: the sweep file it was written from ({source!r}) is not there any more; give the "
            "sweep file itself"
        )
    recorded = [item for item in manifest.get("overrides") or [] if isinstance(item, str)]
    if "recorded_output_dir" in manifest:  # a moved sweep folder: its runs are the ones beside it
        recorded.append(f"output_dir={manifest['output_dir']}")
    return load_sweep(source, [*recorded, *overrides])


def find_sweep(name: str, output_dir: Path, search_dir: Path, where: str) -> Manifest:
    """The manifest of the sweep a detection run's model.backbone_init names (an_lab.sweeps.backbones): its folder's
    manifest.json under the detection run's output_dir, else its sweep file `<name>.yaml` in search_dir, expanded in
    memory. where: the file (and line) that names it, for error messages."""
    try:
        check_name(name, "the sweep name")
    except ValueError as error:
        raise UsageError(f"{where}: {BACKBONE_KEY}.sweep: {error}") from None
    folder = output_dir / "sweeps" / name
    if (folder / MANIFEST).is_file():
        return load_manifest(folder)
    path = search_dir / f"{name}.yaml"
    if path.is_file():
        return _expand_file(path, name, where)
    raise UsageError(
        f"{where}: {BACKBONE_KEY}.sweep {name!r}: no such sweep; looked for its folder {folder / MANIFEST} (written "
        f"by `an-lab sweep`) and for its sweep file {path}; launch the classification sweep first (an-lab sweep "
        f"{name}.yaml), or give {BACKBONE_KEY} a run folder or a checkpoint file instead"
    )


def _expand_file(path: Path, name: str, where: str) -> Manifest:
    """The manifest of a classification sweep file, built in memory (nothing is written)."""
    resolved = path.resolve()
    if resolved in _EXPANDING:
        raise UsageError(f"{where}: {BACKBONE_KEY}.sweep {name!r}: {path} takes its own runs' backbones from itself")
    task = base_config(load_sweep(path)).task
    if task != "classification":
        raise UsageError(
            f"{where}: {BACKBONE_KEY}.sweep {name!r}: {path} is a {task} sweep (task: {task}); a backbone comes from "
            "a classification sweep (task: classification)"
        )
    _EXPANDING.add(resolved)
    try:
        return load_manifest(path)
    finally:
        _EXPANDING.discard(resolved)
