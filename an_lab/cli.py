"""The `an-lab` command. Heavy libraries (torch, lightning, wandb) are imported inside the commands that need them,
so that --help and the bookkeeping commands start fast."""

from __future__ import annotations

import argparse
import json
import sys

from an_lab import catalog
from an_lab.errors import UsageError


def _k_schedule(text: str) -> int | tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("(", "").replace(")", "").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a K schedule; write an int or e.g. 10,10,20,20") from None
    if not values:
        raise argparse.ArgumentTypeError("the K schedule is empty; write an int or e.g. 10,10,20,20")
    return values[0] if len(values) == 1 else values


def _cmd_profile(args: argparse.Namespace) -> int:
    from an_lab.profiling import profile

    options = {"norm": args.norm, "k": args.k, "placement": args.placement, "stem": args.stem}
    options.update(pooling=args.pooling, head=args.head, activation=args.activation, num_classes=args.num_classes)
    try:
        counts = profile(args.model, input_size=args.input_size, **options)
    except ValueError as error:
        raise UsageError(f"an-lab profile: {error}") from None
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    side = counts["input_size"]
    print(f"model            {counts['model']} (norm={counts['norm']}, input {side}x{side})")
    print(f"parameters       {counts['params']:,} ({counts['params'] / 1e6:.2f}M)")
    print(f"MACs             {counts['macs']:,} ({counts['macs'] / 1e9:.2f}G)")
    print(f"over BN          {counts['params_over_bn']:+,} parameters")
    print(f"AN layers        {counts['an_layers']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from an_lab.config import load_config, run_dir

    config = load_config(args.config, args.set)
    from an_lab.lightning_modules.train import RunBusy, RunFailed, RunInterrupted, train
    from an_lab.rundir import EXIT_BUSY, EXIT_INTERRUPTED

    try:
        result = train(config, progress=not args.quiet)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except RunBusy as error:
        print(f"note: {error}", file=sys.stderr)
        return EXIT_BUSY
    except RunInterrupted as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    final, best = result["final"], result["best"]
    print(f"run        {run_dir(config)}")
    print(f"top-1 err  {final['top1_err']:.2f}% final, {best['top1_err']:.2f}% best (epoch {best['epoch']})")
    print(f"top-5 err  {final['top5_err']:.2f}% final")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from an_lab.sweeps.plan import make_plan, render
    from an_lab.sweeps.spec import load_sweep

    print(render(make_plan(load_sweep(args.sweep, args.set))))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from an_lab.sweeps.launch import prepare
    from an_lab.sweeps.spec import SeedPolicy, load_sweep

    sweep = load_sweep(args.sweep, args.set)
    executor = args.executor or sweep.spec.launcher.executor
    if executor == "slurm":
        return _sweep_on_slurm(sweep, args)
    max_parallel = args.max_parallel or sweep.spec.launcher.max_parallel
    launched: set[str] = set()
    while True:  # one round, or with adaptive seeds, rounds until no cell asks for more seeds
        selection = prepare(sweep, args.retry_failed)
        todo = [run for run in selection.launch if run.run_id not in launched]
        if launched and not todo:
            break
        print(
            f"sweep {sweep.name}: {len(todo)} to run, {len(selection.done)} done, "
            f"{len(selection.failed)} failed or corrupt (kept; --retry-failed relaunches them), "
            f"{len(selection.running)} running" + (" (more seeds where the CI is still too wide)" if launched else "")
        )
        if todo:
            _run_locally(sweep, todo, max_parallel, args.retry_failed)
        launched.update(run.run_id for run in todo)
        if not todo or not isinstance(sweep.spec.seeds, SeedPolicy):
            break
    if sweep.mode == "search":
        from an_lab.sweeps.expand import expand
        from an_lab.sweeps.search import run_search

        run_search(sweep, expand(sweep), max_parallel, report=print)
    return _sweep_exit_code(_final_report(sweep))


def _final_report(sweep, scheduler: bool = False) -> list[dict]:
    """What a sweep ends with: the status of every run, then the top-1 error per cell with every figure (n, mean,
    std, 95% CI, the difference to the baseline with its CI, P(better)). Returns the status rows."""
    from an_lab.analysis import render_table
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import collect, render_status, scheduler_view

    manifest = load_manifest(sweep.sweep_dir)
    rows = collect(manifest)
    notes = scheduler_view(manifest, rows) if scheduler else []
    print(render_status(manifest, rows))
    for note in notes:
        print(f"note: {note}")
    print()
    print(render_table(manifest, "markdown", metric="top1", detail=True))
    print(f"paper-style table (mean ± std, differences marked): an-lab table {sweep.path}")
    return rows


def _sweep_exit_code(rows: list[dict]) -> int:
    """0 when every run is done or being trained by another launcher; 1 when any failed, is corrupt, was
    interrupted or still waits."""
    return 0 if all(row["state"] in ("done", "running") for row in rows) else 1


def _sweep_on_slurm(sweep, args: argparse.Namespace) -> int:
    """One job array for the runs that are not done; returns once queued, or follows the jobs with --wait."""
    from an_lab.slurm.submitit_launcher import follow, launch_sweep
    from an_lab.sweeps.spec import SeedPolicy

    jobs = launch_sweep(sweep, args.retry_failed, args.wait)
    if not args.wait:
        return 0
    followed: set[str] = set()
    while jobs and not set(jobs) <= followed:  # with adaptive seeds: rounds until no cell asks for more seeds
        follow(sweep, jobs)
        followed.update(jobs)
        if not isinstance(sweep.spec.seeds, SeedPolicy):
            break
        jobs = launch_sweep(sweep, args.retry_failed, args.wait)
    rows = _final_report(sweep, scheduler=True)
    return 0 if all(row["state"] == "done" for row in rows) else 1


def _run_locally(sweep, runs, max_parallel: int, retry_failed: bool) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from an_lab.rundir import read_result, state
    from an_lab.slurm.local import LocalJob, run_local
    from an_lab.sweeps.launch import Claims, holder

    labels = {run.run_id: run.cell.label for run in runs}
    claims = Claims(runs, retry_failed)
    pending = iter(claims)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"{escape(sweep.name)}: runs", total=len(runs))

        def next_job() -> LocalJob | None:
            run_claim = next(pending, None)
            if run_claim is None:
                for run in claims.taken or ():
                    bar.console.print(
                        f"{labels[run.run_id]} [{run.run_id}]: left to {holder(run)}", markup=False, soft_wrap=True
                    )
                bar.update(task, total=len(runs) - len(claims.taken or ()))
                return None
            run, claim = run_claim
            return LocalJob(run.run_id, run.run_dir, claim=claim)

        def finished(job: LocalJob) -> None:
            result, _ = read_result(job.run_dir)
            if result is not None:
                outcome = f"top-1 err {result['final'].get('top1_err', float('nan')):.2f}%"
            else:
                current, detail = state(job.run_dir)
                outcome = f"{current.upper()} (exit {job.returncode}){': ' + detail if detail else ''}"
            if job.note:
                outcome += f"; {job.note}"
            bar.console.print(
                f"{labels[job.run_id]} [{job.run_id}]: {outcome}", markup=False, highlight=False, soft_wrap=True
            )
            bar.advance(task)

        try:
            run_local(next_job, max_parallel, on_finish=finished)
        except KeyboardInterrupt:
            raise UsageError("interrupted: running runs were stopped and resume on the next launch") from None


def _cmd_status(args: argparse.Namespace) -> int:
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import collect, render_status, scheduler_view

    manifest = load_manifest(args.sweep, args.set)
    rows = collect(manifest)
    notes = scheduler_view(manifest, rows)  # SLURM jobs: one squeue and one sacct call for the whole sweep
    print(render_status(manifest, rows))
    for note in notes:
        print(f"note: {note}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from an_lab.slurm.scheduler import cancel, recorded_jobs

    manifest, folder = _results_target(args)
    jobs = recorded_jobs(folder)
    if not jobs:
        print(f"sweep {manifest['name']}: no SLURM jobs recorded in {folder}; nothing to cancel")
        return 0
    cancelled, error = cancel(jobs.values())
    if error:
        print(f"error: could not cancel the jobs of sweep {manifest['name']}: {error}", file=sys.stderr)
        return 1
    if not cancelled:
        print(f"sweep {manifest['name']}: none of its {len(jobs)} recorded SLURM jobs is queued or running")
        return 0
    runs = {job_id: run_id for run_id, job_id in jobs.items()}
    labels = {run["run_id"]: cell["label"] for cell in manifest["cells"] for run in cell["runs"]}
    for job in cancelled:
        run_id = runs.get(job.job_id, "?")
        print(f"{labels.get(run_id, run_id)} [{run_id}]: slurm {job.job_id} cancelled (was {job.state.lower()})")
    arrays = sorted({job.job_id.split("_")[0] for job in cancelled})
    print(
        f"cancelled {len(cancelled)} job(s) of sweep {manifest['name']} (scancel {' '.join(arrays)}); the runs keep "
        "their last.ckpt and resume on the next `an-lab sweep`"
    )
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from an_lab.analysis.table import parse_threshold, render_table
    from an_lab.sweeps.manifest import load_manifest

    if args.set and Path(args.sweep).is_dir():
        raise UsageError(f"{args.sweep}: --set applies to a sweep file, not to a sweep folder's manifest")
    manifest = load_manifest(args.sweep, args.set)
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
    )
    sys.stdout.write(text)
    return 0


def _results_target(args: argparse.Namespace):
    """(manifest, the sweep's folder <output_dir>/sweeps/<name>/) for plot, report and sync."""
    from pathlib import Path

    from an_lab.sweeps.manifest import load_manifest

    if args.set and Path(args.sweep).is_dir():
        raise UsageError(f"{args.sweep}: --set applies to a sweep file, not to a sweep folder's manifest")
    manifest = load_manifest(args.sweep, args.set)
    if Path(args.sweep).is_dir():
        return manifest, Path(args.sweep)
    return manifest, Path(manifest["output_dir"]) / "sweeps" / str(manifest["name"])


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from an_lab.analysis.plots import plot_sweep

    manifest, folder = _results_target(args)
    for path in plot_sweep(manifest, Path(args.out) if args.out else folder / "figures"):  # PNG, PDF, SVG per figure
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.publish and not args.wandb:
        raise UsageError("--publish goes with --wandb")
    if args.html and (args.entity or args.project or args.publish):
        raise UsageError("--entity, --project and --publish go with --wandb, not with --html")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    manifest, folder = _results_target(args)
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


def _cmd_sync(args: argparse.Namespace) -> int:
    from an_lab.analysis.wandb_report import sync_sweep

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    manifest, _ = _results_target(args)
    labels = {
        run["run_id"]: cell.get("label") or f"cell {cell['index']}"
        for cell in manifest["cells"]
        for run in cell["runs"]
    }

    def show(outcome) -> None:
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


def _add_set(command: argparse.ArgumentParser, help: str = "override a key, repeatable") -> None:
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="an-lab", description="Attentive Normalization experiments and sweeps.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prof = commands.add_parser(
        "profile",
        help="parameter and MAC counts of a model",
        description=(
            "Parameter count and multiply-accumulates (the papers' FLOPS column) of a model, and what AN adds over BN."
        ),
    )
    prof.add_argument(
        "model", choices=catalog.MODEL_NAMES, metavar="MODEL", help=f"one of: {', '.join(catalog.MODEL_NAMES)}"
    )
    prof.add_argument("--norm", default="an", choices=catalog.NORM_CHOICES)
    prof.add_argument("--k", type=_k_schedule, default=None, help="K for all stages or per stage, e.g. 10,10,20,20")
    prof.add_argument("--pooling", default="rsd", choices=catalog.POOLINGS)
    prof.add_argument("--head", default="a2", choices=catalog.HEADS)
    prof.add_argument("--activation", default="hsigmoid", choices=catalog.ACTIVATIONS)
    prof.add_argument("--placement", default="paper", choices=catalog.PLACEMENTS)
    prof.add_argument("--stem", default="plain", choices=catalog.STEMS)
    prof.add_argument("--input-size", type=int, default=None, help="image side (default: 224, or 32 for CIFAR nets)")
    prof.add_argument("--num-classes", type=int, default=1000)
    prof.add_argument("--json", action="store_true", help="print the counts as JSON")
    prof.set_defaults(run=_cmd_profile)

    train = commands.add_parser(
        "train",
        help="train one run from a config file",
        description=(
            "Train one model into runs/<run_id>/; a rerun resumes from last.ckpt and a finished run is not retrained."
        ),
    )
    train.add_argument("config", nargs="?", help="YAML run config (default: the embedded defaults)")
    _add_set(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_cmd_train)

    plan = commands.add_parser(
        "plan",
        help="show the runs of a sweep file without launching anything",
        description=(
            "Expand a sweep file into its runs: one row per run with the cell, what it changes against the base cell, "
            "the seed, the run id and its state read from the run directory; then counts and a compute estimate. "
            "Launches nothing and writes nothing."
        ),
    )
    plan.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file, e.g. sweeps/quickstart.yaml")
    _add_set(plan, "override a key of the sweep's base (data.root=...) or of the sweep (seeds=[0,1]), repeatable")
    plan.set_defaults(run=_cmd_plan)

    sweep = commands.add_parser(
        "sweep",
        help="launch the runs of a sweep that are not done",
        description=(
            "Write the sweep's manifest and launch only its runs that are not done (interrupted runs resume); "
            "failed runs are relaunched only with --retry-failed. Ends with the sweep's status."
        ),
    )
    sweep.add_argument("sweep", help="sweep YAML file")
    _add_set(sweep)
    sweep.add_argument("--retry-failed", action="store_true", help="relaunch runs that failed")
    sweep.add_argument("--executor", choices=("local", "slurm"), default=None, help="default: the file's launcher")
    sweep.add_argument("--max-parallel", type=int, default=None, help="local runs at once (default: the file's)")
    sweep.add_argument("--wait", action="store_true", help="slurm: follow the jobs until they end, then report")
    sweep.set_defaults(run=_cmd_sweep)

    status = commands.add_parser(
        "status",
        help="state of every run of a sweep",
        description="Per-run state (pending, running, interrupted, done, failed with its reason), counts and the best "
        "cell so far, read from the run directories.",
    )
    status.add_argument("sweep", help="sweep YAML file, or the sweep folder <output_dir>/sweeps/<name>/")
    _add_set(status)
    status.set_defaults(run=_cmd_status)

    table = commands.add_parser(
        "table",
        help="results table of a sweep: mean ± std over seeds per cell, differences with 95%% CIs",
        description=(
            "One row per cell as the paper's Table 1 names it: #Params and MACs (units chosen per column), final "
            "top-1 / top-5 error as mean ± std over the seeds done (sample std), the seeds done, and the difference "
            "against the baseline in brackets (paper Table 2), paired by seed where the cells share at least 2 seeds, "
            "else Welch; * marks a difference whose 95% CI excludes 0. Bold: the lowest mean among complete cells "
            "with at least 2 runs and every cell not significantly worse than it. A single run shows n=1 and is never "
            "marked. Incomplete cells show the mean of their done runs with a dagger (failed runs count as not "
            "done); a double dagger marks runs not converged (the sweep's convergence settings). --detail shows every "
            "figure (n, mean, std, CI, difference, its CI, P(better)); the CSV always has them. Reads result files "
            "only."
        ),
    )
    table.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    table.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv", "html"))
    table.add_argument(
        "--metric",
        default="both",
        choices=("top1", "top5", "both", "best", "best_top1", "best_top5"),
        help="error columns: the final epoch's top1, top5 or both (default); best: the best epoch's top-1 beside the "
        "final top-1; best_top1 / best_top5: the best epoch's only",
    )
    table.add_argument(
        "--ci",
        default="t",
        choices=("t", "bootstrap"),
        help="95%% confidence intervals: Student t (default) or BCa bootstrap (fixed random state: reproducible)",
    )
    table.add_argument(
        "--detail", action="store_true", help="one row per cell and metric: n, mean, std, CI, diff, its CI, P(better)"
    )
    table.add_argument(
        "--converged-loss",
        default=None,
        metavar="X",
        help="flag runs whose final train loss is above X (default: the sweep's convergence.train_loss_max; none: off)",
    )
    table.add_argument(
        "--val-drop",
        default=None,
        metavar="D",
        help="flag runs whose top-1 error fell by more than D points over their last epochs (default: the sweep's "
        "convergence.val_drop_max, 1; none: off)",
    )
    table.add_argument(
        "--baseline",
        default=None,
        metavar="CELL",
        help="cell label, baseline name (bn) or cell index to compare against; 'none' for no brackets "
        "(default: the first baseline cell)",
    )
    _add_set(table, "override a key of a sweep file, repeatable")
    table.set_defaults(run=_cmd_table)

    plot = commands.add_parser(
        "plot",
        help="figures of a sweep (PNG, PDF, SVG): error per design choice, validation curves, parameters vs error",
        description=(
            "Write the figures of a sweep's finished runs, each as PNG, PDF and SVG, and print every path: final "
            "top-1 error per design choice grouped by axis (the paper's Figure 1 style, as a dot plot; baselines "
            "dashed), validation top-1 error per epoch per cell, and parameters against error. Error bars and bands "
            "are 95% CIs of the mean over seeds (Student t), every seed is drawn as a point and n is shown per cell; "
            "incomplete cells are marked. Reads result files only."
        ),
    )
    plot.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    plot.add_argument("--out", default=None, metavar="DIR", help="figure folder (default: <sweep folder>/figures)")
    _add_set(plot, "override a key of a sweep file, repeatable")
    plot.set_defaults(run=_cmd_plot)

    report = commands.add_parser(
        "report",
        help="a W&B report (--wandb) or a self-contained HTML page (--html) of a sweep",
        description=(
            "--html: one HTML file with the results table, the figures (embedded) and the runs, no external files "
            "(default <sweep folder>/summary.html). --wandb: a W&B report (wandb-workspaces) of the sweep's runs "
            "grouped by cell, with curves, a bar chart of the final error and the results table; without W&B access "
            "(WANDB_MODE=offline or no API key) its specification is written to a file (default <sweep folder>/"
            "wandb-report.json) to publish later with --publish; with access it is published and its URL printed."
        ),
    )
    report.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    kind = report.add_mutually_exclusive_group(required=True)
    kind.add_argument("--wandb", action="store_true", help="a W&B report")
    kind.add_argument("--html", action="store_true", help="a self-contained HTML summary page")
    report.add_argument("--out", default=None, metavar="FILE", help="where to write the page or the report's spec")
    report.add_argument("--entity", default=None, help="W&B entity (default: WANDB_ENTITY or the runs' config)")
    report.add_argument("--project", default=None, help="W&B project (default: WANDB_PROJECT, the runs' or an-lab)")
    report.add_argument("--publish", action="store_true", help="save the report to W&B now (needs a network)")
    report.add_argument("--timeout", type=float, default=120.0, metavar="S", help="bound on publishing (s)")
    report.add_argument("--baseline", default=None, metavar="CELL", help="baseline of the results table (see table)")
    _add_set(report, "override a key of a sweep file, repeatable")
    report.set_defaults(run=_cmd_report)

    sync = commands.add_parser(
        "sync",
        help="upload the offline W&B data of a sweep's runs (wandb sync), each call time-bounded",
        description=(
            "Run `wandb sync` on every offline W&B run folder of the sweep's runs, each call stopped after --timeout "
            "seconds, and report per run: synced, already synced, failed, timed out or not synced (offline). Exits 1 "
            "when a run is left unsynced (for example without a network or API key)."
        ),
    )
    sync.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    sync.add_argument("--timeout", type=float, default=60.0, metavar="S", help="bound per run folder (default: 60 s)")
    _add_set(sync, "override a key of a sweep file, repeatable")
    sync.set_defaults(run=_cmd_sync)

    cancel = commands.add_parser(
        "cancel",
        help="cancel a sweep's SLURM jobs (scancel); its runs stay resumable",
        description=(
            "Cancel, with one scancel call, the sweep's SLURM jobs that are still queued or running (the job ids "
            "`an-lab sweep --executor slurm` recorded in the sweep folder) and report them. Cancelled runs keep their "
            "last checkpoint and resume on the next `an-lab sweep`."
        ),
    )
    cancel.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    _add_set(cancel, "override a key of a sweep file, repeatable")
    cancel.set_defaults(run=_cmd_cancel)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
