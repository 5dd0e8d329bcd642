"""SLURM as a real cluster behaves, on the local cluster's two partitions (debug, and short with a 5-minute
MaxTime): requests checked against the partition before submission, jobs that can never start reported and not
followed for ever, a detached orchestrator that fits its partition, no duplicate allocations from a damaged ledger,
and a job's own failure recorded in its run folder."""

import json
import shutil
import subprocess

import pytest
import yaml
from conftest import an_lab
from test_slurm import calls, cli, job_record, run_folders, sbatch_counter, show, wait_for, write_sweep

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SHORT = {"launcher__slurm__partition": "short", "launcher__slurm__time": 4}  # fits short's MaxTime of 5 minutes


def squeue_count() -> int:
    out = subprocess.run(["squeue", "--noheader", "--array", "--format", "%i"], capture_output=True, text=True)
    return len(out.stdout.split())


@pytest.mark.parametrize(
    ("overrides", "words", "line_key"),
    [
        (
            ["launcher.slurm.partition=short", "launcher.slurm.time=10"],
            "launcher.slurm.time asks 10:00 per job but partition short allows at most 5:00 (its MaxTime)",
            "time",
        ),
        (
            ["launcher.slurm.additional_parameters.gres=gpu:1"],
            "launcher.slurm.additional_parameters.gres asks for GPUs but no node of partition debug has GRES gpu",
            "additional_parameters",
        ),
        (
            ["launcher.slurm.mem=100000G"],
            "launcher.slurm.mem is 100000G per node but the largest node of partition debug has",
            "mem",
        ),
        (
            ["launcher.slurm.cpus_per_task=4096"],
            "a job needs 4096 CPUs per node",
            "cpus_per_task",
        ),
    ],
)
def test_a_request_the_partition_can_never_start_is_refused_before_submission(
    tmp_path, data_root, slurm_cluster, overrides, words, line_key
):
    env, sbatch_log = sbatch_counter(tmp_path)
    path, output = write_sweep(tmp_path, data_root, "limits")
    before = squeue_count()
    args = [part for override in overrides for part in ("--set", override)]
    for command in (["sweep", path, *args], ["sweep", path, "--detach", *args]):
        refused = cli(*command, env=env)
        assert refused.returncode == 2 and words in refused.stderr, show(refused)
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, show(refused)
    assert calls(sbatch_log) == 0 and squeue_count() == before
    assert not (output / "sweeps" / "limits" / "slurm").exists()


def test_a_job_that_can_never_start_is_stuck_in_status_and_ends_wait_with_exit_2(tmp_path, data_root, slurm_cluster):
    """Accepted by sbatch, then the partition's MaxTime lowered below its time limit (an administrator's change):
    it pends for ever with PartitionTimeLimit; status says so and --wait stops with exit 2."""
    path, output = write_sweep(
        tmp_path, data_root, "stuck", launcher__slurm__partition="short", launcher__slurm__time=4
    )
    submitted = cli("sweep", path, "--set", "launcher.slurm.additional_parameters.hold=true")
    assert submitted.returncode == 0, show(submitted)
    (run,) = run_folders(output)
    job = job_record(run)["job_id"]
    try:
        subprocess.run(["scontrol", "update", "PartitionName=short", "MaxTime=2"], check=True, timeout=30)
        subprocess.run(["scontrol", "release", job], check=True, timeout=30)
        status = wait_for(
            lambda: "PartitionTimeLimit" in (s := cli("status", path)).stdout and s, 60, "the scheduler's reason"
        )
        assert "stuck(slurm" in status.stdout and "it can never start as submitted" in status.stdout, status.stdout
        assert "stuck 1" in status.stdout
        followed = cli("sweep", path, "--wait", "--poll", "1", timeout=120)
        assert followed.returncode == 2, show(followed)
        assert f"1 job(s) can never start as submitted: {job} (PartitionTimeLimit)" in followed.stderr, show(followed)
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=short", "MaxTime=5"], check=True, timeout=30)
        an_lab("cancel", path)


def test_a_detached_orchestrator_fits_a_partition_with_a_short_max_time(tmp_path, data_root, slurm_cluster):
    path, output = write_sweep(
        tmp_path, data_root, "short", launcher__slurm__partition="short", launcher__slurm__time=4
    )
    detached = cli("sweep", path, "--detach", "--set", "launcher.slurm.additional_parameters.hold=true")
    assert detached.returncode == 0, show(detached)
    record = json.loads((output / "sweeps" / "short" / "slurm" / "orchestrator.json").read_text())
    shown = subprocess.run(["scontrol", "show", "job", record["job_id"]], capture_output=True, text=True).stdout
    try:
        assert "TimeLimit=00:05:00" in shown and "Partition=short" in shown, shown
        assert "PartitionTimeLimit" not in shown
    finally:
        an_lab("cancel", path)


def test_a_damaged_ledger_never_doubles_the_allocations_of_queued_jobs(tmp_path, data_root, slurm_cluster):
    """Two runs queued (held); one run's slurm.json damaged, the other's folder deleted; a relaunch submits nothing
    (the sweep's slurm/jobs.json and one squeue call know the jobs), restores both folders' records, and cancel
    finds every job the sweep submitted."""
    env, sbatch_log = sbatch_counter(tmp_path)
    path, output = write_sweep(tmp_path, data_root, "ledger", axes={"model.an.pooling": ["rsd", "mean"]})
    held = ("--set", "launcher.slurm.additional_parameters.hold=true")
    assert cli("sweep", path, *held, env=env).returncode == 0
    first, second = run_folders(output)
    jobs = {job_record(first)["job_id"], job_record(second)["job_id"]}
    before = squeue_count()
    (first / "slurm.json").write_text("{damaged")
    shutil.rmtree(second)
    try:
        again = cli("sweep", path, *held, env=env)
        assert again.returncode == 0 and "0 to run" in again.stdout and "2 queued or running on SLURM" in again.stdout
        assert calls(sbatch_log) == 1 and squeue_count() == before, show(again)
        assert {job_record(first)["job_id"], job_record(second)["job_id"]} == jobs
        assert (second / "config.json").is_file()  # the queued job finds its config when it starts
        status = cli("status", path)
        assert status.stdout.count("pending(slurm") == 2, status.stdout
    finally:
        cancelled = an_lab("cancel", path)
    assert cancelled.stdout.count("cancelled (was pending)") == 2, show(cancelled)


def test_a_run_that_fails_in_its_job_before_training_is_recorded_failed_by_the_job(tmp_path, data_root, slurm_cluster):
    """Its data root is gone when the job starts: the job writes failed.json itself (no accounting needed to know),
    so no launch resubmits it without --retry-failed; its job log says why in one line."""
    data = tmp_path / "data"
    shutil.copytree(data_root / "digits", data)
    path, output = write_sweep(tmp_path, data_root, "gone")
    tree = yaml.safe_load(path.read_text())
    tree["base"]["data"] = {**tree["base"]["data"], "name": "imagefolder", "root": str(data)}
    path.write_text(yaml.safe_dump(tree))
    assert cli("sweep", path, "--set", "launcher.slurm.additional_parameters.hold=true").returncode == 0
    (run,) = run_folders(output)
    shutil.rmtree(data)
    subprocess.run(["scontrol", "release", job_record(run)["job_id"]], check=True, timeout=30)
    wait_for(lambda: (run / "failed.json").exists(), 120, "the job to record its failure")
    reason = json.loads((run / "failed.json").read_text())["reason"]
    assert str(data) in reason, reason
    status = wait_for(lambda: "failed(" in (s := cli("status", path)).stdout and s, 60, "status to show it failed")
    assert "interrupted(" not in status.stdout and "failed 1" in status.stdout, status.stdout
    shutil.copytree(data_root / "digits", data)  # the data is back: the failed run is kept, not resubmitted
    kept = cli("sweep", path)
    assert kept.returncode == 0 and "0 to run, 0 done, 1 failed" in kept.stdout, show(kept)
