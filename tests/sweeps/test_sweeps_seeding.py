"""Adaptive seeds: cells gain seeds while the CI of their difference to the baseline is wider than the target, up to
max; the decision is checked against scipy.stats by hand, and a real sweep runs its rounds to the end."""

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import an_lab, small_sweep
from scipy import stats

from an_lab.sweeps import load_sweep
from an_lab.sweeps.seeding import plan_seeds, planned_runs

QUICKSTART = Path(__file__).resolve().parents[2] / "sweeps" / "digits-ablation.yaml"


def adaptive(tmp_path: Path, target: float, low: int = 3, high: int = 8):
    policy = f"seeds={{min: {low}, max: {high}, until: {{metric: top1_err, ci_halfwidth: {target}}}}}"
    return load_sweep(QUICKSTART, [policy, f"output_dir={tmp_path}", "axes.model.an.head=[a2]"])


def finish(run, value: float) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.json").write_text(json.dumps(run.config.model_dump(mode="json")))
    result = {"run_id": run.run_id, "status": "done", "final": {"top1_err": value, "top5_err": 0.0}}
    (run.run_dir / "result.json").write_text(json.dumps(result))


def paired_halfwidth(cell: list[float], reference: list[float]) -> float:
    differences = [a - b for a, b in zip(cell, reference, strict=True)]
    low, high = stats.t.interval(0.95, len(differences) - 1, loc=0, scale=stats.sem(differences))
    return (high - low) / 2


def test_every_cell_starts_with_min_seeds_and_the_plan_says_so(tmp_path):
    sweep = adaptive(tmp_path, 0.5)
    runs = planned_runs(sweep)
    assert len(runs) == 8 * 3 and {run.seed for run in runs} == {0, 1, 2}
    plan = an_lab(
        "plan",
        QUICKSTART,
        "--set",
        "seeds={min: 3, max: 8, until: {ci_halfwidth: 0.5}}",
        "--set",
        f"output_dir={tmp_path}",
    )
    assert plan.returncode == 0, plan.stderr
    assert "adaptive seeds: 3 to 8 per cell until the 95% CI of the difference in top1_err" in plan.stdout
    assert "BN: 0 done, 3 wanted (3 still to run), at most 8; CI half-width reference" in plan.stdout


def test_a_noisy_cell_gains_the_seeds_its_spread_needs_and_a_precise_one_does_not(tmp_path):
    sweep = adaptive(tmp_path, target=0.5)
    runs = planned_runs(sweep)
    by_label: dict[str, list] = {}
    for run in runs:
        by_label.setdefault(run.cell.label, []).append(run)
    reference = [20.0, 21.0, 22.0]
    noisy = [18.0, 21.5, 19.0]  # paired differences -2, 0.5, -3: wide
    precise = [19.0, 20.1, 20.9]  # differences -1, -0.9, -1.1: narrow
    for label, values in by_label.items():
        chosen = reference if label == "BN" else noisy if label.startswith("Mean") else precise
        for run, value in zip(values, chosen, strict=True):
            finish(run, value)
    seeds, summary = plan_seeds(sweep)
    rows = {cell.label: cell for cell in summary}
    width = paired_halfwidth(noisy, reference)
    spread = width * math.sqrt(3) / stats.t.ppf(0.975, 2)
    needed = next(n for n in range(4, 100) if stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) <= 0.5)
    mean = next(cell for label, cell in rows.items() if label.startswith("Mean"))
    assert mean.halfwidth == pytest.approx(width) and mean.wanted == min(8, needed) == 8
    base = rows["RSD + A2 + hsigmoid + K=(10,10,20)"]
    assert base.halfwidth == pytest.approx(paired_halfwidth(precise, reference)) and base.wanted == 3
    assert rows["BN"].wanted == 8 and rows["BN"].reference  # the reference runs every seed any cell runs
    assert seeds[mean.index] == list(range(8)) and seeds[base.index] == [0, 1, 2]


@pytest.mark.parametrize(
    ("low", "cell", "wanted"),
    [
        (2, [20.27778, 21.27777], 3),  # two seeds, differences 0.27778 and 0.27777: a near-zero half-width
        (3, [20.5, 21.5, 22.5], 4),  # three seeds all 0.5 apart: zero spread, a zero-width interval
    ],
)
def test_adaptive_seeding_never_stops_below_three_seeds_or_on_a_zero_width_interval(tmp_path, low, cell, wanted):
    sweep = adaptive(tmp_path, target=0.5, low=low)
    runs = planned_runs(sweep)
    reference = [20.0, 21.0, 22.0][:low]
    for run in runs:
        finish(run, (reference if run.cell.label == "BN" else cell)[run.seed])
    _, summary = plan_seeds(sweep)
    assert all(row.wanted == wanted for row in summary if not row.reference), [(r.label, r.wanted) for r in summary]


def test_nothing_grows_while_a_cell_or_the_reference_is_unfinished(tmp_path):
    sweep = adaptive(tmp_path, target=0.01)
    runs = planned_runs(sweep)
    for run in runs:
        if not (run.cell.label == "BN" and run.seed == 2):
            finish(run, 20.0 + run.seed + (run.cell.index % 3))
    _, summary = plan_seeds(sweep)
    assert len(summary) == len({run.cell.index for run in runs}) > 1
    assert all(cell.wanted == 3 for cell in summary)  # BN's seed 2 is missing: decide when it is done


def test_a_search_sweep_refuses_adaptive_seeds(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "mode": "search",
                "axes": {"model.an.pooling": ["rsd", "mean"]},
                "search": {"metric": "val_top1_err"},
                "seeds": {"min": 2, "max": 3, "until": {"ci_halfwidth": 1}},
            }
        )
    )
    done = an_lab("plan", path)
    assert done.returncode == 2 and "adaptive seeds" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_sweep_adds_seeds_in_rounds_until_the_target_or_max(tmp_path, data_root):
    sweep = small_sweep(data_root, tmp_path / "runs", {})
    sweep["base"]["trainer"].update(epochs=1, limit_train_batches=6)
    sweep["launcher"]["max_parallel"] = 2
    sweep["seeds"] = {"min": 2, "max": 3, "until": {"metric": "top1_err", "ci_halfwidth": 0.001}}
    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump(sweep))
    done = an_lab("sweep", path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep small: 4 to run" in done.stdout and "sweep small: 2 to run" in done.stdout
    assert "(more seeds where the CI is still too wide)" in done.stdout
    results = [p for p in (tmp_path / "runs").glob("*/result.json")]
    assert len(results) == 6  # 2 cells x max 3 seeds: the target cannot be met, so max stops it
    again = an_lab("sweep", path)
    assert again.returncode == 0 and "0 to run, 6 done" in again.stdout


def detection_sweep(tmp_path: Path, until: dict) -> Path:
    """A Mask R-CNN list sweep (two cells, the first the reference) with adaptive seeds `until`."""
    sweep = {
        "name": "det",
        "mode": "list",
        "base": {
            "recipe": "mask_rcnn_1x",
            "model": {"name": "resnet50", "norm": "bn_frozen"},
            "data": {"name": "shapes", "root": str(tmp_path / "shapes"), "num_workers": 0},
            "trainer": {"iterations": 10, "checkpoint_every": 10, "eval_every": 10},
            "wandb": {"mode": "disabled"},
        },
        "cells": [{"model.norm": "bn_frozen"}, {"model.norm": "gn"}],
        "seeds": {"min": 3, "max": 6, "until": until},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def finish_detection(run, bbox_ap: float) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.json").write_text(json.dumps(run.config.model_dump(mode="json")))
    final = {"bbox_ap": bbox_ap, "segm_ap": bbox_ap - 3.0, "bbox_ap_l": None, "train_loss": 0.5}
    result = {"run_id": run.run_id, "status": "done", "task": "detection", "final": final, "best": {"epoch": 0}}
    (run.run_dir / "result.json").write_text(json.dumps(result))


@pytest.mark.parametrize("until", [{"metric": "bbox_ap", "ci_halfwidth": 0.5}, {"ci_halfwidth": 0.5}])
def test_a_detection_sweep_adds_seeds_until_its_box_ap_difference_is_precise(tmp_path, until):
    path = detection_sweep(tmp_path, until)
    sweep = load_sweep(path)
    runs = planned_runs(sweep)
    assert [run.config.task for run in runs] == ["detection"] * 6
    reference, noisy = [30.0, 31.0, 32.0], [31.5, 31.0, 34.5]  # paired differences 1.5, 0, 2.5: wide
    for run in runs:
        finish_detection(run, (reference if run.cell.index == 0 else noisy)[run.seed])
    seeds, summary = plan_seeds(sweep)
    width = paired_halfwidth(noisy, reference)
    assert width > 0.5 and summary[1].halfwidth == pytest.approx(width) and summary[1].metric == "bbox_ap"
    spread = width * math.sqrt(3) / stats.t.ppf(0.975, 2)
    needed = next(n for n in range(4, 100) if stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) <= 0.5)
    assert summary[1].wanted == min(6, needed) and seeds[0] == seeds[1] == list(range(summary[1].wanted))
    plan = an_lab("plan", path)
    assert plan.returncode == 0, plan.stderr
    assert "until the 95% CI of the difference in bbox_ap to the reference is at most ±0.5" in plan.stdout


def test_a_seed_target_the_runs_do_not_report_is_a_clear_error(tmp_path):
    path = detection_sweep(tmp_path, {"metric": "top1_err", "ci_halfwidth": 0.5})
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip() == "metric: top1_err")
    wrong = an_lab("plan", path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    expected = f"line {line}: seeds.until.metric 'top1_err' is not reported by this sweep's detection runs; choose"
    assert expected in wrong.stderr
    assert "bbox_ap, bbox_ap50" in wrong.stderr
    typo = an_lab("plan", detection_sweep(tmp_path, {"metric": "bbox_AP", "ci_halfwidth": 0.5}))
    assert typo.returncode == 2
    assert "metric 'bbox_AP' is not a metric of result.json; did you mean bbox_ap" in typo.stderr
