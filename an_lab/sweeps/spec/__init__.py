"""The sweep file: its schema (unknown keys are errors), where each key sits in the file, and `load_sweep()`.

A sweep file names a base run config, design axes (dotted keys into the run config), a mode that expands them into
cells, seeds, baselines and launcher settings. Everything here is torch-free: `an-lab plan` and `an-lab status` use it.
Mistakes become one `UsageError` that names the file, the key and, where the key is in the file, its line.

One job a module, the public names re-exported here:

    schema.py   the keys a sweep file may hold (pydantic), names, the run-config keys cells may set
    lines.py    locations in the file and their lines (the YAML line index)
    sweep.py    Sweep: a loaded sweep, and `file, line N` for its keys
    load.py     load_sweep(): read, apply --set, validate, check
    checks.py   the checks that need no run config resolved: mode rules, axes, cells, baselines, --set, size
"""

from an_lab.launch.slurm_settings import SlurmSettings
from an_lab.sweeps.spec.checks import count_runs
from an_lab.sweeps.spec.lines import Loc, show_loc
from an_lab.sweeps.spec.load import load_sweep, nest
from an_lab.sweeps.spec.schema import (
    CONFIG_KEYS,
    MAX_NAME,
    MAX_RUNS,
    METRICS,
    MODES,
    PRUNERS,
    RESERVED,
    SAMPLERS,
    ConvergenceSettings,
    LauncherSettings,
    Range,
    SearchSettings,
    SeedPolicy,
    SeedTarget,
    SweepSpec,
    axis_settings,
    check_name,
    config_key_problem,
    metric_direction,
)
from an_lab.sweeps.spec.sweep import Sweep

__all__ = [
    "CONFIG_KEYS",
    "MAX_NAME",
    "MAX_RUNS",
    "METRICS",
    "MODES",
    "PRUNERS",
    "RESERVED",
    "SAMPLERS",
    "ConvergenceSettings",
    "LauncherSettings",
    "Loc",
    "Range",
    "SearchSettings",
    "SeedPolicy",
    "SeedTarget",
    "SlurmSettings",
    "Sweep",
    "SweepSpec",
    "axis_settings",
    "check_name",
    "config_key_problem",
    "count_runs",
    "load_sweep",
    "metric_direction",
    "nest",
    "show_loc",
]
