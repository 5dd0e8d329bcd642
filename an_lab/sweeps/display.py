"""The live display of a sweep, the same for every executor: a bar over the runs, one line per run in flight (cell,
seed, epoch reached of epochs, last validation top-1 error, ETA from its own epoch times), and a line per run that
ended. Reads each running run's metrics from its folder; run ids and labels are printed without Rich markup."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from an_lab.launch.base import STOPPED, Handle
from an_lab.rundir import read_result, state, validated_epochs

MAX_ROWS = 12  # runs in flight shown at once (the ones furthest along)
READ_EVERY_S = 2.0  # how often a running run's metrics file is read again


def progress_of(directory: Path, epochs: int, started_at: float, now: float) -> tuple[int, float | None, float | None]:
    """(epochs done, last validation top-1 error, seconds left estimated from the epochs done so far)."""
    reached, error = validated_epochs(directory)
    if not reached:
        return 0, None, None
    left = (now - started_at) / reached * max(0, epochs - reached)
    return reached, error, left


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Display:
    def __init__(self, sweep, total: int, say: Callable[[str], None] = print) -> None:
        self.name = sweep.name
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.task = self.bar.add_task(f"{escape(sweep.name)}: runs", total=total)
        self.live = Live(self.bar, console=self.bar.console, refresh_per_second=4, transient=False)
        self.cache: dict[str, tuple[float, tuple]] = {}
        self.counted: set[str] = set()  # runs the bar has counted: each once, when it will not run again
        self.outside_say = say

    def __enter__(self) -> Display:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
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
            outcome = f"top-1 err {result['final'].get('top1_err', float('nan')):.2f}%"
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
        now = time.time()
        rows = []
        for handle in flying:
            cached = self.cache.get(handle.run_id)
            if cached is None or now - cached[0] > READ_EVERY_S:
                epochs = handle.request.config.trainer.epochs
                cached = (now, (epochs, *progress_of(handle.run_dir, epochs, handle.submitted_at, now)))
                self.cache[handle.run_id] = cached
            rows.append((handle, *cached[1]))
        rows.sort(key=lambda row: -row[2])
        table = Table(box=None, pad_edge=False, show_header=bool(rows))
        for column in ("run", "cell", "seed", "epoch", "val top-1 err", "ETA", "where"):
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=48 if column == "cell" else None)
        for handle, epochs, reached, error, left in rows[:MAX_ROWS]:
            table.add_row(
                Text(handle.run_id),
                Text(handle.request.label or "-"),
                Text(str(handle.request.config.trainer.seed)),
                Text(f"{reached}/{epochs}"),
                Text("-" if error is None else f"{error:.2f}%"),
                Text(_eta(left)),
                Text(executor.describe(handle)),
            )
        more = len(rows) - MAX_ROWS
        parts = [self.bar, table] + ([Text(f"... and {more} more in flight")] if more > 0 else [])
        self.live.update(Group(*parts))
