"""What the local executor adds to each run: a fresh interpreter per run (start_process, which imports torch, Lightning
and W&B every time) against the forkserver (an_lab.launch.workers, which imports them once per launcher).

    python benchmarks/bench_local_overhead.py [--runs 4] [--epochs 1] [--wandb disabled]

N tiny runs (CIFAR ResNet-20 on the digits at 16x16, one epoch, seeds 0..N-1) go through a LocalExecutor with
max_parallel 1, once per starter; the starters alternate run by run so that a drifting machine hits both alike. A
run's overhead is the executor's wall time for it (submit until poll() reports its end, polled every 10 ms) minus the
run's own training time (result.json's wall_time_s); it splits into the time before the run wrote started.json
(interpreter, imports, config) and the rest (fit set-up outside the timer, result, exit). The forkserver's first run
includes the server's start (its imports); "steady" leaves that run out. The same seeds must give the same final
metrics under both starters.

Writes benchmarks/results/local_overhead.json. Exit status 1 when a pair of runs disagrees.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from an_lab.config import load_config
from an_lab.identity import run_dir, run_id
from an_lab.launch.base import DONE, RunRequest
from an_lab.launch.local import LocalExecutor, start_process
from an_lab.launch.workers import Forkserver
from an_lab.rundir import CONFIG, STARTED, read_json, try_claim, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]

STARTERS = ("process", "forkserver")


def run_tree(data_root: Path, output: Path, seed: int, epochs: int, wandb: str) -> dict:
    return {
        "model": {"name": "cifar_resnet20", "norm": "an"},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
        "optim": {"base_lr": 0.4, "warmup_epochs": 1},
        "trainer": {"epochs": epochs, "seed": seed},
        "wandb": {"mode": wandb},
        "output_dir": str(output),
    }


def request(tree: dict, folder: Path) -> RunRequest:
    """A claimed run with its config.json written, as the sweep's GridSource hands it to the executor."""
    path = folder / f"seed-{tree['trainer']['seed']}.yaml"
    path.write_text(yaml.safe_dump(tree))
    config = load_config(path)
    directory = run_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    claim = try_claim(directory, "benchmark")
    assert claim is not None, directory
    write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
    return RunRequest(run_id(config), directory, config, claim=claim)


def one_run(executor: LocalExecutor, run: RunRequest) -> dict:
    submitted = time.time()
    (handle,) = executor.submit([run])
    while not executor.poll():
        time.sleep(0.01)
    ended = time.time()
    result = read_json(run.run_dir / "result.json") or {}
    started = read_json(run.run_dir / STARTED) or {}
    if handle.outcome != DONE or not result:
        raise SystemExit(f"run {run.run_id} ended {handle.outcome} (exit {handle.returncode}): {run.run_dir}")
    wall = ended - submitted
    return {
        "seed": run.config.trainer.seed,
        "wall_s": round(wall, 3),
        "train_s": result["wall_time_s"],
        "overhead_s": round(wall - result["wall_time_s"], 3),
        "before_start_s": round(started["time"] - submitted, 3),
        "after_training_s": round(ended - started["time"] - result["wall_time_s"], 3),
        "final": result["final"],
    }


def summary(rows: list[dict]) -> dict:
    overheads = [row["overhead_s"] for row in rows]
    steady = overheads[1:] or overheads
    return {
        "mean_s": round(statistics.mean(overheads), 3),
        "max_s": round(max(overheads), 3),
        "steady_mean_s": round(statistics.mean(steady), 3),
        "steady_max_s": round(max(steady), 3),
        "first_s": overheads[0],
        "total_wall_s": round(sum(row["wall_s"] for row in rows), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--wandb", choices=("disabled", "offline"), default="disabled")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")

    from an_lab.lightning_modules.data.classification import materialize_digits

    with tempfile.TemporaryDirectory(prefix="bench-local-") as folder:
        base = Path(folder)
        materialize_digits(base / "data")
        forkserver = Forkserver(fallback=start_process)
        executors = {"process": LocalExecutor(1, starter=start_process), "forkserver": LocalExecutor(1, forkserver)}
        rows: dict[str, list[dict]] = {name: [] for name in STARTERS}
        try:
            for seed in range(args.runs):
                for name in STARTERS:
                    tree = run_tree(base / "data", base / "runs" / name, seed, args.epochs, args.wandb)
                    row = one_run(executors[name], request(tree, base))
                    rows[name].append(row)
                    print(
                        f"  seed {seed} {name:<10} wall {row['wall_s']:6.2f} s  training {row['train_s']:6.2f} s  "
                        f"overhead {row['overhead_s']:6.2f} s",
                        flush=True,
                    )
        finally:
            for executor in executors.values():
                executor.close()
        if forkserver.disabled:
            raise SystemExit(f"the forkserver did not run: {forkserver.disabled}")

    stats = {name: summary(rows[name]) for name in STARTERS}
    before, after = stats["process"], stats["forkserver"]
    same = [a["final"] == b["final"] for a, b in zip(rows["process"], rows["forkserver"], strict=True)]
    print(f"\nper-run overhead of the local executor, {args.runs} runs of {args.epochs} epoch(s), max_parallel 1")
    print(f"{'starter':<12}{'mean':>9}{'max':>9}{'first':>9}{'steady mean':>13}{'steady max':>12}{'total wall':>12}")
    for name in STARTERS:
        s = stats[name]
        print(
            f"{name:<12}{s['mean_s']:>8.2f}s{s['max_s']:>8.2f}s{s['first_s']:>8.2f}s"
            f"{s['steady_mean_s']:>12.2f}s{s['steady_max_s']:>11.2f}s{s['total_wall_s']:>11.2f}s"
        )
    ratio = before["mean_s"] / after["mean_s"]
    steady_ratio = before["steady_mean_s"] / after["steady_mean_s"]
    print(f"before/after (mean overhead): {ratio:.1f}x; steady runs: {steady_ratio:.1f}x")
    print("same final metrics for every seed: " + ("yes" if all(same) else f"NO {same}"))
    from common import device_name, save  # torch: imported once the runs are over

    path = save(
        {
            "device": device_name(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
            "setting": f"{args.runs} runs x {args.epochs} epoch(s), digits 16x16, ResNet-20 AN, W&B {args.wandb}",
            "summary": stats,
            "ratio_mean": round(ratio, 2),
            "ratio_steady_mean": round(steady_ratio, 2),
            "same_final_metrics": all(same),
            "runs": rows,
        },
        "local_overhead",
    )
    print(f"wrote {path.relative_to(ROOT)}")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
