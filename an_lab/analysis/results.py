"""What a sweep's runs have produced: one row per run, read from the run directories without torch.

    runs = collect(load_manifest("sweeps/quickstart.yaml"))   # pandas DataFrame, manifest order

Columns: cell, label, kind, name, seed, run_id, state, detail, then the numbers of result.json (NaN until done):
top1_err, top5_err (final epoch), best_top1_err, best_top5_err, best_epoch, val_loss, train_loss (final epoch),
params, macs, epochs, wall_time_s, images_per_s, finished_at, and tail_top1_err: the validation top-1 error of the
last epochs kept in result.json ("tail"), oldest first, as a tuple of floats (empty for a result without a tail,
NaN for an epoch that logged none). `state` is an_lab.rundir.state's: done, failed, running, interrupted,
pending, or corrupt for a result.json that does not validate (an_lab.rundir.read_result).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from an_lab.rundir import read_result, state
from an_lab.sweeps.manifest import check_manifest

COLUMNS = (
    "cell",
    "label",
    "kind",
    "name",
    "seed",
    "run_id",
    "state",
    "detail",
    "top1_err",
    "top5_err",
    "best_top1_err",
    "best_top5_err",
    "best_epoch",
    "val_loss",
    "train_loss",
    "params",
    "macs",
    "epochs",
    "wall_time_s",
    "images_per_s",
    "finished_at",
    "tail_top1_err",
)
_NUMBERS = COLUMNS[COLUMNS.index("top1_err") : COLUMNS.index("tail_top1_err")]


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")


def read_run(run_dir: Path) -> tuple[str, str | None, dict | None]:
    """(state, detail, result): result.json is read first, so that a finished run costs one file read; a result
    that does not validate is "corrupt", never done."""
    result, _ = read_result(run_dir)
    if result is not None:
        return "done", None, result
    status, detail = state(run_dir)
    if status == "done":  # written between the two looks
        result, _ = read_result(run_dir)
    return (status, detail, None) if result is None else ("done", None, result)


def _tail(result: dict) -> tuple[float, ...]:
    tail = result.get("tail")
    values = tail.get("val_top1_err") if isinstance(tail, dict) else None
    return tuple(_number(value) for value in values) if isinstance(values, list) else ()


def _numbers(result: dict | None) -> tuple:
    if result is None:
        return (float("nan"),) * len(_NUMBERS) + ((),)
    final = result.get("final") if isinstance(result.get("final"), dict) else {}
    best = result.get("best") if isinstance(result.get("best"), dict) else {}
    return (
        _number(final.get("top1_err")),
        _number(final.get("top5_err")),
        _number(best.get("top1_err")),
        _number(best.get("top5_err")),
        _number(best.get("epoch")),
        _number(final.get("val_loss")),
        _number(final.get("train_loss")),
        _number(result.get("params")),
        _number(result.get("macs")),
        _number(result.get("epochs")),
        _number(result.get("wall_time_s")),
        _number(result.get("images_per_s")),
        _number(result.get("finished_at")),
        _tail(result),
    )


def collect(manifest: dict) -> pd.DataFrame:
    """One row per run of the manifest, in manifest order (cells, then seeds), with its state and its result."""
    cells = check_manifest(manifest)
    root = Path(manifest["output_dir"])
    rows = []
    for cell in cells:
        described = (cell["index"], cell.get("label") or f"cell {cell['index']}", cell.get("kind"), cell.get("name"))
        for run in cell["runs"]:
            status, detail, result = read_run(root / run["run_id"])
            rows.append((*described, run.get("seed"), run["run_id"], status, detail, *_numbers(result)))
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return frame.astype({"cell": "int64", **dict.fromkeys(_NUMBERS, "float64")})
