"""The live display and status lines: each run counts once in the bar, ties at the best mean are named, and a
detection run is shown by its box AP (AP^bb, higher is better) where a classification run shows its top-1 error."""

import json
import subprocess
import sys
from types import SimpleNamespace

from an_lab.config import RunConfig
from an_lab.launch.base import DONE, FAILED, INTERRUPTED, STOPPED, Handle, RunRequest
from an_lab.metrics import METRICS
from an_lab.rundir import mark_failed, mark_interrupted, trained_iterations, validated_epochs
from an_lab.sweeps.display import Display, outcome_text


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
    from an_lab.sweeps.status import _best_line

    rows = [{"cell": cell, "top1_err": error} for cell, error in [("AN", 1.0), ("AN", 2.0), ("BN", 2.0), ("BN", 1.0)]]
    assert _best_line(rows).startswith("lowest mean so far: AN and BN tied at 1.50% top-1 error (n=2")
    rows.append({"cell": "GN", "top1_err": 0.5})
    assert _best_line(rows).startswith("lowest mean so far: GN at 0.50% top-1 error (n=1, no CI)")
    assert _best_line([{"cell": "AN", "top1_err": None}]) is None
    done = [{**row, "state": "done"} for row in rows]  # every run done: the lowest mean, not "so far"
    assert _best_line(done).startswith("lowest mean: GN at 0.50% top-1 error")


def test_status_ranks_detection_cells_by_the_highest_ap_and_names_ties():
    from scipy import stats

    from an_lab.sweeps.status import _best_line, best_cells

    ap = METRICS["bbox_ap"]
    values = [("AN", 31.0), ("AN", 32.0), ("BN", 30.0), ("BN", 29.0)]
    rows = [{"cell": cell, "bbox_ap": value} for cell, value in values]
    labels, estimate = best_cells(rows, ap)
    assert labels == ["AN"] and estimate.mean == 31.5  # the highest mean, where the error rule would pick BN
    low, high = stats.t.interval(0.95, 1, loc=31.5, scale=0.5)
    assert _best_line(rows, ap) == (
        f"highest mean so far: AN at 31.50 AP^bb (n=2, 95% CI {low:.2f} to {high:.2f}); "
        "whether it is better than the others: `an-lab table` (differences with their CIs)"
    )
    rows += [{"cell": "GN", "bbox_ap": 31.5}, {"cell": "GN", "bbox_ap": None}]  # a run not done yet
    assert _best_line(rows, ap).startswith("highest mean so far: AN and GN tied at 31.50 AP^bb (n=2")
    assert best_cells(rows, METRICS["top1_err"]) is None  # no row holds that metric


def _detection_result(folder, bbox_ap) -> None:
    result = {
        "run_id": folder.name,
        "config_hash": "0" * 12,
        "status": "done",
        "task": "detection",
        "final": {"bbox_ap": bbox_ap, "segm_ap": 28.0, "bbox_ap_l": None, "train_loss": 0.7},
        "best": {"bbox_ap": bbox_ap, "epoch": 2},
    }
    (folder / "result.json").write_text(json.dumps(result))


def test_a_finished_detection_run_is_shown_by_its_box_ap(tmp_path, capsys):
    assert outcome_text({"final": {"top1_err": 21.5, "top5_err": 5.0}}) == "top-1 err 21.50%"
    assert outcome_text({"task": "detection", "final": {"bbox_ap": None, "segm_ap": 3.0}}) == "AP^bb n/a"
    display = Display(SimpleNamespace(name="s"), total=2, say=print)
    with display:
        done = _handle(tmp_path, "det", DONE)
        _detection_result(done.run_dir, 31.2)
        display.ended(done)
        assert display.bar.tasks[0].completed == 1
    assert "det [det]: AP^bb 31.20 (1)" in capsys.readouterr().out


def test_a_detection_run_in_flight_shows_its_last_box_ap(tmp_path):
    folder = tmp_path / "det"
    logs = folder / "logs" / "attempt-0"
    logs.mkdir(parents=True)
    rows = ["epoch,step,val_bbox_ap,val_segm_ap,train_loss", "0,19,12.5,10.0,", "0,19,,,1.2", "1,39,20.25,17.0,"]
    rows += ["1,39,,,0.9", "2,59,,,0.8"]
    (logs / "metrics.csv").write_text("\n".join(rows) + "\n")
    assert validated_epochs(folder) == (2, 20.25)  # evaluations with AP^bb; epoch 2 has trained, not evaluated
    config = SimpleNamespace(task="detection", trainer=SimpleNamespace(epochs=120, iterations=100, seed=0))
    handle = Handle(RunRequest("det", folder, config, label="AN"), job_id="1")
    display = Display(SimpleNamespace(name="s"), total=1, say=print)
    display.refresh([handle], SimpleNamespace(describe=lambda handle: "local"))
    table = display.live.renderable.renderables[1]
    value = next(column for column in table.columns if column.header == "val AP^bb")
    assert [str(cell) for cell in value.cells] == ["20.25"]
    # progress in iterations (the last training row's step + 1) of trainer.iterations, never of trainer.epochs
    assert [str(cell) for cell in table.columns[3].cells] == ["it 60/100"]
    assert trained_iterations(folder) == 60
