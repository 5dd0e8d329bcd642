"""The live display and status lines: each run counts once in the bar, ties at the lowest mean are named."""

import subprocess
import sys
from types import SimpleNamespace

from an_lab.config import RunConfig
from an_lab.launch.base import FAILED, INTERRUPTED, STOPPED, Handle, RunRequest
from an_lab.rundir import mark_failed, mark_interrupted
from an_lab.sweeps.display import Display


def _handle(tmp_path, run_id: str, outcome: str) -> Handle:
    folder = tmp_path / run_id
    if not folder.exists():
        folder.mkdir()
        # Started by a process that has ended, as a run whose handle ends was.
        code = f"from pathlib import Path; from an_lab.rundir import mark_started; mark_started(Path({str(folder)!r}))"
        subprocess.run([sys.executable, "-c", code], check=True)
    return Handle(RunRequest(run_id, folder, RunConfig(), label=run_id), job_id="1", outcome=outcome)


def test_a_resumed_run_counts_once_and_a_stopped_one_counts(tmp_path):
    display = Display(SimpleNamespace(name="s"), total=2, say=print)
    with display:
        killed = _handle(tmp_path, "a", INTERRUPTED)
        mark_interrupted(killed.run_dir, "killed")
        display.ended(killed)  # resumed by a later submission (a search trial after a restart, say)
        assert display.bar.tasks[0].completed == 0
        mark_failed(killed.run_dir, "diverged")
        display.ended(_handle(tmp_path, "a", FAILED))
        display.ended(_handle(tmp_path, "a", FAILED))  # the same end seen twice
        assert display.bar.tasks[0].completed == 1
        pruned = _handle(tmp_path, "b", STOPPED)  # stopped on purpose (a pruned trial): it does not run again
        mark_interrupted(pruned.run_dir, "pruned at epoch 2")
        display.ended(pruned)
        assert display.bar.tasks[0].completed == 2


def test_status_names_every_cell_tied_at_the_lowest_mean():
    from an_lab.sweeps.status import _lowest_line

    rows = [{"cell": cell, "top1_err": error} for cell, error in [("AN", 1.0), ("AN", 2.0), ("BN", 2.0), ("BN", 1.0)]]
    assert _lowest_line(rows).startswith("lowest mean so far: AN and BN tied at 1.50% top-1 error (n=2")
    rows.append({"cell": "GN", "top1_err": 0.5})
    assert _lowest_line(rows).startswith("lowest mean so far: GN at 0.50% top-1 error (n=1, no CI)")
    assert _lowest_line([{"cell": "AN", "top1_err": None}]) is None
