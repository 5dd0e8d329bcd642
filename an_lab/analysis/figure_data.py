"""The numbers behind a sweep's figures, read from the run directories without torch or matplotlib.

Each cell's done runs and their final value of the sweep's primary metric (an_lab.metrics.primary of its task: the
top-1 error for classification, AP^bb for detection), with the 95% confidence interval of the mean over seeds
(Student t, from an_lab.stats.estimate) and every seed's value:

- cell_stats: one CellStats per cell (values in seed order, their estimate, the parameter count),
- axis_groups: the cells grouped by the keys they change against the base cell (AxisGroup of Bar), and the baselines
  (Reference): what error_by_axis draws,
- curve_estimates / cell_curves: the validation metric per epoch and cell, its mean and CI across seeds (val_curves),
- scatter_points: parameters against the final metric, one Point per cell (params_vs_error).

an_lab.analysis.figure_draw draws them, an_lab.analysis.plots writes the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from an_lab.analysis.results import check_manifest, collect, primary_metric
from an_lab.metrics import METRIC_RANGE
from an_lab.rundir import epoch_metrics
from an_lab.stats import NAN, Estimate, estimate
from an_lab.sweeps.records import Manifest


@dataclass(frozen=True)
class CellStats:
    """The done runs of one cell: their final values of the sweep's primary metric (top-1 error or AP^bb, in %) in
    seed order and what an_lab.stats.estimate makes of them (n, mean, std, 95% CI of the mean; NaN where there are
    too few runs); params_m from the first done run."""

    cell: int
    label: str
    kind: str | None
    runs: int
    done: int
    values: tuple[float, ...]
    estimate: Estimate
    params_m: float


def cell_stats(manifest: Manifest, runs: pd.DataFrame | None = None) -> dict[int, CellStats]:
    """One CellStats per cell of the manifest, by cell index, in manifest order."""
    cells = check_manifest(manifest)
    runs = collect(manifest) if runs is None else runs
    done = runs[runs["state"] == "done"]
    column = primary_metric(manifest).name
    stats = {}
    for cell in cells:
        members = done[done["cell"] == cell["index"]]
        values = tuple(float(value) for value in members[column] if math.isfinite(value))
        params = [float(value) for value in members["params"] if math.isfinite(value)]
        stats[cell["index"]] = CellStats(
            cell["index"],
            cell.get("label") or f"cell {cell['index']}",
            cell.get("kind"),
            len(cell["runs"]),
            len(members),
            values,
            estimate(values, method="t", bounds=METRIC_RANGE),
            params[0] / 1e6 if params else NAN,
        )
    return stats


@dataclass(frozen=True)
class Bar:
    """One cell in an axis panel (drawn as a dot with its CI, see figure_draw): the final values of the primary
    metric of its done runs (values), their mean, std and 95% CI of the mean (NaN when there are too few runs)."""

    cell: int
    value: str
    label: str
    mean: float
    std: float
    done: int
    runs: int
    is_base: bool = False
    ci_low: float = NAN
    ci_high: float = NAN
    values: tuple[float, ...] = ()

    @property
    def complete(self) -> bool:
        return self.runs > 0 and self.done == self.runs

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class AxisGroup:
    """The cells that change the same keys against the base cell; the base cell comes first."""

    name: str
    keys: tuple[str, ...]
    bars: list[Bar] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """A baseline cell: a horizontal line at its mean, its CI as a band, and a dot in the baselines panel."""

    cell: int
    label: str
    mean: float
    done: int
    runs: int
    std: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN
    values: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)


def _short(key: str) -> str:
    return key.rpartition(".")[2]


def _shown(value) -> str:
    if isinstance(value, list | tuple):
        return "(" + ",".join(str(item) for item in value) + ")"
    return str(value)


def _tag_values(cell: dict) -> dict[str, str]:
    values = {}
    for tag in cell.get("tags") or []:
        name, sep, value = str(tag).partition("=")
        if sep:
            values.setdefault(name, value)
    return values


def _value_text(cell: dict, keys: tuple[str, ...], fallback: str) -> str:
    """What the cell sets on these keys, as its tags write it (`mean`, `(5,5,10)`)."""
    tags = _tag_values(cell)
    changes = cell.get("changes") or {}
    parts = []
    for key in keys:
        if _short(key) in tags:
            parts.append(tags[_short(key)])
        elif key in changes:
            parts.append(_shown(changes[key]))
    return ", ".join(parts) if parts else fallback


def axis_groups(manifest: Manifest, runs: pd.DataFrame | None = None) -> tuple[list[AxisGroup], list[Reference]]:
    """(one group per set of changed keys in manifest order, the baseline cells).

    Axes come from the cells' `changes`: cells changing the same keys form one group, named by the keys' last parts
    ("pooling", "k"). The base cell (the first non-baseline cell without changes) opens every group. Baseline cells
    (kind "baseline") form no group. Without any changed keys, one group "cell" holds every non-baseline cell."""
    cells = check_manifest(manifest)
    stats = cell_stats(manifest, runs)

    def bar(cell: dict, value: str, is_base: bool = False) -> Bar:
        found = stats[cell["index"]]
        e = found.estimate
        return Bar(
            found.cell,
            value,
            found.label,
            e.mean,
            e.std,
            found.done,
            found.runs,
            is_base,
            e.ci_low,
            e.ci_high,
            found.values,
        )

    references = [
        Reference(b.cell, b.label, b.mean, b.done, b.runs, b.std, b.ci_low, b.ci_high, b.values)
        for b in (bar(cell, "") for cell in cells if cell.get("kind") == "baseline")
    ]
    designs = [cell for cell in cells if cell.get("kind") != "baseline"]
    base = next((cell for cell in designs if not cell.get("changes")), None)
    keyed: dict[tuple[str, ...], list[dict]] = {}
    for cell in designs:
        if cell is not base and cell.get("changes"):
            keyed.setdefault(tuple(sorted(cell["changes"])), []).append(cell)
    groups = []
    for keys, members in keyed.items():
        name = " + ".join(_short(key) for key in keys)
        bars = [bar(base, _value_text(base, keys, "base"), True)] if base is not None else []
        bars += [bar(cell, _value_text(cell, keys, f"cell {cell['index']}")) for cell in members]
        groups.append(AxisGroup(name, keys, bars))
    if not groups and designs:
        bars = [bar(cell, cell.get("label") or f"cell {cell['index']}", cell is base) for cell in designs]
        groups.append(AxisGroup("cell", (), bars))
    return groups, references


def curve_estimates(manifest: Manifest, runs: pd.DataFrame | None = None) -> dict[int, list[tuple[int, Estimate]]]:
    """Per cell with done runs: [(epoch, estimate of the primary validation metric (val_top1_err, val_bbox_ap) over
    the done runs that logged that epoch)], by epoch: n, the mean curve and its 95% CI across seeds (NaN where a
    single run logged the epoch)."""
    check_manifest(manifest)
    runs = collect(manifest) if runs is None else runs
    root = Path(manifest["output_dir"])
    column = primary_metric(manifest).logged
    curves: dict[int, list[tuple[int, Estimate]]] = {}
    for cell, members in runs[runs["state"] == "done"].groupby("cell", sort=False):
        per_epoch: dict[int, list[float]] = {}
        for run_id in members["run_id"]:
            for row in epoch_metrics(root / run_id):
                value = row.get(column)
                if value is not None and math.isfinite(value):
                    per_epoch.setdefault(int(row["epoch"]) + 1, []).append(value)  # counted from 1, as people do
        if per_epoch:
            curves[int(cell)] = [
                (epoch, estimate(v, method="t", bounds=METRIC_RANGE)) for epoch, v in sorted(per_epoch.items())
            ]
    return curves


def cell_curves(manifest: Manifest, runs: pd.DataFrame | None = None) -> dict[int, list[tuple[int, float]]]:
    """Per cell with done runs: [(epoch, mean of the primary validation metric over the done runs that logged that
    epoch)], by epoch."""
    curves = curve_estimates(manifest, runs)
    return {cell: [(epoch, e.mean) for epoch, e in points] for cell, points in curves.items()}


@dataclass(frozen=True)
class Point:
    cell: int
    label: str
    params_m: float
    mean: float
    std: float
    done: int
    runs: int
    kind: str | None
    ci_low: float = NAN
    ci_high: float = NAN
    values: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)


def scatter_points(manifest: Manifest, runs: pd.DataFrame | None = None) -> list[Point]:
    """One point per cell with done runs and a known parameter count: (params in millions, mean of the primary
    metric), with its CI and the seeds' values."""
    points = []
    for found in cell_stats(manifest, runs).values():
        e = found.estimate
        if found.done and math.isfinite(found.params_m) and math.isfinite(e.mean):
            points.append(
                Point(
                    found.cell,
                    found.label,
                    found.params_m,
                    e.mean,
                    e.std,
                    found.done,
                    found.runs,
                    found.kind,
                    e.ci_low,
                    e.ci_high,
                    found.values,
                )
            )
    return points
