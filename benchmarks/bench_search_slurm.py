"""A search on a running local SLURM cluster whose orchestrator is SIGKILLed twice (scripts/local-slurm.sh up DIR).

    SLURM_CONF=DIR/etc/slurm.conf python benchmarks/bench_search_slurm.py [--trials 20] [--parallel 2]

Random sampler over the learning rate (log-uniform 1e-6 .. 0.5), median pruner, 3 epochs of a CIFAR ResNet-20 on the
digits per trial, every trial one SLURM job. The orchestrator (`an-lab sweep`) is killed with SIGKILL once a third and
once two thirds of the trials are submitted, then run again to the end. Reports the trials by state, whether any
trial was submitted twice or asked beyond n_trials, whether every pruned trial's job was cancelled, the scheduler
calls per minute of the last orchestrator, and the wall time. Writes benchmarks/results/search_slurm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "search_slurm.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from an_lab.lightning_modules.data.classification import materialize_digits

    folder = Path(tempfile.mkdtemp(prefix="an-lab-search-"))
    materialize_digits(folder / "data")
    sweep = {
        "name": "search",
        "mode": "search",
        "base": {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(folder / "data"), "image_size": 16, "num_workers": 0},
            "optim": {"warmup_epochs": 1},
            "trainer": {"epochs": 3, "accelerator": "cpu"},
            "wandb": {"mode": "disabled"},
        },
        "search": {
            "metric": "val_top1_err",
            "n_trials": args.trials,
            "sampler": "random",
            "pruner": "median",
            "pruner_options": {"n_startup_trials": 2, "n_warmup_steps": 0},
            "space": {"optim.base_lr": {"low": 1e-6, "high": 0.5, "log": True}},
        },
        "launcher": {"executor": "slurm", "max_parallel": args.parallel, "slurm": {"time": 20}},
        "output_dir": str(folder / "runs"),
    }
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runs = folder / "runs"
    command = [sys.executable, "-m", "an_lab.cli", "sweep", str(path), "--poll", "2"]
    started = time.perf_counter()
    for fraction in (1 / 3, 2 / 3):
        target = max(1, round(args.trials * fraction))
        with (folder / f"orchestrator-{target}.log").open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            while len(list(runs.glob("*/slurm.json"))) < target and process.poll() is None:
                time.sleep(0.5)
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    final = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    journal = runs / "sweeps" / "search" / "optuna-journal.log"
    study = optuna.load_study(study_name="search", storage=JournalStorage(JournalFileBackend(str(journal))))
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    resubmitted = [
        trial.number
        for trial in study.trials
        if json.loads((runs / trial.user_attrs["run_id"] / "slurm.json").read_text()).get("previous")
    ]
    pruned_jobs = [
        json.loads((runs / trial.user_attrs["run_id"] / "slurm.json").read_text())["job_id"]
        for trial in study.trials
        if trial.state == optuna.trial.TrialState.PRUNED
    ]
    accounting = subprocess.run(
        ["sacct", "--noheader", "--parsable2", "-X", "--jobs", ",".join(pruned_jobs) or "0", "--format", "JobID,State"],
        capture_output=True,
        text=True,
    ).stdout
    cancelled = sum("CANCELLED" in line for line in accounting.splitlines())
    calls = next((line for line in final.stdout.splitlines() if "scheduler calls" in line), None)
    figures = {
        "n_trials": args.trials,
        "in_flight": args.parallel,
        "orchestrator_kills": 2,
        "trials_in_study": len(study.trials),
        "states": states,
        "trials_submitted_twice": resubmitted,
        "pruned_jobs": len(pruned_jobs),
        "pruned_jobs_cancelled": cancelled,
        "last_orchestrator_following": calls,
        "wall_s": round(wall, 1),
        "final_exit": final.returncode,
    }
    print(json.dumps(figures, indent=2))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
