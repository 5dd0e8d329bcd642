"""When a run counts as not converged: the thresholds (the sweep's convergence settings, the manifest's, the command
line's) and the flags per cell that the results table marks with a double dagger."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from an_lab.errors import UsageError
from an_lab.metrics import primary

if TYPE_CHECKING:  # the records live in the sweeps package, which `table` of a sweep folder does not import
    from an_lab.sweeps.records import Manifest

CONVERGENCE_KEYS = ("train_loss_max", "val_drop_max", "last_epochs")
# The sweep schema's defaults (an_lab.sweeps.spec.ConvergenceSettings; a test keeps the two equal).
DEFAULTS = {"train_loss_max": None, "val_drop_max": 1.0, "last_epochs": 3}


def _surely_valid(settings: dict) -> bool:
    """Whether ConvergenceSettings surely takes these settings as they are: the three keys, each threshold None or a
    positive finite float, last_epochs an int in [2, 50]. Anything else (an int threshold, a string, a value out of
    range) goes through the schema, which converts or explains; a test checks that this never accepts what the
    schema refuses or changes."""
    if settings.keys() != set(CONVERGENCE_KEYS):
        return False
    thresholds = (settings["train_loss_max"], settings["val_drop_max"])
    if not all(value is None or (type(value) is float and math.isfinite(value) and value > 0) for value in thresholds):
        return False
    return type(settings["last_epochs"]) is int and 2 <= settings["last_epochs"] <= 50


def parse_threshold(text: str, flag: str) -> float | None:
    """A threshold given on the command line: a positive number, or "none" to switch the check off."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} {text!r}: give a positive number, or none to switch this check off")
    return value


def convergence_settings(manifest: Manifest, overrides: dict | None = None) -> dict:
    """train_loss_max, val_drop_max and last_epochs: the sweep's defaults, the manifest's "convergence", then
    `overrides` (a key given with None switches that check off)."""
    unknown = sorted(set(overrides or {}) - set(CONVERGENCE_KEYS))
    if unknown:
        raise UsageError(f"convergence settings {', '.join(unknown)}: choose among {', '.join(CONVERGENCE_KEYS)}")
    given = manifest.get("convergence") if isinstance(manifest.get("convergence"), dict) else {}
    merged = {**DEFAULTS, **given, **(overrides or {})}
    if _surely_valid(merged):
        return merged  # what the schema gives back for these values, without importing it (and pydantic)
    from pydantic import ValidationError

    from an_lab.sweeps.spec import ConvergenceSettings

    merged = {**ConvergenceSettings().model_dump(), **given, **(overrides or {})}
    try:
        return ConvergenceSettings.model_validate(merged).model_dump()
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise UsageError(f"convergence.{where}: {problem['msg']}") from None


def _gain(tail: tuple[float, ...], last_epochs: int, lower_is_better: bool = True) -> float:
    """How far the primary validation metric still improved over the last epochs of the tail: the fall of an error
    (first minus last) or the rise of an AP (last minus first); NaN when fewer than 2 of them have a value."""
    window = [value for value in tail[-last_epochs:] if math.isfinite(value)]
    if len(window) < 2:
        return math.nan
    return window[0] - window[-1] if lower_is_better else window[-1] - window[0]


def convergence_flags(done: pd.DataFrame, settings: dict, task: str = "classification") -> pd.DataFrame:
    """Per cell: not_converged (done runs flagged by a rule) and convergence_unknown (done runs no rule could
    check, e.g. a result without a tail). The tail is the task's primary metric's (tail_top1_err, tail_bbox_ap)."""
    loss_max, drop_max = settings["train_loss_max"], settings["val_drop_max"]
    metric = primary(task)
    tails = f"tail_{metric.name}"
    flagged = pd.Series(False, index=done.index)
    known = pd.Series(loss_max is None and drop_max is None, index=done.index)
    if loss_max is not None and "train_loss" in done:
        flagged |= done["train_loss"] > loss_max
        known |= done["train_loss"].notna()
    if drop_max is not None and tails in done:
        last, lower = settings["last_epochs"], metric.lower_is_better
        gains = pd.Series([_gain(tail, last, lower) for tail in done[tails]], index=done.index, dtype="float64")
        flagged |= gains > drop_max
        known |= gains.notna()
    flags = pd.DataFrame({"cell": done["cell"], "not_converged": flagged, "convergence_unknown": ~known})
    return flags.groupby("cell", sort=False).sum()
