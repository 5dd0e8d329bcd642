"""Sweep files that would block, exhaust memory or silently run something else: each is refused with exit 2 and one
clear line before anything is built or written, or, for a shorthand, honoured."""

import os
from pathlib import Path

import pytest
import yaml
from conftest import an_lab

from an_lab import yamlio
from an_lab.config import load_config
from an_lab.errors import UsageError
from an_lab.sweeps import expand, load_sweep

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "sweeps" / "digits-ablation.yaml"


def refused(*args, cwd: Path | None = None, timeout: float = 60) -> str:
    """Run `an-lab ARGS`, check it refuses with exit 2 and one line, and return that line."""
    done = an_lab(*args, cwd=cwd, timeout=timeout)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def sweep_text(**extra) -> str:
    tree = {
        "name": "hostile",
        "mode": "ablation",
        "base": {"model": {"name": "cifar_resnet20"}, "data": {"name": "fake"}, "trainer": {"epochs": 1}},
        "axes": {"model.an.pooling": ["rsd", "mean"]},
        "output_dir": "runs",
    }
    tree.update(extra)
    return yaml.safe_dump(tree, sort_keys=False)


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)
    line = refused("plan", fifo, timeout=30)  # a reader of the FIFO would wait forever
    assert str(fifo) in line and "not a regular file" in line


def test_a_device_and_a_folder_are_refused(tmp_path):
    assert "not a regular file" in refused("plan", "/dev/zero", timeout=30)
    # A sweep command takes a sweep file or a sweep folder: a folder without a manifest is named as such.
    assert f"{tmp_path}: no readable manifest.json here" in refused("plan", tmp_path)
    assert "is a folder" in refused("train", tmp_path)


def test_an_oversized_or_binary_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(sweep_text() + "# " + "x" * (yamlio.MAX_FILE_BYTES + 10) + "\n")
    line = refused("plan", big)
    assert f"more than the {yamlio.MAX_FILE_BYTES:,} read" in line and str(big) in line
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: x\nmode: \xff\xfe\n")
    assert "is not UTF-8 text (byte 14)" in refused("plan", binary)


def test_files_are_parsed_once_with_libyaml():
    assert yaml.__with_libyaml__ and yamlio._LOADER is yaml.CSafeLoader
    data, root = yamlio.parse("a: &x [1, 2]\nb: *x\n", "text")
    assert data == {"a": [1, 2], "b": [1, 2]} and root.start_mark.line == 0


def test_a_grid_of_millions_of_cells_is_refused_before_any_cell_is_built(tmp_path):
    keys = ["trainer.epochs", "trainer.seed", "data.batch_size", "data.image_size", "optim.base_lr", "optim.momentum"]
    keys += ["optim.weight_decay", "optim.warmup_epochs", "optim.label_smoothing", "optim.mixup_alpha"]
    axes = {key: [round(0.1 * (value + 1), 1) for value in range(5)] for key in keys}  # 5**10 cells in 11 lines
    path = tmp_path / "bomb.yaml"
    path.write_text(sweep_text(mode="grid", axes=axes))
    line = refused("plan", path, timeout=60)
    assert "9,765,625 runs (5 x 5 x 5 x 5 x 5 x 5 x 5 x 5 x 5 x 5 cells" in line
    assert "more than max_runs (100,000)" in line and "--set max_runs=N" in line


def test_max_runs_is_a_stated_limit_that_can_be_raised(tmp_path):
    path = tmp_path / "six.yaml"
    path.write_text(sweep_text(mode="grid", axes={"model.an.pooling": ["rsd", "mean"], "model.an.head": ["a2", "a1"]}))
    assert len(expand(load_sweep(path))) == 4
    with pytest.raises(UsageError, match=r"4 runs .* more than max_runs \(3\)"):
        load_sweep(path, ["max_runs=3"])
    assert "max_runs: Input should be a valid integer" in refused("plan", path, "--set", "max_runs=true")


def test_the_model_shorthand_is_honoured_in_the_base_in_set_and_in_an_axis(tmp_path):
    path = tmp_path / "deep.yaml"
    text = sweep_text()
    path.write_text(text.replace("model:\n    name: cifar_resnet20", "model: cifar_resnet56"))
    assert "model: cifar_resnet56" in path.read_text()
    assert {run.config.model.name for run in expand(load_sweep(path))} == {"cifar_resnet56"}
    quick = expand(load_sweep(QUICKSTART, ["model=cifar_resnet56"]))
    assert {run.config.model.name for run in quick} == {"cifar_resnet56"}
    assert {run.config.model.norm for run in quick} == {"an", "bn"}  # the rest of the model section is kept
    grid = tmp_path / "models.yaml"
    grid.write_text(sweep_text(mode="grid", axes={"model": ["cifar_resnet20", "cifar_resnet32"]}))
    assert [run.config.model.name for run in expand(load_sweep(grid))] == ["cifar_resnet20", "cifar_resnet32"]
    config = tmp_path / "run.yaml"
    config.write_text("model: cifar_resnet32\ndata: fake\n")
    loaded = load_config(config, ["model.norm=bn"])
    assert (loaded.model.name, loaded.model.norm, loaded.data.name) == ("cifar_resnet32", "bn", "fake")


def test_a_value_where_a_section_belongs_is_an_error_not_an_empty_section(tmp_path):
    path = tmp_path / "flat.yaml"
    tree = yaml.safe_load(sweep_text())
    tree["base"]["optim"] = 0.1
    path.write_text(yaml.safe_dump(tree))
    line = refused("plan", path)
    assert "optim is a section of keys (base_lr," in line and "not the value 0.1" in line
    config = tmp_path / "run.yaml"
    config.write_text("trainer: 5\n")
    assert "trainer is a section of keys" in refused("train", config)


def test_an_override_that_an_axis_sets_again_is_an_error_naming_both():
    line = refused("plan", QUICKSTART, "--set", "model.an.pooling=mean")
    assert "--set model.an.pooling sets model.an.pooling" in line and "axes.model.an.pooling (line 14)" in line
    line = refused("plan", QUICKSTART, "--set", "model.an={pooling: mean, k: 3}")
    assert "--set model.an sets model.an.pooling" in line
    line = refused("plan", QUICKSTART, "--set", "trainer.seed=3")
    assert "digits-ablation.yaml, line 20: --set trainer.seed would be lost" in line and "--set 'seeds=[...]'" in line
    # Keys no axis sets still override as before.
    assert an_lab("plan", QUICKSTART, "--set", "trainer.epochs=2").returncode == 0
