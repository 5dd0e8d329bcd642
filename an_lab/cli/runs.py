"""`an-lab profile | train | plan | sweep | status | cancel | completion`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from an_lab import catalog
from an_lab.cli.commands import COMMANDS, add_set, add_sweep, command
from an_lab.errors import UsageError
from an_lab.launch.registry import NAMES


def _k_schedule(text: str) -> int | tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("(", "").replace(")", "").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a K schedule; write an int or e.g. 10,10,20,20") from None
    if not values:
        raise argparse.ArgumentTypeError("the K schedule is empty; write an int or e.g. 10,10,20,20")
    return values[0] if len(values) == 1 else values


_PROFILED = catalog.MODEL_NAMES + catalog.DETECTORS
_PROFILE_NORMS = tuple(dict.fromkeys(catalog.NORM_CHOICES + catalog.DETECTION_NORMS))


def _profile_arguments(prof: argparse.ArgumentParser) -> None:
    prof.add_argument(
        "model",
        choices=_PROFILED,
        metavar="MODEL",
        help=f"a network ({', '.join(catalog.MODEL_NAMES)}) or a detector ({', '.join(catalog.DETECTORS)})",
    )
    prof.add_argument(
        "--norm",
        default=None,
        choices=_PROFILE_NORMS,
        help="networks: bn, gn, sn, se, an, an_gn (default an); detectors, the backbone's: bn_frozen (BN*, the "
        "default), gn, syncbn, an",
    )
    prof.add_argument("--k", type=_k_schedule, default=None, help="K for all stages or per stage, e.g. 10,10,20,20")
    prof.add_argument("--pooling", default="rsd", choices=catalog.POOLINGS)
    prof.add_argument("--head", default=None, choices=catalog.HEADS, help="default: a2, or a1 with --norm an_gn")
    prof.add_argument("--activation", default="hsigmoid", choices=catalog.ACTIVATIONS)
    prof.add_argument("--placement", default="paper", choices=catalog.PLACEMENTS)
    prof.add_argument("--stem", default="plain", choices=catalog.STEMS)
    prof.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="image side (default: 224, or 32 for CIFAR nets); detectors: the shorter side (default 800; the longer "
        "is 1333/800 of it, both padded to a multiple of 32)",
    )
    prof.add_argument(
        "--num-classes", type=int, default=None, help="classes (default 1000); detectors: categories (default 80)"
    )
    detection = prof.add_argument_group("detectors")
    detection.add_argument("--backbone", default=None, choices=catalog.DETECTION_BACKBONES, help="the backbone")
    detection.add_argument("--head-norm", default=None, choices=catalog.HEAD_NORMS, help="FPN and heads (none)")
    detection.add_argument(
        "--box-head", default=None, choices=catalog.BOX_HEADS, help="default: 2fc, 4conv1fc with head norms"
    )
    prof.add_argument("--json", action="store_true", help="print the counts as JSON")


@command(
    "profile",
    _profile_arguments,
    help="parameter and MAC counts of a model or a detector",
    description="Parameter count and multiply-accumulates (the papers' FLOPS column) of a model, and what AN adds "
    "over BN; or of a detector (Mask R-CNN, Cascade Mask R-CNN, HTC) on a backbone, counted as mmdetection counts "
    "them (backbone, FPN and RPN on one image, the box heads on 1000 RoIs, the mask heads on 100).",
)
def _cmd_profile(args: argparse.Namespace) -> int:
    if args.model in catalog.DETECTORS:
        return _profile_detector(args)
    given = [flag for flag, value in _detector_flags(args).items() if value is not None]
    if given:
        raise UsageError(
            f"an-lab profile {args.model}: {', '.join(given)} apply to detectors ({', '.join(catalog.DETECTORS)}), "
            f"not to a network; e.g. an-lab profile cascade_mask_rcnn --backbone resnet101 --norm bn_frozen"
        )
    if args.norm in catalog.DETECTION_ONLY_NORMS:
        raise UsageError(
            f"an-lab profile {args.model} --norm {args.norm}: {args.norm} is a detection backbone norm; a network "
            f"takes one of {', '.join(catalog.NORM_CHOICES)}"
        )
    from an_lab.profiling import profile

    side = args.input_size or catalog.INPUT_SIZE[args.model]
    if (problem := catalog.input_size_problem(args.model, side)) is not None:
        raise UsageError(f"an-lab profile --input-size {side}: {problem}")
    options = {"norm": args.norm or "an", "k": args.k, "placement": args.placement, "stem": args.stem}
    options.update(pooling=args.pooling, head=args.head, activation=args.activation)
    options["num_classes"] = 1000 if args.num_classes is None else args.num_classes
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
    print(f"MACs             {counts['macs']:,} ({counts['macs'] / 1e9:.2f}G; convolutions and linear layers)")
    pointwise = counts["macs_with_pointwise"]
    print(f"  + norm, ReLU   {pointwise:,} ({pointwise / 1e9:.2f}G; thop's count, as the AOGNet papers give)")
    print(f"over BN          {counts['params_over_bn']:+,} parameters")
    print(f"AN layers        {counts['an_layers']}")
    return 0


def _detector_flags(args: argparse.Namespace) -> dict[str, object]:
    return {"--backbone": args.backbone, "--head-norm": args.head_norm, "--box-head": args.box_head}


_MAX_DETECTION_CATEGORIES = 100_000


def _profile_detector(args: argparse.Namespace) -> int:
    """`an-lab profile mask_rcnn | cascade_mask_rcnn | htc --backbone NAME ...` (profiling.profile_detector)."""
    from an_lab.profiling import profile_detector

    command = f"an-lab profile {args.model}"
    if args.backbone is None:
        raise UsageError(
            f"{command}: name the backbone with --backbone, one of {', '.join(catalog.DETECTION_BACKBONES)}"
        )
    norm = args.norm or "bn_frozen"
    if norm not in catalog.DETECTION_NORMS:
        raise UsageError(
            f"{command} --norm {norm}: a detector's backbone norm is one of {', '.join(catalog.DETECTION_NORMS)} "
            "(bn_frozen is BN*: frozen statistics and affine)"
        )
    classification = {"--pooling": ("rsd", args.pooling), "--head": (None, args.head)}
    classification.update({"--activation": ("hsigmoid", args.activation), "--stem": ("plain", args.stem)})
    classification["--placement"] = ("paper", args.placement)
    if changed := [flag for flag, (default, value) in classification.items() if value != default]:
        raise UsageError(
            f"{command}: {', '.join(changed)} apply to networks, not to detectors (their AN is the papers')"
        )
    categories = 80 if args.num_classes is None else args.num_classes
    if not 1 <= categories <= _MAX_DETECTION_CATEGORIES:
        raise UsageError(f"{command} --num-classes {categories}: give the categories, 1 to {_MAX_DETECTION_CATEGORIES}")
    side = 800 if args.input_size is None else args.input_size
    smallest = max(32, catalog.MIN_INPUT_SIZE.get(args.backbone, 8))
    if not smallest <= side <= catalog.MAX_DETECTION_SIDE:
        raise UsageError(
            f"{command} --input-size {side}: a detector's shorter image side is {smallest} to "
            f"{catalog.MAX_DETECTION_SIDE} pixels (COCO: 800)"
        )
    options = {"backbone_norm": norm, "head_norm": args.head_norm or "none", "box_head": args.box_head}
    if args.k is not None:
        options["k"] = args.k
    try:
        counts = profile_detector(args.model, args.backbone, num_classes=categories, input_size=side, **options)
    except ValueError as error:
        raise UsageError(f"{command}: {error}") from None
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    height, width = counts["image"]
    print(
        f"detector         {counts['model']} on {counts['backbone']} (backbone norm={counts['norm']}, "
        f"head norm={counts['head_norm']}, box head={counts['box_head']}, {counts['num_classes']} categories)"
    )
    print(
        f"parameters       {counts['params']:,} ({counts['params'] / 1e6:.2f}M; {counts['trainable_params']:,} trained)"
    )
    print(
        f"MACs             {counts['macs']:,} ({counts['macs'] / 1e9:.2f}G at a {height}x{width} image, box heads on "
        f"{counts['box_rois']} RoIs, mask heads on {counts['mask_rois']}: mmdetection's get_flops convention)"
    )
    print(f"AN layers        {counts['an_layers']}")
    return 0


def _train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("config", nargs="?", help="YAML run config (default: the embedded defaults)")
    add_set(train, "override a key of the run config, repeatable")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--verbose", action="store_true", help="also show third-party notices (Lightning tips, srun hints, warnings)"
    )


@command(
    "train",
    _train_arguments,
    help="train one run from a config file",
    description="Train one model into runs/<run_id>/; a rerun resumes from last.ckpt and a finished run is not "
    "retrained.",
)
def _cmd_train(args: argparse.Namespace) -> int:
    from an_lab.config import load_config
    from an_lab.identity import run_dir
    from an_lab.launch.entry import execute, quiet_third_parties
    from an_lab.migrate import prepare

    config = _with_backbone(load_config(args.config, args.set), args.config)
    prepare(Path(config.output_dir))
    from an_lab.rundir import read_result

    if (done := read_result(run_dir(config))[0]) is not None:
        print(f"run        {run_dir(config)}: done already, not retrained (to train it again, delete that folder)")
        for line in result_lines(done):
            print(line)
        return 0
    if not args.verbose:
        quiet_third_parties()
    outcome = execute(config, progress=not args.quiet)
    if outcome.code != 0:
        print(outcome.message, file=sys.stderr)
        return outcome.code
    print(f"run        {run_dir(config)}")
    for line in result_lines(outcome.result):
        print(line)
    return 0


def _migrate_arguments(migrate: argparse.ArgumentParser) -> None:
    migrate.add_argument("output_dir", help="an output folder (a sweep's output_dir) holding run folders")


@command(
    "migrate",
    _migrate_arguments,
    help="move runs recorded under an earlier version's run ids to today's ids",
    description="Give every run folder in OUTPUT_DIR the id today's rules give its config (an_lab.identity): the "
    "folder is renamed, its config.json written with absolute paths, and a link keeps the old name. `an-lab sweep` "
    "and `an-lab train` do this first by themselves; nothing is retrained. Each change is listed in "
    "OUTPUT_DIR/migrations.jsonl.",
)
def _cmd_migrate(args: argparse.Namespace) -> int:
    from an_lab.migrate import current, migrate

    folder = Path(args.output_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder; give the output folder (output_dir) that holds the run folders")
    if current(folder):
        print(f"{folder}: its runs carry today's run ids already; nothing to do")
        return 0
    records = migrate(folder)
    for record in records:
        print(f"{record['old']} -> {record.get('new') or '-'}: {record['action']}")
    return 0


def _epoch(best: dict) -> str:
    """result.json's 0-based epoch (Lightning's, as metrics.csv) as people count it: the first epoch is 1."""
    epoch = best.get("epoch")
    return str(epoch + 1) if isinstance(epoch, int) else "?"


def result_lines(result: dict) -> list[str]:
    """A finished run's result as `an-lab train` prints it, by its task (result.json's "task"): the top-1 error final
    and best with the top-5 error for classification; for detection one line for boxes (AP^bb) and one for masks
    (AP^m): AP final and at the best evaluation (the highest AP^bb), then AP50, AP75 and the size splits."""
    from an_lab.metrics import METRICS, primary, task_of

    final = result.get("final") or {}
    best = result.get("best") or {}
    if task_of(result) == "classification":
        top1, top5 = METRICS["top1_err"], METRICS["top5_err"]
        return [
            f"top-1 err  {top1.value_text(final.get('top1_err'))} final, {top1.value_text(best.get('top1_err'))} "
            f"best (epoch {_epoch(best)})",
            f"top-5 err  {top5.value_text(final.get('top5_err'))} final",
        ]
    lines = []
    parts = (("ap50", "AP50"), ("ap75", "AP75"), ("ap_s", "AP_S"), ("ap_m", "AP_M"), ("ap_l", "AP_L"))
    for kind in ("bbox", "segm"):
        ap = METRICS[f"{kind}_ap"]
        splits = ", ".join(f"{short} {ap.value_text(final.get(f'{kind}_{part}'))}" for part, short in parts)
        where = "best" if ap == primary("detection") else "at the best evaluation"
        lines.append(
            f"{ap.label:<10} {ap.value_text(final.get(ap.name))} final, {ap.value_text(best.get(ap.name))} {where} "
            f"(epoch {_epoch(best)}); {splits}"
        )
    return lines


def _with_backbone(config, path: str | None):
    """A detection config whose model.backbone_init names a classification run ({sweep, cell, seed}) gets that run's
    folder, found as a sweep finds it (the sweep folder under the config's output_dir, else <sweep>.yaml beside the
    config file); the run must have finished training."""
    from pathlib import Path

    from an_lab.config import BackboneInit
    from an_lab.sweeps.backbones import KEY, BackboneResolver, require_done
    from an_lab.sweeps.manifest import find_sweep

    if not isinstance(config.model.backbone_init, BackboneInit):
        return config
    source = str(path or "defaults")
    resolver = BackboneResolver(Path(path).parent if path else Path.cwd(), find_sweep)
    config, backbone = resolver.resolve(config, source)
    require_done([backbone], f"{source}: {KEY}")
    return config


def _plan_arguments(plan: argparse.ArgumentParser) -> None:
    add_sweep(plan)
    add_set(plan, "override a key of the sweep's base (data.root=...) or of the sweep (seeds=[0,1]), repeatable")
    plan.add_argument(
        "--calibrate",
        action="store_true",
        help="time a few training steps of each network that has no finished run to estimate the wall time by "
        "(imports torch; the figures are kept in the output folder)",
    )


@command(
    "plan",
    _plan_arguments,
    help="show the runs of a sweep without launching anything",
    description="Expand a sweep into its runs: one row per run with the cell, what it changes against the base cell, "
    "the seed, the run id and its state read from the run directory; then counts and a compute estimate. Launches "
    "nothing and writes nothing (but for --calibrate). Data that is not on this machine (the paper's ImageNet sweeps "
    "on a laptop) gives a warning; `an-lab sweep` refuses it. The wall time comes from finished runs of the same "
    "network and image size, else from a calibration: --calibrate times a few training steps of each such network "
    "here (imports torch, seconds to a minute) and keeps the figure in the output folder for later plans.",
)
def _cmd_plan(args: argparse.Namespace) -> int:
    from an_lab.migrate import pending_note
    from an_lab.sweeps.expand import check_data_paths
    from an_lab.sweeps.manifest import load_sweep_target
    from an_lab.sweeps.plan import make_plan, render
    from an_lab.sweeps.seeding import planned_runs

    sweep = load_sweep_target(args.sweep, args.set)
    runs = planned_runs(sweep)
    try:
        check_data_paths(sweep, runs)
    except UsageError as missing:
        print(f"warning: {missing} (planned anyway; `an-lab sweep` needs the data)", file=sys.stderr)
    if args.calibrate:
        from an_lab.rundir import state
        from an_lab.sweeps.plan import TO_RUN, run_macs, training_macs_per_image
        from an_lab.sweeps.timing import calibrate, measured

        configs = [run.config for run in runs if state(run.run_dir)[0] in TO_RUN]
        timings = measured(sweep.output_dir, run_macs)
        say = lambda line: print(line, file=sys.stderr)  # noqa: E731
        calibrate(timings, sweep.output_dir, configs, training_macs_per_image, say=say)
    print(render(make_plan(sweep, check_data=False, runs=runs)))
    if (note := pending_note(sweep.output_dir)) is not None:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    add_sweep(sweep)
    add_set(sweep)
    sweep.add_argument("--retry-failed", action="store_true", help="relaunch runs that failed")
    sweep.add_argument("--executor", choices=NAMES, default=None, help="default: the file's launcher")
    sweep.add_argument("--max-parallel", type=int, default=None, help="runs at once (default: the file's)")
    sweep.add_argument("--wait", action="store_true", help="slurm: follow the jobs until they end, then report")
    sweep.add_argument(
        "--detach",
        action="store_true",
        help="slurm: submit this command itself as a small job (1 CPU, no GPU, requeued) that follows the sweep, so "
        "nothing stays open on the login node; see it with `an-lab status`, stop it with `an-lab cancel`",
    )
    sweep.add_argument(
        "--poll",
        type=float,
        default=None,
        metavar="S",
        help="slurm: seconds between scheduler polls while following (default: launcher.slurm.poll_interval_s, 30)",
    )


@command(
    "sweep",
    _sweep_arguments,
    help="launch the runs of a sweep that are not done",
    description="Write the sweep's manifest and launch only its runs that are not done (interrupted runs resume); "
    "failed runs are relaunched only with --retry-failed. Locally, and on SLURM with --wait, it follows the runs "
    "(cell, seed, epoch, validation error, ETA) and ends with the sweep's status and results.",
)
def _cmd_sweep(args: argparse.Namespace) -> int:
    from an_lab.sweeps.manifest import load_sweep_target
    from an_lab.sweeps.run import Options, run_sweep

    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError(f"--max-parallel {args.max_parallel}: give at least 1")
    if args.poll is not None and not 0.5 <= args.poll <= 3600:
        raise UsageError(f"--poll {args.poll:g}: give seconds between 0.5 and 3600")
    sweep = load_sweep_target(args.sweep, args.set)
    executor = args.executor or sweep.spec.launcher.executor
    if args.detach:
        return _detach(sweep, args, executor)
    options = Options(executor, args.retry_failed, args.wait, args.max_parallel, args.poll)
    followed = run_sweep(sweep, options)
    if followed is None:
        return 0
    rows = _final_report(sweep, scheduler=followed.scheduled)
    return 0 if all(row["state"] in followed.settled() or _pruned(row) for row in rows) else 1


def _pruned(row: dict) -> bool:
    """A search's pruned trial: an outcome of the search, not a failure of the sweep."""
    return row["state"] == "failed" and (row["detail"] or "").startswith("pruned by Optuna")


def _detach(sweep, args: argparse.Namespace, executor: str) -> int:
    from pathlib import Path

    from an_lab.sweeps.run import detach

    argv = ["sweep", str(Path(args.sweep).resolve()), "--executor", executor, "--wait"]
    for item in args.set:
        argv += ["--set", item]
    if args.retry_failed:
        argv.append("--retry-failed")
    if args.max_parallel is not None:
        argv += ["--max-parallel", str(args.max_parallel)]
    if args.poll is not None:
        argv += ["--poll", str(args.poll)]
    job_id = detach(sweep, argv, executor)
    print(f"sweep {sweep.name}: orchestrator submitted as {executor} job {job_id} (1 CPU, no GPU, requeued)")
    print(f"follow with: an-lab status {args.sweep}   (stop everything with: an-lab cancel {args.sweep})")
    return 0


def _final_report(sweep, scheduler: bool = False) -> list[dict]:
    """What a followed sweep ends with: the status of every run, then the primary metric per cell (top-1 error, or
    AP^bb for detection) with every figure (n, mean, std, 95% CI, the difference to the baseline with its CI,
    P(better)). Returns the status rows."""
    from an_lab.analysis import render_table
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import render_status, run_rows, scheduler_view

    manifest = load_manifest(sweep.sweep_dir)
    rows = run_rows(manifest)
    notes = scheduler_view(manifest, rows) if scheduler else []
    print(render_status(manifest, rows))
    for note in notes:
        print(f"note: {note}")
    print()
    print(render_table(manifest, "markdown", metric="primary", detail=True))
    print(f"paper-style table (mean ± std, differences marked): an-lab table {sweep.path}")
    return rows


def _status_arguments(status: argparse.ArgumentParser) -> None:
    add_sweep(status)
    add_set(status)


@command(
    "status",
    _status_arguments,
    help="state of every run of a sweep",
    description="Per-run state (pending, running with the epoch reached, interrupted, done, failed with its reason), "
    "counts and the best mean so far (lowest error, highest AP), read from the run directories (and, for SLURM "
    "jobs, one squeue and one sacct call).",
)
def _cmd_status(args: argparse.Namespace) -> int:
    from an_lab.sweeps.manifest import load_manifest
    from an_lab.sweeps.status import journal_note, orchestrator_line, render_status, run_rows, scheduler_view

    manifest = load_manifest(args.sweep, args.set)
    rows = run_rows(manifest)
    notes = scheduler_view(manifest, rows)
    if (note := journal_note(manifest)) is not None:
        notes.append(note)
    print(render_status(manifest, rows))
    for note in notes:
        print(f"note: {note}")
    if (line := orchestrator_line(manifest)) is not None:
        print(line)
    return 0


def _cancel_arguments(cancel: argparse.ArgumentParser) -> None:
    add_sweep(cancel)
    add_set(cancel)
    cancel.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for the jobs to leave the queue (default: launcher.slurm.cancel_wait_s, 120)",
    )


@command(
    "cancel",
    _cancel_arguments,
    help="cancel a sweep's SLURM jobs (scancel); its runs stay resumable",
    description="Cancel, with one scancel call, the sweep's SLURM jobs that are still queued or running (the job ids "
    "`an-lab sweep --executor slurm` recorded in the sweep folder), wait until they have left the queue (so that an "
    "immediate `an-lab sweep` submits them again), and report them. Cancelled runs keep their last checkpoint.",
)
def _cmd_cancel(args: argparse.Namespace) -> int:
    from an_lab.sweeps.cancel import cancel_sweep

    if args.wait is not None and not 0 <= args.wait <= 3600:
        raise UsageError(f"--wait {args.wait:g}: give seconds between 0 and 3600")
    report = cancel_sweep(args.sweep, args.set, args.wait)
    for line in report.lines:
        print(line)
    for line in report.errors:
        print(line, file=sys.stderr)
    return report.code


def _completion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")


@command(
    "completion",
    _completion_arguments,
    help="print a shell completion script",
    description='Print a completion script for bash or zsh: eval "$(an-lab completion bash)" (or put it in '
    "~/.bashrc). Completes commands, their options and the choices of options; files elsewhere.",
)
def _cmd_completion(args: argparse.Namespace) -> int:
    from an_lab.cli.completion import script

    print(script(args.parser, args.shell))
    return 0


__all__ = ["COMMANDS"]
