"""Command-line conventions, tried as a new user would: --version, a sweep folder wherever a sweep file goes,
`| head`, shell completion, and `train` without third-party noise unless --verbose."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import an_lab, small_sweep, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_version_names_the_installed_package():
    from importlib.metadata import version

    result = an_lab("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"an-lab {version('an-lab')}"


def test_a_sweep_folder_works_wherever_a_sweep_file_does(tmp_path, data_root):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small_sweep(data_root, tmp_path / "runs", {"model.an.pooling": ["rsd"]})))
    from_file = an_lab("plan", path, "--set", "trainer.epochs=3")
    assert from_file.returncode == 0, from_file.stderr
    folder = tmp_path / "runs" / "sweeps" / "small"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        f'{{"name": "small", "mode": "ablation", "sweep_file": "{path}", "output_dir": "{tmp_path / "runs"}", '
        '"overrides": ["trainer.epochs=3"], "updated": 1.0, "cells": []}'
    )
    from_folder = an_lab("plan", folder)  # the file the manifest names, with the overrides it was launched with
    assert from_folder.returncode == 0, from_folder.stderr
    assert from_folder.stdout == from_file.stdout


def test_a_closed_pipe_ends_quietly(tmp_path):
    sweep = {"name": "wide", "mode": "grid", "base": {"data": {"name": "fake"}}, "output_dir": str(tmp_path)}
    sweep["axes"] = {"optim.base_lr": [0.01 * (i + 1) for i in range(200)], "trainer.seed": list(range(20))}
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(sweep))
    command = f"set -o pipefail; {sys.executable} -m an_lab.cli plan {path} | head -n 1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""  # no BrokenPipeError, no traceback
    assert result.returncode == 141  # 128 + SIGPIPE, as any writer whose reader left


def _complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _an_lab; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_are_valid_shell(shell, tmp_path):
    result = an_lab("completion", shell)
    assert result.returncode == 0 and "complete -o default -F _an_lab an-lab" in result.stdout
    check = subprocess.run(["bash", "-n"], input=result.stdout, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_bash_completion_completes_commands_options_and_choices():
    script = an_lab("completion", "bash").stdout
    assert _complete(script, ["an-lab", "sta"]) == ["status"]
    assert "--retry-failed" in _complete(script, ["an-lab", "sweep", "--re"])
    assert _complete(script, ["an-lab", "table", "--format", "la"]) == ["latex"]
    assert _complete(script, ["an-lab", "sweep", "--executor", ""]) == ["local", "slurm"]


def _tiny_run(data_root: Path, output: Path, seed: int) -> dict:
    return {
        "model": {"name": "cifar_resnet20", "norm": "bn"},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
        "trainer": {"epochs": 1, "seed": seed, "limit_train_batches": 2},
        "wandb": {"mode": "disabled"},
        "output_dir": str(output),
    }


@pytest.mark.slow
def test_train_hides_third_party_notices_unless_verbose(tmp_path, data_root):
    quiet = an_lab("train", write_config(tmp_path / "quiet.yaml", _tiny_run(data_root, tmp_path / "runs", 0)))
    verbose = an_lab(
        "train", write_config(tmp_path / "verbose.yaml", _tiny_run(data_root, tmp_path / "runs", 1)), "--verbose"
    )
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "GPU available:" in verbose.stderr + verbose.stdout  # Lightning's notices exist ...
    assert "GPU available:" not in quiet.stderr + quiet.stdout  # ... and --verbose alone shows them
    assert "top-1 err" in quiet.stdout
