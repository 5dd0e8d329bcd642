"""`an-lab sweep`: one reconcile loop for every mode and executor.

    expand -> select what is not done -> claim -> submit -> follow -> report

A *source* says what to run next (the planned runs of a grid, ablation or list sweep; Optuna's trials in a search)
and hears how each run ended; an *executor* (an_lab.launch) runs them. The loop asks the executor for free slots,
takes that many runs from the source, submits them, polls for the ones that ended and asks the source whether a
running one should stop (a pruned trial). The same loop drives local processes and SLURM job arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.launch.base import Executor, Handle, LaunchError, RunRequest, hand_over
from an_lab.launch.registry import NAMES, executor_class
from an_lab.rundir import state
from an_lab.sweeps.backbones import Backbone, backbone_jobs
from an_lab.sweeps.chain import backbones_of, trial_backbones
from an_lab.sweeps.expand import PlannedRun
from an_lab.sweeps.loop import reconcile, report_calls
from an_lab.sweeps.selection import RETRYABLE, claim_run, holder, prepare, sweep_lock, validate
from an_lab.sweeps.spec import SeedPolicy, Sweep


@dataclass
class Options:
    executor: str  # local or slurm
    retry_failed: bool = False
    wait: bool = False  # slurm: follow the jobs until they end
    max_parallel: int | None = None
    poll_s: float | None = None  # slurm: seconds between scheduler polls (default launcher.slurm.poll_interval_s)


def make_executor(sweep: Sweep, options: Options) -> Executor:
    """The executor options.executor names (an_lab.launch.registry), for this sweep."""
    return executor_class(options.executor).for_sweep(
        sweep.sweep_dir,
        f"an-lab-{sweep.name}",
        sweep.spec.launcher,
        options.max_parallel or sweep.spec.launcher.max_parallel,
        options.poll_s,
        follow=options.wait or sweep.mode == "search",  # a search follows its trials: it asks for more as they end
    )


@dataclass(frozen=True)
class Followed:
    """How `an-lab sweep` followed its runs to their end, for its final report."""

    scheduled: bool  # its runs were a scheduler's jobs (Executor.scheduled): the report shows the queue's view

    def settled(self) -> tuple[str, ...]:
        """Run states that end a followed sweep well: done, and locally running (another launcher trains it); a
        scheduler's run still "running" once its job was followed to its end ended without its record."""
        return ("done",) if self.scheduled else ("done", "running")


def submission_lock(sweep: Sweep, executor: Executor):
    """What submitting runs holds: nothing where the executor's processes keep their claims (two launchers then
    meet on the claims), else the sweep's launch lock (runs are claimed only briefly before they are queued)."""
    return contextlib.nullcontext() if executor.holds_claims else sweep_lock(sweep)


def request_for(run: PlannedRun, after: tuple[str, ...] = ()) -> RunRequest:
    return RunRequest(run.run_id, run.run_dir, run.config, label=run.cell.label, after=after)


@contextlib.contextmanager
def sweep_errors(sweep: Sweep):
    """An executor's LaunchError becomes the sweep's own error, naming the file and the key's line."""
    try:
        yield
    except LaunchError as error:
        if error.key:
            raise sweep.error(str(error), error.key) from None
        raise


# ---------------------------------------------------------------------------------------------------------------------
# Sources


@dataclass
class GridSource:
    """The planned runs of a sweep, claimed one at a time as slots free up.

    Local runs keep their claim (the child process holds it); SLURM runs are claimed briefly to write the config and
    released (the job claims the run when it starts), and are submitted under the sweep's launch lock, skipping runs
    another launch submitted meanwhile."""

    sweep: Sweep
    runs: list[PlannedRun]
    retry_failed: bool
    executor: Executor
    say: Callable[[str], None]
    after: dict[str, tuple[str, ...]] = field(default_factory=dict)  # run id -> the SLURM jobs it waits for
    started: float = field(default_factory=time.time)
    taken: list[PlannedRun] = field(default_factory=list)  # runs another process owned when their turn came

    def __post_init__(self) -> None:
        self.pending = list(self.runs)

    @property
    def exhausted(self) -> bool:
        return not self.pending

    def submitting(self):
        return submission_lock(self.sweep, self.executor)

    def take(self, count: int) -> list[RunRequest]:
        requests, keep = [], self.executor.holds_claims
        while self.pending and len(requests) < count:
            run = self.pending.pop(0)
            if self.executor.queued_since(run.run_dir, self.started):
                continue  # another launch of this sweep queued it meanwhile
            claim = claim_run(run, self.retry_failed, self.executor.claimant)
            if claim is None:
                if state(run.run_dir)[0] not in ("done", *RETRYABLE):
                    self.taken.append(run)
                    self.say(f"{run.cell.label} [{run.run_id}]: left to {holder(run)}")
                continue
            requests.append(hand_over(request_for(run, self.after.get(run.run_id, ())), claim, keep))
        return requests

    def should_stop(self, handle: Handle) -> bool:
        return False

    def ended(self, handle: Handle) -> None:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# `an-lab sweep`


def run_sweep(
    sweep: Sweep,
    options: Options,
    say: Callable[[str], None] = print,
    chain: tuple[str, ...] = (),
    extra: dict[int, list[int]] | None = None,
) -> Followed | None:
    """Launch (and, locally or with --wait, follow) the runs of a sweep that are not done, after the missing runs of
    the sweeps its detection runs take their backbones from (chain: the sweep files already being launched). extra:
    seeds to run beside the sweep's own (cell index -> seeds), the backbones a detection sweep needs that this sweep
    does not list. Returns how it followed them to their end, or None when it did not (a plain SLURM submission);
    once followed, the caller reports the sweep's results."""
    from an_lab.migrate import prepare as prepare_output

    prepare_output(sweep.output_dir, say)  # runs finished under an earlier version's ids keep their results
    chain = (*chain, str(sweep.path.resolve()))
    if sweep.mode == "search":
        return _search(sweep, options, say, chain)
    runs = validate(sweep, extra)  # before anything is written or any scheduler is asked
    _backbone_sweeps_first(sweep, runs, options, say, chain)
    with sweep_errors(sweep):
        executor = make_executor(sweep, options)
        try:
            return Followed(executor.scheduled) if _rounds(sweep, executor, options, say, runs, chain) else None
        finally:
            executor.close()


def _search(sweep: Sweep, options: Options, say, chain: tuple[str, ...]) -> Followed:
    """A search: the backbones its trials can start from are trained (locally) or submitted (SLURM) first, then
    Optuna's trials run, each waiting on SLURM for its backbone's job."""
    from an_lab.sweeps.search import run_search

    backbones = trial_backbones(sweep)
    _backbone_sweeps_first(sweep, backbones, options, say, chain)
    with sweep_errors(sweep):
        executor = make_executor(sweep, options)
        try:
            waits_for(sweep, {b.folder: b for b in backbones}, executor)  # all there, or queued
            run_search(sweep, executor, say)  # as many trials in flight as the executor runs at once
        finally:
            executor.close()
    return Followed(executor.scheduled)


def _backbone_sweeps_first(sweep: Sweep, needs: list[PlannedRun] | list[Backbone], options: Options, say, chain):
    """Launch the classification sweeps whose runs are this sweep's backbones (those of its runs, or the backbones
    themselves) and are not done, in this command: locally they run (and are followed) first; on SLURM they are
    submitted first, and this sweep's runs then wait for their jobs (afterok). Backbones at seeds a sweep does not
    list run as more seeds of their cells. A sweep whose file is not there is left to the error that names what to
    run."""
    from an_lab.sweeps.manifest import load_sweep_target

    missing = [backbone for backbone in backbones_of(needs) if not backbone.done()]
    for file in sorted({backbone.sweep_file for backbone in missing}):
        resolved = str(Path(file).resolve())
        if not Path(file).is_file():
            continue
        if resolved in chain:
            raise UsageError(f"{sweep.path}: its backbones come from {file}, which takes its own from this sweep")
        extra: dict[int, list[int]] = {}
        for backbone in missing:
            if backbone.sweep_file == file and not backbone.listed:
                extra.setdefault(backbone.cell_index, []).append(backbone.seed)
        more = f" (and {sum(map(len, extra.values()))} more seed(s) of its cells)" if extra else ""
        say(
            f"sweep {sweep.name}: its backbones come from {file}, whose runs are not all done: launching them "
            f"first{more}"
        )
        run_sweep(load_sweep_target(file), dataclasses.replace(options, max_parallel=None), say, chain, extra)


def _rounds(
    sweep: Sweep, executor: Executor, options: Options, say, runs: list[PlannedRun], chain: tuple[str, ...]
) -> bool:
    """One round, or with adaptive seeds, rounds until no cell asks for more seeds (the backbones a later round's
    seeds start from are trained or submitted before it)."""
    from an_lab.sweeps.display import Display

    follow = executor.follows
    launched: set[str] = set()
    while True:
        if runs is None:
            runs = validate(sweep)
            _backbone_sweeps_first(sweep, runs, options, say, chain)
        todo, adopted, after = _select(sweep, executor, options, launched, say, runs)
        runs = None
        if launched and not todo and not adopted:
            return True
        display = Display(sweep, len(todo) + len(adopted), say, follow=bool(follow))
        source = GridSource(sweep, todo, options.retry_failed, executor, display.say, after)
        started = time.monotonic()
        with display:
            for handle in adopted:
                display.started(handle)
            reconcile(executor, source, display, follow)
        if follow:
            report_calls(executor, time.monotonic() - started, say)
        launched.update(run.run_id for run in todo)
        if not follow:
            _report_queued(sweep, executor, source, say)
            return False
        if not todo or not isinstance(sweep.spec.seeds, SeedPolicy):
            return True


def _select(
    sweep: Sweep, executor: Executor, options: Options, launched: set[str], say, runs: list[PlannedRun]
) -> tuple[list, list, dict[str, tuple[str, ...]]]:
    """The runs to submit, the handles of runs in flight on the executor (SLURM jobs of an earlier launch), and the
    SLURM jobs each run to submit must wait for (those training its backbone)."""
    with submission_lock(sweep, executor):
        selection = prepare(sweep, options.retry_failed, runs)
        candidates = [run for run in selection.launch + selection.running if run.run_id not in launched]
        adopted = executor.adopt([request_for(run) for run in candidates])
        refused = executor.refused if not options.retry_failed else set()
        flying = {handle.run_id for handle in adopted}
        todo = [
            run
            for run in selection.launch
            if run.run_id not in launched and run.run_id not in flying and run.run_id not in refused
        ]
        after = planned_backbone_jobs(sweep, todo, executor)
        executor.check([request_for(run) for run in todo])
    failed = len(selection.failed) + len([run for run in selection.launch if run.run_id in refused])
    where = executor.in_flight_words(len(adopted), len(selection.running))
    say(
        f"sweep {sweep.name}: {len(todo)} to run, {len(selection.done)} done, "
        f"{failed} failed or corrupt (kept; --retry-failed relaunches them), {where}"
        + (" (more seeds where the CI is still too wide)" if launched else "")
    )
    return todo, adopted, after


def planned_backbone_jobs(sweep: Sweep, todo: list[PlannedRun], executor: Executor) -> dict[str, tuple[str, ...]]:
    """The jobs each run about to start must wait for: those training its backbone (an_lab.sweeps.backbones)."""
    return waits_for(sweep, {run.run_id: run.backbone for run in todo if run.backbone is not None}, executor)


def waits_for(
    sweep: Sweep, backbones: dict[str, Backbone], executor: Executor | type[Executor]
) -> dict[str, tuple[str, ...]]:
    """backbone_jobs (an_lab.sweeps.backbones) for this sweep's runs or trials (key -> its backbone), its errors
    naming the sweep file and the sweep."""
    return backbone_jobs(f"{sweep.path}: sweep {sweep.name}", backbones, executor)


def _report_queued(sweep: Sweep, executor: Executor, source: GridSource, say) -> None:
    for line in executor.submitted_lines(sweep.sweep_dir):
        say(line)
    if source.pending:
        limits = executor.limits
        say(
            f"{len(source.pending)} runs wait for room in the queue ({limits.submit_limit_source} is "
            f"{limits.max_submit_jobs} jobs); `an-lab sweep --wait` submits them as jobs leave the queue, or run "
            "`an-lab sweep` again later"
        )
    if executor.in_flight():
        say(f"follow with: an-lab status {sweep.path}   (stop with: an-lab cancel {sweep.path})")


def detach(sweep: Sweep, argv: list[str], executor: str, say: Callable[[str], None] = print) -> str:
    """Submit `an-lab ARGV` (this sweep, followed to its end) as its own small job of the executor (one that
    can_detach); returns the job id. The missing backbones of its runs (or of a search's trials) are submitted first,
    here, so that its jobs can wait for theirs; nothing is submitted when its own jobs cannot fit the partition."""
    options = Options(executor)
    kind = executor_class(executor)
    if not kind.can_detach:
        able = [name for name in NAMES if executor_class(name).can_detach]
        raise UsageError(
            f"--detach submits the sweep's orchestrator as a job of a scheduler; the {executor} executor has none: "
            f"use it with --executor {' or '.join(able)}"
        )
    runs = validate(sweep)
    pending = [run for run in runs if state(run.run_dir)[0] != "done"]
    with sweep_errors(sweep):
        make_executor(sweep, options).check([request_for(run) for run in pending])  # jobs that fit, first
    needs: list[PlannedRun] | list[Backbone] = trial_backbones(sweep) if sweep.mode == "search" else pending
    _backbone_sweeps_first(sweep, needs, options, say, (str(sweep.path.resolve()),))  # submitted, not followed
    backbones = {backbone.folder: backbone for backbone in backbones_of(needs)}
    waits_for(sweep, backbones, kind)  # queued by now, or an error
    with sweep_errors(sweep):
        return kind.submit_orchestrator(sweep.sweep_dir, f"an-lab-{sweep.name}", sweep.spec.launcher, argv)
