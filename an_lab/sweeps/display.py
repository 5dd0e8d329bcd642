"""The live display of a sweep, the same for every executor: a bar over the runs, one line per run in flight (cell,
seed, epoch reached of epochs, the last value of its task's primary validation metric: top-1 error or AP^bb, ETA from
its own epoch times), and a line per run that ended ("top-1 err 21.50%", "AP^bb 31.20"). Reads each running run's
metrics from its folder; run ids and labels are printed without Rich markup."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from an_lab.launch.base import STOPPED, Handle
from an_lab.metrics import Metric, primary, task_of
from an_lab.rundir import read_result, state
from an_lab.sweeps.status import progress_of

MAX_ROWS = 12  # runs in flight shown at once (the ones furthest along)
READ_EVERY_S = 2.0  # how often a running run's metrics file is read again


def outcome_text(result: dict) -> str:
    """A finished run's outcome: the final value of its task's primary metric ("top-1 err 21.50%", "AP^bb 31.20")."""
    metric = primary(task_of(result))
    final = result.get("final") if isinstance(result.get("final"), dict) else {}
    return metric.show(final.get(metric.name))


def run_metric(handle: Handle) -> Metric:
    """The primary metric of a run in flight, by the task of its config (classification without one)."""
    return primary(task_of({"task": getattr(handle.request.config, "task", None)}))


def _span(config) -> tuple[int, bool]:
    """A run's length and whether it counts iterations (detection) rather than epochs."""
    if getattr(config, "task", "classification") == "detection":
        return config.trainer.iterations, True
    return config.trainer.epochs, False


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Display:
    """follow: whether the runs will be followed to their end; without it (a plain SLURM submission), or with no
    run to follow, no bar is drawn: the lines alone."""

    def __init__(self, sweep, total: int, say: Callable[[str], None] = print, follow: bool = True) -> None:
        self.name = sweep.name
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),  # the sweep's, from the runs ended so far (each run's own is in its row)
        )
        self.task = self.bar.add_task(f"{escape(sweep.name)}: runs", total=total)
        self.drawn = follow and total > 0
        self.live = Live(self.bar, console=self.bar.console, refresh_per_second=4, transient=False)
        self.cache: dict[str, tuple[float, tuple]] = {}
        self.counted: set[str] = set()  # runs the bar has counted: each once, when it will not run again
        self.outside_say = say

    def __enter__(self) -> Display:
        if self.drawn:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if not self.drawn:
            return
        self.live.update(self.bar)
        self.live.__exit__(*exc)
        if not self.live.console.is_terminal:  # Live leaves its last frame without a line end outside a terminal
            self.live.console.line()

    def say(self, line: str) -> None:
        self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def started(self, handle: Handle) -> None:
        return None

    def ended(self, handle: Handle) -> None:
        result, _ = read_result(handle.run_dir)
        resumes = False  # a killed or preempted run is resumed by a later submission: counted when that ends
        if handle.outcome == STOPPED:
            outcome = f"stopped ({state(handle.run_dir)[1] or 'on purpose'})"
        elif result is not None:
            outcome = outcome_text(result)
        else:
            current, detail = state(handle.run_dir)
            resumes = current == "interrupted"
            code = f" (exit {handle.returncode})" if handle.returncode is not None else ""
            outcome = f"{current.upper()}{code}{': ' + detail if detail else ''}"
        if handle.note:
            outcome += f"; {handle.note}"
        label = handle.request.label or handle.run_id
        where = f" ({handle.job_id})" if handle.job_id else ""
        self.say(f"{label} [{handle.run_id}]: {outcome}{where}")
        self.cache.pop(handle.run_id, None)
        if not resumes and handle.run_id not in self.counted:
            self.counted.add(handle.run_id)
            self.bar.advance(self.task)

    def refresh(self, flying: list[Handle], executor) -> None:
        if not self.drawn:
            return
        now = time.time()
        rows = []
        for handle in flying:
            cached = self.cache.get(handle.run_id)
            if cached is None or now - cached[0] > READ_EVERY_S:
                total, by_iteration = _span(handle.request.config)
                progress = progress_of(handle.run_dir, total, handle.submitted_at, now, iterations=by_iteration)
                cached = (now, (f"{'it ' if by_iteration else ''}{{}}/{total}", *progress))
                self.cache[handle.run_id] = cached
            rows.append((handle, *cached[1]))
        rows.sort(key=lambda row: -row[2])
        shown = {run_metric(handle) for handle, *_ in rows[:MAX_ROWS]}
        value_column = f"val {next(iter(shown)).label}" if len(shown) == 1 else "val metric"
        table = Table(box=None, pad_edge=False, show_header=bool(rows))
        for column in ("run", "cell", "seed", "epoch", value_column, "ETA", "where"):
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=48 if column == "cell" else None)
        for handle, shape, reached, value, left in rows[:MAX_ROWS]:
            metric = run_metric(handle)
            table.add_row(
                Text(handle.run_id),
                Text(handle.request.label or "-"),
                Text(str(handle.request.config.trainer.seed)),
                Text(shape.format(reached)),
                Text("-" if value is None else (metric.value_text(value) if len(shown) == 1 else metric.show(value))),
                Text(_eta(left)),
                Text(executor.describe(handle)),
            )
        more = len(rows) - MAX_ROWS
        parts = [self.bar, table] + ([Text(f"... and {more} more in flight")] if more > 0 else [])
        self.live.update(Group(*parts))
