"""A 10,000-run sweep submitted under cluster limits, on a running local SLURM cluster (scripts/local-slurm.sh up).

    SLURM_CONF=/tmp/slurm-dev/etc/slurm.conf python benchmarks/bench_slurm_limits.py [--runs 10000] [--max-submit 2000]

Goes through the sweep's own reconcile loop (an_lab.sweeps.loop) with the SLURM executor, jobs held. MaxArraySize is
the cluster's own (`scontrol show config`, 1001 by default); the local cluster enforces no association limits, so
MaxSubmitJobs is given to the executor as the limit it would have read from sacctmgr. Reports the sbatch calls, the
array sizes, the runs left waiting for room and the wall time; then cancels the jobs. Writes
benchmarks/results/slurm_limits.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from an_lab.launch import slurm_queue
from an_lab.launch.slurm import SlurmExecutor
from an_lab.launch.slurm_queue import ClusterLimits
from an_lab.lightning_modules.data.classification import materialize_digits
from an_lab.sweeps.loop import Silent, reconcile
from an_lab.sweeps.run import GridSource
from an_lab.sweeps.selection import prepare
from an_lab.sweeps.spec import load_sweep

RESULTS = Path(__file__).resolve().parent / "results" / "slurm_limits.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--max-submit", type=int, default=2_000)
    args = parser.parse_args()
    real = slurm_queue.cluster_limits(None)
    if real.max_array_size is None:
        raise SystemExit("no SLURM cluster answers (start one: scripts/local-slurm.sh up DIR; export SLURM_CONF)")
    folder = Path(tempfile.mkdtemp(prefix="an-lab-limits-"))
    materialize_digits(folder / "data")
    sweep_file = folder / "big.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "name": "big",
                "mode": "ablation",
                "base": {
                    "model": {"name": "cifar_resnet20", "norm": "an"},
                    "data": {"name": "digits", "root": str(folder / "data"), "image_size": 16, "num_workers": 0},
                    "trainer": {"epochs": 1, "accelerator": "cpu"},
                    "wandb": {"mode": "disabled"},
                },
                "seeds": list(range(args.runs)),
                "launcher": {"executor": "slurm", "slurm": {"time": 5, "additional_parameters": {"hold": True}}},
                "max_runs": max(args.runs, 100),
                "output_dir": str(folder / "runs"),
            }
        )
    )
    started = time.perf_counter()
    sweep = load_sweep(sweep_file)
    selection = prepare(sweep, retry_failed=False)
    prepared = time.perf_counter() - started
    queued_before = slurm_queue.queued_count() or 0
    limits = ClusterLimits(real.max_array_size, args.max_submit + queued_before, "MaxSubmitJobs (given)", real.gpus)
    executor = SlurmExecutor(sweep.sweep_dir, "an-lab-big", sweep.spec.launcher.slurm, 1, limits=limits)
    source = GridSource(sweep, selection.launch, False, executor, print)
    submit_started = time.perf_counter()
    reconcile(executor, source, Silent(), follow=False)
    submitted = time.perf_counter() - submit_started
    figures = {
        "runs": args.runs,
        "max_array_size": real.max_array_size,
        "max_submit_jobs": args.max_submit,
        "sbatch_calls": len(executor.submissions),
        "array_sizes": [len(submission.runs) for submission in executor.submissions],
        "submitted": sum(len(submission.runs) for submission in executor.submissions),
        "waiting_for_room": len(source.pending),
        "expand_and_manifest_s": round(prepared, 2),
        "claim_and_submit_s": round(submitted, 2),
        "scheduler_calls": executor.scheduler_calls,
    }
    ids = [job_id for submission in executor.submissions for job_id in submission.runs.values()]
    slurm_queue.cancel(ids, wait_s=120)
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
