"""Sweep files and `an-lab plan`: expansion into cells x seeds, stable run ids, states from the run directories,
one clear error per hostile sweep file (exit 2, nothing written), and no torch on the way."""

import json
import math
from pathlib import Path

import pytest
from conftest import an_lab

from an_lab.config import RunConfig, deep_merge, resolve
from an_lab.identity import run_id
from an_lab.sweeps import expand, load_sweep, make_plan, render
from an_lab.sweeps.manifest import build_manifest, find_sweep
from an_lab.sweeps.spec import nest

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = ROOT / "sweeps"
ONE_SEED = "seeds=[0]"  # the digits ablation runs 3 seeds; these checks are about its cells
AXES = ("model.an.pooling", "model.an.head", "model.an.activation", "model.an.k")


@pytest.fixture
def imagenet(tmp_path) -> Path:
    """A two-image imagefolder whose path names ImageNet (so that the estimate knows its size)."""
    from PIL import Image

    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        (root / split / "x").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "x" / "a.png")
    return root


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_sweeps_expand_to_the_papers_designs(imagenet):
    digits = expand(load_sweep(SWEEPS / "digits-ablation.yaml"))
    assert len(digits) == 27 and len({run.cell.index for run in digits}) == 9 and {r.seed for r in digits} == {0, 1, 2}
    assert digits[0].cell.label == "RSD + A2 + hsigmoid + K=(10,10,20)" and digits[0].cell.describe() == "(base)"
    assert [run.cell.label for run in digits][-1] == "BN" and digits[-1].cell.name == "bn"
    assert {run.config.model.name for run in digits} == {"cifar_resnet20"}
    assert all(run.config.trainer.epochs == 15 and run.config.data.name == "digits" for run in digits)
    quick = expand(load_sweep(SWEEPS / "quickstart.yaml"))  # the README's main job: AN vs BN
    assert [run.cell.label for run in quick[::3]] == ["AN", "BN"] and [run.seed for run in quick] == [0, 1, 2] * 2
    assert all(run.config.trainer.epochs == 15 for run in quick)

    table1 = expand(load_sweep(SWEEPS / "ablation.yaml", [f"data.root={imagenet}"]))
    labels = [run.cell.label for run in table1]
    assert len(table1) == 9 and labels[0] == "RSD + A2 + hsigmoid + K=(10,10,20,20)" and labels[-1] == "BN"
    assert "Mean + A2 + hsigmoid + K=(10,10,20,20)" in labels and "RSD + A2 + hsigmoid + K=(20,20,40,40)" in labels
    assert all(run.config.recipe == "vanilla" and run.config.model.name == "resnet50" for run in table1)

    table2 = expand(load_sweep(SWEEPS / "table2.yaml"))
    assert len(table2) == 20 and len({run.run_id for run in table2}) == 20
    assert {"ResNet-50 SE", "ResNet-101 AN", "MobileNetV2 GN"} <= {run.cell.label for run in table2}
    mobile = [run.config for run in table2 if run.config.model.name == "mobilenet_v2"]
    assert len(mobile) == 4 and all(c.recipe == "mobile" and c.model.norm != "se" for c in mobile)
    # The AOGNet rows run the authors' recipe (no zero-init; 256 images per GPU for 12M, 128 for 40M).
    aognets = {run.cell.label: run.config for run in table2 if run.config.model.name.startswith("aognet")}
    assert set(aognets) == {"AOGNet-12M BN", "AOGNet-12M AN", "AOGNet-40M BN", "AOGNet-40M AN"}
    assert all(c.recipe == "aognet" and not c.model.zero_init_residual for c in aognets.values())
    assert aognets["AOGNet-12M AN"].data.batch_size == 256 and aognets["AOGNet-40M AN"].data.batch_size == 128
    assert {run.cell.label for run in table2 if run.config.model.name == "densenet161"} == {
        "DenseNet-161 BN",
        "DenseNet-161 AN",
    }

    cifar = expand(load_sweep(SWEEPS / "cifar-ablation.yaml"))
    assert len(cifar) == 27 and {run.seed for run in cifar} == {0, 1, 2}
    assert all(run.config.data.name == "cifar100" and run.config.model.name == "cifar_resnet56" for run in cifar)


def test_the_compute_estimate_knows_every_network():
    from an_lab.catalog import MODEL_NAMES
    from an_lab.sweeps.plan import MACS_PER_IMAGE

    assert set(MACS_PER_IMAGE) == set(MODEL_NAMES)


def test_ablation_cells_change_exactly_one_axis_from_the_base_cell():
    sweep = load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED])
    runs = expand(sweep)
    base = runs[0].cell
    assert base.kind == "base" and base.changes == {}
    changed = [run.cell for run in runs if run.cell.kind == "axis"]
    assert len(changed) == sum(len(values) - 1 for values in sweep.spec.axes.values()) == 7
    for cell in changed:
        assert len(cell.changes) == 1 and next(iter(cell.changes)) in AXES
        for key in AXES:  # every other axis keeps its first value
            if key not in cell.changes:
                assert cell.settings[key] == sweep.spec.axes[key][0]
    # One-value axes add no cell.
    assert len(expand(load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED, "axes.model.an.head=[a2]"]))) == 8


def test_grid_is_the_product_list_is_explicit_baselines_and_seeds_multiply(tmp_path):
    grid = write(
        tmp_path / "grid.yaml",
        "name: g\nmode: grid\nbase: {data: {name: fake}}\n"
        "axes:\n  model.an.pooling: [rsd, mean, concat]\n  model.an.head: [a2, a1]\n  trainer.epochs: [1, 2]\n"
        "baselines:\n  bn: {model.norm: bn}\n  gn: {model.norm: gn}\nseeds: [0, 1]\n",
    )
    runs = expand(load_sweep(grid))
    assert len(runs) == (3 * 2 * 2 + 2) * 2 and len({run.run_id for run in runs}) == len(runs)
    assert [run.seed for run in runs[:4]] == [0, 1, 0, 1]
    cells = {run.cell.index: run.cell for run in runs}
    assert sum(cell.kind == "grid" for cell in cells.values()) == math.prod((3, 2, 2))
    assert cells[11].changes == {"model.an.pooling": "concat", "model.an.head": "a1", "trainer.epochs": 2}
    assert cells[11].label == "Concat + A1 + hsigmoid + K=(10,10,20), epochs=2"
    # Baselines are the base cell with their keys changed.
    assert [c.label for c in cells.values() if c.kind == "baseline"] == ["BN", "GN"]

    listed = write(
        tmp_path / "list.yaml",
        "name: l\nmode: list\nbase: {data: {name: fake}, model: {name: resnet18}}\n"
        "cells:\n  - {model.norm: bn}\n  - {model.norm: se}\n  - {model.an.pooling: mean, model.an.k: 4}\n",
    )
    runs = expand(load_sweep(listed))
    assert [run.cell.label for run in runs] == ["BN", "SE", "Mean + A2 + hsigmoid + K=(4,4,4,4)"]
    assert runs[2].cell.changes == {"model.an.pooling": "mean", "model.an.k": 4}


def test_a_named_axis_moves_several_keys_together(tmp_path):
    path = write(
        tmp_path / "s.yaml",
        "name: s\nmode: ablation\nbase: {data: {name: fake}}\naxes:\n  schedule:\n"
        "    - {trainer.epochs: 90, optim.base_lr: 0.1}\n    - {trainer.epochs: 120, optim.base_lr: 0.2}\n",
    )
    runs = expand(load_sweep(path))
    assert len(runs) == 2 and runs[1].cell.changes == {"trainer.epochs": 120, "optim.base_lr": 0.2}
    assert runs[1].config.trainer.epochs == 120 and runs[1].config.optim.base_lr == 0.2
    assert runs[1].cell.label.endswith("epochs=120, base_lr=0.2")


def test_run_ids_are_stable_and_survive_edits_of_other_cells(tmp_path):
    first = expand(load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED]))
    again = expand(load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED]))
    assert [run.run_id for run in first] == [run.run_id for run in again]

    edited = write(
        tmp_path / "digits-ablation.yaml",
        (SWEEPS / "digits-ablation.yaml").read_text().replace("[20, 20, 40]]", "[40, 40, 80]]"),
    )
    after = expand(load_sweep(edited, [ONE_SEED]))
    changed = [(a.run_id, b.run_id) for a, b in zip(first, after, strict=True) if a.run_id != b.run_id]
    assert len(changed) == 1 and after[7].cell.label == "RSD + A2 + hsigmoid + K=(40,40,80)"

    # Group and tags label the runs in W&B but are no part of their identity; resolution matches config.resolve.
    run = first[1]
    assert run.config.wandb.group == "digits-ablation" and "pooling=mean" in run.config.wandb.tags
    sweep = load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED])
    tree = deep_merge(sweep.base, nest(run.cell.settings))
    assert run_id(resolve(tree)) == run.run_id
    assert run_id(RunConfig.model_validate(run.config.model_dump() | {"wandb": {}})) == run.run_id
    # Each run's W&B settings are its cell's (job type = label, tags = what the cell changes) plus its own name, and
    # the manifest records the base cell's as its runs get them.
    base_run = first[0]
    wandb = base_run.config.wandb
    assert (wandb.group, wandb.job_type, wandb.tags) == ("digits-ablation", base_run.cell.label, ("base",))
    assert wandb.name == f"{base_run.cell.label} seed={base_run.seed}"
    assert run.config.wandb.job_type == run.cell.label and run.config.wandb.tags == ("pooling=mean",)
    recorded = build_manifest(sweep, first)["base_config"]["wandb"]
    assert recorded == base_run.cell.wandb.model_dump(mode="json") and recorded["tags"] == ["base"]


def test_plan_reads_done_and_failed_states_from_the_run_directories(tmp_path):
    out = tmp_path / "runs"
    runs = expand(load_sweep(SWEEPS / "digits-ablation.yaml", [ONE_SEED, f"output_dir={out}"]))
    assert all(run.run_dir.parent == out for run in runs)
    result = an_lab("plan", SWEEPS / "digits-ablation.yaml", "--set", ONE_SEED, "--set", f"output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert "cells 9, runs 9, done 0, to run 9" in result.stdout and not out.exists()

    runs[3].run_dir.mkdir(parents=True)
    done = {"run_id": runs[3].run_id, "status": "done", "final": {"top1_err": 4.2, "top5_err": 0.5}}
    (runs[3].run_dir / "result.json").write_text(json.dumps(done))
    runs[4].run_dir.mkdir(parents=True)
    (runs[4].run_dir / "failed.json").write_text(json.dumps({"reason": "loss diverged"}))
    result = an_lab("plan", SWEEPS / "digits-ablation.yaml", "--set", ONE_SEED, "--set", f"output_dir={out}")
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line[:1].isdigit()}
    assert runs[3].run_id in rows["4"] and rows["4"].endswith("done")
    assert rows["5"].endswith("failed(loss diverged)") and rows["1"].endswith("pending")
    assert "cells 9, runs 9, done 1, to run 8 (of which failed 1: rerun with --retry-failed)" in result.stdout
    assert "multiply-accumulates to run" in result.stdout and "runs/sweeps/digits-ablation/" in result.stdout


def test_plan_warns_without_the_imagenet_data_and_sweep_refuses(tmp_path, imagenet):
    for name in ("ablation.yaml", "table2.yaml"):
        result = an_lab("plan", SWEEPS / name, "--set", f"output_dir={tmp_path / 'out'}")
        assert result.returncode == 0, result.stderr  # a laptop may plan the paper's sweeps
        assert result.stderr.startswith("warning: ") and "planned anyway" in result.stderr
        assert "data.root '/datasets/imagenet' has no class folders in train/" in result.stderr
        assert f"sweeps/{name}, line " in result.stderr
        assert "runs" in result.stdout and "to run" in result.stdout
        refused = an_lab("sweep", SWEEPS / name, "--set", f"output_dir={tmp_path / 'out'}")
        assert refused.returncode == 2 and refused.stderr.startswith("error: ")
        assert "data.root '/datasets/imagenet' has no class folders in train/" in refused.stderr
    result = an_lab("plan", SWEEPS / "ablation.yaml", "--set", f"data.root={imagenet}", "--set", "seeds=[0,1]")
    assert result.returncode == 0, result.stderr
    assert "cells 9, runs 18, done 0, to run 18" in result.stdout
    # 18 runs x 120 epochs x 1,281,167 images x 3 x 4,089,184,256 MACs
    assert "~3.4e19 multiply-accumulates to run" in result.stdout
    assert not (tmp_path / "out").exists()


def test_search_mode_is_validated_and_planned(tmp_path):
    path = write(
        tmp_path / "search.yaml",
        f"name: s\nmode: search\noutput_dir: {tmp_path / 'out'}\nbase: {{data: {{name: fake, fake_size: 64}}}}\n"
        "axes:\n  model.an.pooling: [rsd, mean]\n"
        "search:\n  metric: val_top1_err\n  n_trials: 5\n  sampler: random\n"
        "  space: {optim.base_lr: {low: 0.01, high: 1.0, log: true}}\nbaselines:\n  bn: {model.norm: bn}\n",
    )
    sweep = load_sweep(path)
    assert sweep.storage == str(tmp_path / "out" / "sweeps" / "s" / "optuna-journal.log")
    text = render(make_plan(sweep))
    assert "search: 5 trials chosen by Optuna (random sampler, median pruner), minimize val_top1_err" in text
    assert "optim.base_lr in [0.01, 1] log (float)" in text and "cells 1, runs 1" in text
    result = an_lab("plan", path, "--set", "search.space.trainer.epochs={type: int, low: 0, high: 3}")
    assert result.returncode == 2 and "search.space.trainer.epochs.low" in result.stderr
    assert "trainer.epochs: Input should be greater than or equal to 1" in result.stderr


BASE = "name: hostile\nmode: ablation\nbase:\n  model: {name: cifar_resnet20}\n  data: {name: fake}\n"
HOSTILE = {
    "malformed": ("name: x\nmode: [ablation\n", "not valid YAML at line 3, column 1", None),
    "python_tag": (
        "name: x\nmode: ablation\nbase: !!python/object/apply:os.system ['touch {tmp}/pwned']\n",
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        None,
    ),
    "unknown_top_level": (BASE + "axez:\n  model.an.pooling: [rsd]\n", "unknown key 'axez'; did you mean axes?", 6),
    "unknown_axis_key": (
        BASE + "axes:\n  model.an.poolng: [rsd, mean]\n",
        "axes: unknown config key 'model.an.poolng'; did you mean model.an.pooling",
        7,
    ),
    "unknown_base_key": (
        "name: x\nmode: grid\nbase:\n  optim: {base_lr: 0.1, wieght_decay: 0.1}\n",
        "base: unknown config key 'optim.wieght_decay'; did you mean optim.weight_decay?",
        4,
    ),
    "unknown_axis_value": (
        BASE + "axes:\n  model.an.pooling: [rsd, max]\n",
        "axes.model.an.pooling[1]: model.an.pooling: 'max' is not valid; choose one of 'rsd', 'mean' or 'concat'",
        7,
    ),
    "k_schedule_length": (
        BASE + "axes:\n  model.an.k:\n    - [10, 10, 20]\n    - [5, 5, 10, 10]\n",
        "axes.model.an.k[1]: model.an.k: k=(5, 5, 10, 10) has 4 entries but cifar_resnet20 has 3 stages",
        9,
    ),
    "empty_axis": (BASE + "axes:\n  model.an.pooling: []\n", "axes.model.an.pooling is empty", 7),
    "duplicate_cells": (
        BASE + "baselines:\n  bn: {model.norm: bn}\n  bn_again: {model.norm: bn}\n",
        "duplicate cells: the baseline 'bn' 'BN' [model.norm=bn] (line 7) and the baseline 'bn_again' 'BN'",
        None,
    ),
    "duplicate_list_cells": (
        "name: x\nmode: list\ncells:\n  - {model.an.k: 4}\n  - {model.an: {k: 4}}\n",
        "(line 4) and the list cell",
        None,
    ),
    "duplicate_axis_value": (
        BASE + "axes:\n  model.an.pooling: [rsd, mean, mean]\n",
        "axes.model.an.pooling lists 'mean' twice",
        7,
    ),
    "repeated_yaml_key": (
        BASE + "axes:\n  model.an.pooling: [rsd]\n  model.an.pooling: [mean]\n",
        "axes.model.an.pooling is given twice (lines 7 and 8)",
        8,
    ),
    "search_without_metric": (
        "name: x\nmode: search\naxes:\n  model.an.pooling: [rsd, mean]\n",
        "mode search needs search.metric",
        None,
    ),
    "unknown_sampler": (
        "name: x\nmode: search\nsearch: {metric: val_top1_err, sampler: tpee}\n",
        "search.sampler: sampler 'tpee' is not known; did you mean tpe?",
        3,
    ),
    "unreadable_data": (
        "name: x\nmode: ablation\nbase:\n  data: {name: imagefolder, root: {tmp}/nowhere}\n",
        "has no class folders in train/",
        4,
    ),
    "name_with_dots_and_slash": ("name: ../../etc\nmode: ablation\n", "is not usable as a folder or job name", 1),
    "baseline_shell_name": (
        BASE + "baselines:\n  'bn; rm -rf ~': {model.norm: bn}\n",
        "the baseline name 'bn; rm -rf ~' is not usable as a folder or job name",
        7,
    ),
    "invalid_grid_combination": (
        "name: x\nmode: grid\nbase: {model: {name: resnet50}}\n"
        "axes:\n  model.name: [resnet50, mobilenet_v2]\n  model.norm: [bn, se]\n",
        "the cell model.name=mobilenet_v2, model.norm=se (lines 5, 6) is not a valid run: model: norm 'se'",
        None,
    ),
    "unknown_slurm_key": (
        "name: x\nmode: ablation\nlauncher: {executor: slurm, slurm: {partiton: gpu}}\n",
        "unknown key 'launcher.slurm.partiton'; did you mean partition?",
        3,
    ),
    "billion_laughs": (
        "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'x'] * 9)}]\n" for i in range(10))
        + "name: x\nmode: grid\naxes:\n  model.an.k: *l9\n",
        "the YAML expands to more than 100,000 values through its aliases",
        None,
    ),
    "recursive_alias": ("name: x\nmode: grid\nbase: &b {model: *b}\n", "a YAML alias refers to a collection", None),
    "seed_twice": ("name: x\nmode: ablation\nseeds: [0, 1, 0]\n", "seeds [0, 1, 0] repeat a seed", 3),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_sweep_files_are_one_clear_error_and_write_nothing(tmp_path, case):
    text, message, line = HOSTILE[case]
    out = tmp_path / "out"
    path = write(tmp_path / f"{case}.yaml", text.replace("{tmp}", str(tmp_path)) + f"output_dir: {out}\n")
    # Missing data only warns in `plan` (a laptop plans the paper's ImageNet sweeps); `sweep` refuses it.
    result = an_lab("sweep" if case == "unreadable_data" else "plan", path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {path}") and message in result.stderr, result.stderr
    if line is not None:
        assert f"{path}, line {line}:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1  # one paragraph
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_set_overrides_reach_the_base_and_the_sweep(tmp_path):
    sweep = load_sweep(
        SWEEPS / "digits-ablation.yaml",
        [
            ONE_SEED,
            "trainer.epochs=2",
            "launcher.max_parallel=4",
            "axes.model.an.pooling=[rsd]",
            "baselines.bn.model.norm=gn",
        ],
    )
    runs = expand(sweep)
    assert sweep.spec.launcher.max_parallel == 4 and len(runs) == 7
    assert all(run.config.trainer.epochs == 2 for run in runs) and runs[-1].cell.label == "GN"
    result = an_lab("plan", SWEEPS / "digits-ablation.yaml", "--set", "model.an.poolng=mean")
    assert result.returncode == 2 and "(from --set)" in result.stderr
    assert "did you mean model.an.pooling" in result.stderr


def imported_modules(stderr: str) -> list[str]:
    """The modules `python -X importtime` reports, in the order imported (its header line left out)."""
    rows = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:")]
    return [row[-1].strip() for row in rows if len(row) == 3 and row[0].partition(":")[2].strip().isdigit()]


@pytest.mark.parametrize(
    ("command", "own"),
    [
        (["plan", "sweeps/digits-ablation.yaml"], "an_lab.sweeps.plan"),
        (["status", "sweeps/digits-ablation.yaml"], "an_lab.sweeps.status"),
        (["--help"], "an_lab"),
    ],
)
def test_cheap_commands_import_neither_torch_nor_lightning_nor_wandb(command, own):
    result = an_lab(*command, python=("-X", "importtime"), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = imported_modules(result.stderr)
    # The capture worked: the command's own modules are listed (no line at all would pass the check below).
    assert "an_lab" in modules and own in modules, result.stderr[-3000:]
    assert any(name.startswith("an_lab.") for name in modules), modules
    heavy = [name for name in modules if any(n in name for n in ("torch", "lightning", "wandb"))]
    assert heavy == []


@pytest.mark.parametrize("command", ["plan", "status"])
def test_plan_and_status_of_a_sweep_without_results_leave_numpy_unimported(tmp_path, command):
    """numpy (a tenth of a second of a 10,000-run plan) is for statistics: a sweep of fixed seeds with no result yet
    has none to compute, so neither command loads it."""
    output = f"output_dir={tmp_path / 'runs'}"
    result = an_lab(command, "sweeps/digits-ablation.yaml", "--set", output, python=("-X", "importtime"), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    modules = imported_modules(result.stderr)
    assert f"an_lab.sweeps.{command}" in modules  # the capture worked
    assert [name for name in modules if name.partition(".")[0] in ("numpy", "scipy", "pandas")] == []


def test_help_imports_only_the_command_line(tmp_path):
    """`an-lab --help` lists the commands; none of them loads a sweep module (pydantic, yaml, numpy) to do it."""
    result = an_lab("--help", python=("-X", "importtime"), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = imported_modules(result.stderr)
    assert "an_lab.cli.runs" in modules and "an_lab.cli.results" in modules  # the capture worked
    assert [
        name for name in modules if name.startswith(("an_lab.sweeps", "an_lab.analysis", "numpy", "pydantic"))
    ] == []


NARROW = {"fpn_channels": 32, "box_fc_channels": 256}  # the detection quickstart's widths


@pytest.mark.parametrize(
    ("detector", "head_norm", "sizes"),
    [
        ("mask_rcnn", "none", {}),
        ("mask_rcnn", "gn", {}),
        ("cascade_mask_rcnn", "none", {}),
        ("htc", "none", {}),
        ("mask_rcnn", "gn", NARROW),
        ("mask_rcnn", "none", NARROW),
    ],
)
def test_the_detection_estimate_matches_torchs_flop_counter_within_a_tenth(detector, head_norm, sizes):
    """A Mask R-CNN training forward pass counted by torch (convolutions and linear layers) against the plan's
    per-image estimate, with enough ground-truth boxes that a quarter of the sampled RoIs are positive; at
    torchvision's widths and at the quickstart's narrower ones."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from an_lab.config import load_config
    from an_lab.models.detection import build_mask_rcnn
    from an_lab.sweeps.plan import detection_macs_per_image

    overrides = [
        "recipe=mask_rcnn_1x",
        "data.image_size=192",
        f"model.head_norm={head_norm}",
        f"model.detector={detector}",
    ]
    options = {"box_batch_size_per_image": 64, **sizes}
    spelt = ", ".join(f"{name}: {value}" for name, value in options.items())
    config = load_config(None, [*overrides, f"model.detector_options={{{spelt}}}"])
    model = build_mask_rcnn(
        "resnet50",
        num_classes=5,
        detector=detector,
        head_norm=head_norm,
        min_size=192,
        max_size=320,
        detector_options=options,
    ).train()
    torch.manual_seed(0)
    corners = torch.rand(24, 2) * 180
    boxes = torch.cat([corners, corners + 10 + torch.rand(24, 2) * 40], dim=1).clamp(max=255)
    masks = torch.zeros(24, 192, 256, dtype=torch.uint8)
    for mask, box in zip(masks, boxes.int().tolist(), strict=True):
        mask[box[1] : box[3], box[0] : box[2]] = 1
    target = {"boxes": boxes, "labels": torch.randint(1, 5, (24,)), "masks": masks}
    counter = FlopCounterMode(display=False)
    with counter:
        model([torch.rand(3, 192, 256)], [target])
    counted = counter.get_total_flops() / 2  # a multiply-add is 2 FLOPs
    assert detection_macs_per_image(config) == pytest.approx(counted, rel=0.1)


def test_shipped_detection_sweeps_are_the_papers_rows_on_the_classification_runs(tmp_path):
    """detection-table2 / -table4 expand to the papers' rows (Table 2: 8, Table 4: 2), each backbone resolved to the
    run of sweeps/table2.yaml with the same network and norm; the quickstart's to detection-pretrain's runs."""
    classification = {
        (run.config.model.name, run.config.model.norm): run.run_id for run in expand(load_sweep(SWEEPS / "table2.yaml"))
    }
    rows = {}
    for name in ("detection-table2", "detection-table4"):
        for run in expand(load_sweep(SWEEPS / f"{name}.yaml", ["base.data.root=" + str(tmp_path)]), find=find_sweep):
            model = run.config.model
            source = "bn" if model.norm == "bn_frozen" else model.norm
            assert Path(model.backbone_init).name == classification[(model.name, source)]
            assert run.config.task == "detection" and run.config.trainer.iterations == 180_000
            rows[run.cell.label] = model.head_norm
    assert rows == {
        "ResNet-50 BN*": "none",
        "ResNet-50 GN + GN heads": "gn",
        "ResNet-50 AN (w/ BN)": "none",
        "ResNet-50 AN (w/ BN) + AN (w/ GN) heads": "an_gn",
        "ResNet-101 BN*": "none",
        "ResNet-101 GN + GN heads": "gn",
        "ResNet-101 AN (w/ BN)": "none",
        "ResNet-101 AN (w/ BN) + AN (w/ GN) heads": "an_gn",
        "AN (w/ BN)": "none",
        "BN*": "none",
    }
    pretrain = {r.config.model.norm: r.run_id for r in expand(load_sweep(SWEEPS / "detection-pretrain.yaml"))}
    assert len(pretrain) == 2  # one backbone per norm: the detectors of both seeds start from it
    quickstart = expand(load_sweep(SWEEPS / "detection-quickstart.yaml"), find=find_sweep)
    assert sorted((run.config.model.norm, run.seed) for run in quickstart) == [
        ("an", 0),
        ("an", 1),
        ("bn_frozen", 0),
        ("bn_frozen", 1),
    ]
    for run in quickstart:
        source = "bn" if run.config.model.norm == "bn_frozen" else "an"
        assert Path(run.config.model.backbone_init).name == pretrain[source]


def test_plan_estimates_wall_time_from_the_finished_runs_of_the_same_network(tmp_path, data_root):
    """Two of four runs finished in 120 s each (wall_time_s of their result.json); the two left, same network and
    image size, 2 at a time: about 2 min. Another image size has no finished run to time it by, and says so."""
    import yaml
    from conftest import small_sweep

    tree = small_sweep(data_root, tmp_path / "runs", {})
    tree.update(seeds=[0, 1])
    path = tmp_path / "timed.yaml"
    path.write_text(yaml.safe_dump(tree))
    for run in expand(load_sweep(path)):
        if run.seed == 0:
            run.run_dir.mkdir(parents=True)
            (run.run_dir / "config.json").write_text(json.dumps(run.config.model_dump(mode="json")))
            result = {"run_id": run.run_id, "status": "done", "final": {"top1_err": 5.0}, "wall_time_s": 120.0}
            result["device"] = "1 x cpu (x86_64)"
            (run.run_dir / "result.json").write_text(json.dumps(result))
    plan = an_lab("plan", path)
    assert "wall time: about 2 min for 2 runs, 2 at a time on 1 x cpu (x86_64)" in plan.stdout, plan.stdout
    slurm = an_lab("plan", path, "--set", "launcher.executor=slurm")
    assert "0.1 device-hours for 2 runs" in slurm.stdout and "launcher.slurm.time 3 min" in slurm.stdout
    other = an_lab("plan", path, "--set", "data.image_size=24")
    assert "no finished run to time cifar_resnet20 (an) at 24 px" in other.stdout, other.stdout


def test_plan_calibrate_times_networks_without_a_finished_run_and_keeps_the_figure(tmp_path, data_root):
    """No run finished: `plan --calibrate` times a few training steps of the network here, keeps the figure in the
    output folder, and later plans (torch-free) use it, calling it a lower bound; a finished run of the same network
    takes over from it; a damaged file is no calibration, and a GPU run is not calibrated on a CPU machine."""
    import yaml
    from conftest import small_sweep

    from an_lab.sweeps.timing import CALIBRATION

    output = tmp_path / "runs"
    path = tmp_path / "calibrated.yaml"
    path.write_text(yaml.safe_dump(small_sweep(data_root, output, {})))
    before = an_lab("plan", path)
    assert "`an-lab plan --calibrate` times a few training steps here" in before.stdout, before.stdout
    assert not (output / CALIBRATION).exists()  # plan alone writes nothing

    calibrated = an_lab("plan", path, "--calibrate")
    assert calibrated.returncode == 0, calibrated.stderr
    assert "calibrating cifar_resnet20 (an, classification) at 16 px" in calibrated.stderr
    assert "from training steps timed on this machine by `plan --calibrate`" in calibrated.stdout, calibrated.stdout
    assert "a lower bound" in calibrated.stdout
    entries = json.loads((output / CALIBRATION).read_text())["calibrations"]
    assert sorted(entry["key"][:3] for entry in entries) == [["cifar_resnet20", "an", 16], ["cifar_resnet20", "bn", 16]]
    assert all(0 < entry["seconds_per_mac"] < 1e-6 for entry in entries)

    again = an_lab("plan", path)  # the kept figures, without timing anything
    assert "from training steps timed" in again.stdout and "calibrating" not in again.stderr
    another = an_lab("plan", path, "--set", "data.batch_size=32")  # another batch size is another calibration
    assert "no finished run to time cifar_resnet20 (an) at 16 px" in another.stdout

    for run in expand(load_sweep(path)):  # both cells finish seed 0 in 120 s: they time seed 1 from now on
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.json").write_text(json.dumps(run.config.model_dump(mode="json")))
        result = {"run_id": run.run_id, "status": "done", "final": {"top1_err": 5.0}, "wall_time_s": 120.0}
        (run.run_dir / "result.json").write_text(json.dumps({**result, "device": "1 x cpu (x86_64)"}))
    measured = an_lab("plan", path, "--set", "seeds=[0,1]")
    assert "about 2 min for 2 runs" in measured.stdout and "measured from up to 1 finished runs" in measured.stdout
    (wall,) = [line for line in measured.stdout.splitlines() if line.startswith("wall time:")]
    assert "calibrat" not in wall, wall

    (output / CALIBRATION).write_text("{not json")
    # the finished seed-0 runs time the seed-1 runs: nothing is calibrated, even with no calibration kept
    timed = an_lab("plan", path, "--calibrate", "--set", "seeds=[0,1]")
    assert timed.returncode == 0 and "calibrating" not in timed.stderr, timed.stderr
    damaged = an_lab("plan", path, "--set", "data.image_size=24")
    assert damaged.returncode == 0 and "Traceback" not in damaged.stderr
    assert "no finished run to time cifar_resnet20 (an) at 24 px" in damaged.stdout

    # at 24 px no finished run times it, so it would be calibrated: not on a machine without the run's GPU
    gpu = an_lab("plan", path, "--calibrate", "--set", "trainer.accelerator=gpu", "--set", "data.image_size=24")
    assert gpu.returncode == 2 and "this machine has no CUDA GPU" in gpu.stderr, gpu.stderr
    assert "Traceback" not in gpu.stderr
