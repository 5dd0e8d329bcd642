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
