# ruff: noqa: E501  (the expected tables are wider than the line limit)
"""`an-lab table`: a sweep folder with known result files gives known Markdown, LaTeX, CSV and HTML tables (mean ± std
over seeds, differences against the baseline in brackets, marked * only when their 95% CI excludes 0, best values
bold by evidence, an incomplete cell flagged, a single run shown as n=1 and a cell without results shown as a dash),
baselines chosen by name, label or index, clear usage errors, and no torch.

A second, hand-built sweep has known answers: two cells 5 points apart with a seed-to-seed spread of about 2 (3 seeds
each), two cells 0.1 apart, a cell on other seeds (Welch), a single run with the lowest error, and a cell whose error
is still falling. Its figures are checked against scipy.stats computed here directly."""

import functools
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import an_lab, write_manifest
from scipy import stats

from an_lab.analysis import collect, render_table, summarize
from an_lab.cli import main

ROOT = Path(__file__).resolve().parents[2]
BASE = "RSD + A2 + hsigmoid + K=(10,10,20,20)"
MEAN = "Mean + A2 + hsigmoid + K=(10,10,20,20)"
SOFTMAX = "RSD + A2 + softmax + K=(10,10,20,20)"


def _flat(top1: float) -> list[float]:
    """The last 5 epochs' validation top-1 error of a converged run: 0.1 points over the last 3 epochs."""
    return [top1 + 0.3, top1 + 0.2, top1 + 0.1, top1 + 0.05, top1]


def _result(
    run_id: str, top1: float, top5: float, params: int, macs: int, tail: list | None = None, train_loss: float = 1.1
) -> dict:
    """A result.json as an_lab.lightning_modules.train._result writes it (without "tail" as older versions did)."""
    result = {
        "run_id": run_id,
        "config_hash": "0" * 12,
        "status": "done",
        "final": {"top1_err": top1, "top5_err": top5, "val_loss": 0.9, "train_loss": train_loss},
        "best": {"top1_err": top1 - 0.1, "top5_err": top5 - 0.1, "epoch": 4},
        "params": params,
        "macs": macs,
        "epochs": 6,
        "wall_time_s": 12.5,
        "images_per_s": 850.0,
        "device": "cpu",
        "precision": "32-true",
        "versions": {"an_lab": "0.1.0", "python": "3.11"},
        "git_revision": None,
        "finished_at": 1.7e9,
    }
    if tail is not None:
        epochs = list(range(7 - len(tail), 7))
        result["tail"] = {"epoch": epochs, "val_top1_err": tail, "train_loss": [train_loss] * len(tail)}
    return result


AN, BN = 25_755_420, 25_557_032
# cell index -> (kind, name, label, [(run_id, seed, what is on disk)])
CELLS = {
    0: ("base", None, BASE, [("an-0", 0, (21.5, 5.5, AN, 4_094_000_000)), ("an-1", 1, (21.7, 5.7, AN, 4_200_000_000))]),
    1: ("axis", None, MEAN, [("mean-0", 0, (21.85, 5.92, AN, 4_094_000_000)), ("mean-1", 1, "failed")]),
    2: ("axis", None, SOFTMAX, [("softmax-0", 0, None), ("softmax-1", 1, None)]),
    3: (
        "baseline",
        "bn",
        "BN",
        [("bn-0", 0, (23.0, 6.6, BN, 4_089_000_000)), ("bn-1", 1, (23.02, 6.76, BN, 4_089_000_000))],
    ),
}


def _write_sweep(root: Path, described: dict, name: str = "known", **manifest) -> Path:
    """<root>/sweeps/<name>/manifest.json and the run directories of `described` (as CELLS) in <root>/runs; a run's
    content is a tuple of _result's arguments, a dict of them, "failed", or None (pending)."""
    runs = root / "runs"
    cells = []
    for index, (kind, cell_name, label, members) in described.items():
        cells.append(
            {
                "index": index,
                "kind": kind,
                "name": cell_name,
                "label": label,
                "changes": {},
                "tags": [],
                "runs": [{"run_id": run_id, "seed": seed} for run_id, seed, _ in members],
            }
        )
        for run_id, _, content in members:
            if content is None:
                continue
            folder = runs / run_id
            folder.mkdir(parents=True)
            if content == "failed":
                (folder / "failed.json").write_text(json.dumps({"reason": "out of memory", "time": 1.7e9}))
            elif isinstance(content, dict):
                (folder / "result.json").write_text(json.dumps(_result(run_id, **content)))
            else:
                (folder / "result.json").write_text(json.dumps(_result(run_id, *content, tail=_flat(content[0]))))
    folder = write_manifest(runs, cells, name)
    if manifest:
        path = folder / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    return folder


@pytest.fixture
def sweep(tmp_path) -> Path:
    """<tmp>/sweeps/known/manifest.json and the run directories of CELLS in <tmp>/runs (converged runs)."""
    return _write_sweep(tmp_path, CELLS)


def table(capsys, *args) -> str:
    """`an-lab table`; these hand-built sweeps have 2 seeds a cell, so the rules of marks are checked at --min-seeds 2
    unless a test says otherwise (the default, 3, is tested on its own)."""
    extra = () if "--min-seeds" in args else ("--min-seeds", "2")
    assert main(["table", *map(str, args), *extra]) == 0
    return capsys.readouterr().out


def _notes(text: str) -> list[str]:
    """The notes under a Markdown table."""
    return text.rstrip("\n").split("\n\n")[1:]


EXPECTED_MARKDOWN = """\
| Method                                 | #Params (M) | MACs (G) |             top-1 err (%) |            top-5 err (%) | Seeds |
| :------------------------------------- | ----------: | -------: | ------------------------: | -----------------------: | ----: |
| RSD + A2 + hsigmoid + K=(10,10,20,20)  |       25.76 |     4.09 | **21.60 ± 0.14** (-1.41*) | **5.60 ± 0.14** (-1.08*) |   2/2 |
| Mean + A2 + hsigmoid + K=(10,10,20,20) |       25.76 |     4.09 |        21.85† n=1 (-1.16) |        5.92† n=1 (-0.76) |   1/2 |
| RSD + A2 + softmax + K=(10,10,20,20)   |           — |        — |                         — |                        — |   0/2 |
| BN                                     |       25.56 |     4.09 |              23.01 ± 0.01 |              6.68 ± 0.11 |   2/2 |

mean ± std over the done runs of each cell (sample std, ddof=1)

(x): difference of the mean against the baseline BN, paired by seed when the cell shares at least 2 seeds with it, else Welch; *: its 95% CI (Student t) excludes 0, from at least 2 seeds a side

**bold**: lowest mean and cells not significantly worse (95% CI of the paired difference includes 0; Welch where fewer than 2 seeds are shared), among complete cells with at least 2 runs

n=1: a single run, so no std and no CI; never marked * or bold

† incomplete: 1 of 2 runs done, 1 failed; mean of the done runs only

— no run done yet
"""


def test_markdown_table_has_mean_std_differences_best_and_flags(sweep, capsys):
    # by hand: (21.5, 21.7) -> 21.60 ± 0.14; BN (23.0, 23.02) -> 23.01 ± 0.01, (6.6, 6.76) -> 6.68 ± 0.11;
    # 21.60 - 23.01 = -1.41, 5.60 - 6.68 = -1.08; the mean cell has one run of two: 21.85 - 23.01 = -1.16.
    # Paired by seed: top-1 differences (-1.5, -1.32): mean -1.41, std 0.127, CI -1.41 ± 12.706 * 0.09 =
    # [-2.55, -0.27], so * (and BN, +1.41 with the same CI, is significantly worse: not bold); top-5 (-1.1, -1.06):
    # [-1.33, -0.83], *. One run has no CI: n=1, no * although its difference is as large.
    assert table(capsys, sweep) == EXPECTED_MARKDOWN


EXPECTED_LATEX = r"""\begin{tabular}{lrrrrr}
\toprule
Method & \#Params (M) & MACs (G) & top-1 err (\%) & top-5 err (\%) & Seeds \\
\midrule
RSD + A2 + hsigmoid + K=(10,10,20,20) & 25.76 & 4.09 & \textbf{21.60 $\pm$ 0.14} ($-$1.41$^{*}$) & \textbf{5.60 $\pm$ 0.14} ($-$1.08$^{*}$) & 2/2 \\
Mean + A2 + hsigmoid + K=(10,10,20,20) & 25.76 & 4.09 & 21.85$^{\dagger}$ n=1 ($-$1.16) & 5.92$^{\dagger}$ n=1 ($-$0.76) & 1/2 \\
RSD + A2 + softmax + K=(10,10,20,20) & --- & --- & --- & --- & 0/2 \\
BN & 25.56 & 4.09 & 23.01 $\pm$ 0.01 & 6.68 $\pm$ 0.11 & 2/2 \\
\bottomrule
\multicolumn{6}{l}{\footnotesize mean $\pm$ std over the done runs of each cell (sample std, ddof=1)} \\
\multicolumn{6}{l}{\footnotesize (x): difference of the mean against the baseline BN, paired by seed when the cell shares at least 2 seeds with it, else Welch; $^{*}$: its 95\% CI (Student t) excludes 0, from at least 2 seeds a side} \\
\multicolumn{6}{l}{\footnotesize \textbf{bold}: lowest mean and cells not significantly worse (95\% CI of the paired difference includes 0; Welch where fewer than 2 seeds are shared), among complete cells with at least 2 runs} \\
\multicolumn{6}{l}{\footnotesize n=1: a single run, so no std and no CI; never marked $^{*}$ or bold} \\
\multicolumn{6}{l}{\footnotesize $^{\dagger}$ incomplete: 1 of 2 runs done, 1 failed; mean of the done runs only} \\
\multicolumn{6}{l}{\footnotesize --- no run done yet} \\
\end{tabular}
"""


def test_latex_table_is_booktabs_with_the_same_numbers(sweep, capsys):
    assert table(capsys, sweep, "--format", "latex") == EXPECTED_LATEX


def test_csv_parses_back_with_numbers_and_a_best_column(sweep, capsys):
    frame = pd.read_csv(io.StringIO(table(capsys, sweep, "--format", "csv")))
    assert list(frame["method"]) == [BASE, MEAN, SOFTMAX, "BN"]
    assert frame["top1_err_mean"].round(4).tolist()[:2] == [21.6, 21.85] and frame["top1_err_mean"].isna()[2]
    assert frame["top1_err_std"].round(4).tolist()[0] == 0.1414 and frame["top1_err_std"].isna()[1]
    assert frame["top1_err_diff"].round(2).tolist()[:2] == [-1.41, -1.16] and frame["top1_err_diff"].isna()[3]
    assert frame["top1_err_n"].tolist() == [2, 1, 0, 2] and frame["top5_err_n"].tolist() == [2, 1, 0, 2]
    assert frame["top1_err_significant"].tolist() == [True, False, False, False]
    assert frame["top1_err_best"].tolist() == [True, False, False, False]
    assert frame["top5_err_best"].tolist() == [True, False, False, False]
    assert frame["seeds_done"].tolist() == [2, 1, 0, 2] and frame["seeds"].tolist() == [2, 2, 2, 2]
    assert frame["complete"].tolist() == [True, False, False, True] and frame["baseline"].tolist()[3]
    assert frame["params_m"].round(2).tolist()[0] == 25.76 and frame["macs_g"].tolist()[0] == 4.094  # first seed's
    assert frame["not_converged"].tolist() == [0, 0, 0, 0] and frame["convergence_unknown"].tolist() == [0, 0, 0, 0]


def test_html_has_the_table_with_a_best_class(sweep, capsys):
    page = table(capsys, sweep, "--format", "html", "--metric", "top1")
    assert page.count("<table") == 1 and "</table>" in page and "top-5 err" not in page
    assert '<td class="data row0 col3 best" >21.60 ± 0.14 (-1.41*)</td>' in page
    assert '<td class="data row1 col3 incomplete" >21.85† n=1 (-1.16)</td>' in page
    assert '<td class="data row3 col3" >23.01 ± 0.01</td>' in page
    assert "td.best" in page and "font-weight: bold" in page
    assert '<p class="an-lab-note">† incomplete: 1 of 2 runs done, 1 failed; mean of the done runs only</p>' in page
    assert '<p class="an-lab-note">n=1: a single run, so no std and no CI; never marked * or bold</p>' in page


def test_one_metric_only(sweep, capsys):
    lines = table(capsys, sweep, "--metric", "top5").splitlines()
    assert "top-5 err (%)" in lines[0] and "top-1" not in lines[0]
    assert lines[2].split("|")[4].strip() == "**5.60 ± 0.14** (-1.08*)"


@pytest.mark.parametrize("choice", ["bn", "BN", "3"])
def test_baseline_by_name_label_or_index(sweep, capsys, choice):
    assert table(capsys, sweep, "--baseline", choice) == EXPECTED_MARKDOWN


def test_another_cell_as_baseline_and_none(sweep, capsys):
    rows = table(capsys, sweep, "--baseline", BASE.lower()).splitlines()
    assert [cell.strip() for cell in rows[2].split("|")[4:6]] == ["**21.60 ± 0.14**", "**5.60 ± 0.14**"]
    assert "21.85† n=1 (+0.25)" in rows[3] and "23.01 ± 0.01 (+1.41*)" in rows[5] and "6.68 ± 0.11 (+1.08*)" in rows[5]
    assert f"against the baseline {BASE}" in table(capsys, sweep, "--baseline", "0")
    plain = table(capsys, sweep, "--baseline", "none")
    assert "(-" not in plain and "(x)" not in plain and "*: its" not in plain
    assert "**21.60 ± 0.14** |" in plain and "21.85† n=1 |" in plain


def test_a_result_without_the_last_epochs_is_not_flagged_but_counted(sweep, capsys):
    runs = Path(json.loads((sweep / "manifest.json").read_text())["output_dir"])
    path = runs / "bn-0" / "result.json"
    path.write_text(json.dumps({key: value for key, value in json.loads(path.read_text()).items() if key != "tail"}))
    text = table(capsys, sweep)
    assert "‡" not in text and "|              23.01 ± 0.01 |              6.68 ± 0.11 |   2/2 |" in text
    note = "convergence not checked for 1 done run: result.json without the last epochs' validation error (tail)"
    assert note in _notes(text)
    by_loss = table(capsys, sweep, "--val-drop", "none", "--converged-loss", "2")
    assert "‡" not in by_loss and "convergence not checked" not in by_loss  # its final train loss (1.1) is known


an_lab = functools.partial(an_lab, cwd=ROOT, timeout=120)


def test_unknown_baseline_exits_2_listing_the_choices(sweep):
    done = an_lab("table", sweep, "--baseline", "gn")
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: --baseline 'gn' is not a cell of this sweep")
    assert "name (bn)" in message and f"'{MEAN}'" in message and "'BN'" in message and "index (0..3)" in message


def test_unreadable_sweep_folder_is_a_usage_error(tmp_path, sweep, capsys):
    assert main(["table", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read the sweep file (No such file or directory)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no readable manifest.json" in capsys.readouterr().err
    (sweep / "manifest.json").write_text('{"name": "x", "cells": [{"index": 0}]}')
    assert main(["table", str(sweep)]) == 2
    assert "manifest is not usable" in capsys.readouterr().err
    assert main(["table", str(sweep), "--set", "seeds=[0]"]) == 2
    assert "--set applies to a sweep file" in capsys.readouterr().err


def test_table_of_a_sweep_file_with_nothing_done_and_no_heavy_imports(tmp_path):
    done = an_lab(
        "table", "sweeps/digits-ablation.yaml", "--set", f"output_dir={tmp_path / 'runs'}", python=("-X", "importtime")
    )
    assert done.returncode == 0, done.stderr
    timed = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")]
    modules = [cut[-1].strip() for cut in timed if len(cut) == 3 and cut[0].partition(":")[2].strip().isdigit()]
    # The capture worked: the table's own modules are listed (no line at all would pass the check below).
    assert "an_lab" in modules and "an_lab.analysis" in modules, done.stderr[-3000:]
    heavy = [name for name in modules if name.split(".")[0] in HEAVY]
    assert heavy == []
    rows = done.stdout.splitlines()
    assert rows[0].startswith("| Method") and len([row for row in rows if row.startswith("| ")]) == 2 + 9
    body = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows[2:11]]
    assert body[0][0] == "RSD + A2 + hsigmoid + K=(10,10,20)" and body[-1][0] == "BN"
    assert all(row[1:5] == ["—"] * 4 and row[5] == "0/3" for row in body)
    assert rows[-1] == "— no run done yet" and "†" not in done.stdout


HEAVY = {"torch", "torchvision", "lightning", "pytorch_lightning", "wandb", "torchmetrics"}


def test_in_process_api_matches_the_command(sweep, capsys):
    from an_lab.sweeps.manifest import load_manifest

    manifest = load_manifest(sweep)
    runs = collect(manifest)
    assert runs["state"].tolist() == ["done", "done", "done", "failed", "pending", "pending", "done", "done"]
    assert runs.loc[3, "detail"] == "out of memory" and runs["top1_err"].isna().tolist()[3:6] == [True] * 3
    cells = summarize(manifest, runs)
    assert cells["done"].tolist() == [2, 1, 0, 2] and cells["is_baseline"].tolist() == [False, False, False, True]
    assert render_table(manifest, runs=runs, min_seeds=2) == table(capsys, sweep)


def test_result_files_in_other_shapes_are_read_or_counted_as_corrupt(sweep):
    from an_lab.sweeps.manifest import load_manifest

    runs = Path(json.loads((sweep / "manifest.json").read_text())["output_dir"])
    (runs / "bn-0" / "result.json").write_text('{"run_id": "bn-0", "final": {"top1')  # truncated
    frame = collect(load_manifest(sweep))
    assert frame["top1_err"].tolist()[:2] == [21.5, 21.7]
    assert frame.loc[6, "state"] == "corrupt" and "result.json: not valid JSON" in frame.loc[6, "detail"]


# ---------------------------------------------------------------------------------------------------------------------
# The hand-built sweep with known answers

CLOSE, OTHER, SINGLE = "AN, 0.1 worse", "AN on seeds 3-5", "AN, one run"
SMALL = (272_474, 8_098_000)  # a CIFAR ResNet-20 at 16x16: 0.27 M parameters, 8.10 M MACs
# cell index -> (label, seeds, final top-1 error per seed); cell 4 is the baseline
TOP1 = {
    0: ("AN", (0, 1, 2), (20.0, 22.0, 24.0)),  # spread 2 ...
    1: (CLOSE, (0, 1, 2), (20.3, 21.8, 24.2)),  # ... 0.1 above it on average, paired differences 0.3, -0.2, 0.2
    2: (OTHER, (3, 4, 5), (23.0, 27.0, 25.0)),  # no seed shared with the others: Welch; its error still falls
    3: (SINGLE, (0,), (21.0,)),  # the lowest error, from one run
    4: ("BN", (0, 1, 2), (25.5, 26.5, 29.0)),  # 5 above cell 0 (paired differences 5.5, 4.5, 5.0)
}


def _falling(top1: float) -> list[float]:
    """A run still improving: 3 points over its last 3 epochs."""
    return [top1 + 6, top1 + 4.5, top1 + 3, top1 + 1.5, top1]


def _evidence_cells(top1: dict) -> dict:
    described = {}
    for index, (label, seeds, values) in top1.items():
        kind, name = ("baseline", "bn") if label == "BN" else ("base" if index == 0 else "axis", None)
        tail = _falling if label == OTHER else _flat
        members = [
            (
                f"cell{index}-{seed}",
                seed,
                {
                    "top1": value,
                    "top5": round(value / 4, 3),
                    "params": SMALL[0],
                    "macs": SMALL[1],
                    "tail": tail(value),
                    "train_loss": 1.8 if label == SINGLE else 0.5,
                },
            )
            for seed, value in zip(seeds, values, strict=True)
        ]
        described[index] = (kind, name, label, members)
    return described


@pytest.fixture
def evidence(tmp_path) -> Path:
    return _write_sweep(tmp_path, _evidence_cells(TOP1), "evidence")


EXPECTED_EVIDENCE = """\
| Method          | #Params (M) | MACs (M) |             top-1 err (%) | Seeds |
| :-------------- | ----------: | -------: | ------------------------: | ----: |
| AN              |        0.27 |     8.10 | **22.00 ± 2.00** (-5.00*) |   3/3 |
| AN, 0.1 worse   |        0.27 |     8.10 | **22.10 ± 1.97** (-4.90*) |   3/3 |
| AN on seeds 3-5 |        0.27 |     8.10 | **25.00 ± 2.00**‡ (-2.00) |   3/3 |
| AN, one run     |        0.27 |     8.10 |         21.00 n=1 (-6.00) |   1/1 |
| BN              |        0.27 |     8.10 |              27.00 ± 1.80 |   3/3 |

mean ± std over the done runs of each cell (sample std, ddof=1)

(x): difference of the mean against the baseline BN, paired by seed when the cell shares at least 2 seeds with it, else Welch; *: its 95% CI (Student t) excludes 0, from at least 2 seeds a side

**bold**: lowest mean and cells not significantly worse (95% CI of the paired difference includes 0; Welch where fewer than 2 seeds are shared), among complete cells with at least 2 runs

n=1: a single run, so no std and no CI; never marked * or bold

‡ not converged: 3 runs with a top-1 error that fell by more than 1 point over the last 3 epochs
"""


def test_hand_built_table_marks_follow_the_evidence(evidence, capsys):
    # By hand (t(2) = 4.303): AN - BN paired (-5.5, -4.5, -5.0): -5.00, CI -5 ± 4.303 * 0.5 / sqrt(3) = [-6.24, -3.76]:
    # *; AN, 0.1 worse - BN (-5.2, -4.7, -4.8): [-5.56, -4.24]: *; seeds 3-5 share no seed with BN: Welch, [-6.33,
    # 2.33]: no *. Bold: AN has the lowest mean among cells of 2 or more runs; the 0.1 cell differs from it by
    # (0.3, -0.2, 0.2): [-0.56, 0.76] holds 0, bold too; seeds 3-5 against AN (Welch) [-1.53, 7.53] holds 0, bold;
    # BN against AN [3.76, 6.24] does not: not bold. The single run has the lowest error of all (21.00) but no CI:
    # n=1, neither * nor bold. Seeds 3-5 fell 3 points over their last 3 epochs: ‡. 272,474 parameters and 8,098,000
    # MACs read 0.27 M and 8.10 M.
    assert table(capsys, evidence, "--metric", "top1") == EXPECTED_EVIDENCE


def _two(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _bracket(interval) -> str:
    return f"[{_two(interval[0])}, {_two(interval[1])}]"


def _rows(text: str) -> dict[str, dict[str, str]]:
    """label -> {column header: cell text} of a Markdown table (marks included)."""
    lines = text.split("\n\n")[0].splitlines()
    header, *body = ([cell.strip() for cell in line.split("|")[1:-1]] for line in lines[:1] + lines[2:])
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in body}


def _values(index: int) -> np.ndarray:
    return np.array(TOP1[index][2])


def test_hand_built_figures_equal_scipy(evidence, capsys):
    rows = _rows(table(capsys, evidence, "--metric", "top1", "--detail"))
    an, close, other, single, bn = (_values(index) for index in range(5))
    for label, values in (("AN", an), (CLOSE, close), (OTHER, other), ("BN", bn)):
        mean, sem = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
        interval = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
        figures = [rows[label][key] for key in ("n", "Std", "95% CI")]
        assert figures == ["3", _two(values.std(ddof=1)), _bracket(interval)]
        assert rows[label]["Mean"].strip("*‡") == _two(mean)
    # against the baseline: paired where seeds are shared (ttest_rel), else Welch (ttest_ind(equal_var=False))
    against = {
        "AN": stats.ttest_rel(an, bn).confidence_interval(),
        CLOSE: stats.ttest_rel(close, bn).confidence_interval(),
        OTHER: stats.ttest_ind(other, bn, equal_var=False).confidence_interval(),
    }
    assert [rows[label]["95% CI (diff)"] for label in against] == [_bracket(ci) for ci in against.values()]
    assert [rows[label]["Test"] for label in against] == ["paired", "paired", "Welch"]
    assert [rows[label]["Diff"] for label in against] == ["-5.00*", "-4.90*", "-2.00"]
    assert [ci.high < 0 for ci in against.values()] == [
        True,
        True,
        False,
    ]  # * exactly where the CI excludes 0, from at least 2 seeds a side
    for label, values in (("AN", an), (CLOSE, close), (OTHER, other), (SINGLE, single)):
        better = stats.mannwhitneyu(bn, values).statistic / (len(values) * len(bn))  # pairs in which the cell is lower
        assert rows[label]["Diff"].rstrip("*") == _two(values.mean() - bn.mean())
        assert rows[label]["P(better)"] == _two(better)
    assert rows[OTHER]["P(better)"] == "0.78"  # 7 of the 9 pairs
    assert list(rows[SINGLE].values())[2:8] == ["1", "21.00", "—", "no CI", "-6.00", "no CI"]
    assert list(rows["BN"].values())[6:] == ["—"] * 4
    # bold: the same comparisons against the best cell (AN), by scipy: 0.1 worse and seeds 3-5 hold 0, BN does not
    tied, apart = stats.ttest_rel(close, an).confidence_interval(), stats.ttest_rel(bn, an).confidence_interval()
    unpaired = stats.ttest_ind(other, an, equal_var=False).confidence_interval()
    assert tied.low < 0 < tied.high and unpaired.low < 0 < unpaired.high and apart.low > 0
    assert [label for label, cells in rows.items() if cells["Mean"].startswith("**")] == ["AN", CLOSE, OTHER]


def test_the_five_point_difference_is_significant_and_the_tenth_is_not(evidence, capsys):
    column = "top-1 err (%)"
    rows = _rows(table(capsys, evidence, "--metric", "top1", "--baseline", "0"))
    detail = _rows(table(capsys, evidence, "--metric", "top1", "--baseline", "0", "--detail"))
    close = stats.ttest_rel(_values(1), _values(0)).confidence_interval()
    worse = stats.ttest_rel(_values(4), _values(0)).confidence_interval()
    assert [detail[CLOSE][key] for key in ("Diff", "95% CI (diff)", "Test")] == ["+0.10", _bracket(close), "paired"]
    assert [detail["BN"][key] for key in ("Diff", "95% CI (diff)", "Test")] == ["+5.00*", _bracket(worse), "paired"]
    assert close.low < 0 < close.high and worse.low > 0
    assert rows[CLOSE][column] == "**22.10 ± 1.97** (+0.10)" and rows["BN"][column] == "27.00 ± 1.80 (+5.00*)"
    assert rows["AN"][column] == "**22.00 ± 2.00**" and rows[SINGLE][column] == "21.00 n=1 (-1.00)"


def test_single_runs_only_bold_nothing_and_say_why(tmp_path, capsys):
    singles = {0: ("AN", (0,), (20.0,)), 1: (CLOSE, (0,), (22.0,)), 4: ("BN", (0,), (25.0,))}
    text = table(capsys, _write_sweep(tmp_path, _evidence_cells(singles), "singles"), "--metric", "top1")
    assert [row["top-1 err (%)"] for row in _rows(text).values()] == [
        "20.00 n=1 (-5.00)",
        "22.00 n=1 (-3.00)",
        "25.00 n=1",
    ]
    assert (
        "nothing bold: no complete cell has 2 or more runs, and fewer cannot show a best cell (--min-seeds)"
        in _notes(text)
    )
    assert "n=1: a single run, so no std and no CI; never marked * or bold" in _notes(text)
    assert "**" not in text and "*)" not in text


def test_bootstrap_below_eight_seeds_gives_the_t_intervals_and_says_so(evidence, capsys):
    """With 3 seeds a cell, BCa would return about the range of the values as a 95% interval (the AN cell's values
    are 20, 22, 24: BCa [20.00, 24.00], t [17.03, 26.97]); the table gives the t intervals and says why. scipy's BCa
    itself is checked from 8 values on in tests/test_stats.py."""
    first = table(capsys, evidence, "--metric", "top1", "--detail", "--ci", "bootstrap")
    assert table(capsys, evidence, "--metric", "top1", "--detail", "--ci", "bootstrap") == first
    rows, t_rows = _rows(first), _rows(table(capsys, evidence, "--metric", "top1", "--detail"))
    for label in ("AN", OTHER):
        assert rows[label]["95% CI"] == t_rows[label]["95% CI"]
        assert rows[label]["95% CI (diff)"] == t_rows[label]["95% CI (diff)"]
    assert rows["AN"]["95% CI"] == "[17.03, 26.97]"
    assert "Student t where fewer than 8 values" in first


PER_METRIC = ("n", "mean", "std", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_better", "significant")


def test_csv_has_every_figure_per_metric(evidence, capsys):
    frame = pd.read_csv(io.StringIO(table(capsys, evidence, "--format", "csv", "--metric", "top1")))
    assert [f"top1_err_{part}" for part in PER_METRIC] == [c for c in frame.columns if c.startswith("top1_err_")][:10]
    assert not any(column.startswith("top5_err") for column in frame.columns)
    an, close, other, bn = _values(0), _values(1), _values(2), _values(4)
    low, high = stats.t.interval(0.95, 2, loc=an.mean(), scale=an.std(ddof=1) / np.sqrt(3))
    assert frame.loc[0, ["top1_err_n", "top1_err_mean", "top1_err_std"]].tolist() == [3, 22.0, 2.0]
    assert frame.loc[0, ["top1_err_ci_low", "top1_err_ci_high"]].tolist() == pytest.approx([low, high], rel=1e-5)
    paired = stats.ttest_rel(close, bn).confidence_interval()
    welch = stats.ttest_ind(other, bn, equal_var=False).confidence_interval()
    assert frame.loc[1, ["top1_err_diff_ci_low", "top1_err_diff_ci_high"]].tolist() == pytest.approx(paired, rel=1e-5)
    assert frame.loc[2, ["top1_err_diff_ci_low", "top1_err_diff_ci_high"]].tolist() == pytest.approx(welch, rel=1e-5)
    assert frame["top1_err_diff"].round(4).tolist()[:4] == [-5.0, -4.9, -2.0, -6.0]
    assert frame["top1_err_p_better"].round(4).tolist()[:4] == [1.0, 1.0, 0.7778, 1.0]
    assert frame["top1_err_significant"].tolist() == [True, True, False, False, False]
    assert frame["top1_err_best"].tolist() == [True, True, True, False, False]
    assert frame["top1_err_n"].tolist() == [3, 3, 3, 1, 3] and frame["top1_err_std"].isna().tolist()[3]
    assert frame["top1_err_ci_low"].isna().tolist() == [False, False, False, True, False]
    assert frame["not_converged"].tolist() == [0, 0, 3, 0, 0]
    best = pd.read_csv(io.StringIO(table(capsys, evidence, "--format", "csv", "--metric", "best")))
    assert all(f"{metric}_{part}" in best.columns for metric in ("top1_err", "best_top1_err") for part in PER_METRIC)
    assert best["best_top1_err_mean"].round(4).tolist() == [21.9, 22.0, 24.9, 20.9, 26.9]  # final - 0.1 (_result)


def test_best_epoch_metric_beside_the_final_one(evidence, capsys):
    lines = table(capsys, evidence, "--metric", "best").splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[4:6]] == ["top-1 err (%)", "best-epoch top-1 err (%)"]
    assert [cell.strip() for cell in lines[2].split("|")[4:6]] == [
        "**22.00 ± 2.00** (-5.00*)",
        "**21.90 ± 2.00** (-5.00*)",
    ]
    only = table(capsys, evidence, "--metric", "best_top5").splitlines()
    assert "best-epoch top-5 err (%)" in only[0] and "top-1" not in only[0]


def test_convergence_rule_flags_a_falling_cell_and_takes_overrides(tmp_path, evidence, capsys):
    def flagged(text: str) -> list[str]:
        return [row.split("|")[1].strip() for row in text.splitlines()[2:7] if "‡" in row]

    assert flagged(table(capsys, evidence, "--metric", "top1")) == [OTHER]  # fell 3 points; the others 0.1
    assert flagged(table(capsys, evidence, "--metric", "top1", "--val-drop", "5")) == []
    assert flagged(table(capsys, evidence, "--metric", "top1", "--val-drop", "none")) == []
    text = table(capsys, evidence, "--metric", "top1", "--converged-loss", "1.5")  # the single run ended at 1.8
    assert flagged(text) == [OTHER, SINGLE]
    note = "‡ not converged (2 cells): 4 runs with a final train loss above 1.5 or a top-1 error that fell by more "
    assert note + "than 1 point over the last 3 epochs" in _notes(text)
    # the sweep's own settings: a drop of 3 over the last 3 epochs passes 4, over the last 5 (6 points) it does not
    rule = {"train_loss_max": None, "val_drop_max": 4.0, "last_epochs": 3}
    loose = _write_sweep(tmp_path / "loose", _evidence_cells(TOP1), "loose", convergence=rule)
    assert flagged(table(capsys, loose, "--metric", "top1")) == []
    longer = _write_sweep(tmp_path / "longer", _evidence_cells(TOP1), "longer", convergence={**rule, "last_epochs": 5})
    text = table(capsys, longer, "--metric", "top1")
    assert flagged(text) == [OTHER] and "more than 4 points over the last 5 epochs" in text


@pytest.mark.parametrize("flag", ["--val-drop", "--converged-loss"])
def test_a_threshold_that_is_not_a_positive_number_is_a_usage_error(evidence, capsys, flag):
    assert main(["table", str(evidence), flag, "-1"]) == 2
    assert f"{flag} '-1': give a positive number, or none to switch this check off" in capsys.readouterr().err


def test_by_default_two_seeds_mark_nothing_and_the_legend_says_so(sweep, capsys):
    """The default needs 3 seeds a side: this sweep's 2-seed differences (CIs that exclude 0) get no * and no bold."""
    text = table(capsys, sweep, "--min-seeds", "3")
    assert "*" not in text.split("\n\n")[0] and "**" not in text.split("\n\n")[0]
    assert "excludes 0, from at least 3 seeds a side" in text
    assert "nothing bold: no complete cell has 3 or more runs" in text
    assert main(["table", str(sweep), "--min-seeds", "1"]) == 2
    assert "--min-seeds 1: give 2 or more" in capsys.readouterr().err


def test_intervals_stay_in_the_metrics_range(tmp_path, capsys):
    """Errors near 0 (the digits quickstart's 0.00, 0.28, 1.94): the t interval would start at -2.1; it is clipped."""
    runs = [(f"r{seed}", seed, (top1, 0.1, AN, 4_094_000_000)) for seed, top1 in enumerate((0.0, 0.28, 1.94))]
    folder = _write_sweep(tmp_path, {0: ("base", None, "AN", runs)}, "low")
    rows = _rows(table(capsys, folder, "--metric", "top1", "--detail", "--baseline", "none"))
    low, high = rows["AN"]["95% CI"].strip("[]").split(", ")
    assert float(low) == 0.0 and float(high) > 2.0


def _styler_html(shown: pd.DataFrame, classes: pd.DataFrame) -> str:
    """How the table was rendered before it was written directly: pandas' Styler, the reference for its HTML."""
    from pandas.io.formats.style import Styler

    rules = [
        {"selector": "td.best", "props": "font-weight: bold;"},
        {"selector": "td, th", "props": "padding: 2px 8px; text-align: right;"},
        {"selector": "td:first-child, th:first-child", "props": "text-align: left;"},
        {"selector": "thead th", "props": "border-bottom: 1px solid;"},
    ]
    styler = Styler(shown, uuid="an_lab_results", cell_ids=False).hide(axis="index").format(escape="html")
    styler = styler.format_index(escape="html", axis=1).set_td_classes(classes).set_table_styles(rules)
    text = styler.to_html(table_attributes='class="an-lab-results"')
    return text if text.endswith("\n") else text + "\n"


@pytest.mark.parametrize("rows", [0, 3])
def test_html_and_latex_tables_are_what_pandas_styler_writes(rows):
    """The HTML and LaTeX tables are written directly (the Styler took seconds for 10,000 rows); they must be the
    Styler's text to the byte: escapes (& < > ' "), CSS classes, an empty cell, an empty table, the notes."""
    from an_lab.analysis.table import _html, _latex, _latex_title

    names = ["Method <&>", "#Params (M)", "AP^bb_50", 'it\'s "x"']
    texts = [["A & <b>", "1.00", "**2** ± 1", ""], ["B'q\"", "—", "3 ± 4†", "x_y"], ["C", "5", "6", "7"]][:rows]
    shown = pd.DataFrame(texts, columns=names) if rows else pd.DataFrame({name: [] for name in names}, dtype=object)
    classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
    if rows:
        classes.iloc[0, 2], classes.iloc[1, 2] = "best", "incomplete"
    assert _html(shown, classes, ["note <1> & 'two'"]) == _styler_html(shown, classes) + (
        '<p class="an-lab-note">note &lt;1&gt; &amp; &#x27;two&#x27;</p>\n'
    )
    styler = shown.rename(columns=_latex_title).style.hide(axis="index")
    reference = styler.to_latex(hrules=True, column_format="l" + "r" * (shown.shape[1] - 1))
    assert _latex(shown, []) == reference
    note = r"\multicolumn{4}{l}{\footnotesize a note} \\" + "\n"
    assert _latex(shown, ["a note"]) == reference.replace("\\end{tabular}", note + "\\end{tabular}")


def test_convergence_settings_taken_without_the_schema_are_what_the_schema_gives():
    """convergence_settings() skips the sweep schema (pydantic) for settings it can tell are valid: its defaults are
    the schema's, and every value it takes so is one the schema takes unchanged."""
    from pydantic import ValidationError

    from an_lab.analysis.convergence import DEFAULTS, _surely_valid
    from an_lab.sweeps.spec import ConvergenceSettings

    assert ConvergenceSettings().model_dump() == DEFAULTS
    thresholds = [None, 0.0, -1.0, 1e-9, 0.5, 1.0, 2.0, 1e9, float("inf"), float("nan"), 1, 0, True, "1.0"]
    epochs = [0, 1, 2, 3, 49, 50, 51, 2.0, True, None, "3"]
    for loss in thresholds:
        for drop in thresholds:
            for last in epochs:
                settings = {"train_loss_max": loss, "val_drop_max": drop, "last_epochs": last}
                if not _surely_valid(settings):
                    continue
                try:
                    checked = ConvergenceSettings.model_validate(settings).model_dump()
                except ValidationError:
                    pytest.fail(f"{settings} taken without the schema, which refuses it")
                assert checked == settings and [type(value) for value in checked.values()] == [
                    type(value) for value in settings.values()
                ]
    assert not _surely_valid({**DEFAULTS, "extra": 1.0}) and not _surely_valid({"val_drop_max": 1.0})


def test_an_error_tables_legend_states_the_step_floor(evidence, capsys):
    """Top-1 error moves in steps of 100 / validation images: its legend says intervals are never narrower (an AP
    table's does not: tests/analysis/test_results_detection.py)."""
    legend = table(capsys, evidence, "--metric", "top1", "--detail")
    assert "never narrower than the error's step (100 / validation images)" in legend
