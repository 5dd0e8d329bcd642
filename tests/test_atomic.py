"""an_lab.atomic: every file or none, never a half-written one, and one paragraph when it cannot."""

import json

import pytest

from an_lab.atomic import write_files, write_json
from an_lab.errors import UsageError


def test_all_files_or_none_and_the_folders_made_are_removed_again(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("old")
    blocker = tmp_path / "new" / "deep" / "is-a-folder"
    blocker.mkdir(parents=True)
    files = {kept: b"new", tmp_path / "made" / "a.txt": b"a", blocker: b"cannot"}
    with pytest.raises(UsageError, match=r"is-a-folder: .*; 2 of the 3 files were already replaced") as refused:
        write_files(files, advice=lambda error: "choose another place")
    assert str(refused.value).endswith("(choose another place)")
    # the rename of the third failed after the first two were in place: they are whole, nothing is half-written
    assert kept.read_text() == "new" and not list(tmp_path.rglob("*.tmp"))

    files = {tmp_path / "fresh" / "x.txt": b"x", tmp_path / "kept.txt" / "under-a-file.txt": b"y"}
    with pytest.raises(UsageError, match="nothing there was changed"):
        write_files(files)
    assert not (tmp_path / "fresh").exists() and kept.read_text() == "new"  # the folder it made is gone again


def test_json_is_written_whole_and_never_makes_its_folder(tmp_path):
    target = tmp_path / "result.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1} and target.read_text().endswith("\n")
    with pytest.raises(UsageError, match=r"cannot write .*missing/result\.json: No such file or directory"):
        write_json(tmp_path / "missing" / "result.json", {})
    assert not (tmp_path / "missing").exists() and not list(tmp_path.glob(".*.tmp"))
