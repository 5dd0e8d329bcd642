"""Weights & Biases for a sweep: a report (wandb-workspaces) and syncing the runs' offline data, never hanging.

    report = build_report(manifest, entity="me", project="an-lab")   # wandb_workspaces.reports.v2.Report
    write_report_spec(manifest, path, entity="me", project="an-lab")  # offline: the report as JSON, to publish later
    publish_report(manifest, entity="me", project="an-lab")           # online: saves it, returns the URL
    sync_sweep(manifest, timeout=60)                                  # `wandb sync` per offline run folder

The runs of a sweep log to W&B with group = the sweep's name and tags = the cell's design values
(an_lab.sweeps.expand), and their config holds the resolved run config. The report's runset keeps the runs of the
sweep's group and groups them by the config keys the cells change, so one group is one cell (seeds aggregated).

Offline (WANDB_MODE offline/disabled, or no API key), the report is built and serialized without any connection
(entity given explicitly, runset entity/project left empty). Every network step (report save, `wandb sync`) runs
under a time bound.
"""

from __future__ import annotations

import contextlib
import json
import netrc
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from an_lab.analysis.output import out_advice
from an_lab.analysis.results import check_manifest, sweep_task
from an_lab.analysis.table import render_table
from an_lab.atomic import write_files
from an_lab.errors import UsageError
from an_lab.metrics import primary
from an_lab.rundir import CONFIG, read_json
from an_lab.sweeps.records import Manifest

SPEC_FORMAT = "an-lab/wandb-report-spec/1"
DEFAULT_PROJECT = "an-lab"
_FALLBACK_BASE_URL = "https://api.wandb.ai"


# ---------------------------------------------------------------- network and credentials


def base_url() -> str:
    """The W&B server: WANDB_BASE_URL, else the installed wandb's default (not always api.wandb.ai)."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"].rstrip("/")
    try:
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL
    except ImportError:
        return _FALLBACK_BASE_URL
    return DEFAULT_BASE_URL


def _netrc_key(url: str) -> str | None:
    host = urlsplit(url).hostname
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    if not host or not Path(path).is_file():
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None
    return entry[2] if entry and entry[2] else None


def offline_reason() -> str | None:
    """Why W&B cannot be reached from here (None: mode online and an API key is configured). Makes no connection."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode} is set (unset it or set WANDB_MODE=online)"
    if not (os.environ.get("WANDB_API_KEY") or _netrc_key(base_url())):
        return f"no W&B API key for {base_url()} (set WANDB_API_KEY or run `wandb login`)"
    return None


def reachable(url: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to the server opens within `timeout`, else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as error:
        return f"{url} is not reachable ({error})"


# ---------------------------------------------------------------- the report


def _run_configs(manifest: Manifest) -> list[dict]:
    from an_lab.sweeps.manifest import run_dirs

    configs = []
    for directory in run_dirs(manifest).values():
        config = read_json(directory / CONFIG)
        if config is not None:
            configs.append(config)
    return configs


def _from_runs(manifest: Manifest, key: str) -> str | None:
    """The W&B entity or project the sweep's runs were configured with (the first run config that sets it)."""
    for config in _run_configs(manifest):
        value = (config.get("wandb") or {}).get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _runs_filter(manifest: Manifest, name: str) -> str:
    """The sweep's W&B group, and the runs it shares with another sweep: a run trained first by another sweep
    (the same run id) logged to that sweep's group, so it is added by its id."""
    from an_lab.sweeps.manifest import run_dirs

    reused = []
    for run_id, directory in run_dirs(manifest).items():
        group = ((read_json(directory / CONFIG) or {}).get("wandb") or {}).get("group")
        if group is not None and group != name:
            reused.append(run_id)
    expression = f"Metric('Group') = {json.dumps(name)}"
    return f"{expression} or Metric('ID') in {json.dumps(reused)}" if reused else expression


def resolve_target(manifest: Manifest, entity: str | None, project: str | None) -> tuple[str | None, str]:
    """(entity, project): the arguments, else WANDB_ENTITY / WANDB_PROJECT, else the runs' configs; project 'an-lab'
    when nothing names one; entity None when nothing names one (W&B's default entity when publishing)."""
    entity = entity or os.environ.get("WANDB_ENTITY") or _from_runs(manifest, "entity")
    project = project or os.environ.get("WANDB_PROJECT") or _from_runs(manifest, "project") or DEFAULT_PROJECT
    return entity, project


def group_keys(manifest: Manifest) -> list[str]:
    """The config keys the cells change (dotted), in first-seen order: grouping by them makes one group per cell."""
    keys: dict[str, None] = {}
    for cell in check_manifest(manifest):
        for key in cell.get("changes") or {}:
            keys.setdefault(key, None)
    return list(keys)


def _cells_markdown(manifest: Manifest) -> str:
    lines = ["| cell | W&B tags | runs |", "|:--|:--|--:|"]
    for cell in manifest["cells"]:
        label = str(cell.get("label") or f"cell {cell['index']}").replace("|", r"\|")
        tags = ", ".join(f"`{tag}`" for tag in cell.get("tags") or []) or "(none)"
        lines.append(f"| {label} | {tags} | {len(cell['runs'])} |")
    return "\n".join(lines)


# The curves of a task's report besides the primary metric's: (logged column, panel title, y axis title); a detection
# run logs no validation loss, a classification run no AP.
SECONDARY_CURVES = {
    "classification": (
        ("val_top5_err", "validation top-5 error (%) per epoch", "top-5 error (%)"),
        ("val_loss", "validation loss per epoch", "cross-entropy"),
    ),
    "detection": (
        ("val_segm_ap", "validation AP^m (%) per epoch", "AP^m (%)"),
        ("train_loss", "training loss per epoch", "Mask R-CNN loss (sum of its terms)"),
    ),
}


def _panels(wr, task: str) -> list:
    """The report's panels: the primary validation metric per epoch (mean ± std over seeds per cell), the task's
    other curves, and the final primary metric per cell as bars."""
    metric = primary(task)
    common = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev", "font_size": "large"}
    panels = [
        wr.LinePlot(
            title=f"validation {metric.phrase} (%) per epoch, mean ± std over seeds per cell",
            x="epoch",
            y=[metric.logged],
            title_x="epoch",
            title_y=f"{metric.phrase} (%)",
            legend_position="east",
            **common,
        )
    ]
    for column, title, axis in SECONDARY_CURVES[task]:
        panels.append(wr.LinePlot(title=title, x="epoch", y=[column], title_x="epoch", title_y=axis, **common))
    panels.append(
        wr.BarPlot(
            title=f"final {metric.phrase} (%) per cell, mean ± std over seeds",
            metrics=[metric.logged],
            orientation="h",
            title_x=f"{metric.phrase} (%)",
            **common,
        )
    )
    return panels


def build_report(
    manifest: Manifest,
    entity: str | None,
    project: str,
    *,
    online: bool = False,
    baseline: str | int | None = None,
):
    """The sweep's W&B report (not saved). Offline (online=False) the runset names no entity/project, so that
    serializing it makes no connection; online it points at entity/project (looked up when saved)."""
    with warnings.catch_warnings():  # the library still declares pydantic-v1 style validators
        warnings.simplefilter("ignore", DeprecationWarning)
        import wandb_workspaces.reports.v2 as wr

    check_manifest(manifest)
    name = str(manifest.get("name") or "sweep")
    keys = group_keys(manifest)
    runset = wr.Runset(
        entity=(entity or "") if online else "",
        project=project if online else "",
        name=f"sweep {name}",
        filters=_runs_filter(manifest, name),
        groupby=[f"config.{key}" for key in keys],
    )
    task = sweep_task(manifest)
    panels = _panels(wr, task)
    final = "error" if primary(task).lower_is_better else primary(task).phrase  # what the bars show
    grouping = ", ".join(f"`{key}`" for key in keys) or "nothing (one cell)"
    blocks = [
        wr.MarkdownBlock(
            text=f"Runs of the an-lab sweep **{name}** ({manifest.get('mode') or 'sweep'} mode): W&B group `{name}`, "
            f"grouped by {grouping}, so that each group is one cell and its seeds are aggregated (mean ± std)."
        ),
        wr.H2("Results"),
        wr.MarkdownBlock(text=render_table(manifest, "markdown", baseline=baseline)),
        wr.H2(f"Curves and final {final} per cell"),
        wr.PanelGrid(runsets=[runset], panels=panels),
        wr.H2("Cells"),
        wr.MarkdownBlock(text=_cells_markdown(manifest)),
    ]
    return wr.Report(
        entity=entity or "",
        project=project,
        title=f"Sweep {name}: Attentive Normalization ablation"[:128],
        description=f"an-lab sweep {name}: results table, validation curves and final {final} per cell.",
        blocks=blocks,
        width="fluid",
    )


def report_spec(report) -> dict:
    """The report as W&B's view spec (what Report.save() uploads), serialized without a connection."""
    return json.loads(report._to_model().model_dump_json(by_alias=True, exclude_none=True))


def publish_command(sweep: str, entity: str | None, project: str) -> str:
    words = ["an-lab", "report", sweep, "--wandb", "--publish"]
    words += ["--entity", entity] if entity else []
    words += ["--project", project]
    return shlex.join(words)


def write_report_spec(
    manifest: Manifest,
    path: str | Path,
    entity: str | None,
    project: str,
    *,
    sweep: str,
    baseline: str | int | None = None,
) -> Path:
    """Write the report's specification (JSON) to `path`; no network. `sweep` is what to pass to publish it later.
    UsageError naming the path when it cannot be written (full disk, read-only folder)."""
    report = build_report(manifest, entity, project, baseline=baseline)
    document = {
        "format": SPEC_FORMAT,
        "sweep": manifest.get("name"),
        "group": manifest.get("name"),
        "entity": entity,
        "project": project,
        "title": report.title,
        "publish": publish_command(sweep, entity, project),
        "written_at": time.time(),
        "report": report_spec(report),
    }
    out = Path(path)
    # through a temporary file (write_files): a previous spec is kept whole when the disk is full or read-only
    write_files({out: (json.dumps(document, indent=2) + "\n").encode("utf-8")}, advice=out_advice)
    return out


def publish_report(
    manifest: Manifest,
    entity: str | None,
    project: str,
    *,
    timeout: float = 120.0,
    baseline: str | int | None = None,
) -> str:
    """Save the report to W&B and return its URL, within `timeout` seconds; UsageError when offline, unreachable,
    failing or too slow. (Needs a network: not exercised by the tests, which run offline.)"""
    reason = offline_reason() or reachable(base_url(), timeout=min(timeout, 10.0))
    if reason:
        raise UsageError(f"cannot publish the report: {reason}")
    outcome: dict[str, object] = {}

    def save() -> None:
        try:
            owner = entity
            if not owner:  # the API key's default entity, asked for within the time bound
                import wandb

                owner = wandb.Api(timeout=int(timeout)).default_entity
            report = build_report(manifest, owner, project, online=True, baseline=baseline)
            report.save()
            outcome["url"] = report.url
        except Exception as error:  # reported to the user below, whatever the library raised
            outcome["error"] = error

    worker = threading.Thread(target=save, name="an-lab-report-save", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UsageError(
            f"publishing the report took longer than {timeout:.0f} s; stopped waiting (is {base_url()} up?)"
        )
    if "error" in outcome:
        raise UsageError(f"publishing the report failed: {outcome['error']}")
    return str(outcome["url"])


# ---------------------------------------------------------------- sync


@dataclass(frozen=True)
class SyncOutcome:
    run_id: str
    folder: Path | None
    status: str  # synced, already synced, failed, timed out, not synced (offline), no offline data
    detail: str = ""


def offline_folders(run_dir: Path) -> list[Path]:
    """The offline W&B run folders of a run (one per attempt), oldest first: <run>/wandb/offline-run-*, and
    <run>/wandb/wandb/offline-run-* where earlier versions nested them."""
    found = [*(run_dir / "wandb").glob("offline-run-*"), *(run_dir / "wandb" / "wandb").glob("offline-run-*")]
    return sorted(found, key=lambda folder: folder.name)


def _synced(folder: Path) -> bool:
    return any(folder.glob("*.wandb.synced"))


def run_bounded(command: list[str], timeout: float, cwd: Path | None = None) -> tuple[int | None, str]:
    """(exit status or None when it ran past `timeout`, its output). The command runs in its own process group, with
    stdin closed (no login prompt can wait) and output in a file (no pipe held open by a grandchild), and the whole
    group is stopped at the bound."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
        _stop_group(process)
        output.seek(0)
        text = output.read().decode(errors="replace")
    return status, text


def _stop_group(process: subprocess.Popen) -> None:
    """Stop the command and what it left in its process group (wandb-core can outlive `wandb sync`)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=3.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def sync_sweep(manifest: Manifest, timeout: float = 60.0, report=None) -> list[SyncOutcome]:
    """`wandb sync` on every offline run folder of the sweep's runs, each call bounded by `timeout` seconds.
    Offline (offline_reason) or when the server does not accept a connection within 5 s, nothing is started and every
    folder is reported as not synced. `report` is called with each outcome as it comes."""
    from an_lab.sweeps.manifest import run_dirs

    check_manifest(manifest)
    reason = offline_reason()
    directories = run_dirs(manifest)
    folders_of = {run_id: offline_folders(directory) for run_id, directory in directories.items()}
    if reason is None and any(not _synced(folder) for folders in folders_of.values() for folder in folders):
        reason = reachable(base_url(), timeout=min(timeout, 5.0))
    outcomes = []
    for run_id, folders in folders_of.items():
        if not folders:
            found = [SyncOutcome(run_id, None, "no offline data")]
        else:
            found = []
            for folder in folders:
                if _synced(folder):
                    found.append(SyncOutcome(run_id, folder, "already synced"))
                elif reason:
                    found.append(SyncOutcome(run_id, folder, "not synced (offline)", reason))
                else:
                    status, text = run_bounded(
                        [sys.executable, "-m", "wandb", "sync", str(folder)], timeout, cwd=folder.parent
                    )
                    if status is None:
                        detail = f"stopped after {timeout:g} s (is {base_url()} answering?)"
                        found.append(SyncOutcome(run_id, folder, "timed out", detail))
                    elif status == 0 and _synced(folder):  # wandb sync marks a synced folder
                        found.append(SyncOutcome(run_id, folder, "synced"))
                    else:
                        found.append(SyncOutcome(run_id, folder, "failed", _last_line(text) or f"exit {status}"))
        for outcome in found:
            if report is not None:
                report(outcome)
        outcomes += found
    return outcomes
