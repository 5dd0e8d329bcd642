"""Figures of a sweep as PNG files, read from the run directories without torch (matplotlib, Agg, no pyplot state).

    paths = plot_sweep(load_manifest("runs/sweeps/quickstart"), "runs/sweeps/quickstart/figures")

- error_by_axis.png: final top-1 error per design choice, one panel per axis (the paper's Figure 1 style): the base
  cell is the first bar of every panel, bars are the mean over the done seeds with std error bars, baselines are dashed
  lines.
- val_curves.png: validation top-1 error per epoch, mean over the done seeds of each cell, a legend outside the axes.
- params_vs_error.png: parameters (M) against final top-1 error, every point named by its cell.

Incomplete cells use their done runs only and say so ("(1/2)", hatched bars, hollow points). The numbers behind the
figures come from pure functions (axis_groups, cell_curves, scatter_points) so that tests can check them.

Labels, tag values and the sweep's name are the user's text and are drawn as typed: no mathtext ("$x$" stays "$x$",
an unknown "\\command" cannot fail), no TeX (_as_typed). Files are written with write_files: all or nothing, through
temporary files renamed into place, and a full disk or a read-only folder is one UsageError naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from an_lab.analysis.results import check_manifest, collect
from an_lab.analysis.table import summarize
from an_lab.errors import UsageError
from an_lab.rundir import epoch_metrics

FIGURES = ("error_by_axis.png", "val_curves.png", "params_vs_error.png")
NOTHING_DONE = "no finished runs yet: figures need at least one run with a result.json (see `an-lab status`)"
_STYLE = {
    "font.size": 12,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 15,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "savefig.dpi": 110,
    # every text object starts as plain text, tick labels made while drawing too (see _as_typed)
    "text.usetex": False,
    "text.parse_math": False,
}
IMAGE_FORMATS = ("png", "svg")
_BASE_COLOR, _AXIS_COLOR, _BASELINE_COLOR = "#4c72b0", "#dd8452", "#333333"


@dataclass(frozen=True)
class Bar:
    """One cell in an axis panel: the mean and std of its done runs (NaN when none / fewer than two)."""

    cell: int
    value: str
    label: str
    mean: float
    std: float
    done: int
    runs: int
    is_base: bool = False

    @property
    def complete(self) -> bool:
        return self.runs > 0 and self.done == self.runs


@dataclass(frozen=True)
class AxisGroup:
    """The cells that change the same keys against the base cell; the base cell comes first."""

    name: str
    keys: tuple[str, ...]
    bars: list[Bar] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    """A baseline cell, drawn as a horizontal line."""

    cell: int
    label: str
    mean: float
    done: int
    runs: int


def _short(key: str) -> str:
    return key.rpartition(".")[2]


def _shown(value) -> str:
    if isinstance(value, list | tuple):
        return "(" + ",".join(str(item) for item in value) + ")"
    return str(value)


def _tag_values(cell: dict) -> dict[str, str]:
    values = {}
    for tag in cell.get("tags") or []:
        name, sep, value = str(tag).partition("=")
        if sep:
            values.setdefault(name, value)
    return values


def _value_text(cell: dict, keys: tuple[str, ...], fallback: str) -> str:
    """What the cell sets on these keys, as its tags write it (`mean`, `(5,5,10)`)."""
    tags = _tag_values(cell)
    changes = cell.get("changes") or {}
    parts = []
    for key in keys:
        if _short(key) in tags:
            parts.append(tags[_short(key)])
        elif key in changes:
            parts.append(_shown(changes[key]))
    return ", ".join(parts) if parts else fallback


def _summary(manifest: dict, runs: pd.DataFrame | None) -> pd.DataFrame:
    # baseline "none": the figures draw every baseline cell themselves and need no differences
    return summarize(manifest, collect(manifest) if runs is None else runs, baseline="none")


def axis_groups(manifest: dict, runs: pd.DataFrame | None = None) -> tuple[list[AxisGroup], list[Reference]]:
    """(one group per set of changed keys in manifest order, the baseline cells).

    Axes come from the cells' `changes`: cells changing the same keys form one group, named by the keys' last parts
    ("pooling", "k"). The base cell (the first non-baseline cell without changes) opens every group. Baseline cells
    (kind "baseline") form no group. Without any changed keys, one group "cell" holds every non-baseline cell."""
    cells = check_manifest(manifest)
    summary = _summary(manifest, runs).set_index("index")

    def bar(cell: dict, value: str, is_base: bool = False) -> Bar:
        row = summary.loc[cell["index"]]
        label = cell.get("label") or f"cell {cell['index']}"
        mean, std = float(row["top1_mean"]), float(row["top1_std"])
        return Bar(cell["index"], value, label, mean, std, int(row["done"]), int(row["runs"]), is_base)

    references = [
        Reference(r.cell, r.label, r.mean, r.done, r.runs)
        for r in (bar(cell, "") for cell in cells if cell.get("kind") == "baseline")
    ]
    designs = [cell for cell in cells if cell.get("kind") != "baseline"]
    base = next((cell for cell in designs if not cell.get("changes")), None)
    keyed: dict[tuple[str, ...], list[dict]] = {}
    for cell in designs:
        if cell is not base and cell.get("changes"):
            keyed.setdefault(tuple(sorted(cell["changes"])), []).append(cell)
    groups = []
    for keys, members in keyed.items():
        name = " + ".join(_short(key) for key in keys)
        bars = [bar(base, _value_text(base, keys, "base"), True)] if base is not None else []
        bars += [bar(cell, _value_text(cell, keys, f"cell {cell['index']}")) for cell in members]
        groups.append(AxisGroup(name, keys, bars))
    if not groups and designs:
        bars = [bar(cell, cell.get("label") or f"cell {cell['index']}", cell is base) for cell in designs]
        groups.append(AxisGroup("cell", (), bars))
    return groups, references


def cell_curves(manifest: dict, runs: pd.DataFrame | None = None) -> dict[int, list[tuple[int, float]]]:
    """Per cell with done runs: [(epoch, mean val_top1_err over the done runs that logged that epoch)], by epoch."""
    check_manifest(manifest)
    runs = collect(manifest) if runs is None else runs
    root = Path(manifest["output_dir"])
    curves: dict[int, list[tuple[int, float]]] = {}
    for cell, members in runs[runs["state"] == "done"].groupby("cell", sort=False):
        per_epoch: dict[int, list[float]] = {}
        for run_id in members["run_id"]:
            for row in epoch_metrics(root / run_id):
                value = row.get("val_top1_err")
                if value is not None and math.isfinite(value):
                    per_epoch.setdefault(int(row["epoch"]), []).append(value)
        if per_epoch:
            curves[int(cell)] = [(epoch, sum(v) / len(v)) for epoch, v in sorted(per_epoch.items())]
    return curves


@dataclass(frozen=True)
class Point:
    cell: int
    label: str
    params_m: float
    mean: float
    std: float
    done: int
    runs: int
    kind: str | None


def scatter_points(manifest: dict, runs: pd.DataFrame | None = None) -> list[Point]:
    """One point per cell with done runs and a known parameter count: (params in millions, mean top-1 error)."""
    summary = _summary(manifest, runs)
    points = []
    for row in summary.to_dict("records"):
        if row["done"] and not (pd.isna(row["params_m"]) or pd.isna(row["top1_mean"])):
            points.append(
                Point(
                    int(row["index"]),
                    row["method"],
                    float(row["params_m"]),
                    float(row["top1_mean"]),
                    float(row["top1_std"]),
                    int(row["done"]),
                    int(row["runs"]),
                    row["kind"],
                )
            )
    return points


def _count(done: int, runs: int) -> str:
    return "" if done == runs else f" ({done}/{runs})"


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _as_typed(figure) -> None:
    """Draw every text of the figure as typed: titles, axis and tick labels, legend entries and annotations, where
    the manifest's labels, tag values and sweep name end up. Matplotlib would otherwise read text between dollar signs
    as mathtext (and raise on an unknown command such as "$\\foo$") or hand it to TeX (rcParams text.usetex)."""
    from matplotlib.text import Text

    for text in figure.findobj(Text):
        text.set_usetex(False)
        text.set_parse_math(False)


def _render(figure, image_format: str) -> bytes:
    """The figure as PNG or SVG bytes (SVG keeps its texts as text elements), its texts drawn as typed."""
    _as_typed(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, bbox_inches="tight", pad_inches=0.2)
    return buffer.getvalue()


def _finite(values) -> list[float]:
    return [value for value in values if value is not None and math.isfinite(value)]


def _error_by_axis(name: str, groups: list[AxisGroup], references: list[Reference]):
    columns = len(groups) if len(groups) <= 3 else (2 if len(groups) == 4 else 3)
    rows = math.ceil(len(groups) / columns)
    widths = [max(3.6, 1.25 * len(group.bars) + 1.2) for group in groups[:columns]]
    figure = _new_figure(max(sum(widths), 7.0), 4.6 * rows + 0.6)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False)
    drawn = [r for r in references if r.done and math.isfinite(r.mean)]
    tops = _finite(b.mean + (b.std if math.isfinite(b.std) else 0) for g in groups for b in g.bars)
    bottoms = _finite(b.mean - (b.std if math.isfinite(b.std) else 0) for g in groups for b in g.bars)
    tops += [r.mean for r in drawn]
    bottoms += [r.mean for r in drawn]
    low, high = (min(bottoms), max(tops)) if tops else (0.0, 1.0)
    margin = max(0.25 * (high - low), 0.5)
    floor = max(0.0, low - margin)
    ceiling = high + 1.4 * margin
    for position, ax in enumerate(axes.flat):
        if position >= len(groups):
            ax.set_visible(False)
            continue
        group = groups[position]
        xs = list(range(len(group.bars)))
        for x, bar in zip(xs, group.bars, strict=True):
            height = bar.mean if math.isfinite(bar.mean) else 0.0
            ax.bar(
                x,
                height,
                width=0.65,
                color=_BASE_COLOR if bar.is_base else _AXIS_COLOR,
                alpha=1.0 if bar.complete else 0.55,
                hatch=None if bar.complete else "//",
                edgecolor="black" if not bar.complete else None,
                linewidth=0.8,
            )
            if not math.isfinite(bar.mean):
                ax.text(x, floor, f" no run done\n ({bar.done}/{bar.runs})", ha="center", va="bottom", fontsize=10)
                continue
            std = bar.std if math.isfinite(bar.std) else 0.0
            if std:
                ax.errorbar(x, bar.mean, yerr=std, color="black", capsize=5, linewidth=1.2)
            ax.annotate(
                f"{bar.mean:.2f}" + _count(bar.done, bar.runs),
                (x, bar.mean + std),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=11,
                fontweight="bold" if bar.is_base else "normal",
            )
        for reference in drawn:
            ax.axhline(reference.mean, color=_BASELINE_COLOR, linestyle=(0, (5, 3)), linewidth=1.4)
            if position % columns == columns - 1 or position == len(groups) - 1:
                ax.annotate(
                    f"{reference.label} {reference.mean:.2f}" + _count(reference.done, reference.runs),
                    (1.0, reference.mean),
                    xycoords=("axes fraction", "data"),
                    xytext=(4, 0),
                    textcoords="offset points",
                    ha="left",
                    va="center",
                    fontsize=11,
                    color=_BASELINE_COLOR,
                    annotation_clip=False,
                )
        ax.set_xticks(xs, [bar.value for bar in group.bars])
        if max((len(bar.value) for bar in group.bars), default=0) > 9:
            ax.tick_params(axis="x", labelrotation=20)
        ax.set_title(group.name)
        ax.set_xlabel(" + ".join(group.keys) if group.keys else "cell")
        ax.set_ylim(floor, ceiling)
        if position % columns == 0:
            ax.set_ylabel("final top-1 error (%)")
        ax.grid(axis="y", alpha=0.3)
    title = f"{name}: final top-1 error per design choice (mean ± std over seeds; first bar = base cell)"
    if any(not b.complete for g in groups for b in g.bars):
        title += "\nhatched = incomplete cell, (done/total) runs"
    if floor > 0:
        title += f"\ny axis starts at {floor:.1f}%"
    figure.suptitle(title)
    return figure


def _line_styles(count: int) -> list[tuple[str, object]]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors if count <= 10 else colormaps["tab20"].colors
    dashes = ["-", "--", "-.", ":"]
    return [(palette[i % len(palette)], dashes[(i // len(palette)) % len(dashes)]) for i in range(count)]


def _val_curves(name: str, manifest: dict, curves: dict[int, list[tuple[int, float]]], summary: pd.DataFrame):
    figure = _new_figure(14.0, 5.6)
    full, zoom = figure.subplots(1, 2, width_ratios=[1.0, 1.0])
    described = summary.set_index("index")
    cells = {cell["index"]: cell for cell in manifest["cells"]}
    styles = _line_styles(len(curves))
    finals: list[float] = []
    handles = []
    last = max(points[-1][0] for points in curves.values())
    start = max(0, last + 1 - max(3, (last + 1) // 4))
    ends: list[tuple[float, str, float]] = []
    for (cell, points), (color, dash) in zip(curves.items(), styles, strict=True):
        row = described.loc[cell]
        kind = cells[cell].get("kind")
        epochs = [epoch for epoch, _ in points]
        values = [value for _, value in points]
        style = {"color": color, "linestyle": dash, "linewidth": 2.6 if kind == "base" else 1.7}
        if kind == "baseline":
            style.update(color="black", linestyle=(0, (5, 3)), linewidth=2.0)
        label = f"{row['method']}: {values[-1]:.2f}%" + _count(int(row["done"]), int(row["runs"]))
        (handle,) = full.plot(epochs, values, marker="o", markersize=3.5, label=label, **style)
        handles.append(handle)
        tail = [(e, v) for e, v in points if e >= start]
        zoom.plot([e for e, _ in tail], [v for _, v in tail], marker="o", markersize=4, **style)
        finals.append(values[-1])
        ends.append((epochs[-1], style["color"], values[-1]))
    full.set_title("all epochs")
    zoom.set_title(f"from epoch {start}, y zoomed on the final errors")
    for ax in (full, zoom):
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation top-1 error (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    low, high = min(finals), max(finals)
    pad = max(0.15 * (high - low), 0.5)
    zoom.set_ylim(max(0.0, low - pad), high + 2 * pad)
    bottom, top = zoom.get_ylim()
    ends.sort(key=lambda end: end[2])
    placed = _spread([(value - bottom) / (top - bottom) for _, _, value in ends], 0.05, 0.02, 0.98)
    for (epoch, color, value), where in zip(ends, placed, strict=True):
        zoom.annotate(  # the final value at the line's end, so the ranking reads without the legend
            f"{value:.2f}",
            (epoch, value),
            xytext=(1.04, where),
            textcoords="axes fraction",
            va="center",
            fontsize=11,
            color=color,
            arrowprops={
                "arrowstyle": "-",
                "color": color,
                "linewidth": 0.7,
                "shrinkA": 1,
                "shrinkB": 3,
                "relpos": (0, 0.5),
            },
            annotation_clip=False,
        )
    figure.legend(
        handles=handles,
        loc="outside right center",
        title="cell: final error (mean over done seeds)",
        frameon=False,
    )
    figure.suptitle(f"{name}: validation top-1 error per epoch (mean over the done seeds of each cell)")
    return figure


def _spread(positions: list[float], gap: float, low: float, high: float) -> list[float]:
    """Label positions in [low, high], in the given order of increasing position, at least `gap` apart and as close
    to the wanted positions as a push-up then pull-down pass gets them."""
    placed = []
    for wanted in positions:
        placed.append(max(wanted, low, placed[-1] + gap if placed else low))
    overflow = placed[-1] - high if placed else 0.0
    if overflow > 0:
        placed = [value - overflow for value in placed]
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
    return placed


def _params_vs_error(name: str, points: list[Point]):
    height = max(5.2, 0.36 * len(points) + 1.8)
    figure = _new_figure(13.0, height)
    ax = figure.subplots()
    xs = [p.params_m for p in points]
    ys = [p.mean for p in points]
    for point in points:
        full = point.done == point.runs
        marker = "s" if point.kind == "baseline" else ("D" if point.kind == "base" else "o")
        color = _BASELINE_COLOR if point.kind == "baseline" else (_BASE_COLOR if point.kind == "base" else _AXIS_COLOR)
        ax.errorbar(
            point.params_m,
            point.mean,
            yerr=point.std if math.isfinite(point.std) else None,
            fmt=marker,
            markersize=9,
            color=color,
            markerfacecolor=color if full else "white",
            markeredgewidth=1.8,
            capsize=4,
        )
    span_x = (max(xs) - min(xs)) or max(abs(xs[0]) * 0.02, 0.01)
    ax.set_xlim(min(xs) - 0.15 * span_x, max(xs) + 0.15 * span_x)
    errors = [p.std if math.isfinite(p.std) else 0.0 for p in points]
    low = min(y - e for y, e in zip(ys, errors, strict=True))
    high = max(y + e for y, e in zip(ys, errors, strict=True))
    pad = max(0.12 * (high - low), 0.3)
    ax.set_ylim(low - pad, high + pad)
    bottom, top = ax.get_ylim()
    order = sorted(range(len(points)), key=lambda i: ys[i])
    fractions = [(ys[i] - bottom) / (top - bottom) for i in order]
    gap = min(0.9 / max(len(points), 1), 0.08)
    placed = _spread(fractions, gap, 0.02, 0.98)
    for i, where in zip(order, placed, strict=True):
        point = points[i]
        ax.annotate(
            f"{point.label}  {point.mean:.2f}%" + _count(point.done, point.runs),
            (point.params_m, point.mean),
            xytext=(1.03, where),
            textcoords="axes fraction",
            va="center",
            ha="left",
            fontsize=11,
            arrowprops={
                "arrowstyle": "-",
                "color": "0.6",
                "linewidth": 0.8,
                "shrinkA": 2,
                "shrinkB": 6,
                "relpos": (0, 0.5),
            },
            annotation_clip=False,
        )
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("final top-1 error (%)")
    ax.grid(alpha=0.3)
    title = f"{name}: parameters vs final top-1 error (mean ± std over seeds)"
    title += "\ndiamond = base cell, square = baseline, circle = other cells"
    if any(p.done != p.runs for p in points):
        title += "; hollow = incomplete cell, (done/total) runs"
    ax.set_title(title, loc="left")
    return figure


def render_figures(manifest: dict, runs: pd.DataFrame | None = None, image_format: str = "png") -> dict[str, bytes]:
    """The sweep's figures as PNG bytes by file name (FIGURES); UsageError when no run is done yet. With
    image_format="svg", SVG documents named <figure>.svg, their texts kept as text (what tests read back)."""
    from matplotlib import rc_context

    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format {image_format!r}: one of {', '.join(IMAGE_FORMATS)}")
    check_manifest(manifest)
    runs = collect(manifest) if runs is None else runs
    if not (runs["state"] == "done").any():
        raise UsageError(NOTHING_DONE)
    name = manifest.get("name") or "sweep"
    summary = _summary(manifest, runs)
    groups, references = axis_groups(manifest, runs)
    curves = cell_curves(manifest, runs)
    points = scatter_points(manifest, runs)
    out: dict[str, bytes] = {}
    with rc_context({**_STYLE, "svg.fonttype": "none"}):
        if groups:
            out["error_by_axis"] = _render(_error_by_axis(name, groups, references), image_format)
        if curves:
            out["val_curves"] = _render(_val_curves(name, manifest, curves, summary), image_format)
        if points:
            out["params_vs_error"] = _render(_params_vs_error(name, points), image_format)
    return {f"{stem}.{image_format}": data for stem, data in out.items()}


def plot_sweep(manifest: dict, out_dir: str | Path, runs: pd.DataFrame | None = None) -> list[Path]:
    """Write the sweep's figures into out_dir (created), all or none of them (write_files); returns the paths
    written. UsageError when no run is done yet or when the folder cannot take them (full disk, read-only)."""
    drawn = render_figures(manifest, runs)
    folder = Path(out_dir)
    return write_files({folder / filename: data for filename, data in drawn.items()})


# ---------------------------------------------------------------- writing files


def _make_folders(folder: Path, created: list[Path]) -> None:
    """Create `folder` and its missing parents, appending each folder this call made to `created` (outermost
    first) as soon as it exists, so that a later failure can remove them again."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for candidate in reversed(missing):
        try:
            candidate.mkdir()
        except FileExistsError:
            if not candidate.is_dir():
                raise
            continue  # made meanwhile by someone else: not ours to remove
        created.append(candidate)


def _advice(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space, or choose another place with --out"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "choose a writable place with --out"
    return "choose another place with --out"


def write_files(files: dict[Path, bytes]) -> list[Path]:
    """Write every file or none, and never leave a half-written one: each is written (and fsynced) to a temporary
    file in its own folder, and only once all of them are complete are they renamed over their targets (os.replace),
    so a reader sees the old file or the whole new one. When a step fails (a full disk, a read-only folder, a target
    that is a folder) the temporary files and the folders made here are removed, the files already there keep their
    content, and a UsageError names the path and the reason. Returns the paths written, in the given order."""
    created: list[Path] = []
    pending: list[tuple[Path, Path]] = []  # (temporary file, target)
    replaced: list[Path] = []
    action, subject = "write", None
    try:
        for path, data in files.items():
            action, subject = "create the folder", path.parent
            _make_folders(path.parent, created)
            action, subject = "write", path
            temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            pending.append((temporary, path))
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        for temporary, path in pending:
            subject = path
            os.replace(temporary, path)
            replaced.append(path)
    except BaseException as error:  # an interrupt cleans up too; only OSError becomes the user's error
        for temporary, _ in pending:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if not isinstance(error, OSError):
            raise
        if action == "create the folder" and error.filename:
            subject = Path(os.fsdecode(error.filename))
        kept = (
            f"{len(replaced)} of the {len(files)} files were already replaced ({', '.join(map(str, replaced))})"
            if replaced
            else "nothing there was changed"
        )
        reason = error.strerror or str(error)
        raise UsageError(f"cannot {action} {subject}: {reason}; {kept} ({_advice(error)})") from None
    return [path for _, path in pending]
