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

import importlib

# name -> the module that defines it: imported on first use, so that `an-lab table` imports the table's modules
# only, not the figures' and reports'
_WHERE = {
    "FORMATS": "an_lab.analysis.table",
    "METRICS": "an_lab.analysis.summary",
    "axis_groups": "an_lab.analysis.figure_data",
    "build_report": "an_lab.analysis.wandb_report",
    "cell_curves": "an_lab.analysis.figure_data",
    "collect": "an_lab.analysis.results",
    "plot_sweep": "an_lab.analysis.plots",
    "publish_report": "an_lab.analysis.wandb_report",
    "render_figures": "an_lab.analysis.plots",
    "render_summary": "an_lab.analysis.html",
    "render_table": "an_lab.analysis.table",
    "resolve_baseline": "an_lab.analysis.summary",
    "scatter_points": "an_lab.analysis.figure_data",
    "summarize": "an_lab.analysis.summary",
    "sync_sweep": "an_lab.analysis.wandb_report",
    "write_report_spec": "an_lab.analysis.wandb_report",
    "write_summary": "an_lab.analysis.html",
}

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


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
