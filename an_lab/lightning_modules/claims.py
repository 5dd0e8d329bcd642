"""Who trains a run and where it starts from: rank 0's claim on the run folder (one owner per run), a damaged
result.json set aside, and the checkpoint a run resumes from (last.ckpt, else previous.ckpt; damaged ones are kept
aside)."""

from __future__ import annotations

import os
import platform
import zipfile
from pathlib import Path

from an_lab.rundir import (
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    RESULT,
    Claim,
    claim_owner,
    describe_owner,
    inherited_claim,
    read_result,
    set_aside,
    try_claim,
)


class RunBusy(RuntimeError):
    """Another process owns the run (its claim is held): this process did not start it."""


def _global_rank_from_env() -> int:
    """This process's rank in a DDP job before Lightning is set up: srun, torchrun and Lightning's own launcher."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if os.environ.get("LOCAL_RANK", "").isdigit() else 0


def take_claim(directory: Path) -> Claim | None:
    """Rank 0 owns the run: it adopts the claim its launcher handed over, or claims the run itself. Other ranks of
    the same job train under rank 0's claim."""
    if _global_rank_from_env() != 0:
        return None
    claim = inherited_claim(directory) or try_claim(directory, "an-lab train")
    if claim is None:
        raise RunBusy(
            f"run {directory.name} is being trained by {describe_owner(claim_owner(directory))}; "
            "this process did not start it (one owner per run)"
        )
    claim.update(trainer_pid=os.getpid(), trainer_host=platform.node())
    return claim


def set_aside_corrupt_result(directory: Path, say) -> dict | None:
    """The valid result of a finished run, or None after moving a damaged result.json aside (kept as .corrupt)."""
    result, problem = read_result(directory)
    if problem is not None:
        kept = set_aside(directory / RESULT)
        say(f"warning: {problem}; kept as {kept.name}, the run is trained again (resuming from its checkpoint)")
    return result


def _checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a truncated or damaged zip archive), or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        return f"not a readable checkpoint ({error})"
    return f"member {bad} fails its checksum" if bad else None


def resume_point(directory: Path, say) -> Path | None:
    """last.ckpt, or previous.ckpt when last.ckpt is damaged, or None (from scratch); damaged files are kept aside."""
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = directory / name
        if not path.exists():
            continue
        problem = _checkpoint_problem(path)
        if problem is None:
            say(f"resuming from {'the previous good checkpoint ' if name != CHECKPOINT else ''}{path}")
            return path
        kept = set_aside(path)
        say(f"warning: {path} is damaged: {problem}; kept as {kept.name}")
    if any(directory.glob("*.ckpt.corrupt")):
        say(f"no usable checkpoint left in {directory}: restarting the run from scratch")
    return None
