"""Shared fixtures: real data written to disk once per session, and a helper to run the real `an-lab` command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """scikit-learn's digits written as PNG files in an imagefolder layout (done once per session)."""
    from an_lab.lightning_modules.data import materialize_digits

    root = tmp_path_factory.mktemp("data")
    materialize_digits(root)
    return root


def an_lab(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "an_lab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def write_manifest(root: Path, runs: Path, cells: list[dict], name: str = "known") -> Path:
    """A sweep folder <root>/sweeps/<name>/ holding a hand-written manifest of runs that live in `runs`."""
    folder = root / "sweeps" / name
    folder.mkdir(parents=True)
    manifest = {"name": name, "mode": "ablation", "sweep_file": f"{name}.yaml", "output_dir": str(runs)}
    manifest.update(updated=1.7e9, cells=cells)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path
