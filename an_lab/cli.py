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
    from an_lab.lightning_modules.train import RunFailed, train

    try:
        result = train(config, progress=not args.quiet)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
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
    from an_lab.sweeps.spec import load_sweep

    sweep = load_sweep(args.sweep, args.set)
    executor = args.executor or sweep.spec.launcher.executor
    if executor != "local":
        raise UsageError(f"{args.sweep}: executor {executor!r} is not available yet; use --executor local")
    selection = prepare(sweep, args.retry_failed)
    print(
        f"sweep {sweep.name}: {len(selection.launch)} to run, {len(selection.done)} done, "
        f"{len(selection.failed)} failed (kept; --retry-failed relaunches them), {len(selection.running)} running"
    )
    max_parallel = args.max_parallel or sweep.spec.launcher.max_parallel
    if selection.launch:
        _run_locally(sweep, selection.launch, max_parallel)
    if sweep.mode == "search":
        from an_lab.sweeps.expand import expand
        from an_lab.sweeps.search import run_search

        run_search(sweep, expand(sweep), max_parallel, report=print)
    from an_lab.analysis import render_table
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import collect, render_status

    manifest = load_manifest(sweep.sweep_dir)
    rows = collect(manifest)
    print(render_status(manifest, rows))
    print()
    print(render_table(manifest, "markdown"))
    return 0 if all(row["state"] == "done" for row in rows) else 1


def _run_locally(sweep, runs, max_parallel: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from an_lab.rundir import RESULT, read_json
    from an_lab.slurm.local import LocalJob, run_local

    labels = {run.run_id: run.cell.label for run in runs}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task(f"{sweep.name}: runs", total=len(runs))

        def finished(job: LocalJob) -> None:
            result = read_json(job.run_dir / RESULT)
            outcome = f"top-1 err {result['final']['top1_err']:.2f}%" if result else f"FAILED (exit {job.returncode})"
            bar.console.print(f"{labels[job.run_id]} [{job.run_id}]: {outcome}")
            bar.advance(task)

        jobs = [LocalJob(run.run_id, run.run_dir) for run in runs]
        try:
            run_local(lambda: jobs.pop(0) if jobs else None, max_parallel, on_finish=finished)
        except KeyboardInterrupt:
            raise UsageError("interrupted: running runs were stopped and resume on the next launch") from None


def _cmd_status(args: argparse.Namespace) -> int:
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import collect, render_status

    manifest = load_manifest(args.sweep, args.set)
    print(render_status(manifest, collect(manifest)))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from an_lab.analysis.table import render_table
    from an_lab.sweeps.manifest import load_manifest

    if args.set and Path(args.sweep).is_dir():
        raise UsageError(f"{args.sweep}: --set applies to a sweep file, not to a sweep folder's manifest")
    manifest = load_manifest(args.sweep, args.set)
    sys.stdout.write(render_table(manifest, args.format, metric=args.metric, baseline=args.baseline))
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
        help="results table of a sweep: mean ± std over seeds per cell",
        description=(
            "One row per cell as the paper's Table 1 names it: #Params (M), MACs (G), final top-1 / top-5 error as "
            "mean ± std over the seeds done, the seeds done, and the difference against the baseline in brackets "
            "(paper Table 2). Best values of complete cells are marked; incomplete cells show the mean of their done "
            "runs with a dagger (failed runs count as not done). Reads result files only."
        ),
    )
    table.add_argument("sweep", metavar="SWEEP", help="sweep YAML file, or the folder <output_dir>/sweeps/<name>/")
    table.add_argument("--format", default="markdown", choices=("markdown", "latex", "csv", "html"))
    table.add_argument("--metric", default="both", choices=("top1", "top5", "both"), help="error columns")
    table.add_argument(
        "--baseline",
        default=None,
        metavar="CELL",
        help="cell label, baseline name (bn) or cell index to compare against; 'none' for no brackets "
        "(default: the first baseline cell)",
    )
    _add_set(table, "override a key of a sweep file, repeatable")
    table.set_defaults(run=_cmd_table)
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
