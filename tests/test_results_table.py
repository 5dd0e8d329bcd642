# ruff: noqa: E501  (the expected tables are wider than the line limit)
"""`an-lab table`: a sweep folder with known result files gives known Markdown, LaTeX, CSV and HTML tables (mean ± std
over seeds, differences against the baseline in brackets, best values marked, an incomplete cell flagged and a cell
without results shown as a dash), baselines chosen by name, label or index, clear usage errors, and no torch."""

import functools
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import an_lab, write_manifest

from an_lab.analysis import collect, render_table, summarize
from an_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
BASE = "RSD + A2 + hsigmoid + K=(10,10,20,20)"
MEAN = "Mean + A2 + hsigmoid + K=(10,10,20,20)"
SOFTMAX = "RSD + A2 + softmax + K=(10,10,20,20)"


def _result(run_id: str, top1: float, top5: float, params: int, macs: int) -> dict:
    """A result.json as an_lab.lightning_modules.train._result writes it."""
    return {
        "run_id": run_id,
        "config_hash": "0" * 12,
        "status": "done",
        "final": {"top1_err": top1, "top5_err": top5, "val_loss": 0.9, "train_loss": 1.1},
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


@pytest.fixture
def sweep(tmp_path) -> Path:
    """<tmp>/sweeps/known/manifest.json and the run directories of CELLS in <tmp>/runs."""
    runs = tmp_path / "runs"
    cells = []
    for index, (kind, name, label, members) in CELLS.items():
        cells.append(
            {
                "index": index,
                "kind": kind,
                "name": name,
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
            else:
                (folder / "result.json").write_text(json.dumps(_result(run_id, *content)))
    return write_manifest(tmp_path, runs, cells)


def table(capsys, *args) -> str:
    assert main(["table", *map(str, args)]) == 0
    return capsys.readouterr().out


EXPECTED_MARKDOWN = """\
| Method                                 | #Params (M) | MACs (G) |            top-1 err (%) |           top-5 err (%) | Seeds |
| :------------------------------------- | ----------: | -------: | -----------------------: | ----------------------: | ----: |
| RSD + A2 + hsigmoid + K=(10,10,20,20)  |       25.76 |     4.09 | **21.60 ± 0.14** (-1.41) | **5.60 ± 0.14** (-1.08) |   2/2 |
| Mean + A2 + hsigmoid + K=(10,10,20,20) |       25.76 |     4.09 |           21.85† (-1.16) |           5.92† (-0.76) |   1/2 |
| RSD + A2 + softmax + K=(10,10,20,20)   |           — |        — |                        — |                       — |   0/2 |
| BN                                     |       25.56 |     4.09 |             23.01 ± 0.01 |             6.68 ± 0.11 |   2/2 |

(x): difference of the mean against the baseline BN

† incomplete: 1 of 2 runs done, 1 failed; mean of the done runs only

— no run done yet
"""


def test_markdown_table_has_mean_std_differences_best_and_flags(sweep, capsys):
    # by hand: (21.5, 21.7) -> 21.60 ± 0.14; BN (23.0, 23.02) -> 23.01 ± 0.01, (6.6, 6.76) -> 6.68 ± 0.11;
    # 21.60 - 23.01 = -1.41, 5.60 - 6.68 = -1.08; the mean cell has one run of two: 21.85 - 23.01 = -1.16.
    assert table(capsys, sweep) == EXPECTED_MARKDOWN


EXPECTED_LATEX = r"""\begin{tabular}{lrrrrr}
\toprule
Method & \#Params (M) & MACs (G) & top-1 err (\%) & top-5 err (\%) & Seeds \\
\midrule
RSD + A2 + hsigmoid + K=(10,10,20,20) & 25.76 & 4.09 & \textbf{21.60 $\pm$ 0.14} ($-$1.41) & \textbf{5.60 $\pm$ 0.14} ($-$1.08) & 2/2 \\
Mean + A2 + hsigmoid + K=(10,10,20,20) & 25.76 & 4.09 & 21.85$^{\dagger}$ ($-$1.16) & 5.92$^{\dagger}$ ($-$0.76) & 1/2 \\
RSD + A2 + softmax + K=(10,10,20,20) & --- & --- & --- & --- & 0/2 \\
BN & 25.56 & 4.09 & 23.01 $\pm$ 0.01 & 6.68 $\pm$ 0.11 & 2/2 \\
\bottomrule
\multicolumn{6}{l}{\footnotesize (x): difference of the mean against the baseline BN} \\
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
    assert frame["top1_err_best"].tolist() == [True, False, False, False]
    assert frame["top5_err_best"].tolist() == [True, False, False, False]
    assert frame["seeds_done"].tolist() == [2, 1, 0, 2] and frame["seeds"].tolist() == [2, 2, 2, 2]
    assert frame["complete"].tolist() == [True, False, False, True] and frame["baseline"].tolist()[3]
    assert frame["params_m"].round(2).tolist()[0] == 25.76 and frame["macs_g"].tolist()[0] == 4.094  # first seed's


def test_html_has_the_table_with_a_best_class(sweep, capsys):
    page = table(capsys, sweep, "--format", "html", "--metric", "top1")
    assert page.count("<table") == 1 and "</table>" in page and "top-5 err" not in page
    assert '<td class="data row0 col3 best" >21.60 ± 0.14 (-1.41)</td>' in page
    assert '<td class="data row1 col3 incomplete" >21.85† (-1.16)</td>' in page
    assert "td.best" in page and "font-weight: bold" in page
    assert '<p class="an-lab-note">† incomplete: 1 of 2 runs done, 1 failed; mean of the done runs only</p>' in page


def test_one_metric_only(sweep, capsys):
    lines = table(capsys, sweep, "--metric", "top5").splitlines()
    assert "top-5 err (%)" in lines[0] and "top-1" not in lines[0]
    assert lines[2].split("|")[4].strip() == "**5.60 ± 0.14** (-1.08)"


@pytest.mark.parametrize("choice", ["bn", "BN", "3"])
def test_baseline_by_name_label_or_index(sweep, capsys, choice):
    assert table(capsys, sweep, "--baseline", choice) == EXPECTED_MARKDOWN


def test_another_cell_as_baseline_and_none(sweep, capsys):
    rows = table(capsys, sweep, "--baseline", BASE.lower()).splitlines()
    assert [cell.strip() for cell in rows[2].split("|")[4:6]] == ["**21.60 ± 0.14**", "**5.60 ± 0.14**"]
    assert "21.85† (+0.25)" in rows[3] and "23.01 ± 0.01 (+1.41)" in rows[5] and "6.68 ± 0.11 (+1.08)" in rows[5]
    assert f"against the baseline {BASE}" in table(capsys, sweep, "--baseline", "0")
    plain = table(capsys, sweep, "--baseline", "none")
    assert "(-" not in plain and "(x)" not in plain and "**21.60 ± 0.14** |" in plain and "21.85† |" in plain


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
        "table", "sweeps/quickstart.yaml", "--set", f"output_dir={tmp_path / 'runs'}", python=("-X", "importtime")
    )
    assert done.returncode == 0, done.stderr
    heavy = [line for line in done.stderr.splitlines() if line.split("|")[-1].strip().split(".")[0] in HEAVY]
    assert heavy == []
    rows = done.stdout.splitlines()
    assert rows[0].startswith("| Method") and len([row for row in rows if row.startswith("| ")]) == 2 + 9
    body = [[cell.strip() for cell in row.split("|")[1:-1]] for row in rows[2:11]]
    assert body[0][0] == "RSD + A2 + hsigmoid + K=(10,10,20)" and body[-1][0] == "BN"
    assert all(row[1:5] == ["—"] * 4 and row[5] == "0/1" for row in body)
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
    assert render_table(manifest, runs=runs) == table(capsys, sweep)


def test_result_files_in_other_shapes_are_read_or_counted_as_corrupt(sweep):
    from an_lab.sweeps.manifest import load_manifest

    runs = Path(json.loads((sweep / "manifest.json").read_text())["output_dir"])
    (runs / "bn-0" / "result.json").write_text('{"run_id": "bn-0", "final": {"top1')  # truncated
    frame = collect(load_manifest(sweep))
    assert frame["top1_err"].tolist()[:2] == [21.5, 21.7]
    assert frame.loc[6, "state"] == "corrupt" and "result.json: not valid JSON" in frame.loc[6, "detail"]
