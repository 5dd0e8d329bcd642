"""Results of a sweep, read from its run directories without torch: tables (and, later, figures and reports).

Given manifest = an_lab.sweeps.manifest.load_manifest(sweep file or sweep folder):
- render_table(manifest) is the text `an-lab table` prints (Markdown; "latex", "csv" or "html" as second argument),
- collect(manifest) gives one row per run (pandas): cell, seed, state and the numbers of result.json,
- summarize(manifest, runs) gives one row per cell: done/total, mean, std, difference against the baseline, best.
"""

from an_lab.analysis.results import collect
from an_lab.analysis.table import FORMATS, METRICS, render_table, resolve_baseline, summarize

__all__ = ["FORMATS", "METRICS", "collect", "render_table", "resolve_baseline", "summarize"]
