"""The numbers of a results table, one row per cell (summarize()): the metric selections of each task, the baseline,
and per metric n, mean, std, the CI of the mean, the difference against the baseline with its CI and P(better), and
the best (bold) cells; every figure from an_lab.stats (see an_lab.analysis.table for what they mean)."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import pandas as pd

from an_lab.analysis.convergence import convergence_flags, convergence_settings
from an_lab.analysis.results import check_manifest, collect_checked, sweep_task
from an_lab.errors import UsageError
from an_lab.metrics import (
    DETECTION_HEADLINE,
    DETECTION_SIZES,
    METRIC_RANGE,
    TASK_METRICS,
    task_of_metric,
)
from an_lab.metrics import METRICS as REGISTRY
from an_lab.stats import (
    METHODS,
    MIN_MARK_N,
    NAN,
    compare_many,
    estimate_many,
)

if TYPE_CHECKING:  # the records live in the sweeps package, which `table` of a sweep folder does not import
    from an_lab.sweeps.records import Manifest

# --metric of a classification sweep: which error columns; "best" puts the best epoch's top-1 error beside the final one
SELECTIONS = {
    "top1": ("top1",),
    "top5": ("top5",),
    "both": ("top1", "top5"),
    "best": ("top1", "best_top1"),
    "best_top1": ("best_top1",),
    "best_top5": ("best_top5",),
    "primary": ("top1",),
}
_BBOX = tuple(name for name in DETECTION_HEADLINE if name.startswith("bbox_"))
_SEGM = tuple(name for name in DETECTION_HEADLINE if name.startswith("segm_"))
# --metric of a detection sweep: which AP columns (the summary's metric keys are the result.json names)
DETECTION_SELECTIONS = {
    "ap": DETECTION_HEADLINE,
    "bbox": _BBOX,
    "segm": _SEGM,
    "ap_all": TASK_METRICS["detection"],
    "best": ("bbox_ap", "best_bbox_ap"),
    "primary": ("bbox_ap",),
}
TASK_SELECTIONS = {"classification": SELECTIONS, "detection": DETECTION_SELECTIONS}
DEFAULT_SELECTION = {"classification": "both", "detection": "ap"}
# what --detail adds to a selection: the size splits of the AP it shows
DETAIL_EXTRA = {
    "ap": DETECTION_SIZES,
    "bbox": tuple(name for name in DETECTION_SIZES if name.startswith("bbox_")),
    "segm": tuple(name for name in DETECTION_SIZES if name.startswith("segm_")),
}
METRICS = tuple(dict.fromkeys(choice for selections in TASK_SELECTIONS.values() for choice in selections))
# metric key -> its column of collect(); the CSV names its columns after it
SOURCE = {"top1": "top1_err", "top5": "top5_err", "best_top1": "best_top1_err", "best_top5": "best_top5_err"}
SOURCE |= {name: name for name in TASK_METRICS["detection"]}
SOURCE |= {f"best_{name}": f"best_{name}" for name in TASK_METRICS["detection"]}
COLUMN = {
    "top1": "top-1 err (%)",
    "top5": "top-5 err (%)",
    "best_top1": "best-epoch top-1 err (%)",
    "best_top5": "best-epoch top-5 err (%)",
}
COLUMN |= {name: REGISTRY[name].title for name in TASK_METRICS["detection"]}
COLUMN |= {f"best_{name}": f"best-epoch {REGISTRY[name].title}" for name in TASK_METRICS["detection"]}
# metric key -> the registry's metric it is a value of (the best epoch's values count as the metric itself)
BASE_METRIC = {key: REGISTRY[source.removeprefix("best_")] for key, source in SOURCE.items()}
NO_BASELINE = "none"
ERROR_METRICS = ("top1_err", "top5_err")  # percentages of the validation images: their resolution is 100 / images
# per metric m, summarize() has the columns m_<part>
PARTS = (
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_better",
    "significant",
    "paired",
    "best",
)


def resolve_baseline(manifest: Manifest, choice: str | int | None = None) -> int | None:
    """The index of the baseline cell: a cell label, a baseline name or a cell index; None picks the first cell of
    kind "baseline" (if any); "none" means no baseline. Unknown choices raise a UsageError listing the valid ones."""
    return _baseline(check_manifest(manifest), choice)


def _baseline(cells: list[dict], choice: str | int | None) -> int | None:
    if choice is None:
        return next((cell["index"] for cell in cells if cell.get("kind") == "baseline"), None)
    text = str(choice).strip()
    if text.lower() == NO_BASELINE:
        return None
    if text.lstrip("-").isdigit():
        for cell in cells:
            if cell["index"] == int(text):
                return cell["index"]
    for key in ("name", "label"):
        for cell in cells:
            if isinstance(cell.get(key), str) and cell[key].casefold() == text.casefold():
                return cell["index"]
    names = [cell["name"] for cell in cells if isinstance(cell.get("name"), str)]
    labels = [repr(cell.get("label")) for cell in cells]
    shown = ", ".join(labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
    indices = f"{cells[0]['index']}..{cells[-1]['index']}" if cells else "none"
    raise UsageError(
        f"--baseline {text!r} is not a cell of this sweep; give a baseline name ({', '.join(names) or 'none here'}), "
        f"a cell label ({shown or 'none here'}), a cell index ({indices}) or {NO_BASELINE}"
    )


def _key(seed, run_id: str):
    """The pairing key of a run: its seed; a run without a usable seed is keyed by its id, so it is never paired."""
    if isinstance(seed, numbers.Real) and not isinstance(seed, bool) and math.isfinite(seed) and seed == int(seed):
        return int(seed)
    return f"run {run_id}"


def _samples(done: pd.DataFrame, metrics: tuple[str, ...]) -> dict[int, dict[str, dict]]:
    """cell -> metric -> {seed: value} over the done runs (a repeated seed is keyed by the run's id)."""
    samples: dict[int, dict[str, dict]] = {}
    columns = [done[SOURCE[metric]].tolist() for metric in metrics]
    cells, seeds, run_ids = done["cell"].tolist(), done["seed"].tolist(), done["run_id"].tolist()
    for row, (cell, seed, run_id) in enumerate(zip(cells, seeds, run_ids, strict=True)):
        per_metric = samples.get(cell)
        if per_metric is None:
            per_metric = samples[int(cell)] = {metric: {} for metric in metrics}
        key = seed if type(seed) is int else _key(seed, run_id)
        if metrics and key in per_metric[metrics[0]]:
            key = f"run {run_id}"
        for metric, values in zip(metrics, columns, strict=True):
            per_metric[metric][key] = values[row]
    return samples


def _resolutions(done: pd.DataFrame) -> dict[int, float]:
    """cell -> the step of its top-1 / top-5 error in points (100 / the validation images), where all its done runs
    recorded one validation size; cells without it have no floor on their intervals."""
    sizes = done.groupby("cell", sort=False)["val_images"]
    low, high, counted, runs = sizes.min(), sizes.max(), sizes.count(), sizes.size()
    one = (counted == runs) & (low == high) & (low > 0)  # every done run recorded it, and the same size
    return {int(cell): 100.0 / size for cell, size in zip(low.index[one].tolist(), low[one].tolist(), strict=True)}


class _Rules:
    """What every interval and mark of a table obeys: the CI method, the minimum seeds for a mark, the metric's
    range and, for errors, each cell's resolution."""

    def __init__(self, method: str, min_n: int, resolutions: dict[int, float]) -> None:
        self.method, self.min_n, self.resolutions = method, min_n, resolutions

    def resolution(self, metric: str, *cells: int) -> float | None:
        if BASE_METRIC[metric].name not in ERROR_METRICS:
            return None
        found = {self.resolutions.get(cell) for cell in cells}
        return found.pop() if len(found) == 1 else None

    def estimate(self, samples: list, metric: str, cells: list[int]) -> list:
        """estimate() of each cell's values, with that cell's resolution."""
        steps = [self.resolution(metric, cell) for cell in cells]
        return estimate_many(samples, method=self.method, resolutions=steps, bounds=METRIC_RANGE)

    def compare(self, samples: list[dict], reference: dict, metric: str, cells: list[int], other: int) -> list:
        """compare() of each cell's values against the other cell's (seed -> value)."""
        lower = BASE_METRIC[metric].lower_is_better
        return compare_many(
            samples,
            reference,
            lower_is_better=lower,
            method=self.method,
            min_n=self.min_n,
            resolutions=[self.resolution(metric, cell, other) for cell in cells],
            bounds=METRIC_RANGE,
        )


def _metric_columns(indices: list[int], samples: dict, metric: str, base: int | None, rules: _Rules) -> dict:
    """The columns m_n .. m_paired of one metric: estimate() per cell, compare() against the baseline."""
    reference = samples.get(base, {}).get(metric) if base is not None else None
    per_cell = [samples.get(index, {}).get(metric, {}) for index in indices]
    estimates = rules.estimate([sample.values() for sample in per_cell], metric, indices)
    compared = [
        position
        for position, (index, sample) in enumerate(zip(indices, per_cell, strict=True))
        if sample and reference and index != base
    ]
    found = rules.compare(
        [per_cell[p] for p in compared], reference or {}, metric, [indices[p] for p in compared], base
    )
    against: list = [None] * len(indices)
    for position, comparison in zip(compared, found, strict=True):
        against[position] = comparison
    columns: dict[str, list] = {part: [] for part in PARTS[:-1]}
    for cell, comparison in zip(estimates, against, strict=True):
        figures = (cell.n, cell.mean, cell.std, cell.ci_low, cell.ci_high)
        if comparison is None:
            figures += (NAN, NAN, NAN, NAN, False, None)
        else:
            figures += (comparison.diff, comparison.ci_low, comparison.ci_high, comparison.p_better)
            figures += (comparison.significant, comparison.paired)
        for part, value in zip(PARTS[:-1], figures, strict=True):
            columns[part].append(value)
    return columns


def _best(table: pd.DataFrame, samples: dict, metric: str, rules: _Rules) -> list[bool]:
    """Bold: the best mean (the lowest error, the highest AP) among complete cells with at least min_n runs (3 by
    default), and each such cell whose difference to it (compare(), paired by seed) is not significantly worse
    (above 0 for an error, below 0 for AP). Nothing when no cell has min_n runs."""
    lower = BASE_METRIC[metric].lower_is_better
    candidates = (table["complete"] & (table[f"{metric}_n"] >= rules.min_n)).tolist()
    means = table[f"{metric}_mean"].where(candidates)
    if not means.notna().any():
        return [False] * len(table)
    best = int(table.at[means.idxmin() if lower else means.idxmax(), "index"])
    indices = table["index"].tolist()
    others = [index for index, candidate in zip(indices, candidates, strict=True) if candidate and index != best]
    found = rules.compare([samples[index][metric] for index in others], samples[best][metric], metric, others, best)
    against = dict(zip(others, found, strict=True))
    marks = []
    for index, candidate in zip(indices, candidates, strict=True):
        if not candidate or index == best:
            marks.append(candidate)
            continue
        worse = against[index].diff > 0 if lower else against[index].diff < 0
        marks.append(not (against[index].significant and worse))
    return marks


def _cells(cells: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": pd.Series([cell["index"] for cell in cells], dtype="int64"),
            "method": [cell.get("label") or f"cell {cell['index']}" for cell in cells],
            "kind": [cell.get("kind") for cell in cells],
            "name": [cell.get("name") for cell in cells],
            "runs": pd.Series([len(cell["runs"]) for cell in cells], dtype="int64"),
        }
    )


def _task_keys(task: str, metrics: tuple[str, ...] | None) -> tuple[str, ...]:
    """The metric keys of a summary: the task's default selection, or the given keys when the task reports them."""
    if metrics is None:
        return TASK_SELECTIONS[task][DEFAULT_SELECTION[task]]
    valid = [key for key in SOURCE if task_of_metric(BASE_METRIC[key].name) == task]
    if unknown := [metric for metric in metrics if metric not in valid]:
        raise UsageError(f"metric {unknown[0]!r}: this {task} sweep's metrics are keys among {', '.join(valid)}")
    return tuple(metrics)


def summarize(
    manifest: Manifest,
    runs: pd.DataFrame | None = None,
    baseline: str | int | None = None,
    *,
    metrics: tuple[str, ...] | None = None,
    ci: str = "t",
    convergence: dict | None = None,
    min_seeds: int = MIN_MARK_N,
) -> pd.DataFrame:
    """One row per cell in manifest order: index, method, kind, name, runs, done, failed, complete, is_baseline,
    params_m, macs_g, not_converged, convergence_unknown and, per metric m of `metrics` (keys of SOURCE the sweep's
    task reports: top1, top5, best_top1, best_top5 for classification; bbox_ap, ..., segm_ap_l, best_bbox_ap, ... for
    detection; None: the task's default selection), the columns m_<part> for each part of PARTS: n, mean, std
    (ddof=1), the CI of the mean, the difference against the baseline with its CI, p_better (of the metric's
    direction), significant and paired (NaN / False on the baseline row and without a baseline), and best (bold).
    ci: "t" or "bootstrap"; convergence: overrides of the manifest's settings."""
    cells = check_manifest(manifest)
    base = _baseline(cells, baseline)
    if ci not in METHODS:
        raise UsageError(f"ci {ci!r}: choose one of {', '.join(METHODS)}")
    task = sweep_task(manifest)
    metrics = _task_keys(task, metrics)
    settings = convergence_settings(manifest, convergence)
    runs = collect_checked(manifest, cells) if runs is None else runs
    done = runs[runs["state"] == "done"]
    per_cell = done.groupby("cell", sort=False).agg(
        done=("run_id", "size"), params=("params", "first"), macs=("macs", "first")
    )
    failed = runs[runs["state"].isin(("failed", "corrupt"))].groupby("cell", sort=False).size().rename("failed")
    table = _cells(cells).join(per_cell, on="index").join(failed, on="index")
    table = table.join(convergence_flags(done, settings, task), on="index")
    for count in ("done", "failed", "not_converged", "convergence_unknown"):
        table[count] = table[count].fillna(0).astype("int64")
    table["complete"] = (table["done"] == table["runs"]) & (table["runs"] > 0)
    table["is_baseline"] = table["index"] == base
    table["params_m"] = table.pop("params") / 1e6
    table["macs_g"] = table.pop("macs") / 1e9
    samples = _samples(done, metrics)
    rules = _Rules(ci, min_seeds, _resolutions(done))
    indices = table["index"].tolist()
    blocks = []  # one frame of columns per metric, joined at once (a dozen AP metrics make 144 columns)
    for metric in metrics:
        columns = _metric_columns(indices, samples, metric, base, rules)
        block = pd.DataFrame({f"{metric}_{part}": values for part, values in columns.items()}, index=table.index)
        block[f"{metric}_n"] = block[f"{metric}_n"].astype("int64")
        frame = pd.concat([table[["index", "complete"]], block], axis=1)
        block[f"{metric}_best"] = _best(frame, samples, metric, rules)
        blocks.append(block)
    table = pd.concat([table, *blocks], axis=1)
    order = ["index", "method", "kind", "name", "runs", "done", "failed", "complete", "is_baseline"]
    order += ["params_m", "macs_g", "not_converged", "convergence_unknown"]
    return table[order + [f"{metric}_{part}" for metric in metrics for part in PARTS]]
