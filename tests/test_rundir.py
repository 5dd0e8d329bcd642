"""The run directory ledger: claims held across real processes, results that must validate to count as done, damaged
metric logs that are skipped and reported, and atomic writes that leave nothing behind on a full disk."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fill_disk

from an_lab.errors import UsageError
from an_lab.rundir import (
    CLAIM_FD_ENV,
    LOCK,
    claim_owner,
    epoch_metrics,
    inherited_claim,
    mark_interrupted,
    mark_started,
    read_result,
    state,
    try_claim,
    validated_epochs,
    write_json_atomic,
)

HOLDER = """
import sys, time
from pathlib import Path
from an_lab.rundir import try_claim
claim = try_claim(Path(sys.argv[1]), "test holder")
print("won" if claim else "lost", flush=True)
time.sleep(float(sys.argv[2]))
"""


def start_holder(run_dir: Path, hold_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), str(hold_s)], stdout=subprocess.PIPE, text=True
    )


def test_one_of_many_concurrent_claimers_wins_and_a_killed_owner_frees_the_run(tmp_path):
    holders = [start_holder(tmp_path, 8.0) for _ in range(6)]
    answers = [holder.stdout.readline().strip() for holder in holders]
    assert sorted(answers) == ["lost"] * 5 + ["won"]
    winner = holders[answers.index("won")]
    assert try_claim(tmp_path, "late") is None  # held by a live process
    assert claim_owner(tmp_path)["pid"] == winner.pid
    for holder in holders:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    claim = try_claim(tmp_path, "after the kill")  # the kernel dropped the dead owner's lock: no stale claim
    assert claim is not None and claim_owner(tmp_path)["role"] == "after the kill"
    claim.release()


CHILD = """
import os, sys, time
from pathlib import Path
from an_lab.rundir import inherited_claim
claim = inherited_claim(Path(sys.argv[1]))
print("adopted" if claim else "none", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_claim_handed_to_a_child_outlives_the_launcher_that_made_it(tmp_path):
    claim = try_claim(tmp_path, "launcher")
    env = dict(os.environ, **{CLAIM_FD_ENV: str(claim.fd)})
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), "6"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        pass_fds=(claim.fd,),
    )
    try:
        assert child.stdout.readline().strip() == "adopted"
        claim.release()  # the launcher lets go (or dies): the child still owns the run
        assert try_claim(tmp_path, "intruder") is None
    finally:
        child.kill()
        child.wait()
    again = try_claim(tmp_path, "next launch")
    assert again is not None
    again.release()


def test_a_stale_claim_variable_is_not_taken_for_a_claim(tmp_path):
    (tmp_path / LOCK).write_text("{}")
    with open(tmp_path / "other-file", "w") as other:
        os.environ[CLAIM_FD_ENV] = str(other.fileno())
        try:
            assert inherited_claim(tmp_path) is None  # that descriptor is some other file
        finally:
            os.environ.pop(CLAIM_FD_ENV, None)


GOOD = {"status": "done", "final": {"top1_err": 4.5, "top5_err": 0.25, "train_loss": None}, "best": {"epoch": 3}}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"run_id": "r", "final": {"top1', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"run_id": "r", "final": null}', "'final' metrics are missing"),
        ('{"run_id": "r", "final": {"top1_err": "4.5"}}', "final.top1_err is '4.5', not a finite number"),
        ('{"run_id": "r", "final": {"top1_err": NaN}}', "final.top1_err is nan"),
        ('{"run_id": "r", "final": {"top1_err": true}}', "final.top1_err is True"),
        ('{"run_id": "r", "final": {"train_loss": null}}', "no final metric"),
        ('{"run_id": "other", "final": {"top1_err": 1}}', "its run_id is 'other'"),
        ('{"run_id": "r", "status": "failed", "final": {"top1_err": 1}}', "status is 'failed'"),
        ('{"run_id": "r", "final": {"top1_err": 1}, "best": {"top1_err": "x"}}', "'best' metrics"),
    ],
)
def test_a_result_that_does_not_validate_is_corrupt_never_done(tmp_path, text, why):
    run = tmp_path / "r"
    run.mkdir()
    (run / "result.json").write_text(text)
    result, problem = read_result(run)
    assert result is None and why in problem and str(run / "result.json") in problem
    current, detail = state(run)
    assert current == "corrupt" and why in detail and "--retry-failed" in detail


def test_a_valid_result_is_done(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"run_id": "r", **GOOD}))
    assert read_result(run) == ({"run_id": "r", **GOOD}, None) and state(run) == ("done", None)


def test_interrupted_runs_say_why_and_resume(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "started.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7, "time": 0}))
    (run / "last.ckpt").write_bytes(b"x")
    mark_interrupted(run, "killed by SIGKILL (signal 9)")
    assert state(run) == ("interrupted", "killed by SIGKILL (signal 9); resumes from last.ckpt")
    mark_started(run)  # the next attempt clears the old reason
    assert not (run / "interrupted.json").exists() and state(run)[0] == "running"


def test_damaged_metric_rows_are_skipped_and_reported(tmp_path):
    first = tmp_path / "logs" / "attempt-0"
    first.mkdir(parents=True)
    (first / "metrics.csv").write_text(
        "epoch,step,val_top1_err,train_loss\n"
        "0,10,50.0,1.5\n"
        "1,20,oops,1.2\n"  # not a number
        "2,30,30.0\n"  # cut short
        "x,40,20.0,0.9\n"  # no epoch
        "3,50,25.0,0.8\x00\n"  # a NUL from a torn write
        "4,60,nan,inf\n"  # a diverged epoch is data, not damage
    )
    second = tmp_path / "logs" / "attempt-1"
    second.mkdir()
    (second / "metrics.csv").write_text("epoch,step,val_top1_err\n0,10,40.0\n5,70,10.0\n6,8")  # cut mid-row
    skipped: list[str] = []
    rows = epoch_metrics(tmp_path, skipped)
    assert [row["epoch"] for row in rows] == [0, 4, 5]
    assert rows[0]["val_top1_err"] == 40.0 and rows[0]["train_loss"] == 1.5  # a resumed epoch replaces its values
    assert str(rows[1]["val_top1_err"]) == "nan"
    assert skipped == [f"{first / 'metrics.csv'}, line {n}" for n in (3, 4, 5, 6)] + [
        f"{second / 'metrics.csv'}, line 4"
    ]
    assert repr(epoch_metrics(tmp_path)) == repr(rows)  # without a list it still skips, it never raises
    # A running run's progress (the live display and `status`): epochs validated so far, the last error.
    assert validated_epochs(tmp_path) == (6, 10.0)
    assert validated_epochs(tmp_path / "never-started") == (0, None)


def test_an_atomic_write_on_a_full_disk_changes_nothing_and_leaves_no_temporary_file(small_disk):
    disk = small_disk("64k")
    target = disk / "config.json"
    write_json_atomic(target, {"keep": "me"})
    fill_disk(disk)
    with pytest.raises(UsageError, match=r"cannot write .*config\.json: No space left on device"):
        write_json_atomic(target, {"big": "x" * 100_000})
    assert json.loads(target.read_text()) == {"keep": "me"}
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "config.json"]


def test_an_atomic_write_into_a_read_only_folder_is_a_clear_error(read_only_dir):
    with pytest.raises(UsageError, match="Read-only file system"):
        write_json_atomic(read_only_dir / "manifest.json", {"a": 1})
    assert os.listdir(read_only_dir) == []
