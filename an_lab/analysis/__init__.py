"""Results of a sweep, read from its run directories without torch: tables, figures, an HTML page and W&B reports.

Given manifest = an_lab.sweeps.manifest.load_manifest(sweep file or sweep folder):
- render_table(manifest) is the text `an-lab table` prints (Markdown; "latex", "csv" or "html" as second argument),
- collect(manifest) gives one row per run (pandas): cell, seed, state and the numbers of result.json,
- summarize(manifest, runs) gives one row per cell: n, mean, std, 95% CI, the difference against the baseline with
  its CI and P(better), significance and "best" marks that follow the evidence, convergence (an_lab.stats),
- plot_sweep(manifest, out_dir) writes the figures as PNG, PDF and SVG (an_lab.analysis.plots),
  write_summary(manifest, path) the self-contained HTML page (an_lab.analysis.html); W&B reports and sync live in
  an_lab.analysis.wandb_report.
"""

from an_lab.analysis.figure_data import axis_groups, cell_curves, scatter_points
from an_lab.analysis.html import render_summary, write_summary
from an_lab.analysis.plots import plot_sweep, render_figures
from an_lab.analysis.results import collect
from an_lab.analysis.summary import METRICS, resolve_baseline, summarize
from an_lab.analysis.table import FORMATS, render_table
from an_lab.analysis.wandb_report import build_report, publish_report, sync_sweep, write_report_spec

__all__ = [
    "FORMATS",
    "METRICS",
    "axis_groups",
    "build_report",
    "cell_curves",
    "collect",
    "plot_sweep",
    "publish_report",
    "render_figures",
    "render_summary",
    "render_table",
    "resolve_baseline",
    "scatter_points",
    "summarize",
    "sync_sweep",
    "write_report_spec",
    "write_summary",
]
