"""an_lab.migrate: runs of an earlier id scheme moved to today's ids, safely when the move is cut short."""

import json
import os

import pytest

from an_lab import migrate
from an_lab.config import load_config
from an_lab.identity import run_id
from an_lab.rundir import read_result


def old_ledger(tmp_path):
    """One finished run as the earlier version wrote it: an old id, paths relative to the launch folder."""
    output = tmp_path / "runs"
    config = load_config(None, [f"output_dir={output}", "data.name=fake"])
    folder = output / "cifar_resnet20-an-000000000000"
    folder.mkdir(parents=True)
    tree = config.model_dump(mode="json")
    tree.update(output_dir="runs")
    tree["data"]["root"] = "data"
    (folder / "config.json").write_text(json.dumps(tree))
    result = {"run_id": folder.name, "status": "done", "final": {"top1_err": 5.0}}
    (folder / "result.json").write_text(json.dumps(result))
    return output, folder, run_id(config)


def test_a_move_cut_short_before_the_rename_is_finished_by_the_next_migration(tmp_path, monkeypatch):
    output, folder, new = old_ledger(tmp_path)
    real_rename = os.rename

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the files and renaming the folder

    monkeypatch.setattr(migrate.os, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        migrate.migrate(output, say=lambda line: None)
    assert read_result(folder)[0] is not None  # still a valid result under the name it has
    monkeypatch.setattr(migrate.os, "rename", real_rename)
    records = migrate.migrate(output, say=lambda line: None)
    assert [(r["old"], r["new"], r["action"]) for r in records] == [(folder.name, new, "moved")]
    assert read_result(output / new)[0]["previous_run_ids"] == [folder.name]
    assert read_result(folder)[0] is not None and os.path.islink(folder)  # the old name reads the same run
    assert migrate.current(output) and migrate.migrate(output) == []


def test_a_folder_of_todays_runs_needs_no_migration(tmp_path):
    output = tmp_path / "runs"
    migrate.note_scheme(output)
    assert migrate.current(output) and migrate.pending_note(output) is None
