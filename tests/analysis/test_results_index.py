"""The results index of a sweep (an_lab.analysis.results_index): collect() with it gives exactly what it gives without
it, after every change to the run folders: a result.json rewritten (atomically, or in place with its old mtime), a
damaged or deleted result, a deleted run, a run that finished after the index was written, a damaged or foreign
index, two `an-lab table` at once, and a read-only sweep folder (no index, same table).

Real files throughout. A result changed within RACY_NS is never indexed, so the sweeps these tests change are made
once per module and aged past that window with one wait."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_results_table import CELLS, _result, _write_sweep

from an_lab.analysis import collect, render_table
from an_lab.analysis.results_index import RACY_NS, read_index
from an_lab.sweep_folder import RESULTS_INDEX
from an_lab.sweeps.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
DAMAGES = ("truncated", "bytes flipped", "not a zip", "empty", "a folder")
NAMES = ("used", "rewritten", "in-place", "deleted", "finished", "foreign", "concurrent", "young", *DAMAGES)
DONE = ["an-0", "an-1", "mean-0", "bn-0", "bn-1"]  # CELLS' finished runs; mean-1 failed, softmax-0/1 pending


@pytest.fixture(scope="module")
def aged(tmp_path_factory) -> dict[str, Path]:
    """One sweep folder per test (CELLS), all older than the index's racy window."""
    root = tmp_path_factory.mktemp("aged")
    sweeps = {name: _write_sweep(root / name, CELLS) for name in NAMES}
    time.sleep(RACY_NS / 1e9 + 0.2)
    return sweeps


def _runs(sweep: Path) -> Path:
    return Path(json.loads((sweep / "manifest.json").read_text())["output_dir"])


def _indexed(sweep: Path) -> list[str]:
    from an_lab.analysis.results import _NUMBERS, _TAILS

    index = read_index(sweep / RESULTS_INDEX, str(_runs(sweep)), _NUMBERS, _TAILS)
    assert index is not None, "no usable index"
    return sorted(index.known)


def _without_index(sweep: Path) -> pd.DataFrame:
    """collect() as it reads every result file: the index moved aside meanwhile (and put back)."""
    index, aside = sweep / RESULTS_INDEX, sweep / "aside.npz"
    there = index.exists()
    if there:
        index.rename(aside)
    try:
        return collect(load_manifest(sweep))
    finally:
        if there:
            (sweep / RESULTS_INDEX).unlink(missing_ok=True)
            aside.rename(index)


def _same(sweep: Path) -> pd.DataFrame:
    """collect() with the index, checked equal to collect() without it."""
    expected = _without_index(sweep)
    found = collect(load_manifest(sweep))
    pd.testing.assert_frame_equal(found, expected)
    return found


def _rewrite(path: Path, top1: float) -> None:
    """Replace a result.json atomically (a new file renamed over it) with another final top-1 error."""
    result = json.loads(path.read_text())
    result["final"]["top1_err"] = top1
    spare = path.with_name("result.json.new")
    spare.write_text(json.dumps(result))
    os.replace(spare, path)


def test_the_index_is_written_once_and_gives_the_same_frame_and_table(aged):
    sweep = aged["used"]
    first = collect(load_manifest(sweep))
    assert _indexed(sweep) == sorted(DONE)
    written = os.stat(sweep / RESULTS_INDEX)
    second = _same(sweep)
    pd.testing.assert_frame_equal(first, second)
    assert second["state"].tolist() == ["done", "done", "done", "failed", "pending", "pending", "done", "done"]
    assert second.loc[0, "tail_top1_err"] == (21.8, 21.7, 21.6, 21.55, 21.5)  # the tails come back as tuples
    assert second["tail_bbox_ap"].tolist() == [()] * 8
    again = os.stat(sweep / RESULTS_INDEX)
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # nothing new: not rewritten
    manifest = load_manifest(sweep)
    assert render_table(manifest, runs=first) == render_table(manifest, runs=_without_index(sweep))


def test_a_rewritten_result_is_read_again(aged):
    sweep = aged["rewritten"]
    collect(load_manifest(sweep))
    _rewrite(_runs(sweep) / "bn-0" / "result.json", 31.25)
    frame = _same(sweep)
    assert frame.loc[6, "top1_err"] == 31.25 and frame.loc[6, "state"] == "done"
    assert "bn-0" not in _indexed(sweep)  # rewritten just now: read again until it is older than RACY_NS


def test_a_result_changed_in_place_with_its_old_size_and_mtime_is_read_again(aged):
    sweep = aged["in-place"]
    collect(load_manifest(sweep))
    path = _runs(sweep) / "an-0" / "result.json"
    before, text = os.stat(path), path.read_text()
    assert '"top1_err": 21.5,' in text
    with open(path, "r+") as handle:  # the same file, the same length, the old timestamps put back
        handle.write(text.replace('"top1_err": 21.5,', '"top1_err": 29.5,', 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert _same(sweep).loc[0, "top1_err"] == 29.5


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_index_is_ignored_and_rebuilt(aged, damage):
    sweep = aged[damage]
    collect(load_manifest(sweep))
    index = sweep / RESULTS_INDEX
    data = index.read_bytes()
    if damage == "truncated":
        index.write_bytes(data[: len(data) // 2])
    elif damage == "bytes flipped":  # inside the arrays: the zip's CRC no longer matches
        middle = len(data) // 2
        index.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :])
    elif damage == "not a zip":
        index.write_text('{"run_ids": ["an-0"]}')
    elif damage == "empty":
        index.write_bytes(b"")
    else:
        index.unlink()
        index.mkdir()
    found = collect(load_manifest(sweep))
    assert found["state"].tolist() == ["done", "done", "done", "failed", "pending", "pending", "done", "done"]
    assert found.loc[0, "top1_err"] == 21.5 and found.loc[0, "tail_top1_err"] == (21.8, 21.7, 21.6, 21.55, 21.5)
    if damage != "a folder":  # rebuilt whole
        assert _indexed(sweep) == sorted(DONE)
        _same(sweep)


def test_deleted_and_damaged_results_and_runs(aged):
    sweep = aged["deleted"]
    collect(load_manifest(sweep))
    runs = _runs(sweep)
    shutil.rmtree(runs / "an-1")  # the whole run: pending
    (runs / "bn-1" / "result.json").unlink()  # the result only: what the folder's other files say
    (runs / "mean-0" / "result.json").write_text('{"run_id": "mean-0", "final": {"top1')  # cut short: corrupt
    frame = _same(sweep)
    assert frame["state"].tolist() == ["done", "pending", "corrupt", "failed", "pending", "pending", "done", "pending"]
    assert np.isnan(frame.loc[[1, 2, 7], "top1_err"]).all()
    assert frame.loc[[1, 2, 7], "tail_top1_err"].tolist() == [()] * 3
    assert _indexed(sweep) == ["an-0", "bn-0"]  # the index no longer holds them


def test_a_run_that_finished_after_the_index_was_written(aged):
    sweep = aged["finished"]
    collect(load_manifest(sweep))
    runs = _runs(sweep)
    (runs / "softmax-0").mkdir()
    (runs / "softmax-0" / "result.json").write_text(json.dumps(_result("softmax-0", 22.0, 6.0, 1, 2)))
    (runs / "mean-1" / "result.json").write_text(json.dumps(_result("mean-1", 22.5, 6.5, 1, 2)))  # was failed
    frame = _same(sweep)
    assert frame["state"].tolist() == ["done"] * 5 + ["pending", "done", "done"]
    assert frame.loc[[3, 4], "top1_err"].tolist() == [22.5, 22.0]


def test_an_index_of_other_runs_or_columns_is_ignored(aged):
    sweep = aged["foreign"]
    collect(load_manifest(sweep))
    from an_lab.analysis.results import _NUMBERS, _TAILS

    index = sweep / RESULTS_INDEX
    assert read_index(index, "/somewhere/else", _NUMBERS, _TAILS) is None
    assert read_index(index, str(_runs(sweep)), _NUMBERS[:-1], _TAILS) is None
    _same(sweep)


def test_a_result_written_just_now_is_not_indexed(aged):
    sweep = aged["young"]
    runs = _runs(sweep)
    (runs / "softmax-1").mkdir()
    (runs / "softmax-1" / "result.json").write_text(json.dumps(_result("softmax-1", 22.0, 6.0, 1, 2)))
    assert _same(sweep).loc[5, "state"] == "done"
    assert _indexed(sweep) == sorted(DONE)


def test_two_tables_at_once_while_runs_finish(aged):
    sweep = aged["concurrent"]
    runs = _runs(sweep)
    command = [sys.executable, "-m", "an_lab.cli", "table", str(sweep), "--format", "csv"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(3):
        before = render_table(load_manifest(sweep), "csv", runs=_without_index(sweep)).encode()
        tables = [subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT, env=environment) for _ in range(2)]
        _rewrite(runs / "an-0" / "result.json", 20.0 + round_)  # meanwhile a run is retrained
        outputs = [table.communicate(timeout=120)[0] for table in tables]
        assert [table.returncode for table in tables] == [0, 0]
        after = render_table(load_manifest(sweep), "csv", runs=_without_index(sweep)).encode()
        assert before != after and all(output in (before, after) for output in outputs)
        assert render_table(load_manifest(sweep), "csv").encode() == after  # with the index both left
        assert _indexed(sweep)  # whole and usable


@pytest.fixture
def read_only_sweep(small_disk) -> Path:
    """CELLS on a tmpfs remounted read-only (root ignores permission bits)."""
    disk = small_disk("8m")
    sweep = _write_sweep(disk, CELLS)
    done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
    return sweep


def test_a_read_only_sweep_folder_gets_no_index_and_the_same_table(read_only_sweep, capsys):
    from an_lab.cli import main

    with pytest.raises(OSError):
        (read_only_sweep / "probe").write_text("")
    frame = collect(load_manifest(read_only_sweep))
    assert frame["state"].tolist() == ["done", "done", "done", "failed", "pending", "pending", "done", "done"]
    assert main(["table", str(read_only_sweep)]) == 0
    assert "| BN" in capsys.readouterr().out
    assert sorted(os.listdir(read_only_sweep)) == ["manifest.json"]
