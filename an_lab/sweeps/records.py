"""The records the sweeps layer hands up: a sweep's manifest as manifest.json holds it, its cells and their runs, and a
run's row of `an-lab status`. Plain typed dictionaries (they are JSON, read by every command), defined once here;
an_lab.sweeps.manifest builds, checks and reads them, an_lab.analysis reads them. No imports but typing's, so that any
module of the layer can name them.

A manifest read from a file is checked by an_lab.sweeps.manifest.check_manifest, by hand rather than by a pydantic
model: it lists every run of the sweep (100,000 in a large grid), and a model per run would cost more than reading
the runs' results.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class ManifestRun(TypedDict):
    run_id: str  # its folder's name under the manifest's output_dir
    seed: int | None


class ManifestCell(TypedDict):
    index: int
    kind: str | None  # base, axis (ablation), grid, list, baseline; search trials: trial
    name: str | None  # a baseline's name
    label: str | None  # the row's name in tables ("RSD + A2 + hsigmoid + K=(10,10,20,20)", "BN")
    changes: dict[str, Any]  # dotted run-config key -> the value this cell sets, against the base cell
    tags: list[str]
    runs: list[ManifestRun]


class Manifest(TypedDict):
    name: str
    output_dir: str  # where the runs' folders are (the folder beside a moved sweep folder)
    cells: list[ManifestCell]
    mode: NotRequired[str]
    task: NotRequired[str]  # classification or detection: one a sweep
    description: NotRequired[str | None]
    sweep_file: NotRequired[str]
    overrides: NotRequired[list[str]]  # the --set a launch recorded
    base_config: NotRequired[dict[str, Any] | None]  # the base cell's resolved run config
    convergence: NotRequired[dict[str, Any]]
    updated: NotRequired[float]
    recorded_output_dir: NotRequired[str]  # a moved sweep folder: the output_dir it was written with


class RunRow(TypedDict):
    """One run as `an-lab status` shows it; the sweep's primary metric's final value under its name when done."""

    cell: str  # the cell's label
    cell_index: int
    seed: int | None
    run_id: str
    state: str  # an_lab.rundir.state's, refined by the scheduler's view: done, running, failed, ...
    detail: str | None
    top1_err: NotRequired[float | None]  # a classification sweep
    bbox_ap: NotRequired[float | None]  # a detection sweep
