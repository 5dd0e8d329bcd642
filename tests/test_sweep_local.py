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
    assert status.returncode == 0 and "done 3" in status.stdout and "lowest mean so far:" in status.stdout


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

    sweep = small_sweep(data_root, tmp_path / "runs", {"model.an.pooling": ["rsd", "mean"]})
    sweep.update(name="search", mode="search", baselines={})
    sweep["base"]["trainer"]["epochs"] = 3
    sweep["search"] = {
        "metric": "val_top1_err",
        "n_trials": 4,
        "sampler": "random",
        "pruner": "median",
        "pruner_options": {"n_startup_trials": 1, "n_warmup_steps": 0},
        "space": {"optim.base_lr": {"low": 0.05, "high": 50.0, "log": True}},
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(sweep))

    result = an_lab("sweep", path)
    assert "best trial" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    journal = tmp_path / "runs" / "sweeps" / "search" / "optuna-journal.log"
    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(journal))))
    states = [trial.state for trial in study.trials]
    assert len(states) == 4 and all(state.is_finished() for state in states)
    assert optuna.trial.TrialState.COMPLETE in states
    for trial in study.trials:  # every trial is a run directory of its own, reported epoch by epoch
        run_dir = tmp_path / "runs" / trial.user_attrs["run_id"]
        assert (run_dir / "config.json").exists()
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(trial.intermediate_values) == 3
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert "pruned by Optuna" in json.loads((run_dir / "failed.json").read_text())["reason"]
    manifest = json.loads((tmp_path / "runs" / "sweeps" / "search" / "manifest.json").read_text())
    assert sum(cell["kind"] == "trial" for cell in manifest["cells"]) == 4

    again = an_lab("sweep", path)  # the study has all its trials: none is asked again
    assert "best trial" in again.stdout and "trial 4" not in again.stdout
    reloaded = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(reloaded.trials) == 4
