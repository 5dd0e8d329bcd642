"""The SLURM executor against the project's local SLURM cluster (started and stopped here, as root on Debian).

    python benchmarks/bench_slurm.py [--rounds 3] [--runs 1000] [--skip-quickstart]

1. Submitting a 1,000-run sweep: wall time of the whole `an-lab sweep --executor slurm` command (expansion, manifest,
   config files, code snapshot, submitit pickles, sbatch, job records), the submission part it reports, and the number
   of sbatch calls (counted by a wrapper first on PATH). Jobs are submitted held, then removed with `an-lab cancel`.
   Target: one sbatch call and under 5 s.
2. The quickstart sweep (sweeps/quickstart.yaml, 9 runs on the digits data) through the local executor and through
   SLURM with --wait, one after the other in this run. Target: SLURM within 25% of local.

Writes benchmarks/results/slurm.json. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-slurm.sh"
SUBMIT_TARGET_S = 5.0
QUICKSTART_RATIO_TARGET = 1.25


def an_lab(*args, env: dict | None = None, timeout: float = 1800) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "an_lab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"an-lab {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done, seconds


def cluster_up(state: Path) -> str:
    for step in (["install"], ["up", str(state)]):
        done = subprocess.run([str(SCRIPT), *step], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise SystemExit(f"local-slurm.sh {step[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1].split("=", 1)[1]


def counting_sbatch(folder: Path) -> tuple[dict, Path]:
    shims, log = folder / "shims", folder / "sbatch-calls.log"
    shims.mkdir()
    (shims / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {shutil.which("sbatch")} "$@"\n')
    (shims / "sbatch").chmod(0o755)
    return dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}"), log


def big_sweep(folder: Path, data: Path, runs: int) -> Path:
    sweep = {
        "name": "thousand",
        "mode": "ablation",
        "base": {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(data), "image_size": 16, "num_workers": 0},
            "trainer": {"epochs": 1, "accelerator": "cpu"},
            "wandb": {"mode": "disabled"},
        },
        "seeds": list(range(runs)),
        "launcher": {
            "executor": "slurm",
            "max_parallel": 2,
            "slurm": {"gpus_per_node": 0, "time": 10, "additional_parameters": {"hold": True}},
        },
        "output_dir": str(folder / "runs"),
    }
    path = folder / "thousand.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def bench_submission(work: Path, data: Path, runs: int, rounds: int) -> dict:
    walls, reported, calls, tasks = [], [], [], []
    for index in range(rounds):
        folder = work / f"submit-{index}"
        folder.mkdir()
        env, log = counting_sbatch(folder)
        path = big_sweep(folder, data, runs)
        done, seconds = an_lab("sweep", path, env=env)
        match = re.search(r"one sbatch call in ([0-9.]+) s", done.stdout)
        if done.returncode != 0 or match is None:
            raise SystemExit(f"submission failed:\n{done.stdout}\n{done.stderr}")
        walls.append(seconds)
        reported.append(float(match.group(1)))
        calls.append(len(log.read_text().splitlines()))
        jobs = json.loads((folder / "runs" / "sweeps" / "thousand" / "slurm" / "jobs.json").read_text())
        tasks.append(len(jobs["submissions"][0]["runs"]))
        cancelled, cancel_s = an_lab("cancel", path)
        if f"{runs} job(s)" not in cancelled.stdout:
            raise SystemExit(f"an-lab cancel did not cancel the {runs} held jobs:\n{cancelled.stdout}")
        print(
            f"  round {index + 1}: {seconds:.2f} s wall ({reported[-1]:.2f} s submitting), {calls[-1]} sbatch call(s) "
            f"for {tasks[-1]} tasks; cancel {cancel_s:.2f} s",
            flush=True,
        )
    return {
        "runs": runs,
        "wall_s_median": statistics.median(walls),
        "wall_s_rounds": walls,
        "submit_s_median": statistics.median(reported),
        "sbatch_calls": calls,
        "tasks_per_array": tasks,
    }


def bench_quickstart(work: Path, data: Path) -> dict:
    quickstart = ROOT / "sweeps" / "quickstart.yaml"
    common = ["--set", f"data.root={data}"]
    local, local_s = an_lab("sweep", quickstart, "--set", f"output_dir={work / 'local'}", *common)
    print(f"  local executor: {local_s:.1f} s (exit {local.returncode})", flush=True)
    slurm, slurm_s = an_lab(
        "sweep",
        quickstart,
        "--executor",
        "slurm",
        "--wait",
        "--set",
        f"output_dir={work / 'slurm'}",
        "--set",
        "launcher.slurm.gpus_per_node=0",
        *common,
    )
    print(f"  slurm executor: {slurm_s:.1f} s (exit {slurm.returncode})", flush=True)
    done = {name: len(list((work / name).glob("*/result.json"))) for name in ("local", "slurm")}
    if local.returncode or slurm.returncode:
        raise SystemExit(f"a quickstart sweep failed:\n{local.stdout[-2000:]}\n{slurm.stdout[-2000:]}")
    return {"local_s": local_s, "slurm_s": slurm_s, "ratio": slurm_s / local_s, "results": done}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the local SLURM cluster needs root (scripts/local-slurm.sh)")
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as temporary:
        work = Path(temporary)
        state = work / "cluster"
        print("starting the local SLURM cluster ...", flush=True)
        os.environ["SLURM_CONF"] = cluster_up(state)
        try:
            from an_lab.lightning_modules.data.classification import materialize_digits

            data = work / "data"
            materialize_digits(data)
            print(f"1. submitting a {args.runs}-run sweep ({args.rounds} rounds, held jobs, then an-lab cancel)")
            results = {"submission": bench_submission(work, data, args.runs, args.rounds)}
            if not args.skip_quickstart:
                print("2. the quickstart sweep, local executor then SLURM (--wait)")
                results["quickstart"] = bench_quickstart(work, data)
        finally:
            subprocess.run([str(SCRIPT), "down", str(state)], capture_output=True, timeout=300)
    submission = results["submission"]
    ok = submission["wall_s_median"] < SUBMIT_TARGET_S and set(submission["sbatch_calls"]) == {1}
    print(
        f"\nsubmission of {submission['runs']} runs: {submission['wall_s_median']:.2f} s median wall "
        f"(of which {submission['submit_s_median']:.2f} s submitting), sbatch calls per sweep "
        f"{submission['sbatch_calls']} (target: 1 call, < {SUBMIT_TARGET_S:g} s) -> {'ok' if ok else 'MISSED'}"
    )
    if "quickstart" in results:
        quick = results["quickstart"]
        fine = quick["ratio"] <= QUICKSTART_RATIO_TARGET
        ok = ok and fine
        print(
            f"quickstart: local {quick['local_s']:.1f} s, slurm {quick['slurm_s']:.1f} s, ratio {quick['ratio']:.2f} "
            f"(target <= {QUICKSTART_RATIO_TARGET}) -> {'ok' if fine else 'MISSED'}"
        )
    sys.path.insert(0, str(Path(__file__).parent))
    from common import save

    print(f"saved {save(results, 'slurm')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
