"""The reconcile loop every sweep runs through, whatever its mode and executor (see an_lab.sweeps.run).

A source says what to run next and hears how each run ended:

    exhausted: bool                      nothing more to take, now or later
    submitting() -> context manager      held while taking and submitting (the sweep's launch lock under SLURM)
    take(count) -> [RunRequest]          up to count runs, claimed
    should_stop(handle) -> bool          asked for every run in flight on each pass (pruning)
    ended(handle)                        how a run ended
"""

from __future__ import annotations

import signal
import time

from an_lab.errors import Interrupted
from an_lab.launch.base import Executor


def reconcile(executor: Executor, source, display, follow: bool = True) -> None:
    """Submit what the source gives while the executor has room; with follow, poll until nothing is in flight and
    the source is exhausted. Ctrl-C or SIGTERM: the executor stops what must not outlive this process (local runs,
    which resume on the next launch); SLURM jobs keep running."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            free = 0 if source.exhausted else executor.slots()  # counting room may ask the scheduler: only if needed
            if free > 0:
                with source.submitting():
                    requests = source.take(free)
                    executor.check(requests)  # a search trial's shape is known only once it is asked
                    handles = executor.submit(requests) if requests else []
                for handle in handles:
                    display.started(handle)
                    if handle.outcome is not None:  # could not start
                        source.ended(handle)
                        display.ended(handle)
            if not follow:
                return
            for handle in executor.poll():
                source.ended(handle)
                display.ended(handle)
            for handle in executor.in_flight():
                if not handle.stopping and source.should_stop(handle):
                    executor.stop(handle)
            flying = executor.in_flight()
            if source.exhausted and not flying:
                return
            display.refresh(flying, executor)
            time.sleep(executor.tick_s)
    except KeyboardInterrupt:
        executor.interrupt()
        for handle in executor.poll():
            source.ended(handle)
        raise Interrupted(f"interrupted: {executor.interrupted_words()}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_calls(executor: Executor, seconds: float, say) -> None:
    """What following cost, as the executor tells it (SLURM: squeue and sacct calls; local: nothing)."""
    for line in executor.followed_lines(seconds):
        say(line)


class Silent:
    """A display that shows nothing (benchmarks, tests, a detached orchestrator's own log is enough)."""

    def started(self, handle) -> None:
        return None

    def ended(self, handle) -> None:
        return None

    def refresh(self, flying, executor) -> None:
        return None
