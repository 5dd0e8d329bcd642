"""A detection run's backbone named as {sweep, cell, seed}: resolved to the classification run's folder before the run
id is computed (from the sweep folder's manifest, else the sweep file beside the detection sweep), with one clear error
(exit 2) per mistake; a backbone that has not finished stops a local launch, and on SLURM the detection jobs wait for
the jobs training it (afterok). Real files on disk throughout; one test submits real jobs to the local cluster."""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import an_lab

from an_lab.cli import main
from an_lab.errors import UsageError
from an_lab.identity import run_id
from an_lab.launch.base import LaunchError
from an_lab.launch.registry import executor_class
from an_lab.launch.slurm_sbatch import dependency, sbatch_parameters
from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.launch.slurm_shape import Shape
from an_lab.sweeps.backbones import Backbone
from an_lab.sweeps.chain import MAX_BACKBONE_CHOICES, trial_backbones
from an_lab.sweeps.expand import expand
from an_lab.sweeps.manifest import find_sweep
from an_lab.sweeps.run import planned_backbone_jobs
from an_lab.sweeps.seeding import planned_runs
from an_lab.sweeps.spec import load_sweep

ROOT = Path(__file__).resolve().parents[2]
AN_RUNS = ("resnet50-an-00000000000a", "resnet50-an-00000000000b")  # seeds 0, 1
BN_RUNS = ("resnet50-bn-00000000000a", "resnet50-bn-00000000000b")
ITERATIONS = {"iterations": 10, "checkpoint_every": 10, "eval_every": 10}


def classification_manifest(root: Path, name: str = "table1", **base) -> Path:
    """<root>/runs/sweeps/<name>/manifest.json as `an-lab sweep` writes it: an AN cell and a BN baseline on seeds 0 and
    1 of a ResNet-50 (base: changes to the base config). Returns the runs folder."""
    runs = root / "runs"
    folder = runs / "sweeps" / name
    folder.mkdir(parents=True)
    cells = [
        {"index": 0, "kind": "base", "name": None, "label": "AN", "changes": {}, "tags": ["base"], "runs": []},
        {"index": 1, "kind": "baseline", "name": "bn", "label": "BN", "changes": {"model.norm": "bn"}, "runs": []},
    ]
    for cell, ids in zip(cells, (AN_RUNS, BN_RUNS), strict=True):
        cell["runs"] = [{"run_id": identifier, "seed": seed} for seed, identifier in enumerate(ids)]
    config = {"task": "classification", "model": {"name": "resnet50", "norm": "an"}, **base}
    manifest = {"name": name, "mode": "ablation", "sweep_file": str(root / f"{name}.yaml"), "output_dir": str(runs)}
    manifest.update(overrides=[], base_config=config, updated=1.7e9, cells=cells)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return runs


def finish(run_dir: Path) -> None:
    """A done run: a result.json that validates (an_lab.rundir.result_problem)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result = {"run_id": run_dir.name, "status": "done", "final": {"top1_err": 1.0}, "best": {"top1_err": 0.9}}
    (run_dir / "result.json").write_text(json.dumps(result))


def detection_sweep(folder: Path, output: Path, backbone, cells: list | None = None, **extra) -> Path:
    """<folder>/det.yaml: Mask R-CNN runs (list mode) whose backbones come from `backbone` ({sweep, cell[, seed]})."""
    sweep = {
        "name": "det",
        "mode": "list",
        "base": {
            "recipe": "mask_rcnn_1x",
            "model": {"name": "resnet50", "norm": "bn_frozen", "backbone_init": backbone},
            "data": {"name": "shapes", "root": str(folder / "shapes"), "num_workers": 0},
            "trainer": dict(ITERATIONS),
            "wandb": {"mode": "disabled"},
        },
        "cells": cells or [{"model.norm": "bn_frozen"}],  # one cell: the base
        "seeds": [0, 1],
        "launcher": {"executor": "local", "max_parallel": 1},
        "output_dir": str(output),
        **extra,
    }
    path = folder / "det.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def classification_sweep_file(folder: Path, output: Path, name: str = "table1", **base) -> Path:
    """<folder>/<name>.yaml: quickstart-sized digits runs (1 epoch, 8x8) of a ResNet-50: AN and a BN baseline."""
    sweep = {
        "name": name,
        "mode": "ablation",
        "base": {
            "model": {"name": "resnet50", "norm": "an"},
            "data": {"name": "digits", "root": str(folder / "data"), "image_size": 8, "num_workers": 0},
            "optim": {"base_lr": 0.4, "warmup_epochs": 1},
            "trainer": {"epochs": 1, "accelerator": "cpu"},
            "wandb": {"mode": "disabled"},
            **base,
        },
        "baselines": {"bn": {"model.norm": "bn"}},
        "seeds": [0, 1],
        "launcher": {"executor": "local", "max_parallel": 1},
        "output_dir": str(output),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def failure(capsys, *argv) -> str:
    """Run `an-lab ARGV` in this process; it must exit 2; returns its error paragraph."""
    assert main([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------------------------------
# Resolution


def test_cells_resolve_by_label_or_baseline_name_to_the_run_of_the_detection_runs_own_seed(tmp_path):
    runs = classification_manifest(tmp_path)
    cells = [{"model.backbone_init": {"cell": "an"}}, {"model.backbone_init": {"cell": "Bn"}}]
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"}, cells)
    planned = expand(load_sweep(path), find=find_sweep)
    folders = [(run.cell.index, run.seed, run.config.model.backbone_init) for run in planned]
    assert folders == [
        (0, 0, str(runs / AN_RUNS[0])),
        (0, 1, str(runs / AN_RUNS[1])),
        (1, 0, str(runs / BN_RUNS[0])),
        (1, 1, str(runs / BN_RUNS[1])),
    ]
    for run in planned:  # the id hashes the resolved folder, and the run knows where its backbone comes from
        assert run.run_id == run_id(run.config)
        assert run.backbone.sweep == "table1" and run.backbone.sweep_file == str(tmp_path / "table1.yaml")
    assert len({run.run_id for run in planned}) == 4
    changes = [run.cell.changes for run in planned[::2]]  # plain data, as the manifest records it
    assert changes == [{"model.backbone_init": {"sweep": "table1", "cell": cell}} for cell in ("an", "Bn")]


def test_expansion_finds_another_sweep_only_through_the_finder_it_is_handed(tmp_path):
    """expand() sits below the manifest and imports nothing above it: another sweep is looked up by the finder the
    caller hands it (an_lab.sweeps.manifest.find_sweep, as every sweep command does); without one, a cell that names a
    sweep is a programming error, never a guess."""
    runs = classification_manifest(tmp_path)
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    with pytest.raises(TypeError, match="given no sweep finder"):
        expand(load_sweep(path))
    assert [run.config.model.backbone_init for run in expand(load_sweep(path), find=find_sweep)] == [
        str(runs / AN_RUNS[0]),
        str(runs / AN_RUNS[1]),
    ]


def test_a_cell_index_and_an_explicit_seed_pick_that_run_and_ids_do_not_follow_the_working_directory(
    tmp_path, monkeypatch
):
    """The backbone folder is written absolute and the id names the backbone by its run id: the same sweep planned
    from three directories gives the same runs (a relative folder made the ids follow the working directory)."""
    runs = classification_manifest(tmp_path)
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "1", "seed": 1})
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    planned_from = {}
    for where in (tmp_path, tmp_path / "sub", tmp_path / "sub" / "deeper"):
        monkeypatch.chdir(where)
        planned_from[where] = expand(load_sweep(os.path.relpath(path, where)), find=find_sweep)
    planned = planned_from[tmp_path]
    assert [run.config.model.backbone_init for run in planned] == [str(runs / BN_RUNS[1])] * 2
    assert [run.seed for run in planned] == [0, 1] and planned[0].run_id != planned[1].run_id
    ids = {where: [run.run_id for run in found] for where, found in planned_from.items()}
    assert len({tuple(found) for found in ids.values()}) == 1, ids


def test_the_sweep_file_beside_the_detection_sweep_is_expanded_in_memory_and_ids_follow_its_runs(tmp_path):
    classification = classification_sweep_file(tmp_path, tmp_path / "cls-runs")
    path = detection_sweep(tmp_path, tmp_path / "det-runs", {"sweep": "table1", "cell": "bn"})
    expected = {run.seed: run.run_dir for run in expand(load_sweep(classification)) if run.cell.name == "bn"}
    planned = expand(load_sweep(path), find=find_sweep)
    assert [run.config.model.backbone_init for run in planned] == [str(expected[0]), str(expected[1])]
    assert not (tmp_path / "cls-runs").exists() and not (tmp_path / "det-runs").exists()  # nothing written

    # The same classification runs written elsewhere: the folders follow, the ids do not (a backbone is named by its
    # run id, what it computes, not by where its folder lies: an_lab.identity.backbone_identity).
    classification_sweep_file(tmp_path, tmp_path / "elsewhere")
    moved = expand(load_sweep(path), find=find_sweep)
    assert [run.config.model.backbone_init for run in moved] == [
        str(tmp_path / "elsewhere" / expected[seed].name) for seed in (0, 1)
    ]
    assert [run.run_id for run in moved] == [run.run_id for run in planned]


def test_a_seed_the_cell_does_not_list_names_the_run_that_sweep_would_train_at_it_and_plan_says_so(tmp_path):
    """Adaptive seeds (or a list of seeds) may ask a detection cell for a seed its backbone cell does not list: the
    backbone is the run that cell would have at that seed (its id as the classification sweep computes it), trained
    first as one more seed of that cell, rather than a refusal that needs every candidate seed listed."""
    classification = classification_sweep_file(tmp_path, tmp_path / "runs")
    path = detection_sweep(tmp_path, tmp_path / "runs", {"sweep": "table1", "cell": "BN"}, seeds=[0, 1, 2])
    planned = expand(load_sweep(path), find=find_sweep)
    three = yaml.safe_load(classification.read_text())
    three["seeds"] = [0, 1, 2]
    (tmp_path / "three.yaml").write_text(yaml.safe_dump(three))
    trained = {run.seed: run.run_dir for run in expand(load_sweep(tmp_path / "three.yaml")) if run.cell.name == "bn"}
    assert [run.backbone.run_dir for run in planned] == [trained[0], trained[1], trained[2]]
    assert [run.backbone.listed for run in planned] == [True, True, False]
    assert "a seed that sweep does not list" in planned[2].backbone.describe()

    # The chain trains it as one more seed of that cell (cell 1, BN): its manifest then lists it.
    with_extra = planned_runs(load_sweep(classification), {1: [2], 0: []})
    assert sorted((run.cell.label, run.seed) for run in with_extra) == [
        ("AN", 0),
        ("AN", 1),
        ("BN", 0),
        ("BN", 1),
        ("BN", 2),
    ]
    assert {run.run_dir for run in with_extra} >= set(trained.values())
    shown = an_lab("plan", path)
    assert shown.returncode == 0, shown.stderr
    assert "backbones: 0 of 3 runs of sweep table1" in shown.stdout
    assert "runs the 3 missing first, 1 of them seeds that sweep does not list" in shown.stdout
    assert "trains the listed ones alone" in shown.stdout

    # A manifest whose runs its own config cannot reproduce (ids written by hand here) is never guessed at.
    runs = classification_manifest(tmp_path / "hand")
    with pytest.raises(UsageError, match="has no run with that seed; its seeds are 0, 1"):
        expand(
            load_sweep(detection_sweep(tmp_path / "hand", runs, {"sweep": "table1", "cell": "BN"}, seeds=[2])),
            find=find_sweep,
        )


def search_sweep(folder: Path, output: Path, backbone: dict, **extra) -> Path:
    """<folder>/det-search.yaml: a search over which classification cell the detector starts from, and its lr."""
    tree = yaml.safe_load(detection_sweep(folder, output, backbone).read_text())
    tree.pop("cells")
    tree.pop("seeds")
    tree.update(
        name="det-search",
        mode="search",
        axes={"model.backbone_init.cell": ["AN", "BN"]},
        search={"metric": "val_bbox_ap", "direction": "maximize", "n_trials": 2, "sampler": "random"},
        **extra,
    )
    path = folder / "det-search.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_a_search_plans_the_backbones_its_trials_can_take_and_refuses_to_start_locally_without_them(tmp_path, capsys):
    runs = classification_manifest(tmp_path)
    finish(runs / BN_RUNS[0])
    path = search_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    backbones = trial_backbones(load_sweep(path))
    assert sorted(backbone.run_dir.name for backbone in backbones) == [AN_RUNS[0], BN_RUNS[0]]  # seed 0: the base's
    shown = an_lab("plan", path)
    assert shown.returncode == 0, shown.stderr
    assert "backbones: 1 of 2 runs of sweep table1" in shown.stdout and "runs the 1 missing first" in shown.stdout

    err = failure(capsys, "sweep", path)  # table1.yaml is not there to run: the missing backbone is named
    assert "sweep det-search: 1 backbone run(s) of classification sweep(s) table1 are not done" in err
    assert f"cell 'AN' seed 0 of sweep table1 ({runs / AN_RUNS[0]}: pending)" in err
    assert not (runs / "sweeps" / "det-search").exists()  # no study, no trial, no run folder
    assert not list(runs.glob("resnet50-bn_frozen-*"))


def test_the_backbones_a_search_can_take_cover_its_axes_and_integer_ranges_up_to_a_bound(tmp_path):
    """Every combination of the searched values that decide a trial's backbone (its backbone_init axes, an integer
    range of its seed) is resolved before launch; past MAX_BACKBONE_CHOICES a range is left to each trial (a range of
    10**12 seeds is never enumerated)."""
    classification_sweep_file(tmp_path, tmp_path / "runs")
    path = search_sweep(tmp_path, tmp_path / "runs", {"sweep": "table1", "cell": "AN"})
    tree = yaml.safe_load(path.read_text())
    found = {}
    for high in (1, MAX_BACKBONE_CHOICES, 10**12):
        tree["search"]["space"] = {"model.backbone_init.seed": {"type": "int", "low": 0, "high": high}}
        path.write_text(yaml.safe_dump(tree))
        found[high] = sorted((b.cell, b.seed, b.listed) for b in trial_backbones(load_sweep(path)))
    assert found[1] == [("AN", 0, True), ("AN", 1, True), ("BN", 0, True), ("BN", 1, True)]
    assert found[MAX_BACKBONE_CHOICES] == found[10**12] == [("AN", 0, True), ("BN", 0, True)]


def test_a_trial_whose_backbone_is_not_done_fails_saying_why_and_the_search_goes_on(tmp_path):
    """Past the check before launch (a backbone failed since, or a searched value no check could list), a trial whose
    backbone is not done is told FAIL with the reason; it is never started on an unfinished backbone."""
    import optuna

    from an_lab.launch.local import LocalExecutor
    from an_lab.sweeps.search import SearchSource

    runs = classification_manifest(tmp_path)
    path = search_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    said: list[str] = []
    executor = LocalExecutor(1)
    try:
        source = SearchSource(load_sweep(path), executor, said.append)
        assert source.take(1) == []
    finally:
        executor.close()
    trials = source.study.get_trials()  # it asked on: each trial that cannot start is told, up to n_trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.FAIL] * 2
    refused = [line for line in said if line.startswith("not run: trial ")]
    assert len(refused) == 2 and all("model.backbone_init.cell=" in line for line in refused)
    assert all("backbone run(s) of classification sweep(s) table1 are not done" in line for line in refused)
    assert not list(runs.glob("resnet50-bn_frozen-*"))  # nothing written for it


def test_a_resumed_trial_checks_its_backbone_again_and_is_never_started_without_it(tmp_path):
    """The orchestrator dies after asking a trial whose backbone was done; when the next one resumes the trial, the
    backbone is no longer done (its result gone; on SLURM: its job gone with the orchestrator, to be waited for
    again). The trial is told FAIL with the reason instead of starting without weights; the search goes on."""
    import optuna

    from an_lab.launch.local import LocalExecutor
    from an_lab.sweeps.search import SearchSource

    runs = classification_manifest(tmp_path)
    for run in (AN_RUNS[0], BN_RUNS[0]):
        finish(runs / run)
    path = search_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    said: list[str] = []
    executor = LocalExecutor(1)
    try:
        asked = SearchSource(load_sweep(path), executor, said.append).take(1)
    finally:
        executor.close()
    assert len(asked) == 1 and asked[0].after == ()  # done: nothing to wait for
    backbone = asked[0].payload["backbone"]
    assert backbone is not None and backbone.done()
    asked[0].claim.release()  # the orchestrator dies before its run starts
    (backbone.run_dir / "result.json").unlink()

    executor = LocalExecutor(1)
    try:
        source = SearchSource(load_sweep(path), executor, said.append)
        assert [request.payload["backbone"] for request in source.resumable] == [backbone]  # from the journal
        taken = source.take(1)
    finally:
        executor.close()
    assert asked[0].run_id not in [request.run_id for request in taken]
    first = source.study.get_trials()[0]
    assert first.state == optuna.trial.TrialState.FAIL
    refused = [line for line in said if line.startswith("not run: trial 0")]
    assert len(refused) == 1 and "are not done" in refused[0] and backbone.run_dir.name in refused[0]
    assert not (asked[0].run_dir / "result.json").exists()


def test_a_damaged_backbone_attribute_in_the_journal_reads_as_none_and_a_sound_one_round_trips():
    """A trial's backbone, as its user attribute stores it (JSON in the Optuna journal), read back by the next
    orchestrator: the same Backbone; a hand-edited or truncated attribute is no backbone, not a crash."""
    from an_lab.sweeps.search import _backbone_from

    backbone = Backbone("/runs/resnet50-bn-0123456789ab", Path("/runs/resnet50-bn-0123456789ab"), "table1", "t.yaml",
                        "BN", 1, cell_index=1, listed=False)  # fmt: skip
    stored = json.loads(json.dumps({**dataclasses.asdict(backbone), "run_dir": str(backbone.run_dir)}))
    assert _backbone_from(stored) == backbone
    for damaged in (None, "runs/x", [], {}, {"folder": "x"}, {**stored, "extra": 1}, {**stored, "run_dir": None}):
        assert _backbone_from(damaged) is None, damaged


# ---------------------------------------------------------------------------------------------------------------------
# Errors: exit 2, one paragraph naming the file, the key and the valid choices


def test_an_unknown_sweep_says_where_it_looked(tmp_path, capsys):
    path = detection_sweep(tmp_path, tmp_path / "runs", {"sweep": "table9", "cell": "AN"})
    err = failure(capsys, "plan", path)
    assert f"{path}, line " in err and "model.backbone_init.sweep 'table9': no such sweep" in err
    assert str(tmp_path / "runs" / "sweeps" / "table9" / "manifest.json") in err
    assert str(tmp_path / "table9.yaml") in err
    path = detection_sweep(tmp_path, tmp_path / "runs", {"sweep": "../table1", "cell": "AN"})
    assert "model.backbone_init.sweep: the sweep name '../table1' is not usable" in failure(capsys, "plan", path)


def test_an_unknown_cell_lists_the_cells(tmp_path, capsys):
    runs = classification_manifest(tmp_path)
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"}, [{"model.backbone_init": {"cell": "GN"}}])
    err = failure(capsys, "plan", path)
    assert f"{path}, line " in err and "model.backbone_init.cell 'GN': sweep table1 has no such cell" in err
    assert "0: 'AN'; 1: 'BN' (baseline bn)" in err


def test_an_unknown_seed_lists_the_seeds_of_the_cell(tmp_path, capsys):
    runs = classification_manifest(tmp_path)
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN", "seed": 7})
    err = failure(capsys, "plan", path)
    assert "model.backbone_init.seed 7: cell 'AN' of sweep table1 has no run with that seed; its seeds are 0, 1" in err
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"}, seeds=[0, 5])
    followed = failure(capsys, "plan", path)
    assert "model.backbone_init.seed not given, so the detection run's own trainer.seed (5)" in followed
    assert "its seeds are 0, 1; set model.backbone_init.seed to one of them" in followed


def test_a_backbone_from_a_detection_sweep_is_refused(tmp_path, capsys):
    runs = classification_manifest(tmp_path, task="detection")
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    err = failure(capsys, "plan", path)
    assert "model.backbone_init.sweep 'table1': cell 'AN' of that sweep is a detection run (task: detection)" in err
    assert "task: classification" in err

    own = detection_sweep(tmp_path, tmp_path / "det-runs", {"sweep": "det", "cell": "AN"})  # names its own file
    err = failure(capsys, "plan", own)
    assert f"{own} is a detection sweep (task: detection); a backbone comes from a classification sweep" in err


def test_a_backbone_of_another_network_is_refused(tmp_path, capsys):
    runs = classification_manifest(tmp_path, model={"name": "resnet101", "norm": "an"})
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "BN"})
    err = failure(capsys, "plan", path)
    assert f"{path}, line " in err
    assert "model.backbone_init: cell 'BN' of sweep table1 trains resnet101, but model.name is resnet50" in err


# ---------------------------------------------------------------------------------------------------------------------
# Backbones that have not finished


def test_a_local_sweep_stops_before_launching_when_a_backbone_is_not_done(tmp_path, capsys):
    runs = classification_manifest(tmp_path)
    finish(runs / AN_RUNS[0])  # seed 1's backbone is still missing
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN"})
    err = failure(capsys, "sweep", path)
    assert "sweep det: 1 backbone run(s) of classification sweep(s) table1 are not done" in err
    assert f"cell 'AN' seed 1 of sweep table1 ({runs / AN_RUNS[1]}: pending)" in err
    assert f"run `an-lab sweep {tmp_path / 'table1.yaml'}` first" in err
    assert not list(runs.glob("resnet50-bn_frozen-*/config.json"))  # nothing was started

    finish(runs / AN_RUNS[1])
    assert (
        planned_backbone_jobs(load_sweep(path), expand(load_sweep(path), find=find_sweep), executor_class("local"))
        == {}
    )


def test_an_unfinished_backbone_without_a_queued_job_is_refused_for_slurm(tmp_path):
    runs = classification_manifest(tmp_path)
    path = detection_sweep(tmp_path, runs, {"sweep": "table1", "cell": "AN", "seed": 0})
    (runs / AN_RUNS[0]).mkdir()
    (runs / AN_RUNS[0] / "slurm.json").write_text(json.dumps({"job_id": "12;scancel -u root"}))  # no job id
    sweep = load_sweep(path)
    with pytest.raises(UsageError) as error:
        planned_backbone_jobs(sweep, expand(sweep, find=find_sweep), executor_class("slurm"))
    assert "1 backbone run(s) are neither done nor queued or running on SLURM" in str(error.value)
    assert f"`an-lab sweep {tmp_path / 'table1.yaml'} --executor slurm`" in str(error.value)


def test_the_dependency_is_built_from_job_ids_only():
    assert dependency(["13_2", "9", "13_2"]) == "afterok:9:13_2"
    for bad in ("12;rm -rf /", "12\n#SBATCH --wrap=x", "afterany:12", "12_", ""):
        with pytest.raises(LaunchError, match="that is no job id"):
            dependency([bad])
    shape = Shape(nodes=1, tasks_per_node=1, gpus_per_node=0, cpus_per_task=1)
    parameters = sbatch_parameters(SlurmSettings(time=10), shape, Path("/code"), 2, "an-lab-det", 2, ("7_0",))
    assert parameters["dependency"] == "afterok:7_0"
    assert parameters["additional_parameters"]["kill_on_invalid_dep"] == "yes"
    assert "dependency" not in sbatch_parameters(SlurmSettings(time=10), shape, Path("/code"), 2, "an-lab-det", 2)
    settings = SlurmSettings(time=10, additional_parameters={"depend": "afterany:1"})
    with pytest.raises(LaunchError, match=r"additional_parameters\.depend sets sbatch --dependency"):
        sbatch_parameters(settings, shape, Path("/code"), 2, "an-lab-det", 2, ("7_0",))


def test_train_resolves_the_backbone_and_refuses_one_that_is_not_done(tmp_path, capsys):
    runs = classification_manifest(tmp_path)
    config = tmp_path / "det-config.yaml"
    tree = {
        "recipe": "mask_rcnn_1x",
        "model": {"name": "resnet50", "norm": "bn_frozen", "backbone_init": {"sweep": "table1", "cell": "bn"}},
        "data": {"name": "shapes", "root": str(tmp_path / "shapes")},
        "trainer": {**ITERATIONS, "seed": 1},
        "output_dir": str(runs),
    }
    config.write_text(yaml.safe_dump(tree))
    err = failure(capsys, "train", config)
    assert f"{config}: model.backbone_init: 1 backbone run(s) of classification sweep(s) table1 are not done" in err
    assert f"cell 'BN' seed 1 of sweep table1 ({runs / BN_RUNS[1]}: pending)" in err
    assert f"`an-lab sweep {tmp_path / 'table1.yaml'}`" in err
    err = failure(capsys, "train", config, "--set", "model.backbone_init.cell=SN")
    assert f"{config}: model.backbone_init.cell 'SN': sweep table1 has no such cell" in err


# ---------------------------------------------------------------------------------------------------------------------
# SLURM: the detection jobs wait for the job that trains their backbone


def scontrol_job(job_id: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def cancel_sweeps(folder: Path, env: dict, *sweeps: Path) -> None:
    """`an-lab cancel` of each sweep (run from `folder`), waiting for its jobs to leave the queue: a test's cleanup."""
    for sweep in sweeps:
        an_lab("cancel", sweep, "--wait", "60", env=env, cwd=folder, timeout=300)


SLURM = {"executor": "slurm", "max_parallel": 2, "slurm": {"gpus_per_node": 0, "time": 10}}


def held_classification_sweep(folder: Path, **changes) -> Path:
    """<folder>/table1.yaml (runs in cls-runs/) submitted to SLURM held: its jobs stay queued, for the detection jobs
    to wait on. changes: top-level keys of the sweep file to replace."""
    path = classification_sweep_file(folder, folder / "cls-runs")
    spec = yaml.safe_load(path.read_text())
    held = {**SLURM, "slurm": {**SLURM["slurm"], "additional_parameters": {"hold": True}}}
    spec.update(launcher=held, **changes)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slurm
@pytest.mark.slow
def test_on_slurm_detection_jobs_wait_for_the_queued_backbone_job(tmp_path, slurm_cluster):
    """One `an-lab sweep` of the detection sweep submits the classification sweep's missing runs first (the chain),
    then the detection job with an afterok dependency on its backbone's job."""
    classification = held_classification_sweep(tmp_path, baselines={}, seeds=[0, 1])  # one array of two tasks
    path = detection_sweep(
        tmp_path, tmp_path / "det-runs", {"sweep": "table1", "cell": "AN"}, launcher=SLURM, seeds=[0]
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    try:
        waiting = an_lab("sweep", path, env=env, cwd=tmp_path, timeout=300)
        assert waiting.returncode == 0, waiting.stdout + waiting.stderr
        assert "whose runs are not all done: launching them first" in waiting.stdout
        jobs = {
            json.loads((record.parent / "config.json").read_text())["trainer"]["seed"]: json.loads(record.read_text())
            for record in (tmp_path / "cls-runs").glob("*/slurm.json")
        }
        backbone_job = jobs[0]["job_id"]  # seed 0's backbone: a task of the array, <array>_<task>
        assert sorted(jobs) == [0, 1] and backbone_job == f"{jobs[0]['array_job_id']}_{jobs[0]['array_task_id']}"
        assert f"waiting for job(s) {backbone_job} (afterok)" in waiting.stdout
        job = json.loads(next((tmp_path / "det-runs").glob("*/slurm.json")).read_text())
        shown = scontrol_job(job["job_id"])
        assert f"Dependency=afterok:{backbone_job}(unfulfilled)" in shown, shown
        assert "JobState=PENDING" in shown and "Reason=Dependency" in shown, shown
        assert "KillOInInvalidDependent=Yes" in shown, shown  # cancelled, not left pending, if the backbone fails
    finally:
        cancel_sweeps(tmp_path, env, path, classification)


@pytest.mark.slurm
@pytest.mark.slow
def test_on_slurm_a_search_submits_its_backbones_first_and_its_trial_waits_for_its_backbone_job(
    tmp_path, slurm_cluster
):
    """One `an-lab sweep` of a detection search: the classification runs its trials can start from are submitted
    first (the chain), then the trial's job with an afterok dependency on the job training its own backbone (a trial
    used to get none and start on a backbone still in the queue)."""
    classification = held_classification_sweep(tmp_path, seeds=[0])  # AN and BN at seed 0: one array of two tasks
    path = search_sweep(tmp_path, tmp_path / "det-runs", {"sweep": "table1", "cell": "AN"}, launcher=SLURM)
    tree = yaml.safe_load(path.read_text())
    tree["search"]["n_trials"] = 1
    path.write_text(yaml.safe_dump(tree))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "an_lab.cli", "sweep", str(path), "--poll", "1"]
    log = tmp_path / "orchestrator.log"
    with log.open("w") as out:
        orchestrator = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "det-runs").glob("*/slurm.json")) and time.monotonic() < deadline:
            assert orchestrator.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        said = log.read_text()
        assert "whose runs are not all done: launching them first" in said, said[-3000:]
        records = list((tmp_path / "det-runs").glob("*/slurm.json"))
        assert len(records) == 1, said[-3000:]
        trial_dir = records[0].parent
        backbone_dir = Path(json.loads((trial_dir / "config.json").read_text())["model"]["backbone_init"])
        backbone = json.loads((backbone_dir / "slurm.json").read_text())
        backbone_job = f"{backbone['array_job_id']}_{backbone['array_task_id']}"
        assert backbone["job_id"] == backbone_job
        shown = scontrol_job(json.loads(records[0].read_text())["job_id"])
        assert f"Dependency=afterok:{backbone_job}(unfulfilled)" in shown, shown
        assert "JobState=PENDING" in shown and "Reason=Dependency" in shown, shown
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait(timeout=60)
        cancel_sweeps(tmp_path, env, path, classification)


@pytest.mark.slurm
@pytest.mark.slow
def test_on_slurm_a_detached_detection_sweep_submits_its_backbone_sweep_before_its_orchestrator(
    tmp_path, slurm_cluster
):
    """`--detach` used to refuse a detection sweep whose backbones were not queued yet: it now submits them first
    (here, not in the orchestrator's job), then the orchestrator, whose detection jobs then wait for them."""
    classification = held_classification_sweep(tmp_path, baselines={}, seeds=[0])
    path = detection_sweep(
        tmp_path, tmp_path / "det-runs", {"sweep": "table1", "cell": "AN"}, launcher=SLURM, seeds=[0]
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        detached = an_lab("sweep", path, "--detach", env=env, cwd=tmp_path, timeout=300)
        said = detached.stdout + detached.stderr
        assert detached.returncode == 0, said[-3000:]
        assert "whose runs are not all done: launching them first" in said
        assert "orchestrator submitted as slurm job" in said
        (record,) = list((tmp_path / "cls-runs").glob("*/slurm.json"))
        shown = scontrol_job(json.loads(record.read_text())["job_id"])
        assert "JobState=PENDING" in shown, shown  # held: the detection jobs will wait for it
    finally:
        cancel_sweeps(tmp_path, env, path, classification)


@pytest.mark.slow
def test_a_local_sweep_launches_its_backbone_sweeps_missing_runs_first_and_plan_shows_the_chain(
    tmp_path, data_root, capsys
):
    """The classification sweep has never run: plan says so, and one `an-lab sweep` of the detection sweep runs that
    sweep's missing runs first (its AN and BN cells, 2 seeds, and a third seed of BN that the detection sweep's
    adaptive seeds want and that sweep does not list), then the detection runs from the BN ones."""
    shutil.copytree(data_root / "digits", tmp_path / "data" / "digits")
    classification_sweep_file(tmp_path, tmp_path / "runs")
    tree = yaml.safe_load((tmp_path / "table1.yaml").read_text())
    tree["base"]["trainer"]["limit_train_batches"] = 1
    (tmp_path / "table1.yaml").write_text(yaml.safe_dump(tree))
    path = detection_sweep(tmp_path, tmp_path / "runs", {"sweep": "table1", "cell": "BN"})
    tree = yaml.safe_load(path.read_text())
    tree["base"]["trainer"] = {"iterations": 2, "checkpoint_every": 2, "eval_every": 2}
    tree["base"]["data"].update(image_size=64, batch_size=2)
    tree["seeds"] = {"min": 3, "max": 3, "until": {"ci_halfwidth": 1.0}}  # seed 2: one table1 does not list
    path.write_text(yaml.safe_dump(tree))
    plan = an_lab("plan", path)
    assert "backbones: 0 of 3 runs of sweep table1" in plan.stdout and "runs the 3 missing first" in plan.stdout
    assert "1 of them seeds that sweep does not list" in plan.stdout
    done = an_lab("sweep", path, timeout=900)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "its backbones come from" in said and "launching them first (and 1 more seed(s) of its cells)" in said
    trained = sorted(p.parent.name for p in (tmp_path / "runs").glob("resnet50-*/result.json"))
    assert len([name for name in trained if name.startswith(("resnet50-bn-", "resnet50-an-"))]) == 5
    assert len([name for name in trained if name.startswith("resnet50-bn_frozen-")]) == 3
    again = an_lab("plan", path)
    assert "backbones: 3 of 3 runs of sweep table1" in again.stdout and "missing first" not in again.stdout
    manifest = json.loads((tmp_path / "runs" / "sweeps" / "table1" / "manifest.json").read_text())
    assert [[run["seed"] for run in cell["runs"]] for cell in manifest["cells"]] == [[0, 1], [0, 1, 2]]
