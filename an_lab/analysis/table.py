"""The results table of a sweep, as the paper's Tables 1 and 2 show results: one row per cell, error as mean ± std over
seeds, the difference against a baseline in brackets, best values marked, incomplete cells flagged.

    print(render_table(load_manifest("sweeps/quickstart.yaml")))                  # Markdown
    render_table(manifest, "latex", metric="top1", baseline="bn")                 # booktabs tabular

summarize() gives the numbers per cell (a DataFrame); render_table() formats them. Errors are the final epoch's
top-1 / top-5 error of each run (%). A cell is complete when all of its runs are done; failed runs count as not done.
An incomplete cell shows the mean of its done runs and a dagger, a cell without done runs a dash, and notes under the
table say so. Best = lowest mean (as shown, 2 decimals) among complete cells.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from an_lab.analysis.results import check_manifest, collect
from an_lab.errors import UsageError

FORMATS = ("markdown", "latex", "csv", "html")
METRICS = ("top1", "top5", "both")
COLUMN = {"top1": "top-1 err (%)", "top5": "top-5 err (%)"}
NO_BASELINE = "none"


def resolve_baseline(manifest: dict, choice: str | int | None = None) -> int | None:
    """The index of the baseline cell: a cell label, a baseline name or a cell index; None picks the first cell of
    kind "baseline" (if any); "none" means no baseline. Unknown choices raise a UsageError listing the valid ones."""
    cells = check_manifest(manifest)
    if choice is None:
        return next((cell["index"] for cell in cells if cell.get("kind") == "baseline"), None)
    text = str(choice).strip()
    if text.lower() == NO_BASELINE:
        return None
    if text.lstrip("-").isdigit():
        for cell in cells:
            if cell["index"] == int(text):
                return cell["index"]
    for key in ("name", "label"):
        for cell in cells:
            if isinstance(cell.get(key), str) and cell[key].casefold() == text.casefold():
                return cell["index"]
    names = [cell["name"] for cell in cells if isinstance(cell.get("name"), str)]
    labels = [repr(cell.get("label")) for cell in cells]
    shown = ", ".join(labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
    indices = f"{cells[0]['index']}..{cells[-1]['index']}" if cells else "none"
    raise UsageError(
        f"--baseline {text!r} is not a cell of this sweep; give a baseline name ({', '.join(names) or 'none here'}), "
        f"a cell label ({shown or 'none here'}), a cell index ({indices}) or {NO_BASELINE}"
    )


def summarize(manifest: dict, runs: pd.DataFrame | None = None, baseline: str | int | None = None) -> pd.DataFrame:
    """One row per cell in manifest order: index, method, kind, name, runs, done, failed, complete, is_baseline,
    params_m, macs_g and, per metric m in top1/top5, m_mean, m_std (ddof=1, NaN below 2 done runs), m_diff (mean minus
    the baseline's mean; NaN on the baseline row and without a baseline) and m_best."""
    cells = check_manifest(manifest)
    base = resolve_baseline(manifest, baseline)
    runs = collect(manifest) if runs is None else runs
    table = pd.DataFrame(
        {
            "index": pd.Series([cell["index"] for cell in cells], dtype="int64"),
            "method": [cell.get("label") or f"cell {cell['index']}" for cell in cells],
            "kind": [cell.get("kind") for cell in cells],
            "name": [cell.get("name") for cell in cells],
            "runs": pd.Series([len(cell["runs"]) for cell in cells], dtype="int64"),
        }
    )
    done = runs[runs["state"] == "done"]
    per_cell = done.groupby("cell", sort=False).agg(
        done=("run_id", "size"),
        params=("params", "first"),
        macs=("macs", "first"),
        top1_mean=("top1_err", "mean"),
        top1_std=("top1_err", "std"),
        top5_mean=("top5_err", "mean"),
        top5_std=("top5_err", "std"),
    )
    failed = runs[runs["state"].isin(("failed", "corrupt"))].groupby("cell", sort=False).size().rename("failed")
    table = table.join(per_cell, on="index").join(failed, on="index")
    table["done"] = table["done"].fillna(0).astype(int)
    table["failed"] = table["failed"].fillna(0).astype(int)
    table["complete"] = (table["done"] == table["runs"]) & (table["runs"] > 0)
    table["is_baseline"] = table["index"] == base
    table["params_m"] = table.pop("params") / 1e6
    table["macs_g"] = table.pop("macs") / 1e9
    for metric in ("top1", "top5"):
        mean = table[f"{metric}_mean"]
        reference = mean[table["is_baseline"]]
        offset = reference.iloc[0] if len(reference) else float("nan")
        table[f"{metric}_diff"] = (mean - offset).where(~table["is_baseline"])
        shown = mean.round(2).where(table["complete"])
        table[f"{metric}_best"] = shown.notna() & (shown == shown.min())
    order = ["index", "method", "kind", "name", "runs", "done", "failed", "complete", "is_baseline"]
    order += ["params_m", "macs_g"]
    order += [f"{m}_{part}" for m in ("top1", "top5") for part in ("mean", "std", "diff", "best")]
    return table[order]


@dataclass(frozen=True)
class _Marks:
    """How one output format writes the few symbols the table needs."""

    pm: str
    dagger: str
    dash: str
    minus: str
    bold: tuple[str, str]
    escape: Callable[[str], str]


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


def _plain(text: str) -> str:
    return text


MARKDOWN = _Marks(" ± ", "†", "—", "-", ("**", "**"), lambda text: text.replace("|", r"\|"))
LATEX = _Marks(r" $\pm$ ", r"$^{\dagger}$", "---", "$-$", ("\\textbf{", "}"), _latex_escape)
TEXT = _Marks(" ± ", "†", "—", "-", ("", ""), _plain)  # HTML: the Styler escapes, CSS marks the best


def _signed(value: float, minus: str) -> str:
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text.replace("-", minus)


def _error_cell(row, metric: str, marks: _Marks) -> str:
    mean, std, diff = row[f"{metric}_mean"], row[f"{metric}_std"], row[f"{metric}_diff"]
    if row["done"] == 0 or pd.isna(mean):
        return marks.dash
    value = f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f}{marks.pm}{std:.2f}"
    if row[f"{metric}_best"]:
        value = f"{marks.bold[0]}{value}{marks.bold[1]}"
    if not row["complete"]:
        value += marks.dagger
    if not pd.isna(diff):
        value += f" ({_signed(diff, marks.minus)})"
    return value


def _metrics(metric: str) -> tuple[str, ...]:
    if metric not in METRICS:
        raise UsageError(f"metric {metric!r}: choose one of {', '.join(METRICS)}")
    return ("top1", "top5") if metric == "both" else (metric,)


def _shown(summary: pd.DataFrame, metrics: tuple[str, ...], marks: _Marks) -> pd.DataFrame:
    """The table as text, one column per printed column."""

    def millions(value: float) -> str:
        return marks.dash if pd.isna(value) else f"{value:.2f}"

    columns = {
        "Method": [marks.escape(method) for method in summary["method"]],
        "#Params (M)": [millions(value) for value in summary["params_m"]],
        "MACs (G)": [millions(value) for value in summary["macs_g"]],
    }
    rows = summary.to_dict("records")
    for metric in metrics:
        columns[COLUMN[metric]] = [_error_cell(row, metric, marks) for row in rows]
    columns["Seeds"] = [f"{row['done']}/{row['runs']}" for row in rows]
    return pd.DataFrame(columns)


def _notes(summary: pd.DataFrame, marks: _Marks) -> list[str]:
    notes = []
    base = summary[summary["is_baseline"]]
    if len(base) and base["done"].iloc[0] > 0:
        label = marks.escape(base["method"].iloc[0])
        notes.append(f"(x): difference of the mean against the baseline {label}")
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
    styler = shown.style.hide(axis="index").format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, column_format="l" + "r" * (shown.shape[1] - 1))
    rows = "".join(rf"\multicolumn{{{shown.shape[1]}}}{{l}}{{\footnotesize {note}}} \\" + "\n" for note in notes)
    text = text.replace("\\end{tabular}", rows + "\\end{tabular}") if rows else text
    return text if text.endswith("\n") else text + "\n"


def _html(shown: pd.DataFrame, summary: pd.DataFrame, metrics: tuple[str, ...], notes: list[str]) -> str:
    from pandas.io.formats.style import Styler

    classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
    for metric in metrics:
        column = COLUMN[metric]
        classes.loc[summary[f"{metric}_best"].to_numpy(), column] = "best"
        partial = (~summary["complete"] & (summary["done"] > 0)).to_numpy()
        classes.loc[partial, column] = "incomplete"
    styler = (
        Styler(shown, uuid="an_lab_results", cell_ids=False)
        .hide(axis="index")
        .format(escape="html")
        .format_index(escape="html", axis=1)
        .set_td_classes(classes)
        .set_table_styles(
            [
                {"selector": "td.best", "props": "font-weight: bold;"},
                {"selector": "td, th", "props": "padding: 2px 8px; text-align: right;"},
                {"selector": "td:first-child, th:first-child", "props": "text-align: left;"},
                {"selector": "thead th", "props": "border-bottom: 1px solid;"},
            ]
        )
    )
    text = styler.to_html(table_attributes='class="an-lab-results"')
    text = text if text.endswith("\n") else text + "\n"
    return text + "".join(f'<p class="an-lab-note">{html.escape(note)}</p>\n' for note in notes)


def _csv(summary: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    columns = ["index", "method", "kind", "name", "params_m", "macs_g"]
    columns += [f"{m}_{part}" for m in metrics for part in ("mean", "std", "diff", "best")]
    columns += ["done", "runs", "complete", "is_baseline"]
    names = {f"{m}_{part}": f"{m}_err_{part}" for m in metrics for part in ("mean", "std", "diff", "best")}
    names.update(index="cell", done="seeds_done", runs="seeds", is_baseline="baseline")
    frame = summary[columns].rename(columns=names)
    return frame.to_csv(index=False, float_format=lambda value: f"{value:.6g}" if math.isfinite(value) else "")


def render_table(
    manifest: dict,
    fmt: Literal["markdown", "latex", "csv", "html"] = "markdown",
    *,
    metric: Literal["top1", "top5", "both"] = "both",
    baseline: str | int | None = None,
    runs: pd.DataFrame | None = None,
) -> str:
    """The results table of a sweep manifest (an_lab.sweeps.manifest.load_manifest) as text in `fmt`.

    baseline: a cell label, a baseline name or a cell index; None = the first baseline cell; "none" = no brackets.
    runs: collect(manifest) when already at hand."""
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    metrics = _metrics(metric)
    summary = summarize(manifest, runs, baseline)
    if fmt == "csv":
        return _csv(summary, metrics)
    marks = {"markdown": MARKDOWN, "latex": LATEX, "html": TEXT}[fmt]
    shown = _shown(summary, metrics, marks)
    notes = _notes(summary, marks)
    if fmt == "markdown":
        return _markdown(shown, notes)
    if fmt == "latex":
        return _latex(shown, notes)
    return _html(shown, summary, metrics, notes)
