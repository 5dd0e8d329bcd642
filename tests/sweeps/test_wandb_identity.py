"""What W&B users expect of a sweep's runs: name = cell label and seed, group = sweep, job_type = cell, tags = only
what the cell changes; and a run shared with another sweep still appears in this sweep's report."""

import json
from pathlib import Path

from conftest import write_manifest

from an_lab.analysis.wandb_report import _runs_filter
from an_lab.identity import run_id
from an_lab.sweeps import expand, load_sweep

QUICKSTART = Path(__file__).resolve().parents[2] / "sweeps" / "digits-ablation.yaml"


def test_runs_are_named_grouped_and_tagged_by_their_cell():
    runs = expand(load_sweep(QUICKSTART))
    by_label = {run.cell.label: run for run in runs if run.seed == 0}
    base = runs[0].config.wandb
    assert (base.group, base.job_type, base.tags) == ("digits-ablation", runs[0].cell.label, ("base",))
    assert base.name == f"{runs[0].cell.label} seed=0"
    bn = by_label["BN"].config.wandb
    assert (bn.name, bn.job_type, bn.tags) == ("BN seed=0", "BN", ("baseline=bn", "norm=bn"))  # no AN choices
    mean = by_label["Mean + A2 + hsigmoid + K=(10,10,20)"].config.wandb
    assert mean.tags == ("pooling=mean",)
    assert all(run.run_id == run_id(run.config) for run in runs)  # W&B settings are not part of a run's identity


def test_the_report_adds_runs_that_another_sweep_trained_first(tmp_path):
    runs = tmp_path / "runs"
    cells = [{"index": 0, "kind": "base", "name": None, "label": "AN", "changes": {}, "tags": [], "runs": []}]
    cells[0]["runs"] = [{"run_id": "r-own", "seed": 0}, {"run_id": "r-shared", "seed": 1}]
    for run, group in (("r-own", "known"), ("r-shared", "first-sweep")):
        (runs / run).mkdir(parents=True)
        (runs / run / "config.json").write_text(json.dumps({"wandb": {"group": group}}))
    folder = write_manifest(runs, cells)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert _runs_filter(manifest, "known") == "Metric('Group') = \"known\" or Metric('ID') in [\"r-shared\"]"
    (runs / "r-shared" / "config.json").write_text(json.dumps({"wandb": {"group": "known"}}))
    assert _runs_filter(manifest, "known") == "Metric('Group') = \"known\""
