# ruff: noqa: E501  (the expected table lines are wider than the line limit)
"""Results of a detection sweep (Mask R-CNN, COCO AP): a hand-written sweep folder of 3 cells x 3 seeds whose result.json
files are what a detection run writes (one AP_L is NaN, written as null). The table leads with the papers' AP^bb,
AP^bb_50, AP^bb_75, AP^m, AP^m_50, AP^m_75, higher is better: bold is the highest mean, differences and P(better) are
checked against scipy, --detail adds the size splits, the CSV names its columns by the metric, a classification
metric is refused with the valid choices, the convergence rule looks for a RISE of AP, and the figures, the HTML page,
the W&B report's spec and `an-lab status` follow AP^bb."""

import functools
import io
import json
import math
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from conftest import an_lab, walk, write_manifest
from scipy import stats

from an_lab.analysis import collect, render_table, summarize
from an_lab.analysis.figure_data import cell_curves
from an_lab.analysis.plots import build_figures
from an_lab.cli import main
from an_lab.errors import UsageError
from an_lab.sweeps.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
an_lab = functools.partial(an_lab, cwd=ROOT, timeout=120)
SEEDS = (0, 1, 2)
# cell index -> (kind, name, label, changes, final AP^bb per seed, final AP^m per seed, how its last evaluations moved)
CELLS = {
    0: ("base", None, "AN", {}, (38.0, 38.6, 38.3), (34.0, 34.4, 34.2), "falling"),
    1: ("axis", None, "AN w/ GN", {"model.norm": "an_gn"}, (37.9, 38.5, 38.4), (35.0, 35.3, 35.1), "flat"),
    2: ("baseline", "bn", "BN", {"model.norm": "bn_frozen"}, (36.0, 36.5, 36.2), (33.0, 33.2, 33.1), "rising"),
}
# the other AP of a run: its AP^bb or AP^m plus an offset (AP_L of "AN w/ GN", seed 2, is NaN: written as null)
OFFSETS = {"ap50": 20.0, "ap75": 3.0, "ap_s": -17.0, "ap_m": 2.0, "ap_l": 11.0}
NAN_RUN = (1, 2)
PARAMS = {0: 44_600_000, 1: 44_650_000, 2: 44_400_000}
TAILS = {  # the AP^bb of the last 5 evaluations, ending at the final one; the rule looks at the last 3
    "flat": lambda ap: [ap - 0.3, ap - 0.2, ap - 0.1, ap - 0.05, ap],
    "falling": lambda ap: [ap + 6.0, ap + 4.5, ap + 3.0, ap + 1.5, ap],  # fell 3 points: converged (AP got worse)
    "rising": lambda ap: [ap - 6.0, ap - 4.5, ap - 3.0, ap - 1.5, ap],  # rose 3 points: still improving
}
HEADLINE = ("AP^bb", "AP^bb_50", "AP^bb_75", "AP^m", "AP^m_50", "AP^m_75")


def _aps(cell: int, position: int) -> dict[str, float | None]:
    """The 12 final AP values (percent) of a run."""
    values: dict[str, float | None] = {}
    for kind, finals in (("bbox", CELLS[cell][4]), ("segm", CELLS[cell][5])):
        ap = finals[position]
        values[f"{kind}_ap"] = ap
        values.update({f"{kind}_{part}": round(ap + offset, 6) for part, offset in OFFSETS.items()})
    if (cell, position) == NAN_RUN:
        values["bbox_ap_l"] = None
    return values


def _result(run_id: str, cell: int, position: int) -> dict:
    """result.json as a detection run writes it (an_lab.lightning_modules.train, task detection)."""
    finals = _aps(cell, position)
    tail = TAILS[CELLS[cell][6]](CELLS[cell][4][position])
    return {
        "run_id": run_id,
        "config_hash": "0" * 12,
        "status": "done",
        "task": "detection",
        "final": {**finals, "train_loss": 0.6},
        "best": {**{name: value + 0.1 if value is not None else None for name, value in finals.items()}, "epoch": 3},
        "tail": {"epoch": [0, 1, 2, 3, 4], "val_bbox_ap": tail, "train_loss": [0.9, 0.8, 0.7, 0.65, 0.6]},
        "params": PARAMS[cell],
        "trainable_params": PARAMS[cell] - 200_000,
        "macs": None,
        "epochs": 5,
        "iterations": 500,
        "wall_time_s": 900.0,
        "images_per_s": 12.5,
        "device": "NVIDIA H200",
        "precision": "bf16-mixed",
        "finished_at": 1.7e9,
    }


def _metrics_log(folder: Path, cell: int, position: int) -> None:
    """logs/attempt-0/metrics.csv: one evaluation per epoch (AP^bb the tail, AP^m 4 points below), train rows apart."""
    logs = folder / "logs" / "attempt-0"
    logs.mkdir(parents=True)
    lines = ["epoch,val_bbox_ap,val_segm_ap,train_loss"]
    for epoch, ap in enumerate(TAILS[CELLS[cell][6]](CELLS[cell][4][position])):
        lines += [f"{epoch},{ap},{ap - 4.0},", f"{epoch},,,{0.9 - 0.05 * epoch}"]
    (logs / "metrics.csv").write_text("\n".join(lines) + "\n")


def _base_config() -> dict:
    return {
        "task": "detection",
        "recipe": "mask_rcnn_1x",
        "model": {"name": "resnet50", "norm": "an", "head_norm": "none"},
        "data": {"name": "coco", "root": "data/coco", "image_size": 800, "batch_size": 2},
        "trainer": {"iterations": 500, "eval_every": 100, "seed": 0},
        "wandb": {"mode": "offline", "project": "an-lab-det"},
    }


def _write_sweep(root: Path, name: str = "det") -> Path:
    runs = root / "runs"
    cells = []
    for index, (kind, cell_name, label, changes, *_) in CELLS.items():
        members = [{"run_id": f"det{index}-{seed}", "seed": seed} for seed in SEEDS]
        tags = [f"norm={changes.get('model.norm', 'an')}"] + (["baseline=bn"] if kind == "baseline" else [])
        cells.append(
            dict(index=index, kind=kind, name=cell_name, label=label, changes=changes, tags=tags, runs=members)
        )
        for position, member in enumerate(members):
            folder = runs / member["run_id"]
            folder.mkdir(parents=True)
            (folder / "result.json").write_text(json.dumps(_result(member["run_id"], index, position)))
            _metrics_log(folder, index, position)
    folder = write_manifest(runs, cells, name)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(base_config=_base_config(), description="AN against BN in Mask R-CNN")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    return _write_sweep(tmp_path)


def table(capsys, *args) -> str:
    assert main(["table", *map(str, args)]) == 0
    return capsys.readouterr().out


def _rows(text: str) -> dict[str, dict[str, str]]:
    """label -> {column header: cell text} of a Markdown table (marks included)."""
    lines = text.split("\n\n")[0].splitlines()
    header, *body = ([cell.strip() for cell in line.split("|")[1:-1]] for line in lines[:1] + lines[2:])
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in body}


def _detail_rows(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """(label, metric title) -> {column: text} of a --detail Markdown table."""
    lines = text.split("\n\n")[0].splitlines()
    header, *body = ([cell.strip() for cell in line.split("|")[1:-1]] for line in lines[:1] + lines[2:])
    return {(cells[0], cells[1]): dict(zip(header, cells, strict=True)) for cells in body}


def _two(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _signed(value: float) -> str:
    text = f"{value:+.2f}"
    return "0.00" if text in ("+0.00", "-0.00") else text


def _values(cell: int, metric: str) -> np.ndarray:
    """The finite values of a metric over a cell's seeds, in seed order."""
    found = [_aps(cell, position)[metric] for position in range(len(SEEDS))]
    return np.array([value for value in found if value is not None])


def _expected_cell(cell: int, metric: str, bold: bool) -> str:
    """A table cell computed here: mean ± std (ddof=1), bold, and the paired difference to BN with * when scipy's
    paired t interval excludes 0."""
    values = _values(cell, metric)
    text = f"{_two(values.mean())} ± {_two(values.std(ddof=1))}"
    text = f"**{text}**" if bold else text
    if cell == 2:
        return text
    interval = stats.ttest_rel(values, _values(2, metric)).confidence_interval()
    star = "*" if interval.low > 0 or interval.high < 0 else ""
    return f"{text} ({_signed(values.mean() - _values(2, metric).mean())}{star})"


def _bold_cells(metric: str) -> list[int]:
    """The bold cells computed here: the highest mean, and every cell whose paired difference to it has a 95% CI
    (scipy) that holds 0 or lies above it."""
    means = {cell: _values(cell, metric).mean() for cell in CELLS}
    best = max(means, key=means.get)
    bold = []
    for cell in CELLS:
        interval = stats.ttest_rel(_values(cell, metric), _values(best, metric)).confidence_interval()
        if cell == best or not interval.high < 0:
            bold.append(cell)
    return bold


def test_collect_reads_the_ap_columns_and_the_tail_of_ap(sweep):
    runs = collect(load_manifest(sweep))
    assert runs["state"].tolist() == ["done"] * 9
    assert runs["bbox_ap"].tolist() == [38.0, 38.6, 38.3, 37.9, 38.5, 38.4, 36.0, 36.5, 36.2]
    assert runs["segm_ap75"].tolist()[:3] == [37.0, 37.4, 37.2] and runs["best_bbox_ap"].tolist()[0] == 38.1
    assert runs["bbox_ap_l"].isna().tolist() == [False] * 5 + [True] + [False] * 3  # null in result.json
    assert runs["top1_err"].isna().all() and runs["tail_top1_err"].tolist() == [()] * 9  # not a classification run
    assert runs["tail_bbox_ap"].tolist()[6] == (30.0, 31.5, 33.0, 34.5, 36.0)
    assert runs["params"].tolist()[0] == 44_600_000 and runs["macs"].isna().all()


def test_markdown_table_leads_with_the_ap_headline_and_bolds_the_highest_mean(sweep, capsys):
    text = table(capsys, sweep)
    header = [cell.strip() for cell in text.splitlines()[0].split("|")[1:-1]]
    assert header == ["Method", "#Params (M)", "MACs (G)", *HEADLINE, "Seeds"]
    rows = _rows(text)
    assert _bold_cells("bbox_ap") == [0, 1] and _bold_cells("segm_ap") == [1]  # AN and GN tie on boxes, GN wins masks
    names = ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75")
    for name, title in zip(names, HEADLINE, strict=True):
        bold = _bold_cells(name)
        for cell, (_, _, label, *_) in CELLS.items():
            expected = _expected_cell(cell, name, cell in bold) + ("‡" if cell == 2 else "")  # BN is still rising
            assert rows[label][title] == expected, (label, title)
    assert rows["AN"]["AP^bb"] == "**38.30 ± 0.30** (+2.07*)"
    assert rows["AN w/ GN"]["AP^m"] == "**35.13 ± 0.15** (+2.03*)" and rows["AN"]["AP^m"] == "34.20 ± 0.20 (+1.10*)"
    assert rows["BN"]["AP^bb"] == "36.23 ± 0.25‡" and rows["BN"]["Seeds"] == "3/3"
    assert rows["AN"]["#Params (M)"] == "44.60" and rows["AN"]["MACs (G)"] == "—"
    notes = text.rstrip("\n").split("\n\n")[1:]
    assert any(note.startswith("**bold**: highest mean and cells not significantly worse") for note in notes)
    assert "‡ not converged: 3 runs with an AP^bb that rose by more than 1 point over the last 3 epochs" in notes


def test_differences_cis_and_p_better_of_the_detail_table_equal_scipy(sweep, capsys):
    rows = _detail_rows(table(capsys, sweep, "--detail"))
    for cell, label in ((0, "AN"), (1, "AN w/ GN")):
        for name, title in (("bbox_ap", "AP^bb"), ("segm_ap75", "AP^m_75")):
            values, baseline = _values(cell, name), _values(2, name)
            row = rows[(label, title)]
            sem = values.std(ddof=1) / math.sqrt(len(values))
            interval = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=sem)
            assert [row["n"], row["Std"], row["95% CI"]] == ["3", _two(values.std(ddof=1)), _bracket(interval)]
            paired = stats.ttest_rel(values, baseline).confidence_interval()
            assert row["95% CI (diff)"] == _bracket(paired) and row["Test"] == "paired"
            assert row["Diff"].rstrip("*") == _signed(values.mean() - baseline.mean())
            # P(better): pairs in which the cell's AP is HIGHER than the baseline's (Mann-Whitney U of the cell)
            higher = stats.mannwhitneyu(values, baseline).statistic / (len(values) * len(baseline))
            assert row["P(better)"] == _two(higher) == "1.00"
    assert rows[("BN", "AP^bb")]["Mean"] == "36.23‡" and rows[("BN", "AP^bb")]["Diff"] == "—"
    notes = table(capsys, sweep, "--detail").rstrip("\n").split("\n\n")[1:]
    assert any(
        note.startswith("P(better): probability that a run of the cell has a higher AP than a run of") for note in notes
    )


def _bracket(interval) -> str:
    return f"[{_two(interval[0])}, {_two(interval[1])}]"


def test_detail_adds_the_size_splits_and_a_nan_ap_l_counts_as_no_value(sweep, capsys):
    plain = table(capsys, sweep)
    assert "AP^bb_S" not in plain and "AP^m_L" not in plain
    rows = _detail_rows(table(capsys, sweep, "--detail"))
    titles = list(dict.fromkeys(title for _, title in rows))
    assert titles == [*HEADLINE, "AP^bb_S", "AP^bb_M", "AP^bb_L", "AP^m_S", "AP^m_M", "AP^m_L"]
    gn_large = rows[("AN w/ GN", "AP^bb_L")]
    finite = _values(1, "bbox_ap_l")
    assert len(finite) == 2 and gn_large["n"] == "2" and gn_large["Mean"].strip("*†‡") == _two(finite.mean())
    # seed 2 has no AP_L: the difference to BN is paired over the 2 seeds both have
    paired = stats.ttest_rel(finite, _values(2, "bbox_ap_l")[:2]).confidence_interval()
    assert gn_large["95% CI (diff)"] == _bracket(paired) and gn_large["Test"] == "paired"
    boxes = _detail_rows(table(capsys, sweep, "--detail", "--metric", "bbox"))
    assert list(dict.fromkeys(title for _, title in boxes)) == [
        "AP^bb",
        "AP^bb_50",
        "AP^bb_75",
        "AP^bb_S",
        "AP^bb_M",
        "AP^bb_L",
    ]
    everything = _rows(table(capsys, sweep, "--metric", "ap_all"))
    assert list(everything["AN"])[3:-1] == [
        *HEADLINE[:3],
        "AP^bb_S",
        "AP^bb_M",
        "AP^bb_L",
        *HEADLINE[3:],
        "AP^m_S",
        "AP^m_M",
        "AP^m_L",
    ]


def test_csv_names_its_columns_by_the_metric_with_scipys_numbers(sweep, capsys):
    frame = pd.read_csv(io.StringIO(table(capsys, sweep, "--format", "csv")))
    for name in ("bbox_ap", "bbox_ap50", "segm_ap", "segm_ap75"):
        for part in ("n", "mean", "std", "ci_low", "ci_high", "diff", "diff_ci_low", "p_better", "significant", "best"):
            assert f"{name}_{part}" in frame.columns
    assert not [column for column in frame.columns if column.startswith(("top1", "top5", "bbox_ap_s_"))]
    an, gn, bn = _values(0, "segm_ap"), _values(1, "segm_ap"), _values(2, "segm_ap")
    low, high = stats.t.interval(0.95, 2, loc=gn.mean(), scale=gn.std(ddof=1) / math.sqrt(3))
    assert frame.loc[1, ["segm_ap_ci_low", "segm_ap_ci_high"]].tolist() == pytest.approx([low, high], rel=1e-5)
    assert frame["bbox_ap_mean"].tolist() == pytest.approx(
        [_values(cell, "bbox_ap").mean() for cell in CELLS], rel=1e-6
    )
    assert frame["segm_ap_diff"].tolist()[:2] == pytest.approx([an.mean() - bn.mean(), gn.mean() - bn.mean()], rel=1e-5)
    paired = stats.ttest_rel(an, bn).confidence_interval()
    assert frame.loc[0, ["segm_ap_diff_ci_low", "segm_ap_diff_ci_high"]].tolist() == pytest.approx(paired, rel=1e-5)
    assert frame["bbox_ap_best"].tolist() == [True, True, False] and frame["segm_ap_best"].tolist() == [
        False,
        True,
        False,
    ]
    assert frame["bbox_ap_p_better"].tolist()[:2] == [1.0, 1.0] and frame["bbox_ap_significant"].tolist()[:2] == [
        True,
        True,
    ]
    assert frame["not_converged"].tolist() == [0, 0, 3] and frame["baseline"].tolist() == [False, False, True]
    detail = pd.read_csv(io.StringIO(table(capsys, sweep, "--format", "csv", "--detail")))
    assert detail["bbox_ap_l_n"].tolist() == [3, 2, 3] and "segm_ap_s_ci_low" in detail.columns


def test_latex_and_html_tables_carry_the_ap_columns(sweep, capsys):
    latex = table(capsys, sweep, "--format", "latex")
    header = latex.splitlines()[2]
    assert header.startswith(r"Method & \#Params (M) & MACs (G) & AP$^{\mathrm{bb}}$ & AP$^{\mathrm{bb}}_{50}$")
    assert r"AP$^{\mathrm{m}}_{75}$ & Seeds \\" in header
    assert r"AN & 44.60 & --- & \textbf{38.30 $\pm$ 0.30} (+2.07$^{*}$)" in latex
    assert r"an AP$^{\mathrm{bb}}$ that rose by more than 1 point" in latex and "AP^" not in latex
    page = table(capsys, sweep, "--format", "html", "--metric", "bbox")
    assert "<th" in page and ">AP^bb_75</th>" in page and "AP^m" not in page.split("</table>")[0]
    assert '<td class="data row0 col3 best" >38.30 ± 0.30 (+2.07*)</td>' in page
    assert '<td class="data row1 col3 best" >38.27 ± 0.32 (+2.03*)</td>' in page
    assert '<td class="data row2 col3" >36.23 ± 0.25‡</td>' in page


def test_a_metric_of_the_other_task_exits_2_naming_this_tasks_choices(sweep, tmp_path, capsys):
    done = an_lab("table", sweep, "--metric", "top1")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith(
        "error: --metric 'top1' is a classification choice, and this sweep's runs are detection runs"
    )
    assert message.endswith("choose one of ap, bbox, segm, ap_all, best, primary")
    classification = tmp_path / "cls"
    runs = classification / "runs"
    runs.mkdir(parents=True)
    folder = write_manifest(runs, [{"index": 0, "label": "AN", "runs": []}], "cls")
    assert main(["table", str(folder), "--metric", "bbox"]) == 2
    err = capsys.readouterr().err
    assert "--metric 'bbox' is a detection choice, and this sweep's runs are classification runs" in err
    assert "choose one of top1, top5, both, best, best_top1, best_top5, primary" in err
    with pytest.raises(UsageError, match="this detection sweep's metrics are keys among bbox_ap"):
        summarize(load_manifest(sweep), metrics=("top1",))


def test_convergence_looks_for_a_rise_of_ap_not_a_fall(sweep, capsys):
    def flagged(text: str) -> list[str]:
        return [label for label, row in _rows(text).items() if "‡" in row["AP^bb"]]

    assert flagged(table(capsys, sweep)) == ["BN"]  # AN fell 3 points (got worse): not "still improving"
    assert flagged(table(capsys, sweep, "--val-drop", "4")) == []
    assert flagged(table(capsys, sweep, "--val-drop", "none", "--converged-loss", "0.5")) == ["AN", "AN w/ GN", "BN"]


def test_the_best_selection_puts_the_best_evaluation_beside_the_final_ap(sweep, capsys):
    rows = _rows(table(capsys, sweep, "--metric", "best", "--baseline", "none"))
    assert list(rows["AN"])[3:5] == ["AP^bb", "best-epoch AP^bb"]
    assert rows["AN"]["best-epoch AP^bb"] == "**38.40 ± 0.30**" and rows["BN"]["best-epoch AP^bb"] == "36.33 ± 0.25‡"
    assert render_table(load_manifest(sweep), metric="primary").splitlines()[0].count("AP^") == 1


# ---------------------------------------------------------------- figures, page, W&B report, status


def test_figures_draw_the_final_ap_per_seed_and_the_ap_curves(sweep):
    manifest = load_manifest(sweep)
    figures = build_figures(manifest)
    assert list(figures) == ["error_by_axis", "val_curves", "params_vs_error"]
    axes = [ax for ax in figures["error_by_axis"].axes if ax.get_visible()]
    assert axes[0].get_ylabel() == "final AP^bb (%)"
    assert figures["error_by_axis"].get_suptitle() == "det: final AP^bb per design choice"
    drawn = {artist.get_gid(): artist for ax in axes for artist in ax.findobj(lambda a: a.get_gid() is not None)}
    for gid, cell in (("panel0-cell0-seeds", 0), ("panel0-cell1-seeds", 1), ("panel1-cell2-seeds", 2)):
        assert sorted(drawn[gid].get_offsets()[:, 1].tolist()) == sorted(CELLS[cell][4])
    legend = [text.get_text() for text in figures["val_curves"].legends[0].get_texts()]
    assert legend == ["AN (n=3): 38.30", "AN w/ GN (n=3): 38.27", "BN (n=3): 36.23"]
    assert figures["val_curves"].axes[0].get_ylabel() == "validation AP^bb (%)"
    curves = cell_curves(manifest)
    assert [round(value, 9) for _, value in curves[2]] == [
        round(v, 9) for v in np.mean([TAILS["rising"](ap) for ap in CELLS[2][4]], axis=0)
    ]
    labels = [text.get_text() for text in figures["params_vs_error"].axes[0].texts]
    assert "AN (n=3)  38.30" in labels and figures["params_vs_error"].axes[0].get_ylabel() == "final AP^bb (%)"


def test_plot_and_the_html_page_of_a_detection_sweep(sweep, capsys):
    assert main(["plot", str(sweep)]) == 0
    written = [Path(line) for line in capsys.readouterr().out.split()]
    assert len(written) == 9 and all(path.stat().st_size > 1000 for path in written)
    svg = ElementTree.fromstring((sweep / "figures" / "val_curves.svg").read_bytes())
    assert any("validation AP^bb per epoch" in "".join(element.itertext()) for element in svg.iter())
    assert main(["report", str(sweep), "--html"]) == 0
    page = (sweep / "summary.html").read_text()
    assert page.count("<img") == 3 and "Final AP^bb per design choice" in page
    assert "Final COCO AP of boxes (AP^bb) and masks (AP^m)" in page and "<th>AP^bb</th>" in page
    assert '<td class="data row0 col3 best" >38.30 ± 0.30 (+2.07*)</td>' in page
    runs = page.split('<table class="runs">')[1]
    assert '<td class="number">38.00</td>' in runs and '<td class="number">36.50</td>' in runs


def test_wandb_report_plots_the_validation_ap(sweep, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["report", str(sweep), "--wandb", "--entity", "lab"]) == 0
    spec = json.loads((sweep / "wandb-report.json").read_text())
    nodes = list(walk(spec["report"]))
    panels = next(node for node in nodes if node.get("type") == "panel-grid")["metadata"]["panelBankSectionConfig"]
    lines = [panel["config"] for panel in panels["panels"] if panel["viewType"] == "Run History Line Plot"]
    bars = [panel["config"] for panel in panels["panels"] if panel["viewType"] == "Bar Chart"]
    assert [line["metrics"] for line in lines] == [["val_bbox_ap"], ["val_segm_ap"], ["train_loss"]]
    assert [bar["metrics"] for bar in bars] == [["val_bbox_ap"]]
    markdown = [node["content"] for node in nodes if node.get("type") == "markdown-block"]
    assert render_table(load_manifest(sweep), "markdown") in markdown


def test_status_ranks_the_cells_by_the_highest_ap(sweep, capsys):
    assert main(["status", str(sweep)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("cell"))
    assert header.split() == ["cell", "seed", "run", "id", "AP^bb", "state"]
    an = CELLS[0][4]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(an), scale=np.std(an, ddof=1) / math.sqrt(3))
    assert f"highest mean: AN at 38.30 AP^bb (n=3, 95% CI {low:.2f} to {high:.2f})" in out
    assert any(line.split()[:2] == ["BN", "1"] and "36.50" in line for line in out.splitlines())


def test_a_list_mode_detection_sweep_is_tabulated_as_detection(tmp_path, capsys):
    """A list-mode sweep has no base cell (base_config null): its task comes from the manifest's "task", written from
    every cell's config, so its tables show AP, not a top-1 error with n = 0."""
    folder = _write_sweep(tmp_path, "listed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(mode="list", base_config=None, task="detection")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    text = table(capsys, folder, "--metric", "ap")
    assert "AP^bb" in text and "top-1" not in text
    status = main(["status", str(folder)])
    assert status == 0 and "AP^bb" in capsys.readouterr().out


def test_a_sweep_that_mixes_tasks_is_refused_at_plan(tmp_path, capsys):
    import yaml

    path = tmp_path / "mixed.yaml"
    detection = {"task": "detection", "model.name": "resnet50", "data.name": "shapes", "trainer.iterations": 10}
    path.write_text(
        yaml.safe_dump(
            {
                "name": "mixed",
                "mode": "list",
                "base": {"data": {"name": "fake"}},
                "cells": [{"model.norm": "bn"}, detection],
                "output_dir": str(tmp_path / "runs"),
            }
        )
    )
    assert main(["plan", str(path)]) == 2
    said = capsys.readouterr().err
    assert "its cells mix tasks (classification: list cell" in said and "detection: list cell" in said, said


def test_the_legend_claims_the_errors_step_floor_only_where_an_error_is_shown(sweep, capsys):
    """The floor of an interval at one step (100 / validation images) applies to top-1 / top-5 errors; an AP table's
    legend said it too (found comparing the detection quickstart's legend with the code)."""
    legend = table(capsys, sweep, "--detail")
    assert "kept within [0, 100]" in legend and "error's step" not in legend
