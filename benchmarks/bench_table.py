"""How fast `an-lab table` and `an-lab status` read a large sweep: result.json files of --cells cells x --seeds seeds
(a few failed and pending runs) in a synthetic sweep folder. Targets (issue 27): the whole command under 1 s up to
10,000 runs and under 5 s up to 100,000 (--cells 10000 --seeds 10), with a peak resident memory under 400 MB.

    python benchmarks/bench_table.py [--rounds 3] [--cells 2500] [--seeds 4] [--save DIR] [--keep DIR]

Wall times are medians of fresh `an-lab table SWEEP_DIR` processes (after one warm-up run, so the file cache is warm as
it is right after a sweep), the peak memory the largest of those processes' (benchmarks/cheap.py); the in-process
split (collect: reading the run directories; render) is shown beside them. --save DIR writes what each command prints
to DIR, to diff two versions of the code; --keep DIR makes the sweep there (or reuses the one made there before)
instead of in a temporary folder. `table` keeps a results index in the sweep folder (an_lab.analysis.results_index):
the timed runs find it written by the warm-up, as every table after the first does; the first table after runs finish
(no index: it reads every result.json and writes the index) is timed on its own and printed, not held to the targets.
Also checks that the command imports no torch, lightning or wandb. The machine's
load is printed with the figures. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cheap import against, against_lines, load, measure, medians

from an_lab.identity import IDENTITY_SCHEME
from an_lab.migrate import MARKER
from an_lab.sweep_folder import RESULTS_INDEX

ROOT = Path(__file__).resolve().parents[1]
PEAK_TARGET_MB = 400.0
FORMATS = ("markdown", "latex", "csv", "html")
HEAVY = ("torch", "torchvision", "lightning", "pytorch_lightning", "wandb")
POOLINGS, HEADS, ACTIVATIONS = ("RSD", "Mean", "Concat"), ("A1", "A2"), ("hsigmoid", "softmax", "sigmoid")


def _result(run_id: str, rng: random.Random, epochs: int = 120) -> dict:
    top1, top5 = 21 + rng.random() * 3, 5 + rng.random() * 2
    return {
        "run_id": run_id,
        "config_hash": f"{rng.getrandbits(48):012x}",
        "status": "done",
        "final": {"top1_err": top1, "top5_err": top5, "val_loss": 0.9 + rng.random(), "train_loss": 1.2},
        "best": {"top1_err": top1 - 0.05, "top5_err": top5 - 0.02, "epoch": epochs - 3},
        "params": 25_755_420 + rng.randrange(0, 400_000),
        "macs": 4_089_184_256,
        "epochs": epochs,
        "wall_time_s": 86_400.0,
        "images_per_s": 2_900.0,
        "device": "8 x NVIDIA H100",
        "precision": "16-mixed",
        "versions": {"an_lab": "0.1.0", "torch": "2.15.0", "python": "3.11.9"},
        "git_revision": "0123456789abcdef0123456789abcdef01234567",
        "finished_at": 1.7e9 + rng.random() * 1e6,
    }


def make_sweep(folder: Path, cells: int, seeds: int) -> tuple[Path, int]:
    """Run directories in <folder>/runs and their sweep folder runs/sweeps/bench/ (manifest.json); returns the sweep
    folder and the number of result.json files written (one run in 50 failed, one in 50 pending)."""
    rng = random.Random(0)
    runs_root, manifest_cells, written = folder / "runs", [], 0
    for index in range(cells):
        kind, name = ("baseline", "bn") if index == cells - 1 else ("base" if index == 0 else "grid", None)
        pooling, head, activation = POOLINGS[index % 3], HEADS[index // 3 % 2], ACTIVATIONS[index // 6 % 3]
        label = "BN" if name else f"{pooling} + {head} + {activation} + K=({index % 97},{index % 89},{index // 97})"
        members = []
        for seed in range(seeds):
            run_id = f"resnet50-an-{index:05d}-{seed}"
            members.append({"run_id": run_id, "seed": seed})
            directory = runs_root / run_id
            draw = rng.randrange(50)
            if draw == 0:
                continue  # pending: no directory yet
            directory.mkdir(parents=True)
            if draw == 1:
                (directory / "failed.json").write_text(json.dumps({"reason": "NCCL timeout", "time": 1.7e9}))
                continue
            (directory / "result.json").write_text(json.dumps(_result(run_id, rng), indent=2, sort_keys=True))
            written += 1
        manifest_cells.append(
            {"index": index, "kind": kind, "name": name, "label": label, "changes": {}, "tags": [], "runs": members}
        )
    (runs_root / MARKER).write_text(json.dumps({"scheme": IDENTITY_SCHEME, "time": time.time()}))  # as a sweep does
    sweep = runs_root / "sweeps" / "bench"
    sweep.mkdir(parents=True)
    manifest = {"name": "bench", "mode": "grid", "sweep_file": str(folder / "bench.yaml"), "output_dir": str(runs_root)}
    manifest.update(updated=time.time(), cells=manifest_cells)
    (sweep / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return sweep, written


def target_s(runs: int) -> float:
    """The issue's goals: under 1 s up to 10,000 runs, under 5 s up to 100,000."""
    return 1.0 if runs <= 10_000 else 5.0


def kept_sweep(folder: Path, cells: int, seeds: int) -> tuple[Path, int]:
    """The sweep made in `folder` before with these sizes, else a new one there."""
    stamp = folder / f"made-{cells}x{seeds}.txt"
    if stamp.is_file():
        return folder / "runs" / "sweeps" / "bench", int(stamp.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    sweep, written = make_sweep(folder, cells, seeds)
    stamp.write_text(str(written))
    return sweep, written


def heavy_imports(sweep: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "an_lab.cli", "table", str(sweep)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    names = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return sorted(name for name in names if name.split(".")[0] in HEAVY)


def first_tables(sweep: Path, rounds: int, other: Path | None) -> dict[str, float]:
    """`an-lab table` as it runs first after runs finished: the sweep folder's results index removed before each
    process, so that it reads every result.json and writes the index again (median wall, largest peak; with
    `other`, that checkout's code alternating with this one, as --against does)."""
    command = [sys.executable, "-m", "an_lab.cli", "table", str(sweep)]
    mine, others = [], []
    for _ in range(rounds):
        (sweep / RESULTS_INDEX).unlink(missing_ok=True)
        mine.append(measure(command))
        if other is not None:
            others.append(measure(command, code=other))
    figures = {"wall": statistics.median(w for w, _ in mine), "peak_mb": max(p for _, p in mine)}
    if others:
        figures["against_wall"] = statistics.median(w for w, _ in others)
        figures["against_peak_mb"] = max(p for _, p in others)
    return figures


def in_process(sweep: Path) -> tuple[float, float, int]:
    from an_lab.analysis import collect, render_table
    from an_lab.sweeps.manifest import load_manifest

    start = time.perf_counter()
    manifest = load_manifest(sweep)
    runs = collect(manifest)
    middle = time.perf_counter()
    render_table(manifest, runs=runs)
    return middle - start, time.perf_counter() - middle, len(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=2500)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--save", type=Path, default=None, metavar="DIR", help="write each command's output here")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="make (or reuse) the sweep here")
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also run each command on another checkout's code (git worktree add DIR COMMIT), round by round, and "
        "print the speed-up and whether the outputs match",
    )
    args = parser.parse_args()
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        if args.keep:
            sweep, results = kept_sweep(args.keep.resolve(), args.cells, args.seeds)
        else:
            sweep, results = make_sweep(Path(scratch), args.cells, args.seeds)
        made = time.perf_counter() - start
        load_before = load()
        first = first_tables(sweep, args.rounds, args.against.resolve() if args.against else None)
        read_s, render_s, runs = in_process(sweep)
        commands = {f"table SWEEP_DIR --format {fmt}": ["table", "--format", fmt] for fmt in FORMATS}
        commands["status SWEEP_DIR"] = ["status"]
        figures, compared = {}, {}
        for name, arguments in commands.items():
            output = args.save / (name.replace(" ", "_").replace("-", "") + ".txt") if args.save else None
            command = [sys.executable, "-m", "an_lab.cli", arguments[0], str(sweep), *arguments[1:]]
            if args.against:
                compared[name] = against(command, args.against.resolve(), args.rounds, output)
                figures[name] = compared[name]["wall"], compared[name]["peak_mb"]
            else:
                figures[name] = medians(command, args.rounds, output)
        heavy = heavy_imports(sweep)
        machine = max(load_before, load())

    target = target_s(runs)
    print(f"median of {args.rounds} rounds, {sys.platform}, Python {sys.version.split()[0]}")
    print(f"machine load: {machine:.2f} (1-minute average, the higher of before and after) on {os.cpu_count()} cores")
    print(f"sweep: {args.cells:,} cells x {args.seeds} seeds = {runs:,} runs, {results:,} result.json", end=" ")
    print(f"(made in {made:.1f} s)")
    print(f"in process: collect {read_s:.3f} s, render Markdown {render_s:.3f} s")
    missed = bool(heavy)
    for name, (wall, peak) in figures.items():
        verdict = "ok" if wall < target else "MISSED"
        memory = "ok" if peak < PEAK_TARGET_MB else "MISSED"
        missed |= wall >= target or peak >= PEAK_TARGET_MB
        print(f"an-lab {name:35} {wall:6.3f} s  {verdict} (< {target:g} s); peak {peak:5.0f} MB {memory}")
    line = f"an-lab table SWEEP_DIR, first (writes the results index): {first['wall']:.3f} s"
    line += f"; peak {first['peak_mb']:.0f} MB"
    if "against_wall" in first:
        line += f"; other code {first['against_wall']:.3f} s, {first['against_peak_mb']:.0f} MB"
    print(line + " (once after runs finish; not a target)")
    print(f"heavy imports (torch, lightning, wandb): {', '.join(heavy) or 'none'}")
    if compared:
        print(f"against {args.against} (the same commands, alternating round by round):")
        print("\n".join(against_lines(compared)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
