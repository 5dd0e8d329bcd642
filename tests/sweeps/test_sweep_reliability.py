"""What concurrent launches, a killed child, damaged ledger files and a full disk do to a sweep, through the real
`an-lab` command, the real local executor and the real Trainer."""

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import an_lab, fill_disk, small_sweep

from an_lab.rundir import attempt_logs, epoch_metrics, read_result, state

pytestmark = pytest.mark.slow


def write_sweep(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep))
    return path


def run_dirs(output: Path) -> list[Path]:
    return sorted(p for p in output.iterdir() if p.is_dir() and p.name != "sweeps")


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def one_run_sweep(data_root, output: Path, epochs: int, path: Path) -> tuple[dict, Path]:
    """A sweep of a single AN run (no baseline) into output, written to path."""
    sweep = small_sweep(data_root, output, {})
    sweep.update(baselines={})
    sweep["base"]["trainer"]["epochs"] = epochs
    return sweep, write_sweep(path, sweep)


def launch_and_wait_for(path: Path, output: Path, name: str, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, Path]:
    """Start `an-lab sweep path` in the background; return it and the run folder once that holds a file `name`."""
    launcher = subprocess.Popen(
        [sys.executable, "-m", "an_lab.cli", "sweep", str(path)], stdout=stdout, stderr=subprocess.PIPE
    )
    wait_for(lambda: output.exists() and any((run / name).exists() for run in run_dirs(output)), 300, name)
    (run,) = run_dirs(output)
    return launcher, run


def show(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_four_concurrent_launches_of_one_sweep_train_each_run_exactly_once(tmp_path, data_root):
    sweep = small_sweep(data_root, tmp_path / "runs", {"model.an.pooling": ["rsd", "mean"]})
    sweep["launcher"]["max_parallel"] = 1
    path = write_sweep(tmp_path / "small.yaml", sweep)
    command = [sys.executable, "-m", "an_lab.cli", "sweep", str(path)]
    launches = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [launch.communicate(timeout=900) for launch in launches]
    for launch, (out, err) in zip(launches, outputs, strict=True):
        assert launch.returncode == 0 and "Traceback" not in err, f"{out[-2000:]}\n{err[-2000:]}"
    runs = run_dirs(tmp_path / "runs")
    assert len(runs) == 3
    for run in runs:
        assert [log.name for log in attempt_logs(run)] == ["attempt-0"], run  # trained once, by one process
        assert read_result(run)[0] is not None
        assert [row["epoch"] for row in epoch_metrics(run) if "val_top1_err" in row] == [0, 1]
    reported = [line for out, _ in outputs for line in out.splitlines() if "]: top-1 err" in line]
    assert len(reported) == 3  # each run was started and reported by exactly one launcher


def test_a_killed_child_is_interrupted_and_resumes_past_a_damaged_checkpoint_to_the_same_digits(tmp_path, data_root):
    sweep, path = one_run_sweep(data_root, tmp_path / "runs", 3, tmp_path / "one.yaml")
    launcher, run = launch_and_wait_for(path, tmp_path / "runs", "previous.ckpt")  # two epochs are checkpointed
    child = json.loads((run / "started.json").read_text())["pid"]
    os.kill(child, signal.SIGKILL)  # as the OOM killer would, while the launcher lives
    launcher.communicate(timeout=120)
    assert launcher.returncode == 1
    status = an_lab("status", path)
    assert "interrupted(killed by SIGKILL (signal 9)" in status.stdout and "resumes from last.ckpt" in status.stdout

    last = run / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a torn write
    resumed = an_lab("sweep", path)  # a plain relaunch: interrupted runs resume without --retry-failed
    assert resumed.returncode == 0, show(resumed)
    assert "1 to run, 0 done" in resumed.stdout
    log = (run / "train.log").read_text()
    assert f"{last} is damaged" in log and "resuming from the previous good checkpoint" in log
    assert (run / "last.ckpt.corrupt").exists() and len(attempt_logs(run)) == 2

    sweep["output_dir"] = str(tmp_path / "straight")
    straight = an_lab("sweep", write_sweep(tmp_path / "straight.yaml", sweep))
    assert straight.returncode == 0, show(straight)
    ours, theirs = read_result(run)[0], read_result(tmp_path / "straight" / run.name)[0]
    assert ours["final"] == theirs["final"] and ours["best"] == theirs["best"]
    assert [row["val_top1_err"] for row in epoch_metrics(run) if "val_top1_err" in row] == [
        row["val_top1_err"] for row in epoch_metrics(tmp_path / "straight" / run.name) if "val_top1_err" in row
    ]


DAMAGES = ('{"run_id": "RUN", "final": {"top1', '{"final": null}', '{"run_id": "RUN", "final": {"top1_err": "4.2"}}')


def test_a_corrupt_result_is_never_done_and_retry_failed_retrains_it(tmp_path, data_root):
    _, path = one_run_sweep(data_root, tmp_path / "runs", 1, tmp_path / "one.yaml")
    assert an_lab("sweep", path).returncode == 0
    (run,) = run_dirs(tmp_path / "runs")
    good = read_result(run)[0]
    for damage in DAMAGES:  # truncated JSON, a null metric block, a string metric
        (run / "result.json").write_text(damage.replace("RUN", run.name))
        status = an_lab("status", path)
        assert status.returncode == 0 and "Traceback" not in status.stderr, show(status)
        assert f"corrupt({run / 'result.json'}" in status.stdout and "corrupt 1" in status.stdout
        table = an_lab("table", path)
        assert table.returncode == 0 and "Traceback" not in table.stderr, show(table)
        kept = an_lab("sweep", path)
        assert kept.returncode == 1 and "0 to run, 0 done, 1 failed or corrupt" in kept.stdout, show(kept)

        retried = an_lab("sweep", path, "--retry-failed")
        assert retried.returncode == 0 and "1 to run" in retried.stdout, show(retried)
        assert (run / "result.json.corrupt").read_text() == damage.replace("RUN", run.name)
        again = read_result(run)[0]
        assert again["final"] == good["final"] and again["epochs"] == good["epochs"]


def test_a_full_disk_stops_a_sweep_with_one_clear_error_and_no_temporary_file(tmp_path, data_root, small_disk):
    disk = small_disk("1m")
    fill_disk(disk)
    sweep = small_sweep(data_root, disk / "runs", {})
    path = write_sweep(tmp_path / "full.yaml", sweep)
    done = an_lab("sweep", path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, show(done)
    assert "No space left on device" in done.stderr and str(disk / "runs") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert [p.name for p in disk.rglob("*") if p.is_file()] == [".filler"]


def test_a_disk_that_fills_during_training_interrupts_the_run_and_keeps_its_checkpoint(tmp_path, data_root, small_disk):
    disk = small_disk("24m")
    output = disk / "runs"
    _, path = one_run_sweep(data_root, output, 3, tmp_path / "fills.yaml")
    launcher, run = launch_and_wait_for(path, output, "last.ckpt")
    filler = fill_disk(disk)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 1 and b"Traceback" not in err, out[-2000:] + err[-2000:]
    assert not [p.name for p in run.rglob("*.tmp")]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    with zipfile.ZipFile(run / "last.ckpt") as archive:  # the previous checkpoint is whole
        assert archive.testzip() is None
    assert "No space left on device" in (run / "train.log").read_text()
    status = an_lab("status", path)
    (row,) = [line for line in status.stdout.splitlines() if run.name in line]
    assert "interrupted(" in row and "No space left on device" in row and "resumes from last.ckpt" in row, row

    filler.unlink()  # room again: the run resumes from that checkpoint and finishes
    resumed = an_lab("sweep", path)
    assert resumed.returncode == 0, show(resumed)
    assert read_result(run)[0]["epochs"] == 3 and len(attempt_logs(run)) == 2


def test_a_run_means_one_result_however_many_runs_share_the_machine(tmp_path, data_root):
    sweep = small_sweep(data_root, tmp_path / "alone", {})
    sweep["base"]["trainer"].update(epochs=1, limit_train_batches=6)
    sweep["launcher"]["max_parallel"] = 1
    alone = an_lab("sweep", write_sweep(tmp_path / "alone.yaml", sweep))
    sweep.update(output_dir=str(tmp_path / "shared"), launcher={"executor": "local", "max_parallel": 2})
    shared = an_lab("sweep", write_sweep(tmp_path / "shared.yaml", sweep))
    assert alone.returncode == 0 and shared.returncode == 0, show(alone) + show(shared)
    runs = run_dirs(tmp_path / "alone")
    assert [run.name for run in runs] == [run.name for run in run_dirs(tmp_path / "shared")] and len(runs) == 2
    for run in runs:
        one, other = read_result(run)[0], read_result(tmp_path / "shared" / run.name)[0]
        assert one["final"] == other["final"] and one["cpu_threads"] == other["cpu_threads"] == 1


def test_a_run_whose_launcher_was_killed_stays_running_and_is_not_started_again(tmp_path, data_root):
    _, path = one_run_sweep(data_root, tmp_path / "runs", 3, tmp_path / "orphan.yaml")
    launcher, run = launch_and_wait_for(path, tmp_path / "runs", "started.json", stdout=subprocess.DEVNULL)
    launcher.send_signal(signal.SIGKILL)  # the launcher dies; its child trains on, holding the claim
    launcher.wait()
    child = json.loads((run / "started.json").read_text())["pid"]
    status = an_lab("status", path)
    assert f"{run.name}" in status.stdout and "running 1" in status.stdout, show(status)
    second = an_lab("sweep", path)  # a relaunch leaves the run to its live owner
    assert second.returncode == 0 and "0 to run, 0 done, 0 failed or corrupt" in second.stdout, show(second)
    assert "1 running" in second.stdout
    wait_for(lambda: not os.path.exists(f"/proc/{child}") or read_result(run)[0] is not None, 300, "the orphan")
    wait_for(lambda: read_result(run)[0] is not None, 60, "the orphan's result")
    assert [log.name for log in attempt_logs(run)] == ["attempt-0"]


def test_a_second_ctrl_c_stops_the_runs_at_once_and_quietly_and_they_resume(tmp_path, data_root):
    """Two SIGINTs (Ctrl-C pressed twice) while a run trains: no traceback, exit 130 (stopped by a signal), the run
    interrupted (never failed: the next launch resumes it). Outcomes only: whether the second one lands while
    the child saves or after, the result is the same."""
    _, path = one_run_sweep(data_root, tmp_path / "runs", 30, tmp_path / "twice.yaml")
    launcher, run = launch_and_wait_for(path, tmp_path / "runs", "last.ckpt", stdout=subprocess.DEVNULL)
    launcher.send_signal(signal.SIGINT)
    time.sleep(0.1)
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=120)
    said = stderr.decode()
    assert launcher.returncode == 130, said[-3000:]
    assert "Traceback" not in said and "interrupted: running runs were stopped" in said, said[-3000:]
    assert state(run)[0] == "interrupted" and not (run / "failed.json").exists()
