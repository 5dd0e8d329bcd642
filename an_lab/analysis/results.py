"""What a sweep's runs have produced: one row per run, read from the run directories without torch.

    runs = collect(load_manifest("sweeps/quickstart.yaml"))   # pandas DataFrame, manifest order

Columns: cell, label, kind, name, seed, run_id, state, detail, then the numbers of result.json (NaN until done, and
NaN where the run's task does not report them): the final metrics of both tasks (an_lab.metrics.METRICS) top1_err,
top5_err (classification) and bbox_ap, bbox_ap50, bbox_ap75, bbox_ap_s, bbox_ap_m, bbox_ap_l, segm_ap, ... segm_ap_l
(detection, COCO AP in percent; NaN where the data has no object of a size), the same metrics at the best epoch as
best_<metric> (best_top1_err, best_bbox_ap, ...), best_epoch, val_loss, train_loss (final epoch), params, macs,
epochs, wall_time_s, images_per_s, finished_at, val_images (the validation set's size, for the error's
resolution; NaN for runs that did not record it), and the tails: the primary validation metric of the last epochs kept
in result.json ("tail"), oldest first, as a tuple of floats (empty for a result without a tail, NaN for an epoch that
logged none): tail_top1_err (classification) and tail_bbox_ap (detection). `state` is an_lab.rundir.state's: done,
failed, running, interrupted, pending, or corrupt for a result.json that does not validate (an_lab.rundir.read_result).

sweep_task(manifest) is the sweep's task (its base config's, an_lab.metrics.task_of) and primary_metric(manifest)
the metric its tables lead with and its figures draw.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from an_lab.metrics import METRICS, TASKS, Metric, manifest_task, primary
from an_lab.rundir import read_result, state
from an_lab.sweeps.manifest import check_manifest

_FINALS = tuple(METRICS)  # every metric of every task, in the registry's order
_TAILS = tuple(f"tail_{primary(task).name}" for task in TASKS)  # tail_top1_err, tail_bbox_ap
COLUMNS = (
    "cell",
    "label",
    "kind",
    "name",
    "seed",
    "run_id",
    "state",
    "detail",
    *_FINALS,
    *(f"best_{metric}" for metric in _FINALS),
    "best_epoch",
    "val_loss",
    "train_loss",
    "params",
    "macs",
    "epochs",
    "wall_time_s",
    "images_per_s",
    "finished_at",
    "val_images",
    *_TAILS,
)
_NUMBERS = COLUMNS[COLUMNS.index(_FINALS[0]) : COLUMNS.index(_TAILS[0])]


def sweep_task(manifest: dict) -> str:
    """The task of every run of the sweep: its base config's (classification for a manifest without one)."""
    return manifest_task(manifest)


def primary_metric(manifest: dict) -> Metric:
    """The metric the sweep's tables lead with and its figures draw: top1_err or bbox_ap."""
    return primary(sweep_task(manifest))


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


def _tail(result: dict, column: str) -> tuple[float, ...]:
    tail = result.get("tail")
    values = tail.get(column) if isinstance(tail, dict) else None
    return tuple(_number(value) for value in values) if isinstance(values, list) else ()


def _numbers(result: dict | None) -> tuple:
    if result is None:
        return (float("nan"),) * len(_NUMBERS) + ((),) * len(_TAILS)
    final = result.get("final") if isinstance(result.get("final"), dict) else {}
    best = result.get("best") if isinstance(result.get("best"), dict) else {}
    return (
        *(_number(final.get(metric)) for metric in _FINALS),
        *(_number(best.get(metric)) for metric in _FINALS),
        _number(best.get("epoch")),
        _number(final.get("val_loss")),
        _number(final.get("train_loss")),
        _number(result.get("params")),
        _number(result.get("macs")),
        _number(result.get("epochs")),
        _number(result.get("wall_time_s")),
        _number(result.get("images_per_s")),
        _number(result.get("finished_at")),
        _number(result.get("val_images")),
        *(_tail(result, f"val_{column.removeprefix('tail_')}") for column in _TAILS),
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
