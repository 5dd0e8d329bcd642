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

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from an_lab.analysis.results_index import read_index, settled, stamp_arrays, write_index
from an_lab.metrics import METRICS, TASKS, Metric, manifest_task, primary
from an_lab.rundir import Result, scan_runs
from an_lab.stats import NAN
from an_lab.sweep_folder import RESULTS_INDEX, check_manifest, sweep_folder

if TYPE_CHECKING:  # the records live in the sweeps package, which `table` of a sweep folder does not import
    from an_lab.sweeps.records import Manifest

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
CHUNK = 4096  # results turned into columns at a time
_NONE: dict = {}  # what a run without a result, or a result without a section, reads from


def sweep_task(manifest: Manifest) -> str:
    """The task of every run of the sweep: its base config's (classification for a manifest without one)."""
    return manifest_task(manifest)


def primary_metric(manifest: Manifest) -> Metric:
    """The metric the sweep's tables lead with and its figures draw: top1_err or bbox_ap."""
    return primary(sweep_task(manifest))


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else NAN


def _tail(result: dict, column: str) -> tuple[float, ...]:
    tail = result.get("tail")
    values = tail.get(column) if isinstance(tail, dict) else None
    return tuple(_number(value) for value in values) if isinstance(values, list) else ()


def _numbers(values) -> np.ndarray:
    """A column of numbers: each value that JSON gave as a number (not a bool), NaN for anything else."""
    return np.array([value if type(value) is float or type(value) is int else NAN for value in values], dtype=float)


def _checked(values) -> np.ndarray:
    """A column of a result's "final" or "best" values, which rundir.result_problem has checked to be finite numbers
    or null: null becomes NaN (as numpy converts it), a number itself."""
    return np.array(list(values), dtype=float)


def _result_columns(results: list[Result | None]) -> dict[str, object]:
    """The numbers of the runs' results, one column each (NaN, or an empty tail, where a run has no result). The
    results are valid ones (rundir.result_problem finds nothing wrong), as rundir.scan_runs gives them."""
    found = [result if result is not None else _NONE for result in results]
    finals = [result.get("final") if isinstance(result.get("final"), dict) else _NONE for result in found]
    bests = [result.get("best") if isinstance(result.get("best"), dict) else _NONE for result in found]
    reported = set().union(*finals, *bests)  # a classification run reports no AP: those columns are NaN at once
    absent = np.full(len(found), NAN)
    columns: dict[str, object] = {
        metric: _checked(final.get(metric) for final in finals) if metric in reported else absent.copy()
        for metric in _FINALS
    }
    columns |= {
        f"best_{metric}": _checked(best.get(metric) for best in bests) if metric in reported else absent.copy()
        for metric in _FINALS
    }
    columns["best_epoch"] = _checked(best.get("epoch") for best in bests)
    for key in ("val_loss", "train_loss"):
        columns[key] = _checked(final.get(key) for final in finals)
    for key in _NUMBERS[_NUMBERS.index("params") :]:
        columns[key] = _numbers(result.get(key) for result in found)
    for column in _TAILS:
        logged = f"val_{column.removeprefix('tail_')}"
        columns[column] = [() if result is None else _tail(result, logged) for result in results]
    return columns


def collect(manifest: Manifest) -> pd.DataFrame:
    """One row per run of the manifest, in manifest order (cells, then seeds), with its state and its result."""
    return collect_checked(manifest, check_manifest(manifest))


def collect_checked(manifest: Manifest, cells: list[dict]) -> pd.DataFrame:
    """collect() of a manifest whose cells check_manifest has given already (a table checks a manifest once).

    The numbers of finished runs come from the sweep folder's results index (an_lab.analysis.results_index) where
    their result.json is unchanged, else from the file; the index is rewritten when it lacked or held a stale entry."""
    output_dir = str(manifest["output_dir"])
    run_ids = [run["run_id"] for cell in cells for run in cell["runs"]]
    path = sweep_folder(manifest) / RESULTS_INDEX
    index = read_index(path, output_dir, _NUMBERS, _TAILS)
    found = scan_runs(Path(output_dir), run_ids, index.known if index is not None else None)
    numbers = np.full((len(run_ids), len(_NUMBERS)), NAN)
    tails: dict[str, list] = {column: [()] * len(run_ids) for column in _TAILS}
    rows, stamps, results, fresh, cached = [], [], [], [], []
    for cell in cells:
        described = (cell["index"], cell.get("label") or f"cell {cell['index']}", cell.get("kind"), cell.get("name"))
        for run in cell["runs"]:
            status, detail, result, stamp = next(found)
            rows.append((*described, run.get("seed"), run["run_id"], status, detail))
            stamps.append(stamp)
            if result is not None:
                fresh.append(len(rows) - 1)
                results.append(result)
                if len(results) == CHUNK:  # a few thousand parsed result files at a time, not 100,000
                    _fill(numbers, tails, fresh[-CHUNK:], results)
                    results = []
            elif stamp is not None:
                cached.append(len(rows) - 1)
    if results:
        _fill(numbers, tails, fresh[len(fresh) - len(results) :], results)
    if cached:
        _fill_from_index(numbers, tails, cached, [index.position[run_ids[row]] for row in cached], index)
    _update_index(path, output_dir, index, run_ids, stamps, fresh, len(cached), numbers, tails)
    head = pd.DataFrame.from_records(rows, columns=list(COLUMNS[: COLUMNS.index(_FINALS[0])]))
    values = pd.DataFrame(numbers, index=head.index, columns=list(_NUMBERS))
    frame = pd.concat([head, values, pd.DataFrame(tails, index=head.index)], axis=1)
    return frame[list(COLUMNS)].astype({"cell": "int64"})


def _fill(numbers: np.ndarray, tails: dict[str, list], rows: list[int], results: list[Result]) -> None:
    """Put the numbers and tails of parsed results into their runs' rows."""
    columns = _result_columns(results)
    numbers[rows] = np.column_stack([columns[name] for name in _NUMBERS])
    for column in _TAILS:
        for row, tail in zip(rows, columns[column], strict=True):
            tails[column][row] = tail


def _fill_from_index(numbers: np.ndarray, tails: dict[str, list], rows: list[int], positions: list[int], index) -> None:
    """Put the indexed numbers and tails of unchanged results into their runs' rows (columns the index left out
    stay NaN: no indexed run had them)."""
    if index.stored:
        numbers[np.ix_(rows, [_NUMBERS.index(name) for name in index.stored])] = index.numbers[positions]
    for column, (lengths, offsets, values) in index.tails.items():
        for row, length, offset in zip(rows, lengths[positions].tolist(), offsets[positions].tolist(), strict=True):
            if length:
                tails[column][row] = tuple(values[offset : offset + length].tolist())


def _update_index(path, output_dir, index, run_ids, stamps, fresh, reused, numbers, tails) -> None:
    """Rewrite the index when a result was read from its file that may now be indexed, or an indexed entry was not
    used (stale, deleted, no longer a run of the sweep): it then holds every done run with a settled result."""
    if not fresh and reused == (len(index) if index is not None else 0):
        return  # every entry used, nothing read from a file: the index is up to date
    done = [row for row, stamp in enumerate(stamps) if stamp is not None]
    inodes, times = stamp_arrays([stamps[row] for row in done])
    ok = settled(times, time.time_ns())
    read = np.zeros(len(stamps), dtype=bool)
    read[fresh] = True
    if not (read[done] & ok).any() and reused == (len(index) if index is not None else 0):
        return  # only results too young to be indexed were read
    rows = [row for row, keep in zip(done, ok.tolist(), strict=True) if keep]
    write_index(
        path,
        output_dir,
        _NUMBERS,
        [run_ids[row] for row in rows],
        inodes[ok],
        times[ok],
        numbers[rows],
        {column: [values[row] for row in rows] for column, values in tails.items()},
    )
