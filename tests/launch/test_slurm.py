"""`an-lab sweep --executor slurm`, `status` and `cancel` on a real SLURM cluster (tests/conftest.py: slurm_cluster).

Every job here is a real submitit job array task that trains a real model through srun on the local cluster.
Preemption and time limit use submitit's test hook, `job._interrupt()` (SIGTERM then USR2) and
`job._interrupt(timeout=True)` (USR2 alone, what SLURM sends ahead of a time limit). A real one-minute limit is
tested too but only on request (AN_LAB_SLURM_REAL_TIME_LIMIT=1): SLURM checks limits on a 30-second tick, so it
takes about three minutes.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import an_lab

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PACKAGE = Path(__file__).resolve().parents[2] / "an_lab"


def write_sweep(tmp_path: Path, data_root: Path, name: str, **changes) -> tuple[Path, Path]:
    """A sweep file for SLURM CPU jobs of a CIFAR ResNet-20 on the digits data; returns (file, output dir)."""
    output = tmp_path / f"{name}-runs"
    sweep = {
        "name": name,
        "mode": "ablation",
        "base": {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
            "optim": {"base_lr": 0.4, "warmup_epochs": 1},
            "trainer": {"epochs": 2, "accelerator": "cpu"},
            "wandb": {"mode": "disabled"},
        },
        "launcher": {"executor": "slurm", "max_parallel": 3, "slurm": {"gpus_per_node": 0, "time": 10}},
        "output_dir": str(output),
    }
    for key, value in changes.items():
        node = sweep
        *parents, last = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path, output


def sbatch_counter(tmp_path: Path) -> tuple[dict, Path]:
    """An environment whose `sbatch` logs each call to a file before running the real one."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    calls = tmp_path / "sbatch-calls.log"
    real = shutil.which("sbatch")
    (shims / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real} "$@"\n')
    (shims / "sbatch").chmod(0o755)
    return dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}"), calls


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


cli = functools.partial(an_lab, timeout=300)


def show(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_folders(output: Path) -> list[Path]:
    return sorted(path.parent for path in output.glob("*/config.json"))


def job_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "slurm.json").read_text())


def attempts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "slurm-attempts.jsonl").read_text().splitlines()]


def job_log(output: Path, name: str, job_id: str) -> str:
    return (output / "sweeps" / name / "slurm" / "logs" / job_id / f"{job_id}_0_log.out").read_text()


def test_a_sweep_is_one_array_that_runs_the_code_snapshot_and_completes(tmp_path, data_root, slurm_cluster):
    path, output = write_sweep(
        tmp_path, data_root, "small", axes={"model.an.pooling": ["rsd", "mean"]}, baselines={"bn": {"model.norm": "bn"}}
    )
    # Submit from a copy of the package, so that the test can edit "the working tree" while the jobs are queued.
    tree = tmp_path / "tree"
    shutil.copytree(PACKAGE, tree / "an_lab", ignore=shutil.ignore_patterns("__pycache__"))
    env, sbatch_log = sbatch_counter(tmp_path)
    from_tree = dict(env, PYTHONPATH=str(tree), PYTHONSAFEPATH="1")
    hold = "launcher.slurm.additional_parameters.hold=true"  # queued, not started, until released below
    started = time.perf_counter()
    submitted = cli("sweep", path, "--set", hold, env=from_tree, cwd=tmp_path)
    assert submitted.returncode == 0, show(submitted)
    assert time.perf_counter() - started < 30  # returns once queued
    assert "3 to run" in submitted.stdout and "submitted job array" in submitted.stdout

    runs = run_folders(output)
    records = [job_record(run) for run in runs]
    assert len(runs) == 3 and calls(sbatch_log) == 1  # one sbatch call for the whole sweep
    arrays = {record["array_job_id"] for record in records}
    assert len(arrays) == 1 and sorted(record["array_task_id"] for record in records) == [0, 1, 2]
    (array,) = arrays
    submissions = json.loads((output / "sweeps" / "small" / "slurm" / "jobs.json").read_text())["submissions"]
    assert [s["job_id"] for s in submissions] == [array] and len(submissions[0]["runs"]) == 3
    snapshot = Path(records[0]["code"])
    assert snapshot.parent == output.resolve() / "sweeps" / "small" / "code" and (snapshot / "an_lab").is_dir()

    queued = cli("status", path)
    assert queued.returncode == 0 and queued.stdout.count(f"pending(slurm {array}_") == 3, show(queued)

    # Editing the working tree after submission must not change what the queued jobs run.
    (tree / "an_lab" / "lightning_modules" / "train.py").write_text("raise RuntimeError('edited after submission')\n")
    subprocess.run(["scontrol", "release", array], check=True, timeout=30)

    waited = cli("sweep", path, "--wait", env=env, timeout=240)  # follows the queued jobs, submits nothing
    assert waited.returncode == 0, show(waited)
    assert "0 to run" in waited.stdout and "3 queued or running on SLURM" in waited.stdout
    assert calls(sbatch_log) == 1
    for run in runs:
        (attempt,) = attempts(run)
        assert attempt["an_lab"] == str(snapshot / "an_lab" / "__init__.py")
        assert (run / "result.json").exists()

    status = cli("status", output / "sweeps" / "small")
    assert status.returncode == 0 and "done 3, running 0" in status.stdout, show(status)
    table = an_lab("table", path)
    assert table.returncode == 0 and table.stdout.count("1/1") == 3, show(table)


def submit_one(tmp_path, data_root, name: str, minutes: int, wandb: str = "disabled") -> tuple[Path, Path, Path, str]:
    """A one-run sweep of 4 epochs submitted to SLURM: (sweep file, output dir, run folder, job id)."""
    path, output = write_sweep(
        tmp_path, data_root, name, base__trainer__epochs=4, launcher__slurm__time=minutes, base__wandb__mode=wandb
    )
    submitted = an_lab("sweep", path)
    assert submitted.returncode == 0, show(submitted)
    (run,) = run_folders(output)
    return path, output, run, job_record(run)["job_id"]


def interrupt(output: Path, name: str, run: Path, job_id: str, timeout: bool) -> None:
    """submitit's test hook, once the run's first epoch is checkpointed: SIGTERM + USR2 (preemption) or USR2 alone
    (time limit); the job's rank 0 then checkpoints (returns its own call) and requeues."""
    import submitit

    wait_for(lambda: (run / "last.ckpt").exists(), 120, "the first epoch's checkpoint")
    submitit.SlurmJob(folder=output / "sweeps" / name / "slurm" / "logs" / "%j", job_id=job_id)._interrupt(timeout)


def assert_clean_logs(output: Path, name: str, job_id: str) -> None:
    """A job's logs after a requeue or a cancel: what happened in one line each, no Python traceback."""
    folder = output / "sweeps" / name / "slurm" / "logs" / job_id
    for path in (folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err"):
        text = path.read_text()
        assert "Traceback" not in text and "triggered an exception" not in text, f"{path}:\n{text[-3000:]}"


def test_b_a_preempted_job_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path, data_root, slurm_cluster):
    # A limit over 10 minutes: submitit then treats the signal as a preemption, not as a time-out.
    _, output, run, job_id = submit_one(tmp_path, data_root, "preempt", minutes=60)
    # Meanwhile the same config trains locally, uninterrupted, in another output folder (one thread, like the job).
    reference_root = tmp_path / "reference"
    reference = subprocess.Popen(
        [sys.executable, "-m", "an_lab.cli", "train", run / "config.json", "--set", f"output_dir={reference_root}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    interrupt(output, "preempt", run, job_id, timeout=False)
    wait_for(lambda: (run / "result.json").exists(), 180, "the requeued job to finish", every=0.5)
    log = job_log(output, "preempt", job_id)
    assert "this job is preempted" in log and f"Requeued job {job_id}" in log, log
    assert [attempt["restart"] for attempt in attempts(run)] == [0, 1]
    second = (run / "logs" / "attempt-1" / "metrics.csv").read_text().splitlines()
    epochs = [float(line.split(",")[second[0].split(",").index("epoch")]) for line in second[1:]]
    assert min(epochs) >= 1  # the second attempt resumed from a checkpoint instead of starting over

    printed, _ = reference.communicate(timeout=180)
    assert reference.returncode == 0, printed
    ours = json.loads((run / "result.json").read_text())
    theirs = json.loads((reference_root / run.name / "result.json").read_text())
    assert ours["final"] == theirs["final"] and ours["best"] == theirs["best"]
    assert ours["epochs"] == theirs["epochs"] == 4

    def validation(csv_path: Path) -> list[dict]:
        lines = csv_path.read_text().splitlines()
        columns = lines[0].split(",")
        rows = [dict(zip(columns, line.split(","), strict=True)) for line in lines[1:]]
        return [{k: v for k, v in row.items() if k == "epoch" or k.startswith("val_")} for row in rows]

    assert validation(run / "metrics.csv") == validation(reference_root / run.name / "metrics.csv")


def test_c_a_job_at_its_time_limit_is_requeued_and_completes(tmp_path, data_root, slurm_cluster):
    # submitit's time-out hook sends USR2 alone, as SLURM does ahead of a limit. With a limit of 10 minutes or less
    # submitit counts any signal as a time-out (its "guaranteed" wall time is the limit minus 10 minutes), so this
    # takes the time-limit path: one fewer time-out requeue left, checkpoint, requeue, resume.
    # W&B logs offline, as by default: its service process dies with the requeued step, and the job log says so in
    # one line at most (before: two tracebacks and submitit's "Submitted job triggered an exception").
    path, output, run, job_id = submit_one(tmp_path, data_root, "timeout", minutes=10, wandb="offline")
    interrupt(output, "timeout", run, job_id, timeout=True)
    wait_for(lambda: (run / "result.json").exists(), 180, "the requeued job to finish", every=0.5)
    log = job_log(output, "timeout", job_id)
    assert "this job is timed-out" in log and "(19 remaining timeouts)" in log, log
    assert_clean_logs(output, "timeout", job_id)
    assert (run / "wandb").is_dir()
    assert [attempt["restart"] for attempt in attempts(run)] == [0, 1]
    status = wait_for(lambda: "done 1" in (s := an_lab("status", path)).stdout and s, 30, "the status to show it done")
    assert "failed 0" in status.stdout


@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("AN_LAB_SLURM_REAL_TIME_LIMIT") == "1"),
    reason="a few minutes: runs in CI, or locally with AN_LAB_SLURM_REAL_TIME_LIMIT=1",
)
def test_c_a_real_time_limit_requeues_until_the_run_completes(tmp_path, data_root, slurm_cluster):
    # SLURM sends USR2 ahead of the limit (15 s here, up to a 30-s scheduler tick earlier), so each one-minute attempt
    # trains for only 10 to 35 s (one to four epochs here, after start-up, more on an idle machine: 6 epochs once fit
    # in one attempt): a 12-epoch run takes several attempts, each resuming from the last epoch.
    path, output = write_sweep(tmp_path, data_root, "timelimit", base__trainer__epochs=12, launcher__slurm__time=1)
    submitted = an_lab("sweep", path)
    assert submitted.returncode == 0, show(submitted)
    (run,) = run_folders(output)
    job_id = job_record(run)["job_id"]
    wait_for(lambda: (run / "result.json").exists(), 600, "the run to finish over several attempts", every=1)
    log = job_log(output, "timelimit", job_id)
    assert "this job is timed-out" in log and "remaining timeouts" in log, log
    restarts = [attempt["restart"] for attempt in attempts(run)]
    assert len(restarts) >= 2 and restarts == list(range(len(restarts)))
    assert json.loads((run / "result.json").read_text())["epochs"] == 12


def test_d_a_failed_job_shows_its_reason_and_only_it_is_retried(tmp_path, data_root, slurm_cluster):
    path, output = write_sweep(tmp_path, data_root, "failing", axes={"optim.base_lr": [0.4, 1.0e9]})
    env, sbatch_log = sbatch_counter(tmp_path)
    first = cli("sweep", path, "--wait", env=env, timeout=240)
    assert first.returncode == 1, show(first)
    status = an_lab("status", path)
    assert status.returncode == 0, show(status)
    assert "failed(diverged: training loss became nan" in status.stdout, status.stdout
    assert "FAILED, exit code 1:0" in status.stdout and "done 1" in status.stdout

    # Without accounting (sacct failing) or without any SLURM command, status still answers, with a note.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (broken / "sacct").chmod(0o755)
    no_accounting = cli("status", path, env=dict(os.environ, PATH=f"{broken}:{os.environ['PATH']}"))
    assert no_accounting.returncode == 0 and "Traceback" not in no_accounting.stderr, show(no_accounting)
    assert "accounting is not available" in no_accounting.stdout and "done 1" in no_accounting.stdout
    assert "failed(diverged" in no_accounting.stdout
    no_slurm = cli("status", path, env=dict(os.environ, PATH=os.path.dirname(sys.executable)))
    assert no_slurm.returncode == 0 and "not found" in no_slurm.stdout and "failed(diverged" in no_slurm.stdout

    kept = cli("sweep", path, env=env)
    assert kept.returncode == 0 and "0 to run, 1 done, 1 failed" in kept.stdout, show(kept)
    retried = cli("sweep", path, "--retry-failed", "--wait", env=env, timeout=240)
    assert "1 to run, 1 done, 0 failed" in retried.stdout, show(retried)
    submissions = json.loads((output / "sweeps" / "failing" / "slurm" / "jobs.json").read_text())["submissions"]
    assert calls(sbatch_log) == 2 and [s["tasks"] for s in submissions] == [2, 1]
    (failing_run,) = submissions[1]["runs"]
    assert failing_run in submissions[0]["runs"] and json.loads((output / failing_run / "config.json").read_text())[
        "optim"
    ]["base_lr"] == pytest.approx(1e9)


def test_e_a_two_task_job_trains_with_ddp_over_gloo_through_srun(tmp_path, data_root, slurm_cluster):
    path, output = write_sweep(tmp_path, data_root, "ddp", base__trainer__devices=2, launcher__slurm__cpus_per_task=1)
    # AN_LAB_VERBOSE=1 reaches the job (sbatch exports the environment) and keeps Lightning's rank lines in its logs.
    result = cli("sweep", path, "--wait", timeout=240, env=dict(os.environ, AN_LAB_VERBOSE="1"))
    assert result.returncode == 0, show(result)
    (run,) = run_folders(output)
    assert len(list(output.rglob("result.json"))) == 1
    assert json.loads((run / "result.json").read_text())["device"].startswith("2 x cpu")
    (attempt,) = attempts(run)  # recorded by rank 0 only
    assert attempt["tasks"] == 2 and int(attempt["master_port"]) == 20000 + int(attempt["slurm_job_id"]) % 20000
    logs = output / "sweeps" / "ddp" / "slurm" / "logs" / attempt["job_id"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (logs / f"{attempt['job_id']}_1_log.err").read_text()
    script = next(logs.parent.glob("*/*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script and "srun" in script


def test_a_mismatched_job_shape_is_refused_before_submitting(tmp_path, data_root, slurm_cluster):
    env, sbatch_log = sbatch_counter(tmp_path)
    path, output = write_sweep(tmp_path, data_root, "shape", base__trainer__devices=2, base__trainer__accelerator="gpu")
    for override, words in [
        ("launcher.slurm.gpus_per_node=4", "trainer.devices is 2 but launcher.slurm.gpus_per_node is 4"),
        ("launcher.slurm.gpus_per_node=0", "trainer.accelerator is gpu but launcher.slurm.gpus_per_node is 0"),
        ("launcher.slurm.nodes=2", "trainer.num_nodes is 1 but launcher.slurm.nodes is 2"),
    ]:
        refused = cli("sweep", path, "--set", "launcher.slurm.gpus_per_node=2", "--set", override, env=env)
        assert refused.returncode == 2 and words in refused.stderr, show(refused)
    # The local cluster has one node: two are refused against the partition, naming the setting's line.
    two = (
        "--set",
        "launcher.slurm.nodes=2",
        "--set",
        "base.trainer.num_nodes=2",
        "--set",
        "base.trainer.accelerator=cpu",
    )
    refused = cli("sweep", path, "--set", "launcher.slurm.gpus_per_node=0", "--set", "base.trainer.devices=1", *two)
    assert refused.returncode == 2, show(refused)
    assert "launcher.slurm.nodes is 2 but partition debug gives one job at most 1 node(s)" in refused.stderr, show(
        refused
    )
    assert calls(sbatch_log) == 0 and not (output / "sweeps" / "shape" / "slurm").exists()


def test_an_outside_requeue_and_scancel_of_running_tasks_leave_clean_logs(tmp_path, data_root, slurm_cluster):
    # Two runs of one array, W&B logging offline; once each has checkpointed an epoch, an administrator requeues
    # the first task and cancels the second. The requeued one resumes and completes; the cancelled one is
    # interrupted; neither log holds a traceback (before: W&B's lost connection, twice, and a dropped SystemExit).
    path, output = write_sweep(
        tmp_path,
        data_root,
        "outside",
        axes={"model.an.pooling": ["rsd", "mean"]},
        base__trainer__epochs=4,
        base__wandb__mode="offline",
    )
    submitted = an_lab("sweep", path)
    assert submitted.returncode == 0, show(submitted)
    runs = {json.loads((run / "config.json").read_text())["model"]["an"]["pooling"]: run for run in run_folders(output)}
    for run in runs.values():
        wait_for(lambda run=run: (run / "last.ckpt").exists(), 120, "each run's first checkpoint")
    requeued, cancelled = job_record(runs["rsd"])["job_id"], job_record(runs["mean"])["job_id"]
    subprocess.run(["scontrol", "requeue", requeued], check=True, timeout=30)
    subprocess.run(["scancel", cancelled], check=True, timeout=30)
    wait_for(lambda: (runs["rsd"] / "result.json").exists(), 180, "the requeued task to finish", every=0.5)

    def gone() -> bool:
        queued = subprocess.run(["squeue", "-h", "-j", cancelled], capture_output=True, text=True, timeout=30)
        return not queued.stdout.strip()

    wait_for(gone, 60, "the cancelled task to leave the queue")
    array = requeued.split("_")[0]
    for job in (requeued, cancelled):
        assert_clean_logs(output, "outside", job)
    assert [attempt["restart"] for attempt in attempts(runs["rsd"])] == [0, 1]
    assert not (runs["mean"] / "result.json").exists() and array == cancelled.split("_")[0]
    status = an_lab("status", path)
    assert "done 1" in status.stdout and "interrupted(slurm" in status.stdout, show(status)


def test_cancel_stops_a_sweeps_jobs_and_leaves_its_runs_launchable(tmp_path, data_root, slurm_cluster):
    path, output = write_sweep(tmp_path, data_root, "cancelled", axes={"model.an.pooling": ["rsd", "mean"]})
    submitted = an_lab("sweep", path, "--set", "launcher.slurm.additional_parameters.hold=true")
    assert submitted.returncode == 0, show(submitted)
    array = job_record(run_folders(output)[0])["array_job_id"]
    cancelled = an_lab("cancel", path)
    assert cancelled.returncode == 0 and f"scancel {array}" in cancelled.stdout, show(cancelled)
    assert cancelled.stdout.count("cancelled (was pending)") == 2
    gone = subprocess.run(["squeue", "--noheader", "--jobs", array], capture_output=True, text=True, timeout=30)
    assert gone.stdout.strip() == ""
    again = an_lab("cancel", path)
    assert again.returncode == 0 and "none of its 2 recorded SLURM jobs is queued or running" in again.stdout
    status = wait_for(lambda: "CANCELLED" in (s := an_lab("status", path)).stdout and s, 30, "sacct to show it")
    assert status.stdout.count("interrupted(slurm") == 2
    relaunched = an_lab("sweep", path, "--set", "launcher.slurm.additional_parameters.hold=true")
    assert relaunched.returncode == 0 and "2 to run" in relaunched.stdout, show(relaunched)
    assert an_lab("cancel", path).stdout.count("cancelled (was pending)") == 2


def test_cells_of_different_job_shapes_go_to_one_array_each_and_gpus_default_from_the_cluster(
    tmp_path, data_root, slurm_cluster
):
    """A sweep whose cells ask for 1 and 2 processes: one array per shape, one sbatch call each; without
    launcher.slurm.gpus_per_node a cluster with no GRES gpu gets CPU jobs (the quickstart's old gres failure)."""
    path, output = write_sweep(tmp_path, data_root, "shapes", axes={"trainer.devices": [1, 2]})
    tree = yaml.safe_load(path.read_text())
    del tree["launcher"]["slurm"]["gpus_per_node"]
    tree["baselines"] = {}
    path.write_text(yaml.safe_dump(tree))
    env, sbatch_log = sbatch_counter(tmp_path)
    hold = "launcher.slurm.additional_parameters.hold=true"
    submitted = an_lab("sweep", path, "--set", hold, env=env)
    assert submitted.returncode == 0, show(submitted)
    assert calls(sbatch_log) == 2
    assert "1 node(s) x 1 task(s), no GPU" in submitted.stdout and "1 node(s) x 2 task(s), no GPU" in submitted.stdout
    arrays = {job_record(run)["array_job_id"] for run in run_folders(output)}
    assert len(arrays) == 2
    jobs = json.loads((output / "sweeps" / "shapes" / "slurm" / "jobs.json").read_text())["submissions"]
    assert sorted(entry["sbatch"]["ntasks_per_node"] for entry in jobs) == [1, 2]
    assert all("gpus_per_node" not in entry["sbatch"] for entry in jobs)
    cancelled = an_lab("cancel", path)  # waits until the jobs have left the queue ...
    assert cancelled.returncode == 0 and cancelled.stdout.count("cancelled (was pending)") == 2, show(cancelled)
    queue = subprocess.run(["squeue", "--noheader", "--jobs", ",".join(arrays)], capture_output=True, text=True)
    assert queue.stdout.strip() == ""
    again = an_lab("sweep", path, "--set", hold, env=env)  # ... so an immediate relaunch submits both runs again
    assert again.returncode == 0 and "2 to run" in again.stdout, show(again)
    assert calls(sbatch_log) == 4
    assert an_lab("cancel", path).returncode == 0


def _study(output: Path, name: str):
    import optuna

    from an_lab.sweeps.journal import journal_storage

    journal = output / "sweeps" / name / "optuna-journal.log"
    return optuna.load_study(study_name=name, storage=journal_storage(journal))


def test_a_search_on_slurm_survives_its_orchestrator_killed_in_and_out_of_the_journal_lock_and_ends_detached(
    tmp_path, data_root, slurm_cluster
):
    """Every trial is one job; the orchestrator is SIGKILLed while trials run, first inside the Optuna journal lock
    (placed there by the lock's test hook), then outside it (stopped, checked, killed), then the search finishes as a
    detached job: exactly n_trials trials, each submitted once (followed again, never resubmitted), none asked twice,
    pruned jobs cancelled, and the completed trials report every epoch. Outcomes only: where a kill lands in time
    changes which trials were in flight, never the result."""
    import optuna
    from conftest import kill_holding_the_journal_lock, kill_outside_the_journal_lock

    axes = {"optim.base_lr": [0.3, 0.4, 1e-5, 1e-6]}
    path, output = write_sweep(tmp_path, data_root, "search", axes=axes)
    tree = yaml.safe_load(path.read_text())
    tree.update(mode="search", baselines={})
    tree["base"]["trainer"]["epochs"] = 3
    tree["launcher"]["max_parallel"] = 2
    tree["search"] = {
        "metric": "val_top1_err",
        "n_trials": 4,
        # Deterministic: the grid's 4 points in some order, each trained on the same digits on CPU. At lr 1e-5 and 1e-6
        # the AN ResNet-20 stays at chance (90% error, 91.4% after its second epoch) and is pruned there (threshold
        # 86%); at lr 0.3 and 0.4 it is at 68% and 82% then (66% and 70% on another CPU type) and completes.
        "sampler": "grid",
        "sampler_options": {"search_space": {"optim.base_lr": ["0.3", "0.4", "1e-05", "1e-06"]}},
        "pruner": "threshold",
        "pruner_options": {"upper": 86.0, "n_warmup_steps": 1},
    }
    path.write_text(yaml.safe_dump(tree))
    submitted = lambda: len(list(output.glob("*/slurm.json")))  # noqa: E731
    command = [sys.executable, "-m", "an_lab.cli", "sweep", str(path), "--poll", "1"]
    with (tmp_path / "orchestrator-1.log").open("w") as log:
        kill_holding_the_journal_lock(command, log, lambda: submitted() >= 2, tmp_path / "stop-in-lock")
    with (tmp_path / "orchestrator-2.log").open("w") as log:
        orchestrator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: submitted() >= 3, 300, "a third trial submitted")
        kill_outside_the_journal_lock(orchestrator, output / "sweeps" / "search" / "optuna-journal.lock")
    second = (tmp_path / "orchestrator-2.log").read_text()
    assert "taking longer" not in second and "Forcibly" not in second, second  # the lock was free at once
    detached = an_lab("sweep", path, "--detach", "--poll", "1")
    assert detached.returncode == 0 and "orchestrator submitted as slurm job" in detached.stdout, show(detached)
    wait_for(lambda: "orchestrator: slurm" in (s := an_lab("status", path).stdout) and "COMPLETED" in s, 600, "the end")
    study = _study(output, "search")
    assert all(trial.state.is_finished() for trial in study.trials)
    trials = [trial for trial in study.trials if not trial.user_attrs.get("abandoned")]
    # A trial asked but killed before its run was written is the only kind that fails, and it was never submitted.
    abandoned = [trial for trial in study.trials if trial.user_attrs.get("abandoned")]
    assert abandoned == [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]
    assert not any("job_id" in trial.user_attrs for trial in abandoned)
    assert len(trials) == 4
    run_ids = [trial.user_attrs["run_id"] for trial in trials]
    assert len(set(run_ids)) == 4
    assert sorted(trial.params["optim.base_lr"] for trial in trials) == ["0.3", "0.4", "1e-05", "1e-06"]  # none twice
    for run_id in run_ids:  # one job per trial: followed again after each kill, never submitted twice
        assert job_record(output / run_id)["previous"] == []
    pruned = [trial for trial in trials if trial.state == optuna.trial.TrialState.PRUNED]
    assert sorted(trial.params["optim.base_lr"] for trial in pruned) == ["1e-05", "1e-06"]
    for trial in pruned:
        job_id = job_record(output / trial.user_attrs["run_id"])["job_id"]
        accounting = subprocess.run(
            ["sacct", "--noheader", "--parsable2", "-X", "--jobs", job_id, "--format", "State"],
            capture_output=True,
            text=True,
        )
        assert accounting.stdout.startswith("CANCELLED"), accounting.stdout
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(trial.params["optim.base_lr"] for trial in complete) == ["0.3", "0.4"]
    assert all(len(trial.intermediate_values) == 3 for trial in complete)


def test_arrays_split_at_max_array_size_and_runs_wait_for_room_under_max_submit_jobs(
    tmp_path, data_root, slurm_cluster
):
    """Seven runs against MaxArraySize 3 and room for 5 more jobs (the executor's view of the cluster's limits; the
    local cluster enforces none): arrays of 3 + 2 tasks in two sbatch calls, 2 runs left for when jobs leave."""
    from an_lab.launch import slurm_queue
    from an_lab.launch.slurm import SlurmExecutor
    from an_lab.launch.slurm_queue import ClusterLimits
    from an_lab.sweeps.loop import Silent, reconcile
    from an_lab.sweeps.run import GridSource
    from an_lab.sweeps.selection import prepare
    from an_lab.sweeps.spec import load_sweep

    path, _ = write_sweep(tmp_path, data_root, "limits", seeds=list(range(7)))
    tree = yaml.safe_load(path.read_text())
    tree["baselines"] = {}
    tree["launcher"]["slurm"]["additional_parameters"] = {"hold": True}
    path.write_text(yaml.safe_dump(tree))
    sweep = load_sweep(path)
    selection = prepare(sweep, retry_failed=False)
    queued = slurm_queue.queued_count()
    limits = ClusterLimits(max_array_size=3, max_submit_jobs=queued + 5, submit_limit_source="a test", gpus=False)
    executor = SlurmExecutor(sweep.sweep_dir, "an-lab-limits", sweep.spec.launcher.slurm, 7, limits=limits)
    source = GridSource(sweep, selection.launch, False, executor, print)

    reconcile(executor, source, Silent(), follow=False)
    try:
        assert [len(submission.runs) for submission in executor.submissions] == [3, 2]
        assert len(source.pending) == 2 and executor.slots() == 0
        listed = subprocess.run(
            ["squeue", "--noheader", "--array", "--name", "an-lab-limits", "--format", "%i"],
            capture_output=True,
            text=True,
        )
        assert len(listed.stdout.split()) == 5
    finally:
        slurm_queue.cancel([job for s in executor.submissions for job in s.runs.values()], wait_s=60)
