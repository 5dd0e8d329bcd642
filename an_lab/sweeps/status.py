"""`an-lab status`: the state of every run of a sweep, read from the run directories (no daemon, no torch)."""

from __future__ import annotations

import contextlib
import shlex
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from an_lab.launch.registry import job_records
from an_lab.metrics import METRIC_RANGE, METRICS, Metric, manifest_task, primary
from an_lab.rundir import CONFIG, read_json, read_runs, trained_iterations, validated_epochs
from an_lab.sweep_folder import sweep_folder
from an_lab.sweeps.journal import JOURNAL, lock_note
from an_lab.sweeps.manifest import run_dirs
from an_lab.sweeps.plan import align, state_text
from an_lab.sweeps.records import Manifest, RunRow

if TYPE_CHECKING:  # an_lab.stats imports numpy (0.1 s): status imports it once there are results to estimate
    from an_lab.stats import Estimate


def sweep_metric(manifest: Manifest) -> Metric:
    """The metric status ranks cells by: the primary metric of the sweep's task (its base config's)."""
    return primary(manifest_task(manifest))


def run_rows(manifest: Manifest) -> list[RunRow]:
    """One row per run: cell, seed, run id, state, detail, and under the name of the sweep's primary metric
    (top1_err, bbox_ap) its final value when done."""
    root = Path(manifest["output_dir"])
    metric = sweep_metric(manifest)
    found = read_runs(root, [run["run_id"] for cell in manifest["cells"] for run in cell["runs"]])
    rows = []
    for cell in manifest["cells"]:
        for run in cell["runs"]:
            current, detail, result = next(found)
            if current == "running":
                detail = "; ".join(filter(None, (epoch_reached(root / run["run_id"]), detail)))
            rows.append(
                {
                    "cell": cell["label"],
                    "cell_index": cell["index"],
                    "seed": run["seed"],
                    "run_id": run["run_id"],
                    "state": current,
                    "detail": detail,
                    metric.name: result["final"].get(metric.name) if result else None,
                }
            )
    return rows


def progress_of(
    directory: Path, epochs: int, started_at: float, now: float, *, iterations: bool = False
) -> tuple[int, float | None, float | None]:
    """(epochs done, or iterations for a detection run, the last value of the primary validation metric, seconds
    left estimated from the epochs or iterations done so far): what a running run's folder says of its progress, for
    `status` (epoch_reached) and the live display."""
    reached, value = validated_epochs(directory)
    if iterations:
        reached = trained_iterations(directory)
    if not reached:
        return 0, value, None
    left = (now - started_at) / reached * max(0, epochs - reached)
    return reached, value, left


def epoch_reached(directory: Path) -> str | None:
    """`epoch 3/15` for a running run: the epochs its metrics log holds, of its config's epochs."""
    config = read_json(directory / CONFIG) or {}
    trainer = (config.get("trainer") or {}) if isinstance(config, dict) else {}
    detection = config.get("task") == "detection"  # it counts iterations (its epochs: stretches between checkpoints)
    reached, _, _ = progress_of(directory, 0, 0.0, 0.0, iterations=detection)
    if detection:
        return f"iteration {reached}/{trainer.get('iterations') or '?'}"
    epochs = trainer.get("epochs")
    if not reached:
        return f"epoch 0/{epochs}" if epochs else None
    return f"epoch {reached}/{epochs or '?'}"


def scheduler_view(manifest: Manifest, rows: list[RunRow]) -> list[str]:
    """Refine the rows of runs submitted to a scheduler with its view of their jobs (each scheduled executor's
    records: an_lab.launch.registry.RECORDS; SLURM: one squeue and one sacct call for the runs that are not done);
    returns notes to print."""
    directories: dict[str, Path] = {}

    def progress(run_id: str) -> str | None:
        if not directories:
            directories.update(run_dirs(manifest))
        return epoch_reached(directories[run_id])

    notes: list[str] = []
    for records in job_records():
        notes += records.refine(sweep_folder(manifest), rows, progress)
    return notes


def best_cells(rows: list[RunRow], metric: Metric = METRICS["top1_err"]) -> tuple[list[str], Estimate] | None:
    """(labels, estimate of the metric's final value) of the cell with the best mean over its finished runs (the
    lowest error, the highest AP), with every cell whose mean ties it (to 1e-9 points)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        if row.get(metric.name) is not None:
            values.setdefault(row["cell"], []).append(row[metric.name])
    if not values:
        return None
    means = {cell: statistics.fmean(found) for cell, found in values.items()}
    best = min(means.values()) if metric.lower_is_better else max(means.values())
    labels = [cell for cell, mean in means.items() if abs(mean - best) <= 1e-9]
    from an_lab import stats

    return labels, stats.estimate(values[labels[0]], bounds=METRIC_RANGE)


def _best_line(rows: list[RunRow], metric: Metric = METRICS["top1_err"]) -> str | None:
    found = best_cells(rows, metric)
    final = all(row.get("state") == "done" for row in rows)
    if found is None:
        return None
    labels, estimate = found
    label = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]} tied"
    spread = (
        f"n={estimate.n}, 95% CI {estimate.ci_low:.2f} to {estimate.ci_high:.2f}" if estimate.n > 1 else "n=1, no CI"
    )
    best = "lowest" if metric.lower_is_better else "highest"
    return (
        f"{best} mean{'' if final else ' so far'}: {label} at {metric.value_text(estimate.mean)} {metric.phrase} "
        f"({spread}); "
        "whether it is better than the others: `an-lab table` (differences with their CIs)"
    )


def render_status(manifest: Manifest, rows: list[RunRow]) -> str:
    metric = sweep_metric(manifest)
    table = [("cell", "seed", "run id", metric.label, "state")]
    for row in rows:
        value = row.get(metric.name)
        shown = f"{value:.2f}" if value is not None else ""
        table.append((row["cell"], str(row["seed"]), row["run_id"], shown, state_text(row["state"], row["detail"])))
    counts = Counter(row["state"] for row in rows)
    names = ("done", "running", "requeued", "interrupted", "failed", "corrupt", "stuck", "pending")
    shown = [name for name in names if name not in ("requeued", "corrupt", "stuck") or counts[name]]
    summary = ", ".join(f"{name} {counts[name]}" for name in shown)
    lines = [f"sweep {manifest['name']}: {len(rows)} runs in {manifest['output_dir']}/", "", *align(table), "", summary]
    best = _best_line(rows, metric)
    if best is not None:
        lines.append(best)
    if counts["failed"] or counts["corrupt"]:
        lines.append(f"failed and corrupt runs relaunch with: an-lab sweep {_sweep_file(manifest)} --retry-failed")
    return "\n".join(lines)


def journal_note(manifest: Manifest) -> str | None:
    """A search sweep's Optuna journal lock when it is stale or held (an_lab.sweeps.journal); else None."""
    sweep_dir = sweep_folder(manifest)
    return lock_note(sweep_dir) if (sweep_dir / JOURNAL).exists() else None


def _sweep_file(manifest: Manifest) -> str:
    """The sweep file to relaunch, as the user can type it (relative to the working directory where it lies under
    it, as a shell would complete it)."""
    recorded = str(manifest.get("sweep_file") or "SWEEP.yaml")
    with contextlib.suppress(ValueError):
        return str(Path(recorded).relative_to(Path.cwd()))
    return shlex.quote(recorded)


def orchestrator_line(manifest: Manifest) -> str | None:
    """`orchestrator: slurm 123 RUNNING` for a sweep launched with --detach (one scheduler call); else None."""
    for records in job_records():
        if (line := records.orchestrator_line(sweep_folder(manifest))) is not None:
            return line
    return None
