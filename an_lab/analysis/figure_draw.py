"""A sweep's figures drawn with matplotlib (Agg, no pyplot state) from the numbers of an_lab.analysis.figure_data.

- error_by_axis: the final metric per design choice, one panel per axis (the paper's Figure 1 style) and one for the
  baselines; a dot plot, the base cell first in every panel, the baselines also as dashed lines with their CI as band.
- val_curves: the validation metric per epoch, the mean over the done seeds of each cell with its 95% CI per epoch as
  a band (none where one run logged the epoch), a legend outside the axes.
- params_vs_error: parameters (M) against the final metric, every cell named.

Each interval is the 95% CI of the mean over seeds, each seed is drawn as a point, each cell says how many seeds it
rests on ("n=3"; "n=1 of 2" while runs are missing), and a cell with one run shows that run's point without an error
bar. The figures are drawn under STYLE (rc_context) and render gives a figure's PNG, PDF or SVG bytes.

Labels, tag values and the sweep's name are the user's text and are drawn as typed: no mathtext ("$x$" stays "$x$",
an unknown "\\command" cannot fail), no TeX (_as_typed).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from an_lab.analysis.figure_data import AxisGroup, Bar, CellStats, Point, Reference
from an_lab.metrics import METRIC_RANGE, Metric
from an_lab.stats import Estimate, finite_list

CI_NOTE = "error bars: 95% CI of the mean over seeds (Student t), n per cell shown"
STYLE = {
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
    "pdf.fonttype": 42,  # TrueType, not Type 3: the fonts publishers' checks ask for, and the text stays searchable
    "svg.fonttype": "none",  # SVG texts stay text elements (editable, and what tests read back)
    "svg.hashsalt": "an-lab",  # the same figure gives the same SVG ids every time
}
# No creation dates: the same runs give the same files, so that a paper's repository sees no spurious changes.
_METADATA = {"png": None, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
_BASE_COLOR, _AXIS_COLOR, _BASELINE_COLOR = "#4c72b0", "#dd8452", "#333333"
_BASELINE_DASHES = [(0, (5, 3)), (0, (1.5, 1.5)), (0, (8, 3, 2, 3)), (0, (3, 1.5, 1, 1.5, 1, 1.5))]


def _n_text(n: int, runs: int) -> str:
    """How many seeds a cell's numbers rest on: "n=3", or "n=1 of 2" while runs are missing or failed."""
    return f"n={n}" if n == runs else f"n={n} of {runs}"


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


def render(figure, image_format: str) -> bytes:
    """The figure as PNG, PDF or SVG bytes (SVG keeps its texts as text elements), its texts drawn as typed."""
    _as_typed(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, bbox_inches="tight", pad_inches=0.2, metadata=_METADATA[image_format])
    return buffer.getvalue()


def _note(figure, lines: list[str]) -> None:
    """The figure's legend in words, under the axes (savefig's tight bounding box takes it in)."""
    figure.text(0.01, -0.01, "\n".join(lines), ha="left", va="top", fontsize=11, color="0.2", linespacing=1.4)


def _jitter(key: int, count: int, spread: float) -> np.ndarray:
    """Horizontal offsets of a cell's `count` seed points: evenly spread over [-spread, spread] (no two on top of
    each other) in an order shuffled by a generator seeded with the cell's index, so that the same sweep gives the
    same figure every time."""
    if count < 2:
        return np.zeros(count)
    return np.random.default_rng(key).permutation(np.linspace(-spread, spread, count))


@dataclass(frozen=True)
class _Look:
    """How _draw_cell draws a cell; offsets and spread in data units of the x axis."""

    color: str
    marker: str = "o"
    seed_offset: float = -0.24  # the seeds sit left of the mean marker, so that neither hides the other
    seed_spread: float = 0.07
    whiskers: str = "black"


def _draw_cell(ax, x: float, item: Bar | Reference | Point, look: _Look, gid: str) -> None:
    """A cell as a dot with whiskers: its seeds as small hollow circles (jittered, left of x), the mean as a marker at
    x with the 95% CI of the mean as error bar (white while runs are missing). One run: its point at x, no error bar.
    The artists carry gids (<gid>-seeds, <gid>-ci) so that tests can find them."""
    values = list(item.values)
    face = look.color if item.done == item.runs else "white"
    if len(values) == 1:
        ax.scatter(
            [x], values, s=70, marker=look.marker, facecolors=face, edgecolors=look.color, linewidths=1.8, zorder=4
        ).set_gid(f"{gid}-seeds")
        return
    xs = x + look.seed_offset + _jitter(item.cell, len(values), look.seed_spread)
    seeds = ax.scatter(xs, values, s=26, marker="o", facecolors="none", edgecolors=look.color, linewidths=1.2)
    seeds.set(zorder=3, gid=f"{gid}-seeds")
    container = ax.errorbar(
        x,
        item.mean,
        yerr=[[item.mean - item.ci_low], [item.ci_high - item.mean]],
        fmt=look.marker,
        markersize=8,
        color=look.color,
        markerfacecolor=face,
        markeredgewidth=1.8,
        ecolor=look.whiskers,
        elinewidth=1.4,
        capsize=5,
        capthick=1.4,
        zorder=4,
    )
    container.lines[2][0].set_gid(f"{gid}-ci")


def _value_range(items) -> tuple[float, float]:
    """The y range that shows every seed, mean and CI of the items (Bar, Reference or Point), padded."""
    numbers = finite_list(v for item in items for v in (*item.values, item.mean, item.ci_low, item.ci_high))
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    pad = max(0.08 * (high - low), 0.15)
    return max(METRIC_RANGE[0], low - pad), min(METRIC_RANGE[1], high + pad)  # a percentage's axis stays in range


# A dot plot, not bars: the cells' errors differ by fractions of a point, and a bar is read by its length, so it must
# start at zero, which squeezes those differences into the bars' tips (and a bar axis cut above zero misleads
# instead). Dots with CI whiskers and the seeds beside them show the differences and their uncertainty at the scale
# of the data; the y axis therefore does not start at 0, and the figure's note says so.


def _panels(groups: list[AxisGroup], references: list[Reference]) -> list[AxisGroup]:
    """The axis panels, then one panel of the baselines' dots (when the sweep has baselines)."""
    panels = list(groups)
    if references:
        bars = [
            Bar(r.cell, r.label, r.label, r.mean, r.std, r.done, r.runs, False, r.ci_low, r.ci_high, r.values)
            for r in references
        ]
        panels.append(AxisGroup("baselines", (), bars))
    return panels


def _draw_references(ax, references: list[Reference], annotate: bool) -> None:
    for reference in references:
        if reference.n >= 2:
            band = ax.axhspan(reference.ci_low, reference.ci_high, color=_BASELINE_COLOR, alpha=0.09, linewidth=0)
            band.set(zorder=0, gid=f"baseline{reference.cell}-ci")
        ax.axhline(reference.mean, color=_BASELINE_COLOR, linestyle=(0, (5, 3)), linewidth=1.2, zorder=1)
        if annotate:
            ax.annotate(
                f"{reference.label} {reference.mean:.2f}",
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


_UNROTATED = 16  # tick labels up to this many characters are written level, their category made wide enough


def _longest(panel: AxisGroup) -> int:
    return max((len(line) for bar in panel.bars for line in (bar.value, _n_text(bar.n, bar.runs))), default=0)


def _panel_width(panel: AxisGroup) -> float:
    """Inches for a panel: per category room for its longest tick label (11 pt: about 0.092 in a character)."""
    per_category = max(1.0, 0.092 * min(_longest(panel), _UNROTATED) + 0.1)
    return per_category * len(panel.bars) + 0.7


def _draw_panel(ax, position: int, panel: AxisGroup, baselines: bool) -> None:
    for x, bar in enumerate(panel.bars):
        if baselines:
            look = _Look(_BASELINE_COLOR, "s")
        else:
            look = _Look(_BASE_COLOR if bar.is_base else _AXIS_COLOR, "D" if bar.is_base else "o")
        if not bar.values:
            where = ax.get_xaxis_transform()
            ax.text(x, 0.03, "no run\ndone", transform=where, ha="center", va="bottom", fontsize=10, color="0.35")
            continue
        _draw_cell(ax, x, bar, look, f"panel{position}-cell{bar.cell}")
        ax.annotate(
            f"{bar.mean:.2f}",
            (x, bar.mean),
            xytext=(9, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=10,
            fontweight="bold" if bar.is_base else "normal",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            zorder=5,
        )
    ax.set_xticks(range(len(panel.bars)), [f"{bar.value}\n({_n_text(bar.n, bar.runs)})" for bar in panel.bars])
    if _longest(panel) > _UNROTATED:
        ax.tick_params(axis="x", labelrotation=20)
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(panel.bars) - 0.35)
    ax.set_title(panel.name)
    ax.set_xlabel(" + ".join(panel.keys) if panel.keys else ("" if baselines else "cell"))
    ax.grid(axis="y", alpha=0.3)


def _axis_note(panels: list[AxisGroup], references: list[Reference]) -> list[str]:
    bars = [bar for panel in panels for bar in panel.bars]
    lines = [f"Marker: mean over seeds; {CI_NOTE}; small circles: the single seeds."]
    lines.append(
        "Dot plot: the y axis does not start at 0."
        + (" The first cell of every panel is the base cell (diamond)." if any(b.is_base for b in bars) else "")
    )
    if any(bar.n == 1 for bar in bars):
        lines.append("n=1: a single run, drawn as its point without an error bar.")
    if any(bar.n and not bar.complete for bar in bars):
        lines.append("n=k of m: an incomplete cell (m runs planned), the mean of its k done runs; white marker.")
    if references:
        lines.append("Dashed lines and grey bands: the baselines' means and 95% CIs (their seeds: baselines panel).")
    return lines


def error_by_axis(name: str, groups: list[AxisGroup], references: list[Reference], metric: Metric):
    panels = _panels(groups, references)
    if len(panels) <= 4:
        rows, columns = 1, len(panels)
        ratios = [_panel_width(panel) for panel in panels]
    else:
        columns = 3
        rows = math.ceil(len(panels) / columns)
        ratios = [max(_panel_width(panel) for panel in panels)] * columns
    figure = _new_figure(max(sum(ratios) + 2.6, 7.0), 4.4 * rows + 0.6)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False, width_ratios=ratios)
    drawn = [reference for reference in references if reference.n]
    for position, ax in enumerate(axes.flat):
        if position >= len(panels):
            ax.set_visible(False)
            continue
        last_in_row = position % columns == columns - 1 or position == len(panels) - 1
        _draw_references(ax, drawn, annotate=last_in_row)
        _draw_panel(ax, position, panels[position], baselines=bool(references) and position == len(panels) - 1)
        if position % columns == 0:
            ax.set_ylabel(f"final {metric.phrase} (%)")
    axes.flat[0].set_ylim(*_value_range([bar for panel in panels for bar in panel.bars]))
    figure.suptitle(f"{name}: final {metric.phrase} per design choice")
    _note(figure, _axis_note(panels, drawn))
    return figure


def _line_styles(count: int) -> list[tuple[str, object]]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors if count <= 10 else colormaps["tab20"].colors
    dashes = ["-", "--", "-.", ":"]
    return [(palette[i % len(palette)], dashes[(i // len(palette)) % len(dashes)]) for i in range(count)]


def _draw_curve(full, zoom, gid: str, points: list[tuple[int, Estimate]], start: int, style: dict):
    """The mean curve on both panels (the zoom from `start`), with the 95% CI band where n >= 2; the full panel's
    line (the legend's handle)."""
    epochs = np.array([epoch for epoch, _ in points])
    means = np.array([e.mean for _, e in points])
    lows = np.array([e.ci_low for _, e in points])
    highs = np.array([e.ci_high for _, e in points])
    banded = np.array([e.n >= 2 for _, e in points])
    handles = []
    for ax, shown in ((full, epochs >= 0), (zoom, epochs >= start)):
        (line,) = ax.plot(epochs[shown], means[shown], marker="o", markersize=3.5 if ax is full else 4, **style)
        handles.append(line)
        if (shown & banded).any():
            band = ax.fill_between(epochs, lows, highs, where=shown & banded, color=style["color"], alpha=0.13, lw=0)
            band.set_gid(f"{gid}-band")
    return handles[0]


def _label_ends(zoom, ends: list[tuple[int, str, Estimate]]) -> None:
    """The final mean at each line's end, right of the zoom panel, so that the ranking reads without the legend."""
    numbers = finite_list(v for _, _, e in ends for v in (e.mean, e.ci_low, e.ci_high))
    low, high = min(numbers), max(numbers)
    pad = max(0.12 * (high - low), 0.4)
    zoom.set_ylim(max(METRIC_RANGE[0], low - pad), min(METRIC_RANGE[1], high + pad))
    bottom, top = zoom.get_ylim()
    ends = sorted(ends, key=lambda end: end[2].mean)
    placed = _spread([(e.mean - bottom) / (top - bottom) for _, _, e in ends], 0.05, 0.02, 0.98)
    for (epoch, color, e), where in zip(ends, placed, strict=True):
        zoom.annotate(
            f"{e.mean:.2f}",
            (epoch, e.mean),
            xytext=(1.04, where),
            textcoords="axes fraction",
            va="center",
            fontsize=11,
            color=color,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.7, "shrinkA": 1, "shrinkB": 3, "relpos": (0, 0.5)},
            annotation_clip=False,
        )


def val_curves(name: str, curves: dict[int, list[tuple[int, Estimate]]], stats: dict[int, CellStats], metric: Metric):
    figure = _new_figure(14.0, 5.6)
    full, zoom = figure.subplots(1, 2)
    last = max(points[-1][0] for points in curves.values())
    start = max(0, last + 1 - max(3, (last + 1) // 4))
    handles, ends, baselines = [], [], 0
    for (cell, points), (color, dash) in zip(curves.items(), _line_styles(len(curves)), strict=True):
        found = stats[cell]
        style = {"color": color, "linestyle": dash, "linewidth": 2.6 if found.kind == "base" else 1.7}
        if found.kind == "baseline":  # black, each baseline with its own dashes
            style.update(color="black", linestyle=_BASELINE_DASHES[baselines % len(_BASELINE_DASHES)], linewidth=2.0)
            baselines += 1
        handle = _draw_curve(full, zoom, f"cell{cell}", points, start, style)
        final = points[-1][1]
        handle.set_label(f"{found.label} ({_n_text(found.estimate.n, found.runs)}): {metric.value_text(final.mean)}")
        handles.append(handle)
        ends.append((points[-1][0], style["color"], final))
    full.set_title("all epochs")
    noun = "error" if metric.lower_is_better else metric.label
    zoom.set_title(f"from epoch {start}, y zoomed on the final {'errors' if metric.lower_is_better else 'values'}")
    for ax in (full, zoom):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric.phrase} (%)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _label_ends(zoom, ends)
    figure.legend(handles=handles, loc="outside right center", title=f"cell (n): final {noun}", frameon=False)
    figure.suptitle(f"{name}: validation {metric.phrase} per epoch")
    lines = [
        "Lines: mean over the done seeds of each cell; bands: 95% CI of the mean per epoch across seeds (Student t);",
        "no band where a single run logged the epoch (n=1)."
        + ("" if all(s.done == s.runs for s in stats.values()) else " n=k of m: m runs planned, k done."),
    ]
    _note(figure, lines)
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


def _dodged(points: list[Point], span: float, lower_is_better: bool = True) -> tuple[list[float], list[float]]:
    """(the x of each point, the room it has): its parameter count, except that cells with the same count (an axis
    that changes no parameter) are set side by side, best first (lowest error, highest AP), so that their error bars
    do not hide one another; a group spreads over at most 30% of the x span however many cells it has."""
    places = [point.params_m for point in points]
    room = [0.06 * span] * len(points)
    same: dict[float, list[int]] = {}
    for i, point in enumerate(points):
        same.setdefault(round(point.params_m, 4), []).append(i)
    for members in same.values():
        members.sort(key=lambda i: points[i].mean if lower_is_better else -points[i].mean)
        step = min(0.06, 0.3 / max(len(members) - 1, 1)) * span
        for rank, i in enumerate(members):
            places[i] += (rank - (len(members) - 1) / 2) * step
            room[i] = step
    return places, room


def _label_points(ax, points: list[Point], places: list[float], metric: Metric) -> None:
    """Every point named right of the axes, the names spread so that they do not overlap, with leader lines."""
    bottom, top = ax.get_ylim()
    order = sorted(range(len(points)), key=lambda i: points[i].mean)
    fractions = [(points[i].mean - bottom) / (top - bottom) for i in order]
    placed = _spread(fractions, min(0.9 / max(len(points), 1), 0.08), 0.02, 0.98)
    for i, where in zip(order, placed, strict=True):
        point = points[i]
        ax.annotate(
            f"{point.label} ({_n_text(point.n, point.runs)})  {metric.value_text(point.mean)}",
            (places[i], point.mean),
            xytext=(1.03, where),
            textcoords="axes fraction",
            va="center",
            ha="left",
            fontsize=11,
            arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.8, "shrinkA": 2, "shrinkB": 6, "relpos": (0, 0.5)},
            annotation_clip=False,
        )


def params_vs_error(name: str, points: list[Point], metric: Metric):
    figure = _new_figure(13.0, max(5.2, 0.36 * len(points) + 1.8))
    ax = figure.subplots()
    xs = [point.params_m for point in points]
    span = (max(xs) - min(xs)) or max(abs(xs[0]) * 0.02, 0.01)
    places, room = _dodged(points, span, metric.lower_is_better)
    for point, x, width in zip(points, places, room, strict=True):
        marker = "s" if point.kind == "baseline" else ("D" if point.kind == "base" else "o")
        color = _BASELINE_COLOR if point.kind == "baseline" else (_BASE_COLOR if point.kind == "base" else _AXIS_COLOR)
        look = _Look(color, marker, seed_offset=-0.37 * width, seed_spread=0.12 * width, whiskers=color)
        _draw_cell(ax, x, point, look, f"cell{point.cell}")
    ax.set_xlim(min(places) - 0.12 * span, max(places) + 0.12 * span)
    ax.set_ylim(*_value_range(points))
    dodged = places != xs
    if dodged:  # where the parameter counts really are
        ax.vlines(sorted(set(xs)), 0, 0.03, transform=ax.get_xaxis_transform(), colors="0.2", linewidth=2.0)
    _label_points(ax, points, places, metric)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(f"final {metric.phrase} (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{name}: parameters vs final {metric.phrase}", loc="left")
    lines = [f"Marker: mean over seeds; {CI_NOTE}; small circles left of a marker: the single seeds."]
    lines.append("Diamond: base cell; square: baseline; circle: other cells. n=1: one run, no error bar.")
    if dodged:
        lines.append(
            "Cells with the same parameter count are set side by side, "
            f"{'lowest error' if metric.lower_is_better else 'highest ' + metric.label} first; "
            "the ticks on the x axis mark the exact parameter counts."
        )
    if any(point.done != point.runs for point in points):
        lines.append("n=k of m: an incomplete cell (m runs planned), the mean of its k done runs; white marker.")
    _note(figure, lines)
    return figure
