"""Adaptive seeds: how many seeds each cell runs, decided from the results so far (an_lab.stats).

    seeds: {min: 3, max: 10, until: {metric: top1_err, ci_halfwidth: 0.3}}
    seeds: {min: 3, max: 6, until: {metric: bbox_ap, ci_halfwidth: 0.5}}     # a detection sweep (COCO AP, points)

Every cell starts with `min` seeds. Once a cell and the reference cell (the first baseline, else the base cell) have
finished the seeds they share, the 95% CI of their paired difference is computed; while its half-width is above the
target, the cell asks for more seeds (as many as the measured spread says it needs, at least one more), up to `max`.
The reference runs every seed any cell runs, so that each difference stays paired.

The metric is a final metric of result.json that the sweep's runs report (an_lab.metrics.TASK_METRICS of their
task); without one, the task's primary metric (top1_err, bbox_ap). The half-width does not depend on which way the
metric is better, so errors and AP are treated alike.

The rule targets precision, never significance: it never stops because a difference looks significant, which would
bias the comparisons it reports (stopping when p < 0.05 makes false positives far more likely than 5%); it stops
when the interval is narrow enough to say what the difference is, whatever it turns out to be.
"""

from __future__ import annotations

from dataclasses import dataclass

from an_lab.metrics import PRIMARY, TASK_METRICS, task_of
from an_lab.rundir import CONFIG, read_result
from an_lab.sweeps.expand import PlannedRun, expand
from an_lab.sweeps.manifest import find_sweep
from an_lab.sweeps.spec import SeedPolicy, Sweep


@dataclass(frozen=True)
class CellSeeds:
    index: int
    label: str
    done: int  # seeds of this cell with a result
    wanted: int  # seeds it runs now
    most: int  # the policy's max
    halfwidth: float | None  # the CI half-width of its difference to the reference, once it can be computed
    reference: bool
    metric: str = PRIMARY["classification"]  # what the CI is of: the policy's metric, or the task's primary one


def _by_cell(runs: list[PlannedRun]) -> dict[int, list[PlannedRun]]:
    cells: dict[int, list[PlannedRun]] = {}
    for run in runs:
        cells.setdefault(run.cell.index, []).append(run)
    return cells


def _reference(cells: dict[int, list[PlannedRun]]) -> int:
    kinds = {index: runs[0].cell.kind for index, runs in cells.items()}
    for kind in ("baseline", "base"):
        for index, cell_kind in kinds.items():
            if cell_kind == kind:
                return index
    return next(iter(cells))


def target_metric(sweep: Sweep, runs: list[PlannedRun]) -> str:
    """The metric the policy's CI is of: until.metric, or the primary metric of the runs' task; a UsageError (with
    the file and line) when the runs' task does not report it."""
    task = task_of({"task": getattr(runs[0].config, "task", None)}) if runs else "classification"
    metric = sweep.spec.seeds.until.metric or PRIMARY[task]
    if metric not in TASK_METRICS[task]:
        raise sweep.error(
            f"seeds.until.metric {metric!r} is not reported by this sweep's {task} runs; choose one of "
            f"{', '.join(TASK_METRICS[task])}",
            ("seeds", "until", "metric"),
            ("seeds",),
        )
    return metric


def _values(runs: list[PlannedRun], metric: str) -> dict[int, float]:
    values = {}
    for run in runs:
        result, _ = read_result(run.run_dir)
        if result is not None and result["final"].get(metric) is not None:
            values[run.seed] = float(result["final"][metric])
    return values


def _started(runs: list[PlannedRun], minimum: int) -> int:
    """Seeds a cell has asked for so far: the minimum, or up to the last seed whose run folder was ever claimed."""
    claimed = [position for position, run in enumerate(runs) if (run.run_dir / CONFIG).exists()]
    return max(minimum, claimed[-1] + 1 if claimed else 0)


def plan_seeds(sweep: Sweep) -> tuple[dict[int, list[int]], list[CellSeeds]]:
    """(cell index -> the seeds it runs now, a summary per cell) under the sweep's adaptive policy."""
    policy = sweep.spec.seeds
    if not isinstance(policy, SeedPolicy):
        raise TypeError("plan_seeds needs a sweep with adaptive seeds")
    candidates = policy.candidates()
    planned = expand(sweep, seeds=candidates, find=find_sweep)
    metric = target_metric(sweep, planned)
    cells = _by_cell(planned)
    reference = _reference(cells)
    ref_values = _values(cells[reference], metric)
    wanted: dict[int, int] = {}
    widths: dict[int, float | None] = {}
    for index, runs in cells.items():
        count = _started(runs, policy.min)
        widths[index] = None
        if index != reference:
            count, widths[index] = _grow(runs[:count], ref_values, count, policy, metric)
        wanted[index] = count
    wanted[reference] = max([*wanted.values(), _started(cells[reference], policy.min)])
    summary = [
        CellSeeds(
            index=index,
            label=runs[0].cell.label,
            done=len(_values(runs, metric)),
            wanted=wanted[index],
            most=policy.max,
            halfwidth=widths[index],
            reference=index == reference,
            metric=metric,
        )
        for index, runs in cells.items()
    ]
    return {index: candidates[: wanted[index]] for index in cells}, summary


def _grow(runs: list[PlannedRun], ref_values: dict[int, float], count: int, policy: SeedPolicy, metric: str):
    """(seeds the cell wants, the CI half-width now): more seeds only once all its current ones and the reference's
    same seeds are done, and only while the half-width is above the target."""
    from an_lab import stats  # here, not above: numpy takes 0.1 s of `plan`, and a sweep of fixed seeds never needs it

    values = _values(runs, metric)
    seeds = [run.seed for run in runs]
    if any(seed not in values or seed not in ref_values for seed in seeds):
        return count, None  # still running: decide when they are done
    comparison = stats.compare(values, {seed: ref_values[seed] for seed in seeds})
    halfwidth = comparison.halfwidth
    if count >= policy.max:
        return count, halfwidth
    # Never stop below MIN_MARK_N seeds, nor on a zero-width interval: two near-equal differences (one validation
    # image each) or no spread at all say nothing about how wide the interval really is.
    if count < stats.MIN_MARK_N or not halfwidth > 0:
        return min(policy.max, max(count + 1, stats.MIN_MARK_N)), halfwidth
    if halfwidth <= policy.until.ci_halfwidth:
        return count, halfwidth
    needed = stats.seeds_needed(halfwidth, comparison.n, policy.until.ci_halfwidth)
    return min(policy.max, max(count + 1, needed)), halfwidth


def planned_runs(sweep: Sweep, extra: dict[int, list[int]] | None = None) -> list[PlannedRun]:
    """The runs the sweep wants now: with adaptive seeds, as many seeds per cell as its results so far call for.
    extra: more seeds of some cells (cell index -> seeds), run besides (the backbones a detection sweep needs)."""
    if isinstance(sweep.spec.seeds, SeedPolicy):
        runs = expand(sweep, plan_seeds(sweep)[0], find=find_sweep)
    else:
        runs = expand(sweep, find=find_sweep)
    if not extra:
        return runs
    seeds: dict[int, list[int]] = {}
    for run in runs:
        seeds.setdefault(run.cell.index, []).append(run.seed)
    for index, more in extra.items():
        if index in seeds:
            seeds[index] += [seed for seed in sorted(set(more)) if seed not in seeds[index]]
    return expand(sweep, seeds, find=find_sweep)


def render_seeds(summary: list[CellSeeds], policy: SeedPolicy) -> list[str]:
    """Lines for `an-lab plan`: per cell, the seeds done, wanted now and at most, and the CI half-width so far."""
    target = policy.until.ci_halfwidth
    metric = summary[0].metric if summary else policy.until.metric or "the primary metric"
    lines = [
        f"adaptive seeds: {policy.min} to {policy.max} per cell until the 95% CI of the difference in "
        f"{metric} to the reference is at most ±{target:g}"
    ]
    for cell in summary:
        width = "reference" if cell.reference else (f"±{cell.halfwidth:.2f}" if cell.halfwidth is not None else "—")
        more = cell.wanted - cell.done
        lines.append(
            f"  {cell.label}: {cell.done} done, {cell.wanted} wanted ({more} still to run), at most {cell.most}; "
            f"CI half-width {width}"
        )
    return lines
