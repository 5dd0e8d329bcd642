"""The sweep folder, <output_dir>/sweeps/<name>/, and the files in it every layer reads: the owner of their names.

    manifest.json        the sweep's cells and runs (written by an_lab.sweeps.manifest, which documents its keys)
    results-index.npz    the numbers of the sweep's finished runs, each valid while its result.json is unchanged
                         (written and read by an_lab.analysis.results_index; safe to delete)

Reading a sweep folder's manifest (read_folder), checking a manifest (check_manifest) and the names that become
folders (check_name) need nothing but the standard library, so that `an-lab table SWEEP_DIR` and `status` do not
import the sweep files' schema (pydantic) to read a manifest. Sweep files are expanded by an_lab.sweeps.manifest.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import sys
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.migrate import pending_note

MANIFEST = "manifest.json"
RESULTS_INDEX = "results-index.npz"

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Sweep, baseline and axis names become parts of paths and labels: the sweep folder <output_dir>/sweeps/<name>/ and the
# files named after the sweep, the SLURM job name an-lab-<name>, the W&B group and tags. 64 characters keep every such
# path component far below the 255 bytes a file name may have (a longer name would pass `plan` and then fail with
# ENAMETOOLONG when the sweep writes its folder); run folders are named by run id, <model>-<norm>-<12 hex digits>.
MAX_NAME = 64


def check_name(value: str, what: str = "name") -> str:
    """A name that becomes a folder, a W&B group or a job name: letters, digits, '_', '.', '-'; no '..' or slashes;
    at most MAX_NAME characters."""
    if isinstance(value, str) and len(value) > MAX_NAME:
        raise ValueError(
            f"{what} {reprlib.repr(value)} is {len(value)} characters long; at most {MAX_NAME} (it names folders, "
            "files and the SLURM job)"
        )
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not usable as a folder or job name: use only letters, digits, '_', '.' and '-', "
            "start with a letter, digit or '_', and no '..' (no slashes, spaces or shell characters)"
        )
    return value


def sweep_folder(manifest: dict) -> Path:
    """<output_dir>/sweeps/<name>/: where the sweep's manifest and the files made from its runs live."""
    return Path(manifest["output_dir"]) / "sweeps" / str(manifest["name"])


def target_folder(target: str | Path, manifest: dict) -> Path:
    """The sweep folder a command was given: the folder itself (wherever its manifest says the runs were), or a
    sweep file's sweep_folder()."""
    return Path(target) if Path(target).is_dir() else sweep_folder(manifest)


def read_folder(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict | None:
    """The checked manifest of a sweep folder (or of its manifest.json), its runs read beside it; None when target
    is not a folder (a sweep file: an_lab.sweeps.manifest expands it). A folder with --set overrides is a
    UsageError: the runs it lists are fixed."""
    path = Path(target)
    if path.name == MANIFEST and path.is_file():
        path = path.parent  # the manifest itself stands for its folder
    if not path.is_dir():
        return None
    if overrides:
        raise UsageError(
            f"{target}: --set applies to a sweep file, not to a sweep folder's manifest (the runs it lists are "
            "fixed); give the sweep file with --set, or relaunch with `an-lab sweep FOLDER --set ...` first"
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"{path}: no readable {MANIFEST} here; give the sweep file, or the folder "
            "<output_dir>/sweeps/<name>/ that `an-lab sweep` wrote"
        ) from None
    check_manifest(manifest, path / MANIFEST)
    return _beside(manifest, path)


def say_pending(manifest: dict) -> None:
    """A note on stderr when the manifest's output folder still holds runs of an earlier id scheme (an_lab.migrate)."""
    if (note := pending_note(Path(manifest["output_dir"]))) is not None:
        print(f"note: {note}", file=sys.stderr)


def _beside(manifest: dict, folder: Path) -> dict:
    """A sweep folder sits at <output_dir>/sweeps/<name>/: its runs are read next to it, wherever it was moved or
    copied (an archive, an rsync back from a cluster), with a note when the recorded output_dir is another folder."""
    here = folder.resolve()
    if here.parent.name != "sweeps":
        return manifest
    beside = str(here.parent.parent)
    recorded = manifest["output_dir"]
    if os.path.normpath(recorded) != beside:
        gone = "" if Path(recorded).is_dir() else " (gone)"
        print(
            f"note: {folder} was written for the runs in {recorded}{gone}; reading the runs beside it, in {beside}",
            file=sys.stderr,
        )
        manifest = {**manifest, "output_dir": beside, "recorded_output_dir": recorded}
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    if not isinstance(manifest, dict):
        return "it is not a JSON object"
    for key in ("name", "output_dir"):
        if not isinstance(manifest.get(key), str) or not manifest[key].strip():
            return f"it has no {key} (a non-empty string)"
    try:
        check_name(manifest["name"], "its name")
    except ValueError as error:
        return str(error)
    if not isinstance(manifest.get("cells"), list):
        return "its cells are not a list"
    indices: set[int] = set()
    run_ids: set[str] = set()
    for position, cell in enumerate(manifest["cells"]):
        if not isinstance(cell, dict) or type(cell.get("index")) is not int or not isinstance(cell.get("runs"), list):
            return f"cell {position} has no integer index or no list of runs"
        if not isinstance(cell.get("label"), str | None) or not isinstance(cell.get("changes", {}), dict):
            return f"cell {cell['index']} has a label that is not a string or changes that are not a mapping"
        if cell["index"] in indices:
            return f"two cells have the index {cell['index']}"
        indices.add(cell["index"])
        for run in cell["runs"]:  # 100,000 runs in a large grid: the common case is tested first, by exact type
            run_id = run.get("run_id") if isinstance(run, dict) else None
            if type(run_id) is not str and not isinstance(run_id, str):
                return f"cell {cell['index']} has a run without a run_id"
            if len(run_id) > MAX_NAME or not _NAME.fullmatch(run_id) or ".." in run_id:
                try:  # a run id becomes a path under output_dir: no '..', no separators
                    check_name(run_id, "a run id")
                except ValueError as error:
                    return f"cell {cell['index']}: {error}"
            if run_id in run_ids:
                return f"run {run_id} is listed twice"
            run_ids.add(run_id)
            seed = run.get("seed")
            if type(seed) is not int and seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                return f"run {run_id} has a seed that is not an integer"
    return None


def check_manifest(manifest: object, source: str | Path = "the sweep manifest") -> list[dict]:
    """The manifest's cells, or a UsageError that says what is wrong with it (a hand-edited or damaged file).

    Every reader of a manifest (status, cancel, table, plot, report, sync) relies on these checks."""
    problem = _manifest_problem(manifest)
    if problem:
        raise UsageError(
            f"{source}: the sweep manifest is not usable: {problem}; rewrite it with `an-lab sweep SWEEP.yaml`"
        )
    return manifest["cells"]  # type: ignore[index]
