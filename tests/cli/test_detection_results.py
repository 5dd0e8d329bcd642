"""The result-printing side of the command line for both tasks: what `an-lab train` prints of a finished run (top-1 /
top-5 error, or the box and mask AP lines of a detection run), the table's --metric choices of both tasks, and a
search's direction following its metric (an AP is maximized; a direction against the metric is an error)."""

import argparse
from pathlib import Path

import pytest
import yaml
from conftest import an_lab

from an_lab.analysis.summary import METRICS as TABLE_CHOICES
from an_lab.analysis.summary import TASK_SELECTIONS
from an_lab.cli.results import _table_arguments
from an_lab.cli.runs import result_lines
from an_lab.sweeps.spec import METRICS as SEARCH_METRICS
from an_lab.sweeps.spec import SearchSettings

ROOT = Path(__file__).resolve().parents[2]


def test_a_classification_result_prints_its_best_epoch_counted_from_1():
    result = {"final": {"top1_err": 21.5, "top5_err": 5.25}, "best": {"top1_err": 21.375, "epoch": 4}}
    assert result_lines(result) == ["top-1 err  21.50% final, 21.38% best (epoch 5)", "top-5 err  5.25% final"]


def test_a_detection_result_prints_box_and_mask_ap_with_their_splits():
    final = {"bbox_ap": 31.2, "bbox_ap50": 52.1, "bbox_ap75": 33.0, "bbox_ap_s": 15.25, "bbox_ap_m": 34.5}
    final |= {"bbox_ap_l": None, "segm_ap": 28.9, "segm_ap50": 49.0, "segm_ap75": 30.1, "segm_ap_s": 10.0}
    final |= {"segm_ap_m": 30.0, "segm_ap_l": 44.0, "train_loss": 0.61}
    result = {"task": "detection", "final": final, "best": {"bbox_ap": 31.4, "segm_ap": 29.05, "epoch": 11}}
    assert result_lines(result) == [
        "AP^bb      31.20 final, 31.40 best (epoch 12); AP50 52.10, AP75 33.00, AP_S 15.25, AP_M 34.50, AP_L n/a",
        "AP^m       28.90 final, 29.05 at the best evaluation (epoch 12); AP50 49.00, AP75 30.10, AP_S 10.00, "
        "AP_M 30.00, AP_L 44.00",
    ]


def test_the_metric_choices_of_the_command_are_the_tables():
    parser = argparse.ArgumentParser()
    _table_arguments(parser)
    (action,) = [action for action in parser._actions if action.dest == "metric"]
    assert action.default is None and sorted(action.choices) == sorted(TABLE_CHOICES)
    assert list(TASK_SELECTIONS["detection"]) == ["ap", "bbox", "segm", "ap_all", "best", "primary"]
    classification = {"top1", "top5", "both", "best", "best_top1", "best_top5", "primary"}
    assert set(TASK_SELECTIONS["classification"]) == classification


@pytest.mark.parametrize(
    ("metric", "direction"),
    [("val_top1_err", "minimize"), ("val_loss", "minimize"), ("val_bbox_ap", "maximize"), ("val_segm_ap", "maximize")],
)
def test_a_search_direction_follows_its_metric(metric, direction):
    assert metric in SEARCH_METRICS
    assert SearchSettings(metric=metric).direction == direction
    assert SearchSettings(metric=metric, direction=direction).direction == direction


def _search_sweep(folder: Path, search: dict) -> Path:
    sweep = {
        "name": "dsearch",
        "mode": "search",
        "base": {
            "recipe": "mask_rcnn_1x",
            "model": {"name": "resnet50", "norm": "bn_frozen"},
            "data": {"name": "shapes", "root": str(folder / "shapes"), "num_workers": 0},
            "trainer": {"iterations": 10, "checkpoint_every": 10, "eval_every": 10},
            "wandb": {"mode": "disabled"},
        },
        "axes": {"model.norm": ["bn_frozen", "gn"]},
        "search": {"n_trials": 4, "sampler": "random", **search},
        "seeds": [0],
        "output_dir": str(folder / "runs"),
    }
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_a_detection_search_maximizes_ap_and_refuses_to_minimize_it(tmp_path):
    plan = an_lab("plan", _search_sweep(tmp_path, {"metric": "val_bbox_ap"}), cwd=ROOT, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "random sampler, median pruner), maximize val_bbox_ap" in plan.stdout
    path = _search_sweep(tmp_path, {"metric": "val_bbox_ap", "direction": "minimize"})
    wrong = an_lab("plan", path, cwd=ROOT, timeout=120)
    assert wrong.returncode == 2 and wrong.stdout == "" and "Traceback" not in wrong.stderr
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text == "search:")
    assert wrong.stderr.strip() == (
        f"error: {path}, line {line}: search: direction 'minimize' works against metric 'val_bbox_ap', which is "
        "better when it is higher; write direction: maximize, or leave direction out (it follows the metric)"
    )
    with pytest.raises(ValueError, match="direction 'maximize' works against metric 'val_top1_err'"):
        SearchSettings(metric="val_top1_err", direction="maximize")
