"""Runs recorded under an earlier identity scheme, moved once to the ids of today's (an_lab.identity): finished work is
found after an upgrade, never trained again.

    <output_dir>/.an-lab-ids        {"scheme": N, "time": ...}: this folder's runs carry the ids of scheme N
    <output_dir>/migrations.jsonl   one line per run folder looked at and changed: old id, new id, what was done

A run folder (a folder with config.json; symbolic links are skipped) whose config resolves to another id today is
renamed to that id, its config.json rewritten with absolute paths, and a symbolic link left under the old name, so that
manifests, slurm.json files and W&B runs that name the old id still reach it. Earlier versions read a relative
`data.root` (and `model.backbone_init`) from the working directory of the launch; that directory is recovered from the
run's own location: the output folder less the relative `output_dir` its config recorded (`runs` in `/work/runs`:
`/work`). When two old runs resolve to one new id (a BN baseline trained under two AN bases), the finished one takes it
and the other keeps its old name. A run being trained now is left for the next launch. `an-lab sweep` and `an-lab
train` migrate their output folder first; `an-lab migrate DIR` does it on its own; read-only commands say when it is
due.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from an_lab.errors import UsageError
from an_lab.identity import IDENTITY_SCHEME, identity, run_id
from an_lab.paths import anchor
from an_lab.rundir import CONFIG, RESULT, read_json, read_result, state, write_json_atomic

if TYPE_CHECKING:  # read-only commands ask pending_note() without importing the config's schema (pydantic)
    from an_lab.config import RunConfig

MARKER = ".an-lab-ids"
LOG = "migrations.jsonl"


def _run_folders(output_dir: Path) -> list[Path]:
    try:
        entries = list(os.scandir(output_dir))
    except OSError:
        return []
    return sorted(
        Path(entry.path)
        for entry in entries
        if entry.is_dir(follow_symlinks=False) and entry.name != "sweeps" and os.path.isfile(f"{entry.path}/{CONFIG}")
    )


def current(output_dir: Path) -> bool:
    """Whether the folder's runs carry today's ids (its marker says so, or it holds no run yet)."""
    marker = read_json(Path(output_dir) / MARKER)
    if marker is not None and marker.get("scheme") == IDENTITY_SCHEME:
        return True
    return not _run_folders(Path(output_dir))


def pending_note(output_dir: Path) -> str | None:
    """One line for read-only commands when the folder still holds runs of an earlier scheme."""
    if current(output_dir):
        return None
    return (
        f"{output_dir} holds runs recorded under an earlier version's run ids: they show as pending here until "
        f"`an-lab sweep` (or `an-lab migrate {output_dir}`) moves them to today's ids; nothing is retrained"
    )


def _launch_dir(folder: Path, recorded: str) -> Path:
    """The working directory an earlier version was launched from: the run's output folder less the relative
    output_dir its config recorded; the output folder's parent when that cannot be told (a moved folder, `..`)."""
    output = folder.parent
    if os.path.isabs(recorded):
        return output.parent
    parts = Path(os.path.normpath(recorded)).parts
    if ".." not in parts and output.parts[len(output.parts) - len(parts) :] == parts:
        return Path(*output.parts[: len(output.parts) - len(parts)]) if len(output.parts) > len(parts) else Path("/")
    return output.parent


def today(folder: Path) -> tuple[RunConfig, str]:
    """The run's config with its paths as today's rules write them, and its id under today's scheme."""
    tree = read_json(folder / CONFIG)
    if tree is None:
        raise ValueError("config.json does not read")
    launched = _launch_dir(folder, str(tree.get("output_dir") or "runs"))
    tree["output_dir"] = str(folder.parent)
    data = tree.get("data")
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        data["root"] = anchor(data["root"], launched, f"{folder / CONFIG}: data.root")
    model = tree.get("model")
    if isinstance(model, dict) and isinstance(model.get("backbone_init"), str):
        model["backbone_init"] = anchor(model["backbone_init"], launched, f"{folder / CONFIG}: model.backbone_init")
    from an_lab.config import RunConfig

    config = RunConfig.model_validate(tree)
    return config, run_id(config)


def note_scheme(output_dir: Path) -> None:
    """Before the first run folder of a new output folder is made: mark it as holding today's ids (one stat when
    the marker is there)."""
    output_dir = Path(output_dir)
    if (output_dir / MARKER).exists() or _run_folders(output_dir):
        return
    with contextlib.suppress(UsageError, OSError):
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output_dir / MARKER, {"scheme": IDENTITY_SCHEME, "time": time.time()})


def prepare(output_dir: Path, say=print) -> list[dict]:
    """Before a launch writes into `output_dir`: mark a new folder as today's scheme, or migrate an old one."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []  # nothing to move; a folder made later without a marker costs one pass that moves nothing
    if read_json(output_dir / MARKER) is None and not _run_folders(output_dir):
        with contextlib.suppress(UsageError):  # a folder that cannot be written: the launch itself says so
            write_json_atomic(output_dir / MARKER, {"scheme": IDENTITY_SCHEME, "time": time.time()})
        return []
    return migrate(output_dir, say)


def migrate(output_dir: Path, say=print) -> list[dict]:
    """Move the folder's runs to today's ids (see the module); returns what was done, one record per changed run."""
    output_dir = Path(output_dir)
    if current(output_dir):
        return []
    with _locked(output_dir):
        if current(output_dir):  # another launch did it while this one waited
            return []
        records, left = [], 0
        for folder in _run_folders(output_dir):
            record = _move(folder)
            if record is not None:
                records.append(record)
                left += record["action"].startswith("left")
        with (output_dir / LOG).open("a") as log:
            for record in records:
                log.write(json.dumps(record, sort_keys=True) + "\n")
        if not left:
            write_json_atomic(output_dir / MARKER, {"scheme": IDENTITY_SCHEME, "time": time.time()})
    moved = sum(record["action"] == "moved" for record in records)
    if records:
        say(
            f"{output_dir}: {moved} run folder(s) moved to today's run ids (old names kept as links), "
            f"{len(records) - moved} left as they were; each is listed in {output_dir / LOG}"
        )
    return records


def _move(folder: Path) -> dict | None:
    old = folder.name
    record = {"old": old, "time": time.time()}
    try:
        config, new = today(folder)
    except (ValueError, OSError) as error:
        return {**record, "new": None, "action": "kept: its config does not load today", "why": str(error)[:300]}
    if new == old:
        return None
    record["new"] = new
    if state(folder)[0] == "running":
        return {**record, "action": "left running"}
    if '"fingerprint":"absent"' in json.dumps(identity(config), separators=(",", ":")):
        # its data is not there now (unmounted?): its id cannot be told; moved at a launch that sees the data
        return {**record, "action": "left: its data is not there to fingerprint"}
    target = folder.parent / new
    if os.path.lexists(target):
        if read_result(target)[0] is not None or read_result(folder)[0] is None:
            return {**record, "action": f"kept: {new} exists already (the same run under today's rules)"}
        os.rename(target, folder.parent / f"{new}.superseded-{int(time.time())}")
    # The files first, the name last: killed at any point, the folder is valid under the name it has (a result
    # names both ids) and the next migration finishes the move.
    write_json_atomic(folder / CONFIG, config.model_dump(mode="json"))
    result = read_json(folder / RESULT)
    if result is not None:  # the result names its run: today's id, the old one kept (the link still reads it)
        earlier = [name for name in result.get("previous_run_ids") or [] if name != old] + [old]
        update = {"run_id": new, "config_hash": new.rpartition("-")[2], "previous_run_ids": earlier}
        write_json_atomic(folder / RESULT, {**result, **update})
    os.rename(folder, target)
    with contextlib.suppress(OSError):
        os.symlink(new, folder)
    return {**record, "action": "moved"}


@contextlib.contextmanager
def _locked(output_dir: Path):
    fd = os.open(output_dir / f"{MARKER}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
