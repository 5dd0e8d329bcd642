"""Sweeps: a sweep file (spec) expands into cells x seeds (expand), each one resolved RunConfig; `plan` shows them.

    sweep = load_sweep("sweeps/quickstart.yaml", ["seeds=[0,1]"])   # validated, overrides applied
    runs = expand(sweep)                                             # [PlannedRun(cell, run_id, seed)]: .config
    print(render(make_plan(sweep)))                                  # what `an-lab plan` prints

A detection run's `model.backbone_init: {sweep, cell, seed}` is resolved while expanding (backbones.py) to the
folder of that classification run, before the run id is computed; the classification sweep is looked up by the finder
expand() is handed (`expand(sweep, find=an_lab.sweeps.manifest.find_sweep)`, as every sweep command does, so that
expansion imports nothing above it). `an-lab sweep` refuses to start a detection run
whose backbone has not finished, except on SLURM, where it waits for the job training it (sbatch afterok).

Torch-free: `an-lab plan` and `an-lab status` import only this package, pydantic and yaml.
"""

from an_lab.sweeps.expand import Cell, PlannedRun, check_data_paths, expand
from an_lab.sweeps.plan import Plan, make_plan, render
from an_lab.sweeps.resolver import resolve_settings
from an_lab.sweeps.spec import Sweep, SweepSpec, load_sweep

__all__ = [
    "Cell",
    "Plan",
    "PlannedRun",
    "Sweep",
    "SweepSpec",
    "check_data_paths",
    "expand",
    "load_sweep",
    "make_plan",
    "render",
    "resolve_settings",
]
