"""Search mode: one orchestrating process asks Optuna for trials, runs each as a local `an-lab train` process,
reports every epoch's validation metric from the run's CSV log, prunes by stopping the process, and tells the
result. Training processes never touch the study: under DDP every rank would run the objective, so the study
lives in this one process.

A trial whose configuration was already trained (the same run id) is told that run's result without training.
Trials appear in the sweep manifest as cells of kind "trial", so status and table show them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from an_lab.config import run_dir
from an_lab.rundir import (
    CONFIG,
    claim_owner,
    describe_owner,
    epoch_metrics,
    mark_failed,
    read_result,
    try_claim,
    write_json_atomic,
)
from an_lab.slurm.local import LocalJob, run_local
from an_lab.sweeps.expand import PlannedRun, resolve_settings, show
from an_lab.sweeps.launch import make_run_dir
from an_lab.sweeps.manifest import MANIFEST, build_manifest
from an_lab.sweeps.spec import PRUNERS, SAMPLERS, Sweep


def _study(sweep: Sweep):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    search = sweep.spec.search
    if search.storage:
        storage = search.storage
    else:  # a journal file: safe with concurrent writers, unlike SQLite on shared file systems
        sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(sweep.storage))
    seed = (sweep.spec.initial_seeds() or [0])[0]
    sampler_options = {"seed": seed, **search.sampler_options} if search.sampler != "grid" else search.sampler_options
    sampler = getattr(optuna.samplers, SAMPLERS[search.sampler])(**sampler_options)
    pruner = getattr(optuna.pruners, PRUNERS[search.pruner])(**search.pruner_options)
    return optuna.create_study(
        study_name=sweep.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=search.direction,
        load_if_exists=True,
    )


def _suggest(sweep: Sweep, trial) -> dict[str, Any]:
    """Dotted settings for a trial: list axes are categorical (by their written form), ranges numeric."""
    settings: dict[str, Any] = {}
    for axis, values in sweep.spec.axes.items():
        written = [show(value) for value in values]
        settings[axis] = values[written.index(trial.suggest_categorical(axis, written))]
    for key, bounds in sweep.spec.search.space.items():
        if bounds.type == "int":
            step = int(bounds.step or 1)
            settings[key] = trial.suggest_int(key, int(bounds.low), int(bounds.high), step=step, log=bounds.log)
        else:
            settings[key] = trial.suggest_float(key, bounds.low, bounds.high, step=bounds.step, log=bounds.log)
    return settings


def _metric_rows(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    return [(int(row["epoch"]), row[metric]) for row in epoch_metrics(run_dir) if metric in row]


def run_search(sweep: Sweep, baselines: list[PlannedRun], max_parallel: int, report: Callable[[str], None]) -> None:
    import optuna

    study = _study(sweep)
    search = sweep.spec.search
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    remaining = search.n_trials - len(study.get_trials(deepcopy=False, states=finished_states))
    trial_cells: list[dict] = []

    def write_manifest() -> None:
        manifest = build_manifest(sweep, baselines)
        manifest["cells"] += trial_cells
        write_json_atomic(sweep.sweep_dir / MANIFEST, manifest)

    def final_value(directory: Path) -> float:
        return _metric_rows(directory, search.metric)[-1][1]  # the last epoch's value, as in result.json

    def next_job() -> LocalJob | None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            trial = study.ask()
            settings = _suggest(sweep, trial)
            tags = tuple(f"{key.rpartition('.')[2]}={show(value)}"[:64] for key, value in settings.items())
            config = resolve_settings(sweep, settings, tags)
            directory = run_dir(config)
            trial.set_user_attr("run_id", directory.name)
            label = f"trial {trial.number}: " + ", ".join(f"{k}={show(v)}" for k, v in settings.items())
            trial_cells.append(
                {
                    "index": 10_000 + trial.number,
                    "kind": "trial",
                    "name": f"trial-{trial.number}",
                    "label": label,
                    "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                    "tags": list(tags),
                    "runs": [{"run_id": directory.name, "seed": config.trainer.seed}],
                }
            )
            write_manifest()
            if read_result(directory)[0] is not None:  # the same configuration already trained
                value = final_value(directory)
                study.tell(trial, value)
                report(f"{label}: already trained, {search.metric} {value:.3f}")
                continue
            make_run_dir(directory)
            claim = try_claim(directory, "search orchestrator")
            if claim is None:  # the same configuration is being trained by another process right now
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                report(f"{label}: not run, {describe_owner(claim_owner(directory))} is training the same run")
                continue
            write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
            payload = {"trial": trial, "label": label, "reported": -1}
            return LocalJob(directory.name, directory, payload=payload, claim=claim)
        return None

    def should_stop(job: LocalJob) -> bool:
        trial, reported = job.payload["trial"], job.payload["reported"]
        for epoch, value in _metric_rows(job.run_dir, search.metric):
            if epoch > reported:
                trial.report(value, epoch)
                job.payload["reported"] = epoch
                if trial.should_prune():
                    job.payload["pruned_at"] = epoch
                    return True
        return False

    def on_finish(job: LocalJob) -> None:
        trial, label = job.payload["trial"], job.payload["label"]
        if job.stopped:
            epoch = job.payload["pruned_at"]
            mark_failed(job.run_dir, f"pruned by Optuna after epoch {epoch}")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            report(f"{label}: pruned after epoch {epoch}")
        elif job.returncode == 0:
            value = final_value(job.run_dir)
            study.tell(trial, value)
            report(f"{label}: {search.metric} {value:.3f}")
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            report(f"{label}: FAILED (exit {job.returncode})")

    write_manifest()
    run_local(next_job, max_parallel, on_finish=on_finish, should_stop=should_stop)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        report(f"best trial {best.number}: {search.metric} {best.value:.3f} with {best.params}")
