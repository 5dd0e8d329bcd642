"""The results table of a sweep, as the paper's Tables 1 and 2 show results, with the evidence a reviewer asks for: one
row per cell, error as mean ± std over seeds, the difference against a baseline in brackets, marked only where it
holds up, best values marked by evidence, incomplete and unconverged cells flagged.

    print(render_table(load_manifest("sweeps/quickstart.yaml")))                  # Markdown
    render_table(manifest, "latex", metric="top1", baseline="bn")                 # booktabs tabular
    render_table(manifest, detail=True, ci="bootstrap")                           # every figure, BCa intervals
    render_table(detection_manifest, metric="bbox")                               # AP^bb, AP^bb_50, AP^bb_75

summarize() (an_lab.analysis.summary) gives the numbers per cell (a DataFrame); render_table() formats them. Every
figure comes from an_lab.stats: per cell and metric n, mean, std (ddof=1) and the 95% CI of the mean; the difference
against the baseline (paired by seed over the shared seeds when there are at least 2, else Welch) with its 95% CI and
P(better).
A difference is marked * when its CI excludes 0. Bold: the best mean (the lowest error, the highest AP) among complete
cells with at least 2 runs, and every such cell not significantly worse than it (the same comparison against that
cell). A single run has no CI: it is shown as n=1 and never marked.

The metrics follow the sweep's task (its manifest's base_config, an_lab.metrics.task_of); --metric chooses among the
task's selections (TASK_SELECTIONS) and a selection of the other task is a UsageError naming the valid ones.
Classification: each run's final top-1 / top-5 error (%) or the best epoch's ("best", "best_top1", "best_top5"); lower
is better. Detection: COCO AP (%) of boxes and masks, by default the papers' AP^bb, AP^bb_50, AP^bb_75, AP^m, AP^m_50,
AP^m_75 ("ap"; "bbox", "segm", all twelve with the size splits: "ap_all"; "best": the best evaluation's AP^bb beside
the final one); higher is better, and detail=True adds the size splits AP_S, AP_M, AP_L of the AP shown. "primary" is
the task's primary metric alone (top-1 error, AP^bb). The CSV names its columns by the metric: top1_err_mean,
bbox_ap_ci_low, segm_ap_diff, ...

A cell is complete when all of its runs are done; failed and corrupt runs count as not done. An incomplete cell shows
the mean of its done runs and a dagger, a cell without done runs a dash. A cell is "not converged" (double dagger)
when a done run's final train loss is above the sweep's convergence.train_loss_max or its primary validation metric
still improved by more than convergence.val_drop_max points over its last convergence.last_epochs epochs (a top-1
error that fell, an AP^bb that rose; result.json's "tail"; a result without one is counted as unknown, not flagged).
Notes under the table say what each mark means.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pandas as pd

from an_lab.analysis.convergence import convergence_settings
from an_lab.analysis.results import sweep_task
from an_lab.analysis.summary import (
    BASE_METRIC,
    COLUMN,
    DEFAULT_SELECTION,
    DETAIL_EXTRA,
    ERROR_METRICS,
    PARTS,
    SOURCE,
    TASK_SELECTIONS,
    summarize,
)
from an_lab.errors import UsageError
from an_lab.metrics import METRIC_RANGE
from an_lab.stats import (
    BOOTSTRAP_MIN_N,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    MIN_MARK_N,
)

if TYPE_CHECKING:  # the records live in the sweeps package, which `table` of a sweep folder does not import
    from an_lab.sweeps.records import Manifest

FORMATS = ("markdown", "latex", "csv", "html")
UNITS = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


@dataclass(frozen=True)
class _Words:
    """How the notes speak of a task's metrics, which way they are better."""

    best: str  # the bold mean
    better: str  # what P(better) counts
    moved: str  # the convergence rule: the primary metric still improving
    tail: str  # what the tail of a result holds


WORDS = {
    "classification": _Words("lowest", "a lower error", "a top-1 error that fell", "validation error"),
    "detection": _Words("highest", "a higher AP", "an AP^bb that rose", "validation AP^bb"),
}


# ---------------------------------------------------------------------------------------------------------------------
# Text


@dataclass(frozen=True)
class _Marks:
    """How one output format writes the few symbols the table needs."""

    pm: str
    dagger: str
    ddagger: str
    star: str
    dash: str
    minus: str
    bold: tuple[str, str]
    escape: Callable[[str], str]
    title: Callable[[str], str]  # a metric's title (top-1 err (%), AP^bb_50) as the format writes it


def _latex_escape(text: str) -> str:
    special = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "|": r"\textbar{}",
        "<": r"\textless{}",
        ">": r"\textgreater{}",
    }
    return "".join(special.get(char, char) for char in text)


_AP_TITLE = re.compile(r"AP\^(bb|m)(?:_(\w+))?")


def _latex_title(text: str) -> str:
    r"""Text for LaTeX with the COCO AP titles as the papers set them: AP^bb_50 -> AP$^{\mathrm{bb}}_{50}$."""
    parts, last = [], 0
    for match in _AP_TITLE.finditer(text):
        kind, split = match.groups()
        parts.append(_latex_escape(text[last : match.start()]))
        parts.append(rf"AP$^{{\mathrm{{{kind}}}}}" + (f"_{{{split}}}" if split else "") + "$")
        last = match.end()
    return "".join(parts) + _latex_escape(text[last:])


def _plain(text: str) -> str:
    return text


def _markdown_escape(text: str) -> str:
    return text.replace("|", r"\|")


MARKDOWN = _Marks(" ± ", "†", "‡", "*", "—", "-", ("**", "**"), _markdown_escape, _markdown_escape)
LATEX = _Marks(
    r" $\pm$ ",
    r"$^{\dagger}$",
    r"$^{\ddagger}$",
    r"$^{*}$",
    "---",
    "$-$",
    ("\\textbf{", "}"),
    _latex_escape,
    _latex_title,
)
TEXT = _Marks(" ± ", "†", "‡", "*", "—", "-", ("", ""), _plain, _plain)  # HTML: the Styler escapes, CSS marks the best


def _signed(value: float, minus: str) -> str:
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text.replace("-", minus)


def _number(value: float, minus: str) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text.replace("-", minus)


def _interval(low: float, high: float, marks: _Marks) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return marks.dash
    return f"[{_number(low, marks.minus)}, {_number(high, marks.minus)}]"


def _flags(row: dict, marks: _Marks) -> str:
    return (marks.dagger if not row["complete"] else "") + (marks.ddagger if row["not_converged"] else "")


def _bolded(text: str, row: dict, metric: str, marks: _Marks) -> str:
    return f"{marks.bold[0]}{text}{marks.bold[1]}" if row[f"{metric}_best"] else text


def _difference(row: dict, metric: str, marks: _Marks) -> str:
    return _signed(row[f"{metric}_diff"], marks.minus) + (marks.star if row[f"{metric}_significant"] else "")


def _error_cell(row: dict, metric: str, marks: _Marks) -> str:
    """mean ± std, bold when best, the flags, n=1 for a single run, the difference in brackets (* significant)."""
    n, mean, std = row[f"{metric}_n"], row[f"{metric}_mean"], row[f"{metric}_std"]
    if n == 0 or not math.isfinite(mean):
        return marks.dash
    value = f"{mean:.2f}" if not math.isfinite(std) else f"{mean:.2f}{marks.pm}{std:.2f}"
    value = _bolded(value, row, metric, marks) + _flags(row, marks) + (" n=1" if n == 1 else "")
    if math.isfinite(row[f"{metric}_diff"]):
        value += f" ({_difference(row, metric, marks)})"
    return value


def _metrics(metric: str | None, task: str = "classification", detail: bool = False) -> tuple[str, ...]:
    """The metric keys of a --metric choice for a sweep of `task` (None: the task's default), with the size splits
    that --detail adds to a detection selection; a choice of another task, or none at all, is a UsageError naming
    this task's choices."""
    selections = TASK_SELECTIONS[task]
    choice = DEFAULT_SELECTION[task] if metric is None else metric
    if choice not in selections:
        others = [other for other, choices in TASK_SELECTIONS.items() if other != task and choice in choices]
        why = f"is a {others[0]} choice" if others else "is not a metric choice"
        raise UsageError(
            f"--metric {choice!r} {why}, and this sweep's runs are {task} runs (the task of its manifest's "
            f"base_config); choose one of {', '.join(selections)}"
        )
    return selections[choice] + (DETAIL_EXTRA.get(choice, ()) if detail else ())


def _unit(counts: pd.Series, default: str) -> tuple[float, str]:
    """The unit of a column of counts: the largest whose values reach 0.1 of it (0.27 M, 8.10 M, 4.09 G)."""
    largest = counts.max()
    if not math.isfinite(largest):
        return dict((name, scale) for scale, name in UNITS)[default], default
    return next(((scale, name) for scale, name in UNITS if largest / scale >= 0.1), (1.0, ""))


def _counts(summary: pd.DataFrame, marks: _Marks) -> dict[str, list[str]]:
    """#Params and MACs, each in the unit that keeps its values readable, named in the header."""
    columns = {}
    for header, counts, default in (
        ("#Params", summary["params_m"] * 1e6, "M"),
        ("MACs", summary["macs_g"] * 1e9, "G"),
    ):
        scale, unit = _unit(counts, default)
        name = f"{header} ({unit})" if unit else header
        columns[name] = [marks.dash if pd.isna(value) else f"{value / scale:.2f}" for value in counts]
    return columns


def _shown(summary: pd.DataFrame, metrics: tuple[str, ...], marks: _Marks) -> pd.DataFrame:
    """The paper-like table as text, one column per printed column."""
    rows = summary.to_dict("records")
    columns = {"Method": [marks.escape(row["method"]) for row in rows], **_counts(summary, marks)}
    for metric in metrics:
        columns[COLUMN[metric]] = [_error_cell(row, metric, marks) for row in rows]
    columns["Seeds"] = [f"{row['done']}/{row['runs']}" for row in rows]
    return pd.DataFrame(columns)


DETAIL = ("Method", "Metric", "n", "Mean", "Std", "95% CI", "Diff", "95% CI (diff)", "Test", "P(better)")


def _detail_row(row: dict, metric: str, marks: _Marks, ci: str) -> list[str]:
    """One metric of one cell with every figure: n, mean, std, CI, difference, its CI, how compared, P(better)."""
    n, dash = row[f"{metric}_n"], marks.dash
    figures = [marks.escape(row["method"]), marks.title(COLUMN[metric]), str(n)]
    if n == 0:
        return figures + [dash] * (len(DETAIL) - 3)
    figures.append(_bolded(f"{row[f'{metric}_mean']:.2f}", row, metric, marks) + _flags(row, marks))
    figures.append(dash if n < 2 else f"{row[f'{metric}_std']:.2f}")
    figures.append("no CI" if n < 2 else _interval(row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], marks))
    if not math.isfinite(row[f"{metric}_diff"]):
        return figures + [dash] * 4
    figures.append(_difference(row, metric, marks))
    interval = _interval(row[f"{metric}_diff_ci_low"], row[f"{metric}_diff_ci_high"], marks)
    figures.append("no CI" if interval == dash else interval)
    figures.append("paired" if row[f"{metric}_paired"] else _unpaired(ci))
    p_better = row[f"{metric}_p_better"]
    return [*figures, dash if not math.isfinite(p_better) else f"{p_better:.2f}"]


def _detail(summary: pd.DataFrame, metrics: tuple[str, ...], marks: _Marks, ci: str) -> pd.DataFrame:
    """The long table: one row per cell and metric."""
    rows = [_detail_row(row, metric, marks, ci) for row in summary.to_dict("records") for metric in metrics]
    return pd.DataFrame(rows, columns=list(DETAIL))


# ---------------------------------------------------------------------------------------------------------------------
# Notes and formats


def _unpaired(ci: str) -> str:
    return "Welch" if ci == "t" else "unpaired"


def _ci_name(ci: str) -> str:
    if ci == "t":
        return "Student t"
    return (
        f"BCa bootstrap, {BOOTSTRAP_RESAMPLES:,} resamples, fixed seed {BOOTSTRAP_SEED}; Student t where fewer than "
        f"{BOOTSTRAP_MIN_N} values (the bootstrap cannot do better than their range there)"
    )


def _statistics_notes(
    summary: pd.DataFrame, metrics: tuple[str, ...], marks: _Marks, ci: str, detail: bool, words: _Words, min_n: int
) -> list[str]:
    """What the figures are, the baseline, what * and bold mean, and why a cell has no CI or nothing is bold."""
    if not (summary["done"] > 0).any():
        return []
    percent = marks.escape(f"{CONFIDENCE:.0%}")
    low, high = (f"{bound:g}" for bound in METRIC_RANGE)
    errors = any(BASE_METRIC[metric].name in ERROR_METRICS for metric in metrics)  # metrics with a step of their own
    if detail:
        notes = [
            f"n: runs with a value; Std: sample std (ddof=1); {percent} CI of the mean: {_ci_name(ci)}; every "
            f"interval is kept within [{low}, {high}]"
            + (" and is never narrower than the error's step (100 / validation images)" if errors else "")
        ]
    else:
        notes = [f"mean{marks.pm}std over the done runs of each cell (sample std, ddof=1)"]
    base = summary[summary["is_baseline"]]
    if len(base) and base["done"].iloc[0] > 0:
        notes.append(
            f"{'Diff' if detail else '(x)'}: difference of the mean against the baseline "
            f"{marks.escape(base['method'].iloc[0])}, paired by seed when the cell shares at least 2 seeds with it, "
            f"else {_unpaired(ci)}; {marks.star}: its {percent} CI ({_ci_name(ci)}) excludes 0, from at least "
            f"{min_n} seeds a side"
        )
        if detail:
            notes.append(
                f"P(better): probability that a run of the cell has {words.better} than a run of the baseline, "
                "ties counted half (Mann-Whitney U / nm)"
            )
    if summary[[f"{metric}_best" for metric in metrics]].to_numpy().any():
        notes.append(
            f"{marks.bold[0]}bold{marks.bold[1]}: {words.best} mean and cells not significantly worse ({percent} CI "
            f"of the paired difference includes 0; {_unpaired(ci)} where fewer than 2 seeds are shared), among "
            f"complete cells with at least {min_n} runs"
        )
    else:
        notes.append(
            f"nothing bold: no complete cell has {min_n} or more runs, and fewer cannot show a best cell (--min-seeds)"
        )
    if (summary[[f"{metric}_n" for metric in metrics]] == 1).to_numpy().any():
        notes.append(f"n=1: a single run, so no std and no CI; never marked {marks.star} or bold")
    return notes


def _convergence_notes(summary: pd.DataFrame, marks: _Marks, settings: dict, words: _Words) -> list[str]:
    """The rule behind the double dagger and its thresholds; how many runs it could not check."""
    notes = []
    flagged = summary[summary["not_converged"] > 0]
    if len(flagged):
        rules = []
        if settings["train_loss_max"] is not None:
            rules.append(f"a final train loss above {settings['train_loss_max']:g}")
        if settings["val_drop_max"] is not None:
            drop = settings["val_drop_max"]
            rules.append(
                f"{marks.title(words.moved)} by more than {drop:g} point{'' if drop == 1 else 's'} over the last "
                f"{settings['last_epochs']} epochs"
            )
        cells = "" if len(flagged) == 1 else f" ({len(flagged)} cells)"
        runs = int(flagged["not_converged"].sum())
        which = "a run" if runs == 1 else f"{runs} runs"
        notes.append(f"{marks.ddagger} not converged{cells}: {which} with " + " or ".join(rules))
    unknown = int(summary["convergence_unknown"].sum())
    if unknown:
        lacking = []
        if settings["val_drop_max"] is not None:
            lacking.append(f"the last epochs' {marks.title(words.tail)} (tail)")
        if settings["train_loss_max"] is not None:
            lacking.append("the final train loss")
        notes.append(
            f"convergence not checked for {unknown} done run{'' if unknown == 1 else 's'}: result.json without "
            + " and ".join(lacking)
        )
    return notes


def _state_notes(summary: pd.DataFrame, marks: _Marks) -> list[str]:
    notes = []
    partial = summary[~summary["complete"] & (summary["done"] > 0)]
    if len(partial):
        cells = "" if len(partial) == 1 else f" ({len(partial)} cells)"
        failed = partial["failed"].sum()
        note = f"{marks.dagger} incomplete{cells}: {partial['done'].sum()} of {partial['runs'].sum()} runs done"
        note += f", {failed} failed" if failed else ""
        notes.append(note + "; mean of the done runs only")
    empty = summary[summary["done"] == 0]
    if len(empty):
        failed = empty["failed"].sum()
        notes.append(f"{marks.dash} no run done yet" + (f" ({failed} failed)" if failed else ""))
    return notes


def _markdown(shown: pd.DataFrame, notes: list[str]) -> str:
    header = list(shown.columns)
    body = shown.to_numpy().tolist()
    widths = [max(4, len(name), *(len(row[i]) for row in body)) for i, name in enumerate(header)]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [":" + "-" * (w - 1) if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    lines = [line(header), line(rule), *(line(row) for row in body)]
    return "\n".join(lines) + "".join(f"\n\n{note}" for note in notes) + "\n"


def _latex(shown: pd.DataFrame, notes: list[str]) -> str:
    """A booktabs tabular, as pandas' Styler.to_latex(hrules=True) writes it (cells are escaped already, headers here),
    with the notes as full-width rows at its end."""
    columns = shown.shape[1]
    lines = [rf"\begin{{tabular}}{{l{'r' * (columns - 1)}}}", r"\toprule"]
    lines.append(" & ".join(_latex_title(str(name)) for name in shown.columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in shown.to_numpy().tolist()]
    lines.append(r"\bottomrule")
    lines += [rf"\multicolumn{{{columns}}}{{l}}{{\footnotesize {note}}} \\" for note in notes]
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _classes(shown: pd.DataFrame, summary: pd.DataFrame, metrics: tuple[str, ...], detail: bool) -> pd.DataFrame:
    """CSS classes of the HTML cells: best (bold) and incomplete, on the error columns (the Mean column of --detail)."""
    classes = [[""] * shown.shape[1] for _ in range(len(shown))]
    partial = (~summary["complete"] & (summary["done"] > 0)).tolist()
    for offset, metric in enumerate(metrics):
        rows = [i * len(metrics) + offset for i in range(len(summary))] if detail else list(range(len(summary)))
        column = shown.columns.get_loc("Mean" if detail else COLUMN[metric])
        for row, best, incomplete in zip(rows, summary[f"{metric}_best"].tolist(), partial, strict=True):
            classes[row][column] = "incomplete" if incomplete else "best" if best else ""
    return pd.DataFrame(classes, index=shown.index, columns=shown.columns, dtype=object)


# The table's CSS, as pandas' Styler (uuid an_lab_results) wrote it when it rendered the HTML table.
_HTML_STYLE = """<style type="text/css">
#T_an_lab_results td.best {
  font-weight: bold;
}
#T_an_lab_results td {
  padding: 2px 8px;
  text-align: right;
}
#T_an_lab_results  th {
  padding: 2px 8px;
  text-align: right;
}
#T_an_lab_results td:first-child {
  text-align: left;
}
#T_an_lab_results  th:first-child {
  text-align: left;
}
#T_an_lab_results thead th {
  border-bottom: 1px solid;
}
</style>
"""
_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"})


def _html_text(text: str) -> str:
    """Text escaped for HTML as pandas' Styler escapes it (markupsafe's entities)."""
    return str(text).translate(_HTML_ESCAPES)


def _html(shown: pd.DataFrame, classes: pd.DataFrame, notes: list[str]) -> str:
    """The table as pandas' Styler(uuid="an_lab_results", cell_ids=False) with these CSS classes wrote it, written
    directly (the Styler takes seconds for 10,000 rows), then the notes as paragraphs."""
    lines = [_HTML_STYLE + '<table id="T_an_lab_results" class="an-lab-results">', "  <thead>", "    <tr>"]
    for column, name in enumerate(shown.columns):
        lines.append(f'      <th class="col_heading level0 col{column}" >{_html_text(name)}</th>')
    lines += ["    </tr>", "  </thead>", "  <tbody>"]
    for row, (cells, marks) in enumerate(zip(shown.to_numpy().tolist(), classes.to_numpy().tolist(), strict=True)):
        lines.append("    <tr>")
        for column, (text, mark) in enumerate(zip(cells, marks, strict=True)):
            extra = f" {mark}" if mark else ""
            lines.append(f'      <td class="data row{row} col{column}{extra}" >{_html_text(text)}</td>')
        lines.append("    </tr>")
    lines += ["  </tbody>", "</table>"]
    return "\n".join(lines) + "\n" + "".join(f'<p class="an-lab-note">{html.escape(note)}</p>\n' for note in notes)


def _csv(summary: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Every figure: per metric M (top1_err, top5_err, bbox_ap, segm_ap50, best_bbox_ap, ...: the result.json name)
    the columns M_n, M_mean, ... M_significant, M_paired, M_best."""
    columns = ["index", "method", "kind", "name", "params_m", "macs_g"]
    columns += [f"{metric}_{part}" for metric in metrics for part in PARTS]
    columns += ["done", "runs", "failed", "complete", "is_baseline", "not_converged", "convergence_unknown"]
    names = {f"{metric}_{part}": f"{SOURCE[metric]}_{part}" for metric in metrics for part in PARTS}
    names.update(index="cell", done="seeds_done", runs="seeds", is_baseline="baseline")
    frame = summary[columns].rename(columns=names)
    return frame.to_csv(index=False, float_format=lambda value: f"{value:.6g}" if math.isfinite(value) else "")


def render_table(
    manifest: Manifest,
    fmt: Literal["markdown", "latex", "csv", "html"] = "markdown",
    *,
    metric: str | None = None,
    baseline: str | int | None = None,
    runs: pd.DataFrame | None = None,
    ci: Literal["t", "bootstrap"] = "t",
    detail: bool = False,
    convergence: dict | None = None,
    min_seeds: int = MIN_MARK_N,
) -> str:
    """The results table of a sweep manifest (an_lab.sweeps.manifest.load_manifest) as text in `fmt`.

    metric: a choice of TASK_SELECTIONS for the sweep's task (None: "both" for classification, "ap" for detection);
    baseline: a cell label, a baseline name or a cell index; None = the first baseline cell; "none" = no brackets.
    runs: collect(manifest) when already at hand. ci: "t" (Student t) or "bootstrap" (BCa, reproducible). detail:
    one row per cell and metric with every figure (n, mean, std, CI, difference, its CI, P(better)), and for
    detection the size splits of the AP shown; the CSV always has every figure. convergence: overrides of the
    manifest's convergence settings (train_loss_max, val_drop_max: a number, or None to switch the check off)."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    task = sweep_task(manifest)
    metrics = _metrics(metric, task, detail)
    settings = convergence_settings(manifest, convergence)
    summary = summarize(manifest, runs, baseline, metrics=metrics, ci=ci, convergence=convergence, min_seeds=min_seeds)
    if fmt == "csv":
        return _csv(summary, metrics)
    marks = {"markdown": MARKDOWN, "latex": LATEX, "html": TEXT}[fmt]
    shown = _detail(summary, metrics, marks, ci) if detail else _shown(summary, metrics, marks)
    notes = _statistics_notes(summary, metrics, marks, ci, detail, WORDS[task], min_seeds)
    notes += _convergence_notes(summary, marks, settings, WORDS[task]) + _state_notes(summary, marks)
    if fmt == "markdown":
        return _markdown(shown, notes)
    if fmt == "latex":
        return _latex(shown, notes)
    return _html(shown, _classes(shown, summary, metrics, detail), notes)
