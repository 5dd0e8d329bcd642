"""`an-lab sweep` end to end through the real local executor and the real Trainer, and `an-lab status`."""

import json

import pytest
import yaml
from conftest import an_lab, small_sweep

pytestmark = pytest.mark.slow


def test_sweep_runs_what_is_missing_and_nothing_twice(tmp_path, data_root):
    path = tmp_path / "small.yaml"
    output = tmp_path / "runs"
    path.write_text(yaml.safe_dump(small_sweep(data_root, output, {"model.an.pooling": ["rsd", "mean"]})))

    first = an_lab("sweep", path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "3 to run, 0 done" in first.stdout and "done 3" in first.stdout
    manifest = json.loads((output / "sweeps" / "small" / "manifest.json").read_text())
    assert [cell["label"] for cell in manifest["cells"]] == [
        "RSD + A2 + hsigmoid + K=(10,10,20)",
        "Mean + A2 + hsigmoid + K=(10,10,20)",
        "BN",
    ]
    finished = {p.parent.name: p.stat().st_mtime for p in output.glob("*/result.json")}
    assert len(finished) == 3

    again = an_lab("sweep", path)
    assert again.returncode == 0 and "0 to run, 3 done" in again.stdout

    # Editing one axis value keeps every run whose config did not change.
    path.write_text(yaml.safe_dump(small_sweep(data_root, output, {"model.an.pooling": ["rsd", "concat"]})))
    edited = an_lab("sweep", path)
    assert edited.returncode == 0 and "1 to run, 2 done" in edited.stdout
    for run_id, mtime in finished.items():
        assert (output / run_id / "result.json").stat().st_mtime == mtime  # nothing ran twice

    status = an_lab("status", output / "sweeps" / "small")  # from a fresh process, on the sweep folder
    assert status.returncode == 0 and "done 3" in status.stdout and "lowest mean: " in status.stdout


def test_a_failed_run_reports_its_reason_and_only_retry_failed_relaunches_it(tmp_path, data_root):
    path = tmp_path / "failing.yaml"
    output = tmp_path / "runs"
    sweep = small_sweep(data_root, output, {"optim.base_lr": [0.4, 1.0e9]})
    sweep["baselines"] = {}
    path.write_text(yaml.safe_dump(sweep))

    first = an_lab("sweep", path)
    assert first.returncode == 1
    status = an_lab("status", path)
    assert "failed(diverged: training loss became nan" in status.stdout and "done 1" in status.stdout

    kept = an_lab("sweep", path)
    assert "0 to run, 1 done, 1 failed" in kept.stdout
    retried = an_lab("sweep", path, "--retry-failed")
    assert "1 to run, 1 done, 0 failed" in retried.stdout
    assert len(list(output.glob("*/logs/attempt-*"))) == 3  # the good run once, the failing one twice


def test_search_asks_and_tells_optuna_from_one_process_and_prunes(tmp_path, data_root):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    # Certain pruning: one trial at a time, and a seeded grid whose first rate learns (its validation top-1 error is
    # about 80 after epoch 0 and about 65 after epoch 1) while every other rate leaves the network near its
    # initialization (90, chance on ten classes). The first trial completes (n_startup_trials=1); the second is
    # worse than that median at epoch 0 or 1 and is stopped before epoch 2.
    good, grid = 0.4, [0.4, 1.0e-6, 1.0e-5]
    sweep = small_sweep(data_root, tmp_path / "runs", {})
    sweep.update(name="search", mode="search", baselines={})
    sweep["base"]["trainer"]["epochs"] = 3
    sweep["launcher"]["max_parallel"] = 1
    sweep["search"] = {
        "metric": "val_top1_err",
        "n_trials": 2,  # fewer than the grid's points (an exhausted GridSampler calls study.stop(), which raises)
        "sampler": "grid",
        "sampler_options": {"search_space": {"optim.base_lr": grid}, "seed": 5},  # seed 5 puts 0.4 first
        "pruner": "median",
        "pruner_options": {"n_startup_trials": 1, "n_warmup_steps": 0},
        "space": {"optim.base_lr": {"low": 1.0e-6, "high": 1.0, "log": True}},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(sweep))

    result = an_lab("sweep", path)
    assert "best trial 0" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0  # a pruned trial is an outcome of the search, not a failed sweep
    journal = tmp_path / "runs" / "sweeps" / "search" / "optuna-journal.log"
    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(journal))))
    first, second = study.trials
    assert first.params["optim.base_lr"] == good and second.params["optim.base_lr"] in grid[1:], study.trials
    assert [first.state, second.state] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]

    # The completed trial was told every epoch's value and its last one; its run finished.
    assert sorted(first.intermediate_values) == [0, 1, 2]
    assert first.value == first.intermediate_values[2]
    assert (tmp_path / "runs" / first.user_attrs["run_id"] / "result.json").exists()
    # The pruned trial reported fewer epochs, its last one worse than the completed trial's at that epoch, and its
    # run was stopped and marked as pruned.
    epoch = max(second.intermediate_values)
    assert len(second.intermediate_values) < 3 and sorted(second.intermediate_values) == list(range(epoch + 1))
    assert second.intermediate_values[epoch] > first.intermediate_values[epoch]
    pruned_dir = tmp_path / "runs" / second.user_attrs["run_id"]
    assert (pruned_dir / "config.json").exists() and not (pruned_dir / "result.json").exists()
    reason = json.loads((pruned_dir / "failed.json").read_text())["reason"]
    assert reason == f"pruned by Optuna after epoch {epoch}"
    assert f"pruned after epoch {epoch}" in result.stdout, result.stdout[-3000:]
    manifest = json.loads((tmp_path / "runs" / "sweeps" / "search" / "manifest.json").read_text())
    assert [cell["kind"] for cell in manifest["cells"]] == ["trial", "trial"]

    again = an_lab("sweep", path)  # the study has all its trials: none is asked again
    assert "best trial 0" in again.stdout and "trial 2" not in again.stdout
    reloaded = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(reloaded.trials) == 2


@pytest.mark.parametrize("relative", [True, False], ids=["relative output_dir", "absolute output_dir"])
def test_a_search_killed_holding_the_journal_lock_resumes_at_once_and_trains_every_trial_once(
    tmp_path, data_root, relative
):
    """The orchestrator is SIGKILLed inside the Optuna journal lock once its first trial has started (the kill placed
    there by the lock's test hook); the plain relaunch takes the lock at once (no grace period, no spinning: with a
    relative output_dir Optuna's own lock used to hang here for ever) and ends the search: n_trials trials, each
    asked once and trained once, every epoch reported."""
    import subprocess
    import sys

    import optuna
    from conftest import kill_holding_the_journal_lock

    from an_lab.sweeps.journal import journal_storage

    sweep = small_sweep(data_root, "runs" if relative else tmp_path / "runs", {})
    sweep.update(name="search", mode="search", baselines={})
    sweep["launcher"]["max_parallel"] = 2
    sweep["search"] = {
        "metric": "val_top1_err",
        "n_trials": 3,
        "sampler": "grid",
        "sampler_options": {"search_space": {"optim.base_lr": [0.1, 0.2, 0.4]}},
        "pruner": "none",
        "space": {"optim.base_lr": {"low": 0.01, "high": 1.0, "log": True}},
    }
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(sweep))
    output = tmp_path / "runs"
    command = [sys.executable, "-m", "an_lab.cli", "sweep", "search.yaml"]
    with (tmp_path / "killed.log").open("w") as log:
        kill_holding_the_journal_lock(
            command, log, lambda: any(output.glob("*/started.json")), tmp_path / "stop", cwd=tmp_path
        )

    relaunched = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    said = relaunched.stdout + relaunched.stderr
    assert relaunched.returncode == 0, said[-3000:]
    assert "taking longer" not in said and "Forcibly" not in said, said[-3000:]
    journal = output / "sweeps" / "search" / "optuna-journal.log"
    study = optuna.load_study(study_name="search", storage=journal_storage(journal))
    counted = [trial for trial in study.trials if not trial.user_attrs.get("abandoned")]
    assert len(counted) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted), study.trials
    assert sorted(t.params["optim.base_lr"] for t in counted) == [0.1, 0.2, 0.4]  # none asked twice
    run_ids = {trial.user_attrs["run_id"] for trial in counted}
    assert len(run_ids) == 3
    for trial in counted:
        assert sorted(trial.intermediate_values) == [0, 1]  # every epoch reported
        attempts = list((output / trial.user_attrs["run_id"] / "logs").glob("attempt-*"))
        assert len(attempts) == 1, attempts  # trained once: followed after the kill, never started again
    # A trial asked but killed before its run was written is the only kind that fails, and it never trained.
    abandoned = [trial for trial in study.trials if trial.user_attrs.get("abandoned")]
    assert abandoned == [trial for trial in study.trials if trial.state == optuna.trial.TrialState.FAIL]
    assert not any((output / str(t.user_attrs.get("run_id")) / "result.json").exists() for t in abandoned)


def test_a_run_that_raises_records_the_exception_not_the_logs_last_line(tmp_path, data_root):
    """failed.json and status name the exception (type and message), not a notice printed at exit."""
    import shutil

    data = tmp_path / "digits"
    shutil.copytree(data_root / "digits", data)
    broken = sorted((data / "train").glob("*/*.png"))[0]
    broken.write_bytes(b"not a png")
    sweep = small_sweep(data_root, tmp_path / "runs", {})
    sweep["baselines"] = {}
    sweep["base"]["data"] = {"name": "imagefolder", "root": str(data), "image_size": 16, "num_workers": 0}
    sweep["base"]["trainer"]["epochs"] = 1
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(sweep))
    launched = an_lab("sweep", path)
    assert launched.returncode != 0 or "failed" in launched.stdout
    (run,) = [folder for folder in (tmp_path / "runs").iterdir() if (folder / "config.json").exists()]
    reason = json.loads((run / "failed.json").read_text())["reason"]
    assert reason.startswith("UnidentifiedImageError: cannot identify image file"), reason
    assert str(broken.name) in reason
    status = an_lab("status", path)
    assert "UnidentifiedImageError" in status.stdout, status.stdout
