"""Search mode: one orchestrating process asks Optuna for trials and runs each as one run on any executor (a local
process or a SLURM job of the sweep's job shape), up to max_parallel at once, through the same loop as every sweep
(an_lab.sweeps.run.reconcile). It reports every epoch's validation metric from the run folder's CSV log (on the shared
file system under SLURM), prunes by stopping the run (the process, or `scancel` of the job; the run is marked pruned),
and tells the result. Training processes never touch the study: under DDP every rank would run the objective.

The orchestrator may die at any moment: each trial records its run id (and job id), so a rerun reattaches to trials
in flight, resumes interrupted ones from their checkpoints (the same trial, no new one), and asks new trials only
until the study holds n_trials. A trial whose configuration was already trained (the same run id) is told that run's
result without training. Trials appear in the sweep manifest as cells of kind "trial", so status and table show them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from an_lab.config import RunConfig
from an_lab.errors import UsageError
from an_lab.identity import remember_data, run_dir
from an_lab.launch.base import DONE, STOPPED, Executor, Handle, RunRequest, hand_over
from an_lab.rundir import (
    CONFIG,
    claim_owner,
    describe_owner,
    epoch_metrics,
    mark_failed,
    read_result,
    state,
    try_claim,
    write_json_atomic,
)
from an_lab.sweeps.backbones import Backbone, backbone_jobs
from an_lab.sweeps.expand import expand
from an_lab.sweeps.journal import journal_storage
from an_lab.sweeps.labels import show
from an_lab.sweeps.manifest import build_manifest, check_owner, find_sweep, write_manifest
from an_lab.sweeps.resolver import resolve_settings
from an_lab.sweeps.selection import make_run_dir
from an_lab.sweeps.spec import PRUNERS, SAMPLERS, Sweep

MAX_STALLS = 3  # attempts in a row without a new epoch before a trial fails instead of resuming
ABANDONED = "abandoned"  # user attribute of a trial asked but never started: it does not count towards n_trials
BACKBONE = "backbone"  # user attribute: the classification run a trial's detection run starts from


def _study(sweep: Sweep):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the orchestrator reports each trial itself
    search = sweep.spec.search
    # Without a storage URL, a journal file: safe with concurrent writers, unlike SQLite on shared file systems.
    storage = search.storage or journal_storage(Path(sweep.storage), search.lock_wait_s)
    seed = (sweep.spec.initial_seeds() or [0])[0]
    kind = getattr(optuna.samplers, SAMPLERS[search.sampler])

    def sampler(offset: int):
        if search.sampler == "grid":
            return _without_stop(kind(**search.sampler_options))
        return _without_stop(kind(seed=seed + offset, **search.sampler_options))

    pruner = getattr(optuna.pruners, PRUNERS[search.pruner])(**search.pruner_options)
    study = optuna.create_study(
        study_name=sweep.name,
        storage=storage,
        sampler=sampler(0),
        pruner=pruner,
        direction=search.direction,
        load_if_exists=True,
    )
    _check_space(sweep, study)
    # A relaunch goes on from the trials so far: seeded as at the start, the sampler would ask the same trials again.
    if (asked := len(study.get_trials(deepcopy=False))) > 0:
        study.sampler = sampler(asked)
    return study


def _space(sweep: Sweep) -> dict:
    """What a study's trials mean: its axes and ranges, sampler, metric and direction."""
    search = sweep.spec.search
    return {
        "axes": {axis: [show(value) for value in values] for axis, values in sweep.spec.axes.items()},
        "space": {key: bounds.model_dump(mode="json") for key, bounds in search.space.items()},
        "sampler": [search.sampler, search.sampler_options],
        "metric": [search.metric, search.direction],
    }


def _check_space(sweep: Sweep, study) -> None:
    """A study is tied to its search space: one made for another space (an edited sweep file, or another file of
    the same name) is refused rather than reported as this search's result."""
    wanted = json.loads(json.dumps(_space(sweep), sort_keys=True, default=str))
    recorded = study.user_attrs.get("space")
    if recorded is None:
        if not study.get_trials(deepcopy=False):
            study.set_user_attr("space", wanted)
        return
    if recorded != wanted:
        changed = [key for key in wanted if recorded.get(key) != wanted[key]]
        raise UsageError(
            f"{sweep.path}: the Optuna study {sweep.name!r} in {sweep.storage} was made for another search "
            f"({', '.join(changed)} differ: the study has {', '.join(f'{k}={recorded.get(k)}' for k in changed)}); "
            "its trials do not answer this search. Give the sweep another name (name: ...) to start a new study, or "
            "restore the search as it was"
        )


def _without_stop(sampler):
    """Optuna's grid and brute-force samplers call `study.stop()` once their space is used up, which raises outside
    `study.optimize()` (and, raised inside `tell`, would leave the trial unrecorded). The orchestrator asks and tells
    itself and stops at n_trials, so that call is dropped here."""
    after_trial = sampler.after_trial

    def after_trial_without_stop(study, trial, state, values) -> None:
        try:
            after_trial(study, trial, state, values)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise

    sampler.after_trial = after_trial_without_stop
    return sampler


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


def _backbone_from(recorded: Any) -> Backbone | None:
    """The backbone a trial's user attributes record (None if none, or not one: then it is not waited for)."""
    if not isinstance(recorded, dict):
        return None
    try:
        return Backbone(**{**recorded, "run_dir": Path(recorded["run_dir"])})
    except (TypeError, KeyError):
        return None


def _trial_cell(number: int, settings: dict, tags: tuple, config: RunConfig, directory: Path) -> dict:
    return {
        "index": 10_000 + number,
        "kind": "trial",
        "name": f"trial-{number}",
        "label": f"trial {number}: " + ", ".join(f"{k}={show(v)}" for k, v in settings.items()),
        "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "tags": list(tags),
        "runs": [{"run_id": directory.name, "seed": config.trainer.seed}],
    }


class SearchSource:
    """Optuna's trials as runs, for the reconcile loop: asks until the study holds n_trials, at most `parallel` in
    flight; reports each epoch, prunes, tells."""

    def __init__(self, sweep: Sweep, executor: Executor, say: Callable[[str], None]) -> None:
        import optuna

        self.optuna = optuna
        self.sweep, self.executor, self.say = sweep, executor, say
        self.search = sweep.spec.search
        self.study = _study(sweep)
        self.baselines = expand(sweep, find=find_sweep)
        self.cells: dict[int, dict] = {}
        self.resumable: list[RunRequest] = []
        self._reattach()

    # -- the manifest and the trials an earlier orchestrator left ---------------------------------------------------
    def _write_manifest(self) -> None:
        manifest = build_manifest(self.sweep, self.baselines)
        manifest["cells"] += [self.cells[number] for number in sorted(self.cells)]
        write_manifest(self.sweep, manifest)

    def _reattach(self) -> None:
        """Trials asked but not told (the orchestrator died): follow their jobs, tell finished ones, resume the rest."""
        from an_lab.config import load_config

        running = self.optuna.trial.TrialState.RUNNING
        orphans = []
        for frozen in self.study.get_trials(deepcopy=False):
            cell = frozen.user_attrs.get("cell")
            if isinstance(cell, dict):
                self.cells[frozen.number] = cell
            if frozen.state == running:
                orphans.append(frozen)
        requests = []
        for frozen in orphans:
            run_id = frozen.user_attrs.get("run_id")
            directory = self.sweep.output_dir / run_id if isinstance(run_id, str) else None
            try:
                config = load_config(directory / CONFIG) if directory is not None else None
            except Exception:  # an unreadable config: as good as none
                config = None
            if config is None:  # asked, but the orchestrator died before its run was written: it never started
                self._abandon(frozen)
                continue
            trial = self.optuna.trial.Trial(self.study, frozen._trial_id)
            label = self.cells.get(frozen.number, {}).get("label", f"trial {frozen.number}")
            payload = self._payload(trial, label)
            payload["reported"] = max(frozen.intermediate_values, default=-1)  # what the earlier orchestrator reported
            payload["backbone"] = _backbone_from(frozen.user_attrs.get(BACKBONE))
            if "pruned_at" in frozen.user_attrs:  # pruned, but the orchestrator died before it was told
                payload["pruned_at"] = frozen.user_attrs["pruned_at"]
            requests.append(RunRequest(directory.name, directory, config, label, payload=payload))
        self._write_manifest()
        adopted = {handle.run_id: handle for handle in self.executor.adopt(requests)}
        for handle in adopted.values():
            self.say(f"{handle.request.label}: reattached to {self.executor.describe(handle)}")
            if "pruned_at" in handle.request.payload:
                self.executor.stop(handle)  # reported as stopped, then told pruned
        for request in requests:
            if request.run_id in adopted:
                continue
            if "pruned_at" in request.payload:  # its job is gone already: told pruned, never resubmitted
                self._tell_pruned(request.payload, request.run_dir, "stopped before this orchestrator started")
            elif read_result(request.run_dir)[0] is not None:  # finished while no orchestrator was there
                self._report_epochs(request.payload, request.run_dir)
                self._tell_value(request.payload["trial"], request.payload["label"], request.run_dir, "finished")
            else:
                self.resumable.append(request)

    def _abandon(self, frozen) -> None:
        """Close a trial that was asked but never started (its orchestrator died before writing its run): failed,
        marked abandoned, and not counted towards n_trials, so that the search still trains n_trials trials."""
        self.optuna.trial.Trial(self.study, frozen._trial_id).set_user_attr(ABANDONED, True)
        self.study.tell(frozen.number, state=self.optuna.trial.TrialState.FAIL)
        self.cells.pop(frozen.number, None)
        self.say(f"trial {frozen.number}: asked but never started (its orchestrator died); another is asked instead")

    def asked(self) -> int:
        """Trials that count towards n_trials: every trial asked, but those abandoned before they started."""
        return sum(not t.user_attrs.get(ABANDONED) for t in self.study.get_trials(deepcopy=False))

    @staticmethod
    def _payload(trial, label: str) -> dict:
        return {"trial": trial, "label": label, "reported": -1}

    # -- the source protocol ----------------------------------------------------------------------------------------
    @property
    def exhausted(self) -> bool:
        return not self.resumable and self.asked() >= self.search.n_trials

    def submitting(self):
        import contextlib

        return contextlib.nullcontext()

    def take(self, count: int) -> list[RunRequest]:
        room = min(count, self.executor.max_parallel - len(self.executor.in_flight()))
        requests: list[RunRequest] = []
        while len(requests) < room and self.resumable:
            request = self.resumable.pop(0)
            payload = request.payload  # its backbone may be unfinished again (its job gone with the orchestrator)
            after = self._backbone_jobs(payload["trial"], request.label, request.run_dir, payload.get("backbone"))
            if after is None:
                continue
            request.after = after
            claim = try_claim(request.run_dir, "search orchestrator")
            if claim is None:
                continue  # its own job trains it (reattach missed it); the next reattach follows it
            self.say(f"{request.label}: resuming")
            requests.append(hand_over(request, claim, self.executor.holds_claims))
        while len(requests) < room and self.asked() < self.search.n_trials:
            request = self._ask()
            if request is not None:
                requests.append(request)
        return requests

    def _ask(self) -> RunRequest | None:
        trial = self.study.ask()
        settings = _suggest(self.sweep, trial)
        tags = tuple(f"{key.rpartition('.')[2]}={show(value)}"[:64] for key, value in settings.items())
        config, backbone = resolve_settings(self.sweep, settings, tags, find=find_sweep)
        directory = run_dir(config)
        cell = _trial_cell(trial.number, settings, tags, config, directory)
        trial.set_user_attr("run_id", directory.name)
        trial.set_user_attr("cell", cell)
        if backbone is not None:  # for a later orchestrator that resumes the trial: it waits for it again
            trial.set_user_attr(BACKBONE, {**dataclasses.asdict(backbone), "run_dir": str(backbone.run_dir)})
        self.cells[trial.number] = cell
        self._write_manifest()
        label = cell["label"]
        if read_result(directory)[0] is not None:  # the same configuration already trained
            self._tell_value(trial, label, directory, "already trained")
            return None
        current, detail = state(directory)
        if current == "failed":  # the same configuration failed or was pruned before: the same outcome, no training
            pruned = (detail or "").startswith("pruned by Optuna")
            self.study.tell(
                trial, state=self.optuna.trial.TrialState.PRUNED if pruned else self.optuna.trial.TrialState.FAIL
            )
            self.say(f"{label}: the same run {'was pruned' if pruned else 'failed'} before ({detail})")
            return None
        after = self._backbone_jobs(trial, label, directory, backbone)
        if after is None:
            return None
        make_run_dir(directory)
        remember_data(config)
        claim = try_claim(directory, "search orchestrator")
        if claim is None:  # the same configuration is being trained by another process right now
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            self.say(f"{label}: not run, {describe_owner(claim_owner(directory))} is training the same run")
            return None
        write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
        payload = {**self._payload(trial, label), "backbone": backbone}
        request = RunRequest(directory.name, directory, config, label, payload=payload, after=after)
        return hand_over(request, claim, self.executor.holds_claims)

    def _backbone_jobs(self, trial, label: str, directory: Path, backbone: Backbone | None) -> tuple[str, ...] | None:
        """The SLURM jobs a trial's run waits for (those training its backbone; none once it is done), or None when
        it cannot start: its backbone is not done and cannot be waited for (then the trial fails, saying why)."""
        if backbone is None or backbone.done():
            return ()
        try:
            return backbone_jobs(label, {directory.name: backbone}, self.executor)[directory.name]
        except UsageError as error:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            self.say(f"not run: {error}")
            return None

    def should_stop(self, handle: Handle) -> bool:
        payload = handle.request.payload
        trial = payload["trial"]
        if handle.job_id and trial.user_attrs.get("job_id") != handle.job_id:
            trial.set_user_attr("job_id", handle.job_id)
        return self._report_epochs(payload, handle.run_dir, prune=True)

    def _report_epochs(self, payload: dict, directory: Path, prune: bool = False) -> bool:
        """Report the epochs logged since the last report; with prune, stop at the first one Optuna prunes at."""
        trial = payload["trial"]
        for epoch, value in _metric_rows(directory, self.search.metric):
            if epoch > payload["reported"]:
                trial.report(value, epoch)
                payload["reported"] = epoch
                if prune and trial.should_prune():
                    payload["pruned_at"] = epoch
                    trial.set_user_attr("pruned_at", epoch)  # kept by the study, should this orchestrator die now
                    return True
        return False

    def ended(self, handle: Handle) -> None:
        payload = handle.request.payload
        trial, label = payload["trial"], payload["label"]
        if handle.outcome == STOPPED or "pruned_at" in payload:
            self._tell_pruned(payload, handle.run_dir, f"{self.executor.describe(handle)} stopped")
        elif handle.outcome == DONE or read_result(handle.run_dir)[0] is not None:
            self._report_epochs(payload, handle.run_dir)  # the epochs logged since the last pass of the loop
            self._tell_value(trial, label, handle.run_dir, "done")
        elif state(handle.run_dir)[0] == "interrupted" and not self._stalled(payload, handle):
            self.resumable.append(handle.request)  # killed, or its requeues ran out: the same trial resumes
            self.say(f"{label}: interrupted; it resumes from its checkpoint")
        else:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            self.say(f"{label}: FAILED ({state(handle.run_dir)[1] or handle.outcome})")

    def _tell_pruned(self, payload: dict, directory: Path, how: str) -> None:
        epoch = payload.get("pruned_at")
        mark_failed(directory, f"pruned by Optuna after epoch {epoch}")
        self.study.tell(payload["trial"], state=self.optuna.trial.TrialState.PRUNED)
        self.say(f"{payload['label']}: pruned after epoch {epoch} ({how})")

    def _stalled(self, payload: dict, handle: Handle) -> bool:
        """Whether an interrupted trial made no progress MAX_STALLS times in a row (a job that cannot start, say):
        then it fails with the reason, rather than being resubmitted for ever."""
        reached = len(_metric_rows(handle.run_dir, self.search.metric))
        payload["stalls"] = payload.get("stalls", 0) + 1 if reached <= payload.get("reached", -1) else 0
        payload["reached"] = reached
        if payload["stalls"] < MAX_STALLS:
            return False
        why = state(handle.run_dir)[1] or handle.outcome
        mark_failed(handle.run_dir, f"stopped {MAX_STALLS} times in a row without a new epoch (last: {why})")
        return True

    def _tell_value(self, trial, label: str, directory: Path, how: str) -> None:
        rows = _metric_rows(directory, self.search.metric)
        if not rows:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            self.say(f"{label}: {how}, but no {self.search.metric} was logged")
            return
        value = rows[-1][1]  # the last epoch's value, as in result.json
        self.study.tell(trial, value)
        self.say(f"{label}: {how}, {self.search.metric} {value:.3f}")


def run_search(sweep: Sweep, executor: Executor, say: Callable[[str], None]) -> None:
    from an_lab.sweeps.display import Display
    from an_lab.sweeps.loop import reconcile, report_calls

    check_owner(sweep)  # before the study is opened: another file of this name owns the folder and its journal
    source = SearchSource(sweep, executor, say)
    finished = sum(t.state.is_finished() and not t.user_attrs.get(ABANDONED) for t in source.study.get_trials())
    display = Display(sweep, max(0, sweep.spec.search.n_trials - finished), say)  # the trials still to follow
    source.say = display.say
    started = time.monotonic()
    with display:
        reconcile(executor, source, display, follow=True)
    report_calls(executor, time.monotonic() - started, say)
    complete = source.study.get_trials(deepcopy=False, states=(source.optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = source.study.best_trial
        say(f"best trial {best.number}: {sweep.spec.search.metric} {best.value:.3f} with {best.params}")
