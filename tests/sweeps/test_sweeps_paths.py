"""A sweep means the same wherever it is typed and wherever its folder is moved: paths read from the sweep file's
folder, run ids that follow the data, runs of an earlier id scheme found after an upgrade, one sweep per name."""

import json
import os
import shutil

import yaml
from conftest import an_lab

from an_lab.identity import run_id
from an_lab.sweeps.expand import expand
from an_lab.sweeps.spec import load_sweep


def write_sweep(folder, data_root, name="s1", **extra):
    """A one-cell sweep on the digits as an imagefolder, its paths written relative to the sweep file."""
    folder.mkdir(parents=True, exist_ok=True)
    tree = {
        "name": name,
        "mode": "grid",
        "base": {
            "model": {"name": "cifar_resnet20", "norm": "bn"},
            "data": {"name": "imagefolder", "root": os.path.relpath(data_root / "digits", folder), "image_size": 16},
            "trainer": {"epochs": 1},
            "wandb": {"mode": "disabled"},
        },
        "seeds": [0, 1],
        "output_dir": "runs",
        **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def finish(run_dir, run: str, value: float = 5.0) -> None:
    """A run folder with a valid result, as training leaves it (the tests here train nothing)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_text(json.dumps({"run_id": run, "status": "done", "final": {"top1_err": value}}))


def run_ids(text: str) -> list[str]:
    return sorted(word for word in text.split() if word.startswith("cifar_resnet20-bn-"))


def test_the_same_sweep_from_three_directories_plans_and_reads_the_same_runs(tmp_path, data_root):
    path = write_sweep(tmp_path / "project", data_root)
    planned = expand(load_sweep(path))
    finish(planned[0].run_dir, planned[0].run_id)
    (tmp_path / "project" / "sub" / "deeper").mkdir(parents=True)
    seen = {}
    for where in ("project", "project/sub", "project/sub/deeper"):
        cwd = tmp_path / where
        relative = os.path.relpath(path, cwd)
        plan, status = an_lab("plan", relative, cwd=cwd), an_lab("status", relative, cwd=cwd)
        assert plan.returncode == 0 and status.returncode == 0, plan.stderr + status.stderr
        assert f"in {tmp_path / 'project' / 'runs'}" in plan.stdout and "done 1, " in status.stdout, status.stdout
        seen[where] = (run_ids(plan.stdout), run_ids(status.stdout))
    assert len(set(map(str, seen.values()))) == 1 and len(seen["project"][0]) == 2
    assert not (tmp_path / "project" / "sub" / "runs").exists()


def test_a_copied_sweep_folder_reads_the_runs_beside_it_and_says_so(tmp_path, data_root):
    path = write_sweep(tmp_path / "project", data_root)
    planned = expand(load_sweep(path))
    for run in planned:
        finish(run.run_dir, run.run_id)
    assert an_lab("sweep", path, "--max-parallel", "1").returncode == 0  # writes the sweep folder; trains nothing
    copy = tmp_path / "archive" / "runs"
    shutil.copytree(tmp_path / "project" / "runs", copy)
    shutil.rmtree(copy / planned[1].run_id)  # deleted from the copy only
    status = an_lab("status", copy / "sweeps" / "s1")
    assert status.returncode == 0, status.stderr
    assert "done 1, " in status.stdout and "pending 1" in status.stdout, status.stdout
    assert f"reading the runs beside it, in {copy}" in status.stderr
    original = an_lab("status", tmp_path / "project" / "runs" / "sweeps" / "s1")
    assert "done 2, " in original.stdout and "note:" not in original.stderr


def test_runs_finished_under_the_earlier_id_scheme_are_moved_and_never_retrained(tmp_path, data_root):
    """A ledger as the earlier version wrote it: folders named by the old ids, config.json with data.root and
    output_dir relative to the launch directory. `an-lab sweep` moves them to today's ids first; nothing trains."""
    path = write_sweep(tmp_path / "project", data_root)
    planned = expand(load_sweep(path))
    output = tmp_path / "project" / "runs"
    old_ids = []
    for number, run in enumerate(planned):
        old = f"cifar_resnet20-bn-00000000000{number}"
        tree = run.config.model_dump(mode="json")
        tree["output_dir"] = "runs"  # launched from the project folder, as the old rule read it
        tree["data"]["root"] = os.path.relpath(data_root / "digits", tmp_path / "project")
        finish(output / old, old, value=3.0 + number)
        (output / old / "config.json").write_text(json.dumps(tree))
        old_ids.append(old)
    status = an_lab("status", path)
    assert "pending 2" in status.stdout and "an-lab migrate" in status.stdout + status.stderr, status.stdout

    launched = an_lab("sweep", path)
    assert launched.returncode == 0, launched.stdout[-2000:] + launched.stderr[-2000:]
    assert "2 run folder(s) moved to today's run ids" in launched.stdout
    assert "0 to run, 2 done" in launched.stdout, launched.stdout
    for old, run in zip(old_ids, planned, strict=True):
        assert (output / old).is_symlink() and os.readlink(output / old) == run.run_id
        result = json.loads((run.run_dir / "result.json").read_text())
        assert result["run_id"] == run.run_id and result["previous_run_ids"] == [old]
        assert not (run.run_dir / "logs").exists()  # never trained
    log = [json.loads(line) for line in (output / "migrations.jsonl").read_text().splitlines()]
    assert sorted((entry["old"], entry["new"], entry["action"]) for entry in log) == sorted(
        (old, run.run_id, "moved") for old, run in zip(old_ids, planned, strict=True)
    )
    again = an_lab("sweep", path)
    assert "moved" not in again.stdout and "0 to run, 2 done" in again.stdout


def test_a_second_sweep_file_of_the_same_name_is_refused_naming_the_first(tmp_path, data_root):
    first = write_sweep(tmp_path / "a", data_root, output_dir=str(tmp_path / "shared"))
    for run in expand(load_sweep(first)):
        finish(run.run_dir, run.run_id)
    assert an_lab("sweep", first).returncode == 0
    second = write_sweep(tmp_path / "b", data_root, output_dir=str(tmp_path / "shared"))
    refused = an_lab("sweep", second)
    assert refused.returncode == 2 and f"is taken in {tmp_path / 'shared'} by {first}" in refused.stderr
    assert "Traceback" not in refused.stderr
    manifest = json.loads((tmp_path / "shared" / "sweeps" / "s1" / "manifest.json").read_text())
    assert manifest["sweep_file"] == str(first)


def test_set_means_one_thing_for_every_command(tmp_path, data_root):
    path = write_sweep(tmp_path, data_root)
    for run in expand(load_sweep(path, ["seeds=[5]"])):
        finish(run.run_dir, run.run_id)
    assert an_lab("sweep", path, "--set", "seeds=[5]").returncode == 0
    plan = an_lab("plan", path)
    assert "5     cifar_resnet20-bn-" in plan.stdout and "with the --set overrides" in plan.stderr, plan.stdout
    folder = tmp_path / "runs" / "sweeps" / "s1"
    refused = an_lab("status", folder, "--set", "seeds=[0]")
    assert refused.returncode == 2 and "--set applies to a sweep file" in refused.stderr
    manifest_file = an_lab("status", folder / "manifest.json")
    assert manifest_file.returncode == 0 and "done 1" in manifest_file.stdout, manifest_file.stderr


def test_a_search_whose_space_changed_is_refused_not_answered_by_the_old_study(tmp_path):
    import optuna

    from an_lab.sweeps.journal import journal_storage
    from an_lab.sweeps.search import _study

    tree = {
        "name": "search",
        "mode": "search",
        "base": {"data": {"name": "fake"}},
        "axes": {"optim.base_lr": [0.1, 0.2]},
        "search": {"metric": "val_top1_err", "n_trials": 2},
        "output_dir": "runs",
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(tree))
    study = _study(load_sweep(path))
    study.tell(study.ask(), 1.0)
    tree["axes"]["optim.base_lr"] = [0.1, 0.3]
    path.write_text(yaml.safe_dump(tree))
    refused = an_lab("sweep", path)
    assert refused.returncode == 2 and "was made for another search (axes differ" in refused.stderr, refused.stderr
    kept = optuna.load_study(
        study_name="search", storage=journal_storage(tmp_path / "runs/sweeps/search/optuna-journal.log")
    )
    assert len(kept.trials) == 1  # nothing asked for the changed space


def test_runs_and_data_of_a_sweep_file_are_read_from_its_folder_in_the_run_configs(tmp_path, data_root):
    path = write_sweep(tmp_path / "project", data_root)
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")
    try:
        runs = expand(load_sweep(os.path.relpath(path)))
    finally:
        os.chdir(tmp_path)
    assert {run.config.output_dir for run in runs} == {str(tmp_path / "project" / "runs")}
    assert {run.config.data.root for run in runs} == {str(data_root / "digits")}
    assert all(run.run_id == run_id(run.config) for run in runs)
