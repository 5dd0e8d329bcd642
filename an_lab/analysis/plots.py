"""Figures of a sweep as PNG, PDF and SVG files, read from the run directories without torch (matplotlib, Agg, no
pyplot state).

    paths = plot_sweep(load_manifest("runs/sweeps/quickstart"), "runs/sweeps/quickstart/figures")

What a reviewer can check on every figure: each interval is the 95% confidence interval of the mean over seeds
(Student t, from an_lab.stats.estimate), each seed is drawn as a point, each cell says how many seeds it rests on
("n=3"; "n=1 of 2" while runs are missing), and a cell with one run shows that run's point without an error bar.

Every figure draws the sweep's primary metric (an_lab.metrics.primary of its task): the top-1 error for
classification, AP^bb (box AP, higher is better) for detection; the figures' file names stay the same for both.

- error_by_axis: the final metric per design choice, one panel per axis (the paper's Figure 1 style) and one for the
  baselines; a dot plot, the base cell first in every panel, the baselines also as dashed lines with their CI as band.
- val_curves: the validation metric per epoch (val_top1_err, val_bbox_ap), the mean over the done seeds of each cell
  with its 95% CI per epoch as a band (none where one run logged the epoch), a legend outside the axes.
- params_vs_error: parameters (M) against the final metric, every cell named.

Each figure is written as <name>.png, <name>.pdf and <name>.svg (FIGURES). The numbers behind the figures come from
pure functions (cell_stats, axis_groups, curve_estimates, scatter_points in an_lab.analysis.figure_data), the drawing
is an_lab.analysis.figure_draw, and build_figures returns the matplotlib figures themselves, so that tests can read
back what is drawn.

Labels, tag values and the sweep's name are the user's text and are drawn as typed: no mathtext ("$x$" stays "$x$",
an unknown "\\command" cannot fail), no TeX (figure_draw._as_typed). Files are written with an_lab.atomic.write_files:
all or nothing, through temporary files renamed into place, and a full disk or a read-only folder is one UsageError
naming the path (with out_advice's hint).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from an_lab.analysis.figure_data import axis_groups, cell_stats, curve_estimates, scatter_points
from an_lab.analysis.figure_draw import STYLE, error_by_axis, params_vs_error, render, val_curves
from an_lab.analysis.output import out_advice
from an_lab.analysis.results import check_manifest, collect, primary_metric
from an_lab.atomic import write_files
from an_lab.errors import UsageError
from an_lab.sweeps.records import Manifest

STEMS = ("error_by_axis", "val_curves", "params_vs_error")
IMAGE_FORMATS = ("png", "pdf", "svg")
FIGURES = tuple(f"{stem}.{image_format}" for stem in STEMS for image_format in IMAGE_FORMATS)
NOTHING_DONE = "no finished runs yet: figures need at least one run with a result.json (see `an-lab status`)"


def build_figures(manifest: Manifest, runs: pd.DataFrame | None = None) -> dict:
    """The sweep's matplotlib figures by name (STEMS order; one without anything to draw is left out), their Axes
    holding the data drawn (artists named by gid, see figure_draw._draw_cell); UsageError when no run is done yet."""
    from matplotlib import rc_context

    check_manifest(manifest)
    runs = collect(manifest) if runs is None else runs
    if not (runs["state"] == "done").any():
        raise UsageError(NOTHING_DONE)
    name = manifest.get("name") or "sweep"
    metric = primary_metric(manifest)
    groups, references = axis_groups(manifest, runs)
    curves = curve_estimates(manifest, runs)
    points = scatter_points(manifest, runs)
    figures = {}
    with rc_context(STYLE):
        if groups or references:
            figures["error_by_axis"] = error_by_axis(name, groups, references, metric)
        if curves:
            figures["val_curves"] = val_curves(name, curves, cell_stats(manifest, runs), metric)
        if points:
            figures["params_vs_error"] = params_vs_error(name, points, metric)
    return figures


def render_figures(
    manifest: Manifest, runs: pd.DataFrame | None = None, image_format: str | tuple[str, ...] = "png"
) -> dict[str, bytes]:
    """The sweep's figures as file contents by file name (<figure>.<format>, figure by figure, in the order of the
    formats given: "png", "pdf", "svg" or a tuple of them); UsageError when no run is done yet. SVG documents keep
    their texts as text (what tests read back)."""
    from matplotlib import rc_context

    formats = (image_format,) if isinstance(image_format, str) else tuple(image_format)
    if not formats or any(form not in IMAGE_FORMATS for form in formats):
        raise ValueError(f"image_format {image_format!r}: one or more of {', '.join(IMAGE_FORMATS)}")
    figures = build_figures(manifest, runs)
    with rc_context(STYLE):
        return {f"{stem}.{form}": render(figure, form) for stem, figure in figures.items() for form in formats}


def plot_sweep(manifest: Manifest, out_dir: str | Path, runs: pd.DataFrame | None = None) -> list[Path]:
    """Write the sweep's figures into out_dir (created) as PNG, PDF and SVG, all or none of them (write_files);
    returns the paths written. UsageError when no run is done yet or when the folder cannot take them."""
    drawn = render_figures(manifest, runs, IMAGE_FORMATS)
    folder = Path(out_dir)
    return write_files({folder / filename: data for filename, data in drawn.items()}, advice=out_advice)
