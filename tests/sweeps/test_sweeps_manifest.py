"""A hand-edited or damaged manifest: every command that reads a sweep folder says what is wrong with it in one line,
exits 2 and never builds a path from an unchecked run id."""

import json

import pytest
from conftest import an_lab

GOOD_CELL = {"index": 0, "kind": "base", "name": None, "label": "AN", "changes": {}, "tags": [], "runs": []}
DAMAGE = {
    "empty object": ({}, "has no name"),
    "a list": ([1, 2], "not a JSON object"),
    "cells not a list": ({"cells": 5}, "its cells are not a list"),
    "no output_dir": ({"cells": []}, "has no output_dir"),
    "numeric label": ({"cells": [{**GOOD_CELL, "label": 7}]}, "label that is not a string"),
    "run id climbs out": ({"cells": [{**GOOD_CELL, "runs": [{"run_id": "../../etc", "seed": 0}]}]}, "a run id"),
    "run id with a slash": ({"cells": [{**GOOD_CELL, "runs": [{"run_id": "a/b", "seed": 0}]}]}, "a run id"),
    "run listed twice": (
        {"cells": [{**GOOD_CELL, "runs": [{"run_id": "r1", "seed": 0}, {"run_id": "r1", "seed": 1}]}]},
        "run r1 is listed twice",
    ),
    "string index": ({"cells": [{**GOOD_CELL, "index": "0"}]}, "no integer index"),
    "bad name": ({"name": "../up", "cells": []}, "its name"),
    "boolean seed": ({"cells": [{**GOOD_CELL, "runs": [{"run_id": "r1", "seed": True}]}]}, "seed that is not"),
}
COMMANDS = (("status",), ("cancel",), ("table",), ("plot",), ("report", "--html"), ("sync",))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_reader_of_a_damaged_manifest_gives_one_clear_error(tmp_path, damage):
    content, why = DAMAGE[damage]
    folder = tmp_path / "sweeps" / "known"
    folder.mkdir(parents=True)
    manifest = content
    if isinstance(content, dict) and content:  # keep what the case does not damage
        manifest = {"name": "known", "mode": "ablation", "output_dir": str(tmp_path), **content}
        if damage == "no output_dir":
            del manifest["output_dir"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for command in COMMANDS:
        done = an_lab(command[0], folder, *command[1:])
        assert done.returncode == 2 and "Traceback" not in done.stderr, (command, done.stderr[-2000:])
        message = done.stderr.strip()
        assert len(message.splitlines()) == 1 and why in message, (command, message)
        assert f"{folder / 'manifest.json'}: the sweep manifest is not usable" in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["known", "manifest.json", "sweeps"]  # nothing written


def test_a_manifest_that_is_not_json_is_one_clear_error(tmp_path):
    folder = tmp_path / "sweeps" / "cut"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"name": "cut", "cells": [')
    for command in COMMANDS:
        done = an_lab(command[0], folder, *command[1:])
        assert done.returncode == 2 and "no readable manifest.json here" in done.stderr, (command, done.stderr)


def test_status_and_table_of_the_sweep_file_see_the_runs_its_set_overrides_launched(tmp_path, data_root):
    """`an-lab sweep FILE --set ...` records the overrides; `status FILE` and `table FILE` without --set then show the
    runs that were launched, not those of the bare file."""
    import yaml
    from conftest import small_sweep

    from an_lab.sweeps.manifest import load_manifest, write_manifest
    from an_lab.sweeps.seeding import planned_runs
    from an_lab.sweeps.spec import load_sweep

    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small_sweep(data_root, tmp_path / "runs", {"model.an.pooling": ["rsd"]})))
    launched = load_sweep(path, ["trainer.epochs=3"])
    write_manifest(launched, planned_runs(launched))
    bare = {run.run_id for run in planned_runs(load_sweep(path))}
    wanted = {run.run_id for run in planned_runs(launched)}
    assert bare.isdisjoint(wanted)  # the override changes every run id
    seen = {run["run_id"] for cell in load_manifest(path)["cells"] for run in cell["runs"]}
    assert seen == wanted
    status = an_lab("status", path)
    assert status.returncode == 0 and all(run_id in status.stdout for run_id in wanted), status.stdout
