"""A sweep's summary page: one self-contained HTML file (no external CSS, scripts or images) that opens in a browser.

    write_summary(load_manifest("runs/sweeps/quickstart"), "runs/sweeps/quickstart/summary.html")

It holds the sweep's description and state, its base configuration (the base cell's resolved run config: model,
data, optim, trainer), the results table (render_table's HTML), the figures of an_lab.analysis.plots embedded as
base64 PNG data URIs, and one row per run with its primary metric, data, epochs, hardware, precision and wall time. A
sweep without finished runs gets the page without figures. The metrics follow the sweep's task: top-1 / top-5 error
for classification, COCO AP^bb and AP^m for detection (captions and columns name the task's primary metric).

Paths are written relative to the sweep folder <output_dir>/sweeps/<name>/ (the runs are ../../<run_id>), so that
the page names no folder of the machine it was made on; only a path outside the project folder (the parent of
output_dir), which has no shorter name, is written as it is.
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from an_lab.analysis.output import out_advice
from an_lab.analysis.plots import render_figures
from an_lab.analysis.results import collect, primary_metric, sweep_task
from an_lab.analysis.table import render_table
from an_lab.atomic import write_files
from an_lab.errors import UsageError
from an_lab.metrics import Metric
from an_lab.rundir import CONFIG, read_json, read_result
from an_lab.sweep_folder import sweep_folder
from an_lab.sweeps.records import Manifest


def captions(metric: Metric) -> dict[str, str]:
    """The figures' captions, naming the metric they draw (the sweep's primary metric)."""
    return {
        "error_by_axis.png": f"Final {metric.phrase} per design choice, one panel per axis (the base cell first in "
        "each) and one for the baselines. A dot plot, so the y axis does not start at 0: markers are the mean over "
        "seeds, error bars the 95% CI of the mean over seeds (Student t), small circles the single seeds, n per cell "
        "under its name; a cell with n=1 is its single run, without an error bar. Dashed lines and grey bands: the "
        "baselines' means and 95% CIs.",
        "val_curves.png": f"Validation {metric.phrase} per epoch: the mean over the done seeds of each cell, with the "
        "95% CI of the mean per epoch across seeds as a band (none where n=1); the right panel zooms on the last "
        "epochs.",
        "params_vs_error.png": f"Parameters (M) against final {metric.phrase}, each cell named with its n: markers "
        "are the mean over seeds, error bars the 95% CI of the mean over seeds, small circles the single seeds.",
    }


# what the results table shows, per task
RESULTS_TEXT = {
    "classification": "Final-epoch top-1 and top-5 error over the done seeds of each cell (lower is better); the "
    "notes under the table explain its marks.",
    "detection": "Final COCO AP of boxes (AP^bb) and masks (AP^m) at IoU 0.50:0.95, 0.50 and 0.75, in %, over the "
    "done seeds of each cell (higher is better); the notes under the table explain its marks.",
}
CONFIG_SECTIONS = ("model", "data", "optim", "trainer")
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
p.description { font-size: 1.05em; max-width: 60em; white-space: pre-line; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
table.runs td, table.runs th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; }
table.runs td.number { text-align: right; font-variant-numeric: tabular-nums; }
table.runs td:nth-child(n+2):not(:last-child) { white-space: nowrap; }
table.runs td:first-child { min-width: 14em; }
table.config th { text-align: left; vertical-align: top; padding: 2px 1em 2px 0; }
table.config td { padding: 2px 0; }
table.config code { margin-right: 1.2em; white-space: nowrap; }
td.incomplete { color: #a35200; }
p.an-lab-note { font-size: 0.9em; color: #555; margin: 0.2em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.92em; color: #444; margin-top: 0.3em; max-width: 70em; }
.state-done { color: #1a7f37; } .state-failed { color: #c62828; } .state-running { color: #1565c0; }
"""


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------- paths relative to the sweep folder


def _shown_path(text: str, manifest: Manifest) -> str:
    """A path as the page writes it: relative to the sweep folder when it lies in the project folder (the parent of
    output_dir); a relative path (to wherever the sweep was started) or one outside the project as it is."""
    path = Path(text)
    project = Path(manifest["output_dir"]).parent
    if not path.is_absolute() or not (path == project or project in path.parents):
        return text
    return os.path.relpath(path, sweep_folder(manifest))


def _relative_text(text: str, manifest: Manifest) -> str:
    """A message with the runs folder's absolute path in it (a damaged result's file, say) written from the sweep
    folder: <output_dir>/<run_id>/result.json becomes ../../<run_id>/result.json."""
    return text.replace(str(Path(manifest["output_dir"])) + os.sep, "../../")


# ---------------------------------------------------------------- the sweep and its base configuration


def _duration(seconds: float) -> str:
    """h:mm:ss, for wall times from seconds to days."""
    if not math.isfinite(seconds) or seconds < 0:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _value(value, manifest: Manifest) -> str:
    if isinstance(value, list | tuple):
        return "(" + ",".join(_value(item, manifest) for item in value) + ")"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _shown_path(value, manifest) if isinstance(value, str) else str(value)


def _flat(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _base_config(manifest: Manifest) -> str:
    """The base cell's run config as a small table, one row per section; every other cell differs from it in the
    keys its label and the results table name."""
    config = manifest.get("base_config")
    if not isinstance(config, dict):
        return "<p>This manifest records no base configuration (it was written by an older an-lab).</p>"
    rows = []
    for section in CONFIG_SECTIONS:
        if isinstance(config.get(section), dict):
            items = " ".join(
                f"<code>{html.escape(key)}={html.escape(_value(value, manifest))}</code>"
                for key, value in _flat(config[section])
            )
            rows.append(f"<tr><th>{section}</th><td>{items}</td></tr>")
    text = "<p>The base cell's resolved run configuration; every other cell changes the keys its label names.</p>"
    return text + '\n<table class="config"><tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _compute(runs: pd.DataFrame, details: list[dict]) -> tuple[str, str]:
    """(the hardware of the done runs, their total wall time) for the page's header."""
    devices = Counter(detail["device"] for detail in details if detail["device"])
    hardware = ", ".join(f"{device} ({count} runs)" if count > 1 else device for device, count in devices.items())
    walls = runs.loc[runs["state"] == "done", "wall_time_s"].dropna()
    wall = f"{_duration(float(walls.sum()))} (h:mm:ss, summed over {len(walls)} done runs)" if len(walls) else ""
    return hardware, wall


def _meta(manifest: Manifest, runs: pd.DataFrame, details: list[dict]) -> list[tuple[str, str]]:
    counts = runs["state"].value_counts()
    states = ", ".join(f"{count} {state}" for state, count in counts.items())
    updated = manifest.get("updated")
    updated_text = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated)) if isinstance(updated, int | float) else ""
    )
    overrides = manifest.get("overrides") or []
    hardware, wall_time = _compute(runs, details)
    return [
        ("sweep", str(manifest.get("name") or "sweep")),
        ("mode", str(manifest.get("mode") or "")),
        ("sweep file", _shown_path(str(manifest.get("sweep_file") or ""), manifest)),
        ("overrides (--set)", " ".join(str(item) for item in overrides)),
        ("runs folder", "../.. (paths on this page are relative to the sweep folder)"),
        ("manifest updated", updated_text),
        ("cells", str(len(manifest.get("cells") or []))),
        ("runs", f"{len(runs)} ({states})" if len(runs) else "0"),
        ("hardware", hardware),
        ("wall time", wall_time),
        ("page written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]


# ---------------------------------------------------------------- one row per run


def _data_text(data: dict) -> str:
    name, size = data.get("name"), data.get("image_size")
    return f"{name} ({size}px)" if name and size else str(name or "")


def _run_details(manifest: Manifest, runs: pd.DataFrame) -> list[dict]:
    """Per run (in the order of `runs`): its data (from its config.json, else the base config with its cell's
    changes), device and precision (from result.json)."""
    root = Path(manifest["output_dir"])
    base = manifest.get("base_config") if isinstance(manifest.get("base_config"), dict) else {}
    changes = {cell["index"]: cell.get("changes") or {} for cell in manifest["cells"]}
    details = []
    for run in runs.to_dict("records"):
        config = read_json(root / run["run_id"] / CONFIG) or {}
        data = config.get("data")
        if not isinstance(data, dict):
            data = dict(base.get("data") or {})
            data.update({key[5:]: value for key, value in changes[run["cell"]].items() if key.startswith("data.")})
        result = read_result(root / run["run_id"])[0] if run["state"] == "done" else None
        result = result or {}
        device, precision = result.get("device"), result.get("precision")
        details.append(
            {
                "data": _data_text(data),
                "device": device if isinstance(device, str) else "",
                "precision": str(precision) if precision is not None else "",
            }
        )
    return details


_NUMBER_COLUMNS = {4, 6, 9}  # right-aligned


def _run_columns(metric: Metric) -> tuple[str, ...]:
    """The runs table's columns, the fifth the sweep's primary metric ("top-1 err (%)", "AP^bb")."""
    names = ("cell", "seed", "run id", "state", metric.title, "data", "epochs", "device", "precision")
    return (*names, "wall time (h:mm:ss)", "detail")


def _runs_table(manifest: Manifest, runs: pd.DataFrame, details: list[dict]) -> str:
    metric = primary_metric(manifest)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _run_columns(metric))
    rows = []
    for run, detail in zip(runs.to_dict("records"), details, strict=True):
        error = "" if pd.isna(run[metric.name]) else f"{run[metric.name]:.2f}"
        seed = run["seed"]
        if isinstance(seed, float):  # a column with a missing seed is read as floats
            seed = "" if math.isnan(seed) else int(seed)
        seed = "" if seed is None else seed
        epochs = "" if pd.isna(run["epochs"]) else str(int(run["epochs"]))
        wall = "" if pd.isna(run["wall_time_s"]) else _duration(float(run["wall_time_s"]))
        message = _relative_text(run["detail"], manifest) if isinstance(run["detail"], str) else ""
        state = html.escape(str(run["state"]))
        cells = [
            html.escape(str(run["label"])),
            html.escape(str(seed)),
            f"<code>{html.escape(str(run['run_id']))}</code>",
            f'<span class="state-{state}">{state}</span>',
            error,
            html.escape(detail["data"]),
            epochs,
            html.escape(detail["device"]),
            html.escape(detail["precision"]),
            wall,
            html.escape(message),
        ]
        shown = (
            f'<td class="number">{c}</td>' if i in _NUMBER_COLUMNS else f"<td>{c}</td>" for i, c in enumerate(cells)
        )
        rows.append("<tr>" + "".join(shown) + "</tr>")
    note = '<p class="an-lab-note">Run folders: ../../&lt;run id&gt; from the sweep folder.</p>'
    table = f'<table class="runs">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"
    return table + "\n" + note


# ---------------------------------------------------------------- the page


def _figures(drawn: dict[str, bytes], metric: Metric) -> list[str]:
    if not drawn:
        return ["<p>No figures: no finished runs yet.</p>"]
    parts = ["<p><code>an-lab plot</code> writes the same figures as PNG, PDF and SVG files.</p>"]
    texts = captions(metric)
    for filename, data in drawn.items():
        caption = texts.get(filename, filename)
        parts += [
            f'<figure id="{html.escape(filename.removesuffix(".png"))}">',
            f'<img src="{_png_uri(data)}" alt="{html.escape(caption)}">',
            f"<figcaption>{html.escape(caption)}</figcaption>",
            "</figure>",
        ]
    return parts


def render_summary(manifest: Manifest, runs: pd.DataFrame | None = None, baseline: str | int | None = None) -> str:
    """The summary page of a sweep as one HTML document."""
    runs = collect(manifest) if runs is None else runs
    name = str(manifest.get("name") or "sweep")
    try:
        drawn = render_figures(manifest, runs)
    except UsageError:  # nothing done yet: the page says so instead of showing figures
        drawn = {}
    details = _run_details(manifest, runs)
    description = manifest.get("description")
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
        f'<p class="description">{html.escape(description.strip())}</p>' if _text(description) else "",
        '<dl class="meta">',
        *(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in _meta(manifest, runs, details) if v),
        "</dl>",
        "<h2>Base configuration</h2>",
        _base_config(manifest),
        "<h2>Results</h2>",
        f"<p>{html.escape(RESULTS_TEXT[sweep_task(manifest)])}</p>",
        render_table(manifest, "html", baseline=baseline, runs=runs),
        "<h2>Figures</h2>",
        *_figures(drawn, primary_metric(manifest)),
        "<h2>Runs</h2>",
        _runs_table(manifest, runs, details),
        "</body>",
        "</html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_summary(
    manifest: Manifest, out: str | Path, runs: pd.DataFrame | None = None, baseline: str | int | None = None
) -> Path:
    """Write the summary page to `out` (its folder is created); returns the path. The page is rendered first, then
    written through a temporary file (write_files): a page already there is replaced whole or kept as it was, and a
    full disk or a read-only folder is a UsageError naming the path."""
    path = Path(out)
    page = render_summary(manifest, runs, baseline)
    write_files({path: page.encode("utf-8")}, advice=out_advice)
    return path
