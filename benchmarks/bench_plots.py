"""How long the figure commands and the no-network failures take: `an-lab plot` and `an-lab report --html` on a
synthetic finished ablation, and the time to a clear error of `an-lab sync` (W&B offline mode, no API key, a server
that does not answer) and `an-lab report --wandb --publish` (offline) against their --timeout bound.

    python benchmarks/bench_plots.py [--rounds 3] [--values 3] [--seeds 3] [--epochs 30] [--bound 10]

Wall times are medians of fresh processes after one warm-up run. The ablation has a base cell, `--values` cells on
each of three axes (pooling, activation, K) and a BN baseline, every run with a per-epoch CSV log. These figures were
once wall-clock asserts in tests/analysis/test_results_plots.py (they flaked on a loaded machine); here they are only
printed.
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

ROOT = Path(__file__).resolve().parents[1]
BASE_TAGS = {"pooling": "rsd", "head": "a2", "activation": "hsigmoid", "k": "(10,10,20,20)"}
AXES = {
    "pooling": ["mean", "concat", "max", "min"],
    "activation": ["softmax", "sigmoid", "relu6", "tanh"],
    "k": ["(5,5,10,10)", "(20,20,40,40)", "(1,1,1,1)", "(2,2,4,4)"],
}
NETWORKLESS = {
    "sync, W&B offline mode": {"WANDB_MODE": "offline"},
    "sync, no API key": {},
    "sync, server not answering": {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"},
}


def _write_run(folder: Path, seed: int, final: float, epochs: int, params: int) -> None:
    """result.json, config.json and logs/attempt-0/metrics.csv as a finished run leaves them."""
    logs = folder / "logs" / "attempt-0"
    logs.mkdir(parents=True)
    lines = ["epoch,val_top1_err,val_top5_err,val_loss,train_loss"]
    for epoch in range(epochs):
        error = final + 40.0 * (epochs - 1 - epoch) / epochs
        lines.append(f"{epoch},{error},{error / 4},{error / 20},")
        lines.append(f"{epoch},,,,{2.0 - 1.5 * epoch / epochs}")
    (logs / "metrics.csv").write_text("\n".join(lines) + "\n")
    result = {
        "run_id": folder.name,
        "status": "done",
        "final": {"top1_err": final, "top5_err": final / 4, "val_loss": final / 20, "train_loss": 0.5},
        "best": {"top1_err": final, "top5_err": final / 4, "epoch": epochs - 1},
        "params": params,
        "macs": 4_094_000_000,
        "epochs": epochs,
        "wall_time_s": 3600.0,
        "images_per_s": 500.0,
        "device": "NVIDIA H200",
        "precision": "bf16-mixed",
        "finished_at": 1.7e9,
    }
    (folder / "result.json").write_text(json.dumps(result))
    config = {
        "wandb": {"entity": None, "project": "an-lab-bench", "group": "bench", "tags": []},
        "trainer": {"seed": seed},
    }
    (folder / "config.json").write_text(json.dumps(config))


def make_sweep(folder: Path, values: int, seeds: int, epochs: int) -> tuple[Path, int]:
    """<folder>/runs/sweeps/bench/manifest.json and its finished runs in <folder>/runs; returns the sweep folder and
    the number of runs."""
    rng = random.Random(0)
    runs = folder / "runs"
    drafts = [("base", None, "RSD + A2 + hsigmoid + K=(10,10,20,20)", {})]
    for axis, alternatives in AXES.items():
        for value in alternatives[:values]:
            drafts.append(("axis", None, f"{axis} = {value}", {axis: value}))
    drafts.append(("baseline", "bn", "BN", None))
    cells = []
    for index, (kind, name, label, tags) in enumerate(drafts):
        tag_values = {"baseline": "bn", "norm": "bn"} if tags is None else {**BASE_TAGS, **tags}
        members = []
        for seed in range(seeds):
            run_id = f"bench-{index:03d}-{seed}"
            members.append({"run_id": run_id, "seed": seed})
            final = 21.0 + index * 0.1 + rng.random()
            _write_run(runs / run_id, seed, final, epochs, 25_557_032 if tags is None else 25_755_420 + index)
        cells.append(
            {
                "index": index,
                "kind": kind,
                "name": name,
                "label": label,
                "changes": {},
                "tags": [f"{key}={value}" for key, value in tag_values.items()],
                "runs": members,
            }
        )
    sweep = runs / "sweeps" / "bench"
    sweep.mkdir(parents=True)
    manifest = {"name": "bench", "mode": "ablation", "sweep_file": "bench.yaml", "output_dir": str(runs)}
    manifest.update(updated=time.time(), cells=cells, description="a synthetic ablation for bench_plots.py")
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    for member in cells[0]["runs"][:2]:  # offline W&B folders for `an-lab sync` to find (content not needed)
        run_id = member["run_id"]
        offline = runs / run_id / "wandb" / "wandb" / f"offline-run-20260101_000000-{run_id}"
        offline.mkdir(parents=True)
        (offline / f"run-{run_id}.wandb").write_bytes(b"\0" * 64)
    return sweep, len(cells) * seeds


def _cli() -> list[str]:
    return [shutil.which("an-lab")] if shutil.which("an-lab") else [sys.executable, "-m", "an_lab.cli"]


def _timed(command: list[str], env: dict[str, str], guard: float) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=guard)
    return time.perf_counter() - start, done


def median_time(command: list[str], env: dict[str, str], rounds: int, guard: float) -> tuple[float, int, str]:
    """Median wall seconds of `rounds` runs after one warm-up, the last exit status and its error line (if any)."""
    _timed(command, env, guard)
    walls, done = [], None
    for _ in range(rounds):
        wall, done = _timed(command, env, guard)
        walls.append(wall)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return statistics.median(walls), done.returncode, errors[0] if errors else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--values", type=int, default=3, choices=range(1, 5), help="cells per axis (1-4)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bound", type=float, default=10.0, help="--timeout of `an-lab sync` (s)")
    args = parser.parse_args()

    quiet = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    with tempfile.TemporaryDirectory() as folder:
        sweep, runs = make_sweep(Path(folder), args.values, args.seeds, args.epochs)
        offline = {**quiet, "WANDB_MODE": "offline", "WANDB_ERROR_REPORTING": "false"}
        figures = {
            "plot": [*_cli(), "plot", str(sweep), "--out", f"{folder}/figures"],
            "report --html": [*_cli(), "report", str(sweep), "--html", "--out", f"{folder}/summary.html"],
        }
        drawn = {name: median_time(command, offline, args.rounds, guard=600) for name, command in figures.items()}
        failures = {}
        for case, extra in NETWORKLESS.items():
            env = {**quiet, "HOME": folder, "WANDB_ERROR_REPORTING": "false", **extra}  # HOME: no ~/.netrc
            command = [*_cli(), "sync", str(sweep), "--timeout", str(args.bound)]
            failures[case] = (args.bound, *median_time(command, env, args.rounds, guard=args.bound * 4 + 30))
        publish = [*_cli(), "report", str(sweep), "--wandb", "--publish", "--out", f"{folder}/r.json", "--timeout", "5"]
        failures["report --wandb --publish, offline"] = (5.0, *median_time(publish, offline, args.rounds, guard=60))

    print(f"median of {args.rounds} rounds after a warm-up, {sys.platform}, Python {sys.version.split()[0]}, ", end="")
    print(f"{os.cpu_count()} CPUs")
    cells = 2 + len(AXES) * args.values
    print(f"sweep: {cells} cells x {args.seeds} seeds = {runs} finished runs, {args.epochs} epochs each")
    for name, (wall, code, _) in drawn.items():
        print(f"an-lab {name:40} {wall:6.2f} s  (exit {code})")
    print("time to a clear error without a network (the command's --timeout in brackets):")
    for case, (bound, wall, code, last) in failures.items():
        print(f"an-lab {case:40} {wall:6.2f} s  [{bound:g} s]  (exit {code}) {last[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
