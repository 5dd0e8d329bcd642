"""A sweep's summary page: one self-contained HTML file (no external CSS, scripts or images) that opens in a browser.

    write_summary(load_manifest("runs/sweeps/quickstart"), "runs/sweeps/quickstart/summary.html")

It holds the sweep's state, the results table (render_table's HTML), the figures of an_lab.analysis.plots embedded as
base64 PNG data URIs, and one row per run. A sweep without finished runs gets the page without figures.
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import pandas as pd

from an_lab.analysis.plots import render_figures, write_files
from an_lab.analysis.results import collect
from an_lab.analysis.table import render_table
from an_lab.errors import UsageError

CAPTIONS = {
    "error_by_axis.png": "Final top-1 error per design choice, one panel per axis; the base cell is the first bar of "
    "every panel, error bars are the std over seeds and dashed lines are the baselines.",
    "val_curves.png": "Validation top-1 error per epoch, mean over the done seeds of each cell; the right panel "
    "zooms on the last epochs.",
    "params_vs_error.png": "Parameters (M) against final top-1 error, each point named by its cell.",
}
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
table.runs td, table.runs th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; }
td.incomplete { color: #a35200; }
p.an-lab-note { font-size: 0.9em; color: #555; margin: 0.2em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.3em; }
.state-done { color: #1a7f37; } .state-failed { color: #c62828; } .state-running { color: #1565c0; }
"""


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _runs_table(runs: pd.DataFrame) -> str:
    head = "".join(f"<th>{name}</th>" for name in ("cell", "seed", "run id", "state", "top-1 err (%)", "detail"))
    rows = []
    for run in runs.to_dict("records"):
        error = "" if pd.isna(run["top1_err"]) else f"{run['top1_err']:.2f}"
        seed = (
            "" if run["seed"] is None or (isinstance(run["seed"], float) and math.isnan(run["seed"])) else run["seed"]
        )
        detail = run["detail"] if isinstance(run["detail"], str) else ""
        cells = [
            html.escape(str(run["label"])),
            html.escape(str(seed)),
            f"<code>{html.escape(str(run['run_id']))}</code>",
            f'<span class="state-{html.escape(str(run["state"]))}">{html.escape(str(run["state"]))}</span>',
            error,
            html.escape(detail),
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table class="runs">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def render_summary(manifest: dict, runs: pd.DataFrame | None = None, baseline: str | int | None = None) -> str:
    """The summary page of a sweep as one HTML document."""
    runs = collect(manifest) if runs is None else runs
    name = str(manifest.get("name") or "sweep")
    try:
        drawn = render_figures(manifest, runs)
    except UsageError:  # nothing done yet: the page says so instead of showing figures
        drawn = {}
    counts = runs["state"].value_counts()
    states = ", ".join(f"{count} {state}" for state, count in counts.items())
    updated = manifest.get("updated")
    updated_text = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if isinstance(updated, int | float) else ""
    )
    meta = [
        ("sweep", name),
        ("mode", str(manifest.get("mode") or "")),
        ("sweep file", str(manifest.get("sweep_file") or "")),
        ("runs folder", str(manifest.get("output_dir") or "")),
        ("manifest updated", updated_text),
        ("cells", str(len(manifest.get("cells") or []))),
        ("runs", f"{len(runs)} ({states})" if len(runs) else "0"),
        ("page written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(name)}: sweep summary</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>Sweep {html.escape(name)}</h1>",
        '<dl class="meta">',
        *(f"<dt>{html.escape(key)}</dt><dd>{html.escape(value)}</dd>" for key, value in meta if value),
        "</dl>",
        "<h2>Results</h2>",
        "<p>Final-epoch error as mean ± std over the done seeds; the difference against the baseline in brackets.</p>",
        render_table(manifest, "html", baseline=baseline, runs=runs),
        "<h2>Figures</h2>",
    ]
    if not drawn:
        parts.append("<p>No figures: no finished runs yet.</p>")
    for filename, data in drawn.items():
        caption = CAPTIONS.get(filename, filename)
        parts += [
            f'<figure id="{html.escape(filename.removesuffix(".png"))}">',
            f'<img src="{_png_uri(data)}" alt="{html.escape(caption)}">',
            f"<figcaption>{html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    parts += ["<h2>Runs</h2>", _runs_table(runs), "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_summary(
    manifest: dict, out: str | Path, runs: pd.DataFrame | None = None, baseline: str | int | None = None
) -> Path:
    """Write the summary page to `out` (its folder is created); returns the path. The page is rendered first, then
    written through a temporary file (write_files): a page already there is replaced whole or kept as it was, and a
    full disk or a read-only folder is a UsageError naming the path."""
    path = Path(out)
    page = render_summary(manifest, runs, baseline)
    write_files({path: page.encode("utf-8")})
    return path
