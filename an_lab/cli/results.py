"""`an-lab table | plot | report | sync`: results of a sweep, read from its result files (no torch)."""

from __future__ import annotations

import argparse
import sys

from an_lab.cli.commands import add_set, add_sweep, command
from an_lab.errors import UsageError


def _table_arguments(parser: argparse.ArgumentParser) -> None:
    add_sweep(parser)
    parser.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv", "html"))
    parser.add_argument(
        "--metric",
        default=None,
        choices=("top1", "top5", "both", "best", "best_top1", "best_top5", "ap", "bbox", "segm", "ap_all", "primary"),
        help="columns, by the sweep's task. Classification (error, lower is better): the final epoch's top1, top5 or "
        "both (default); best: the best epoch's top-1 beside the final top-1; best_top1 / best_top5: the best "
        "epoch's only. Detection (COCO AP, higher is better): ap (default): AP^bb, AP^bb_50, AP^bb_75, AP^m, "
        "AP^m_50, AP^m_75; bbox / segm: the box or mask three; ap_all: all twelve with the size splits; best: the "
        "best evaluation's AP^bb beside the final one. primary: the task's primary metric alone (top-1 error, "
        "AP^bb)",
    )
    parser.add_argument(
        "--ci",
        default="t",
        choices=("t", "bootstrap"),
        help="95%% confidence intervals: Student t (default) or BCa bootstrap (fixed random state: reproducible)",
    )
    parser.add_argument(
        "--detail",
        action="store_true",
        help="one row per cell and metric: n, mean, std, CI, diff, its CI, P(better); for detection also the size "
        "splits (AP_S, AP_M, AP_L) of the AP shown",
    )
    parser.add_argument(
        "--converged-loss",
        default=None,
        metavar="X",
        help="flag runs whose final train loss is above X (default: the sweep's convergence.train_loss_max; none: off)",
    )
    parser.add_argument(
        "--val-drop",
        default=None,
        metavar="D",
        help="flag runs whose primary validation metric still improved by more than D points over their last "
        "epochs: a top-1 error that fell, an AP^bb that rose (default: the sweep's convergence.val_drop_max, 1; "
        "none: off)",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="CELL",
        help="cell label, baseline name (bn) or cell index to compare against; 'none' for no brackets "
        "(default: the first baseline cell)",
    )
    parser.add_argument(
        "--min-seeds",
        type=int,
        default=3,
        metavar="N",
        help="seeds a side below which no difference is marked * and no cell bold (default 3; at least 2)",
    )
    add_set(parser, "override a key of a sweep file, repeatable")


@command(
    "table",
    _table_arguments,
    help="results table of a sweep: mean ± std over seeds per cell, differences with 95%% CIs",
    description=(
        "One row per cell as the paper's Table 1 names it: #Params and MACs (units chosen per column), the final "
        "metrics of the sweep's task (classification: top-1 / top-5 error; detection: COCO AP^bb and AP^m) as mean "
        "± std over the seeds done (sample std), the seeds done, and the difference "
        "against the baseline in brackets (paper Table 2), paired by seed where the cells share at least 2 seeds, "
        "else Welch; * marks a difference whose 95% CI excludes 0, from at least 3 seeds a side (--min-seeds). "
        "Bold: the best mean (lowest error, highest AP) among complete cells with at least that many runs and every "
        "cell not significantly worse than it. Intervals stay within [0, 100] and are never narrower than the "
        "error's step (100 / validation images); the bootstrap needs 8 values (t below). A single run "
        "shows n=1 and is never "
        "marked. Incomplete cells show the mean of their done runs with a dagger (failed runs count as not "
        "done); a double dagger marks runs not converged (the sweep's convergence settings). --detail shows every "
        "figure (n, mean, std, CI, difference, its CI, P(better)); the CSV always has them. Reads result files "
        "only."
    ),
)
def _cmd_table(args: argparse.Namespace) -> int:

    from an_lab.analysis.convergence import parse_threshold
    from an_lab.analysis.table import render_table
    from an_lab.sweep_folder import read_folder, say_pending

    if args.min_seeds < 2:
        raise UsageError(f"--min-seeds {args.min_seeds}: give 2 or more (a difference needs 2 seeds for a CI)")
    manifest = read_folder(args.sweep, args.set)  # a sweep folder is read without importing the sweep files' schema
    if manifest is None:
        from an_lab.sweeps.manifest import load_manifest

        manifest = load_manifest(args.sweep, args.set)
    else:
        say_pending(manifest)
    convergence = {}
    if args.converged_loss is not None:
        convergence["train_loss_max"] = parse_threshold(args.converged_loss, "--converged-loss")
    if args.val_drop is not None:
        convergence["val_drop_max"] = parse_threshold(args.val_drop, "--val-drop")
    text = render_table(
        manifest,
        args.format,
        metric=args.metric,
        baseline=args.baseline,
        ci=args.ci,
        detail=args.detail,
        convergence=convergence,
        min_seeds=args.min_seeds,
    )
    sys.stdout.write(text)
    return 0


def _plot_arguments(parser: argparse.ArgumentParser) -> None:
    add_sweep(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="figure folder (default: <sweep folder>/figures)")
    add_set(parser, "override a key of a sweep file, repeatable")


@command(
    "plot",
    _plot_arguments,
    help="figures of a sweep (PNG, PDF, SVG): its primary metric per design choice, validation curves, parameters",
    description=(
        "Write the figures of a sweep's finished runs, each as PNG, PDF and SVG, and print every path: the final "
        "primary metric (top-1 error, or AP^bb for detection) per design choice grouped by axis (the paper's Figure "
        "1 style, as a dot plot; baselines dashed), its validation value per epoch per cell, and parameters against "
        "it. Error bars and bands "
        "are 95% CIs of the mean over seeds (Student t), every seed is drawn as a point and n is shown per cell; "
        "incomplete cells are marked. Reads result files only."
    ),
)
def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from an_lab.analysis.plots import plot_sweep

    manifest, folder = results_target(args)
    for path in plot_sweep(manifest, Path(args.out) if args.out else folder / "figures"):  # PNG, PDF, SVG per figure
        print(path)
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    add_sweep(parser)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--wandb", action="store_true", help="a W&B report")
    kind.add_argument("--html", action="store_true", help="a self-contained HTML summary page")
    parser.add_argument("--out", default=None, metavar="FILE", help="where to write the page or the report's spec")
    parser.add_argument("--entity", default=None, help="W&B entity (default: WANDB_ENTITY or the runs' config)")
    parser.add_argument("--project", default=None, help="W&B project (default: WANDB_PROJECT, the runs' or an-lab)")
    parser.add_argument("--publish", action="store_true", help="save the report to W&B now (needs a network)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S", help="bound on publishing (s)")
    parser.add_argument("--baseline", default=None, metavar="CELL", help="baseline of the results table (see table)")
    add_set(parser, "override a key of a sweep file, repeatable")


@command(
    "report",
    _report_arguments,
    help="a W&B report (--wandb) or a self-contained HTML page (--html) of a sweep",
    description=(
        "--html: one HTML file with the results table, the figures (embedded) and the runs, no external files "
        "(default <sweep folder>/summary.html). --wandb: a W&B report (wandb-workspaces) of the sweep's runs "
        "grouped by cell, with curves, a bar chart of the final error and the results table; without W&B access "
        "(WANDB_MODE=offline or no API key) its specification is written to a file (default <sweep folder>/"
        "wandb-report.json) to publish later with --publish; with access it is published and its URL printed."
    ),
)
def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.publish and not args.wandb:
        raise UsageError("--publish goes with --wandb")
    if args.html and (args.entity or args.project or args.publish):
        raise UsageError("--entity, --project and --publish go with --wandb, not with --html")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    manifest, folder = results_target(args)
    if args.html:
        from an_lab.analysis.html import write_summary

        path = write_summary(manifest, Path(args.out) if args.out else folder / "summary.html", baseline=args.baseline)
        print(f"summary page: {path} (self-contained; open it in a browser)")
        return 0
    import importlib.util

    if importlib.util.find_spec("wandb_workspaces") is None:
        raise UsageError("W&B reports need wandb-workspaces: pip install wandb-workspaces")
    from an_lab.analysis.wandb_report import (
        offline_reason,
        publish_command,
        publish_report,
        resolve_target,
        write_report_spec,
    )

    entity, project = resolve_target(manifest, args.entity, args.project)
    spec = Path(args.out) if args.out else folder / "wandb-report.json"
    write_report_spec(manifest, spec, entity, project, sweep=args.sweep, baseline=args.baseline)
    later = publish_command(args.sweep, entity, project)
    reason = offline_reason()
    if reason and not args.publish:
        print(f"W&B report specification written to {spec} (not published: {reason})")
        print(f"publish it when online with: {later}")
        return 0
    try:
        url = publish_report(manifest, entity, project, timeout=args.timeout, baseline=args.baseline)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        print(f"the report's specification is in {spec}; publish it when online with: {later}", file=sys.stderr)
        return 1
    print(f"W&B report: {url}")
    return 0


def _sync_arguments(parser: argparse.ArgumentParser) -> None:
    add_sweep(parser)
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="bound per run folder (default: 60 s)")
    add_set(parser, "override a key of a sweep file, repeatable")


@command(
    "sync",
    _sync_arguments,
    help="upload the offline W&B data of a sweep's runs (wandb sync), each call time-bounded",
    description=(
        "Run `wandb sync` on every offline W&B run folder of the sweep's runs, each call stopped after --timeout "
        "seconds, and report per run: synced, already synced, failed, timed out or not synced (offline). Exits 1 "
        "when a run is left unsynced (for example without a network or API key)."
    ),
)
def _cmd_sync(args: argparse.Namespace) -> int:
    from an_lab.analysis.wandb_report import sync_sweep

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    manifest, _ = results_target(args)
    labels = {
        run["run_id"]: cell.get("label") or f"cell {cell['index']}"
        for cell in manifest["cells"]
        for run in cell["runs"]
    }

    def show(outcome) -> None:
        if outcome.status == "not synced (offline)":
            return  # the same reason for every run: said once, below
        where = f" {outcome.folder.name}" if outcome.folder is not None else ""
        detail = f": {outcome.detail}" if outcome.detail else ""
        print(f"{labels[outcome.run_id]} [{outcome.run_id}]{where}: {outcome.status}{detail}", flush=True)

    outcomes = sync_sweep(manifest, timeout=args.timeout, report=show)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print(", ".join(f"{count} {status}" for status, count in counts.items()) or "no runs")
    offline = [outcome.detail for outcome in outcomes if outcome.status == "not synced (offline)"]
    if offline:
        print(f"error: cannot sync without W&B: {offline[0]}; the offline runs stay on disk", file=sys.stderr)
        return 1
    if counts.get("failed") or counts.get("timed out"):
        print("error: some runs were not synced (see above); rerun `an-lab sync` to retry them", file=sys.stderr)
        return 1
    return 0


def results_target(args: argparse.Namespace):
    """(manifest, the sweep's folder <output_dir>/sweeps/<name>/) for plot, report and sync."""
    from an_lab.sweep_folder import target_folder
    from an_lab.sweeps.manifest import load_manifest

    manifest = load_manifest(args.sweep, args.set)
    return manifest, target_folder(args.sweep, manifest)
