"""The code a SLURM job imports: a snapshot of the an_lab package in <sweep folder>/code/<hash>/an_lab, copied once
per content hash, so that editing the checkout never changes a queued job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

CODE_DIR = "code"


def package_dir() -> Path:
    import an_lab

    return Path(an_lab.__file__).resolve().parent


def _package_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    )


def snapshot_code(sweep_dir: Path) -> Path:
    """Copy the an_lab package into <sweep folder>/code/<hash of its files>/an_lab once; return that code folder."""
    source = package_dir()
    files = _package_files(source)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    target = Path(sweep_dir).resolve() / CODE_DIR / digest.hexdigest()[:12]
    if (target / "an_lab").is_dir():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for path in files:
        copy = staging / "an_lab" / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    try:
        os.replace(staging, target)
    except OSError:  # another submission made the same snapshot first
        shutil.rmtree(staging, ignore_errors=True)
    return target
