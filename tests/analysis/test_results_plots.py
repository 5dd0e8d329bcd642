"""`an-lab plot`, `an-lab report --html / --wandb` and `an-lab sync` on a hand-written finished sweep (no training):
the numbers behind the figures and the data the figures draw (95% CIs of the mean checked against scipy, every seed
a point, no bars), valid PNG, PDF and SVG files, the W&B report's specification written offline, sync ending within
its time bound without a network, the HTML page (description, base config, per-run hardware, no machine paths)
rendered in headless Chromium, and no torch import."""

import base64
import contextlib
import html
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from conftest import an_lab, walk, write_manifest
from matplotlib.container import BarContainer
from PIL import Image
from scipy import stats as scipy_stats

from an_lab.analysis import axis_groups, cell_curves, collect, render_figures, render_table, scatter_points
from an_lab.analysis.figure_data import curve_estimates
from an_lab.analysis.plots import FIGURES, STEMS, build_figures
from an_lab.analysis.wandb_report import run_bounded
from an_lab.cli import main
from an_lab.sweeps.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
BASE = "RSD + A2 + hsigmoid + K=(10,10,20,20)"
MEAN = "Mean + A2 + hsigmoid + K=(10,10,20,20)"
CONCAT = "Concat + A2 + hsigmoid + K=(10,10,20,20)"
SOFTMAX = "RSD + A2 + softmax + K=(10,10,20,20)"
SMALL_K = "RSD + A2 + hsigmoid + K=(5,5,10,10)"
AN_TAGS = {"pooling": "rsd", "head": "a2", "activation": "hsigmoid", "k": "(10,10,20,20)"}
AN, SMALL, BN = 25_755_420, 25_610_000, 25_557_032
EPOCHS = 5
DEVICE, PRECISION = "NVIDIA H200", "bf16-mixed"
DESCRIPTION = "Pooling, activation & K of AN on the digits: <which matters?>"

# cell index -> (kind, name, label, changes, tags over the base's, [(run_id, seed, final top-1 error | failed | None)])
CELLS = {
    0: ("base", None, BASE, {}, {}, [("an-0", 0, 21.5), ("an-1", 1, 21.7)]),
    1: (
        "axis",
        None,
        MEAN,
        {"model.an.pooling": "mean"},
        {"pooling": "mean"},
        [("mean-0", 0, 21.85), ("mean-1", 1, "failed")],
    ),
    2: (
        "axis",
        None,
        CONCAT,
        {"model.an.pooling": "concat"},
        {"pooling": "concat"},
        [("concat-0", 0, None), ("concat-1", 1, None)],
    ),
    3: (
        "axis",
        None,
        SOFTMAX,
        {"model.an.activation": "softmax"},
        {"activation": "softmax"},
        [("softmax-0", 0, 22.0), ("softmax-1", 1, 22.4)],
    ),
    4: (
        "axis",
        None,
        SMALL_K,
        {"model.an.k": [5, 5, 10, 10]},
        {"k": "(5,5,10,10)"},
        [("k-0", 0, 21.9), ("k-1", 1, 22.1)],
    ),
    5: ("baseline", "bn", "BN", {"model.norm": "bn"}, None, [("bn-0", 0, 23.0), ("bn-1", 1, 23.02)]),
}


def _curve(final: float) -> list[float]:
    """Validation top-1 error per epoch, ending at `final`: final + 10 * (epochs left)."""
    return [final + 10.0 * (EPOCHS - 1 - epoch) for epoch in range(EPOCHS)]


def _write_run(folder: Path, run_id: str, seed: int, final: float, params: int) -> None:
    """result.json and logs/attempt-0/metrics.csv as a finished run leaves them (Lightning's CSV: train and
    validation rows of an epoch apart)."""
    logs = folder / "logs" / "attempt-0"
    logs.mkdir(parents=True)
    lines = ["epoch,val_top1_err,val_top5_err,val_loss,train_loss"]
    for epoch, error in enumerate(_curve(final)):
        lines.append(f"{epoch},{error},{error / 4},{error / 20},")
        lines.append(f"{epoch},,,,{2.0 - 0.3 * epoch}")
    (logs / "metrics.csv").write_text("\n".join(lines) + "\n")
    result = {
        "run_id": run_id,
        "status": "done",
        "final": {"top1_err": final, "top5_err": final / 4, "val_loss": final / 20, "train_loss": 0.8},
        "best": {"top1_err": final, "top5_err": final / 4, "epoch": EPOCHS - 1},
        "params": params,
        "macs": 4_094_000_000,
        "epochs": EPOCHS,
        "wall_time_s": 3725.4 if run_id == "an-0" else 10.0,
        "images_per_s": 500.0,
        "device": DEVICE,
        "precision": PRECISION,
        "finished_at": 1.7e9,
    }
    (folder / "result.json").write_text(json.dumps(result))
    config = {
        "wandb": {"entity": None, "project": "an-lab-test", "group": "known", "tags": []},
        "trainer": {"seed": seed},
    }
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """<tmp>/runs/sweeps/known/manifest.json and the run directories of CELLS in <tmp>/runs."""
    runs = tmp_path / "runs"
    cells = []
    for index, (kind, name, label, changes, tags, members) in CELLS.items():
        tag_values = {"baseline": "bn", "norm": "bn"} if tags is None else {**AN_TAGS, **tags}
        cells.append(
            {
                "index": index,
                "kind": kind,
                "name": name,
                "label": label,
                "changes": changes,
                "tags": [f"{key}={value}" for key, value in tag_values.items()],
                "runs": [{"run_id": run_id, "seed": seed} for run_id, seed, _ in members],
            }
        )
        for run_id, seed, content in members:
            folder = runs / run_id
            folder.mkdir(parents=True)
            if content == "failed":
                (folder / "failed.json").write_text(json.dumps({"reason": "out of memory", "time": 1.7e9}))
            elif content is not None:
                params = BN if kind == "baseline" else (SMALL if index == 4 else AN)
                _write_run(folder, run_id, seed, content, params)
    folder = write_manifest(runs, cells)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(description=DESCRIPTION, base_config=_base_config(tmp_path / "data"))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _base_config(data_root: Path) -> dict:
    """The base cell's resolved run config as the manifest records it (the sections the page shows, and wandb)."""
    return {
        "model": {"name": "resnet50", "norm": "an", "an": {"k": [10, 10, 20, 20], "pooling": "rsd", "head": "a2"}},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64},
        "optim": {"base_lr": 0.4, "momentum": 0.9, "warmup_epochs": 1.0},
        "trainer": {"epochs": EPOCHS, "precision": PRECISION, "devices": 1, "seed": 0, "limit_train_batches": None},
        "wandb": {"mode": "offline", "project": "an-lab-test"},
    }


# the final top-1 errors of the done runs of each cell, in seed order
FINALS = {
    index: [content for _, _, content in members if isinstance(content, float)]
    for index, (*_, members) in CELLS.items()
}


def _t_interval(values: list[float]) -> tuple[float, float]:
    """The 95% CI of the mean, computed here with scipy (Student t, n - 1 degrees of freedom)."""
    n = len(values)
    scale = statistics.stdev(values) / math.sqrt(n)
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=statistics.fmean(values), scale=scale)
    return float(low), float(high)


def _gids(ax) -> dict:
    """The artists of an Axes by gid (the figures name what they draw: <prefix>-seeds, <prefix>-ci, <prefix>-band)."""
    return {artist.get_gid(): artist for artist in ax.findobj(lambda artist: artist.get_gid() is not None)}


def _no_bars(figure) -> None:
    """No bar chart anywhere: a truncated bar axis cannot happen (the errors are dot plots)."""
    for ax in figure.axes:
        assert not [container for container in ax.containers if isinstance(container, BarContainer)]


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


# ---------------------------------------------------------------- the numbers behind the figures


def test_axis_groups_put_the_base_first_in_every_axis_and_baselines_apart(sweep):
    groups, references = axis_groups(load_manifest(sweep))
    assert [(group.name, group.keys) for group in groups] == [
        ("pooling", ("model.an.pooling",)),
        ("activation", ("model.an.activation",)),
        ("k", ("model.an.k",)),
    ]
    pooling, activation, k = groups
    assert [bar.value for bar in pooling.bars] == ["rsd", "mean", "concat"]
    assert [bar.value for bar in activation.bars] == ["hsigmoid", "softmax"]
    assert [bar.value for bar in k.bars] == ["(10,10,20,20)", "(5,5,10,10)"]
    for group in groups:
        base = group.bars[0]
        assert base.is_base and base.cell == 0 and base.label == BASE and not any(b.is_base for b in group.bars[1:])
        assert _close(base.mean, 21.6) and abs(base.std - 0.141421356) < 1e-6 and (base.done, base.runs) == (2, 2)
    mean, concat = pooling.bars[1:]
    assert _close(mean.mean, 21.85) and mean.std != mean.std and (mean.done, mean.runs) == (1, 2)  # one run: no std
    assert not mean.complete and concat.done == 0 and concat.mean != concat.mean  # nothing done: NaN
    softmax = activation.bars[1]
    assert _close(softmax.mean, 22.2) and abs(softmax.std - 0.282842712) < 1e-6 and softmax.complete
    assert _close(k.bars[1].mean, 22.0)
    assert len(references) == 1
    assert (references[0].label, references[0].done, references[0].runs) == ("BN", 2, 2)
    assert _close(references[0].mean, 23.01)
    # the intervals: 95% CI of the mean (Student t), none below two runs; every done run's value kept
    for bar in (base, softmax, k.bars[1]):
        assert list(bar.values) == FINALS[bar.cell] and bar.n == 2
        assert np.allclose((bar.ci_low, bar.ci_high), _t_interval(FINALS[bar.cell]), rtol=0, atol=1e-9)
    assert mean.values == (21.85,) and mean.ci_low != mean.ci_low and mean.ci_high != mean.ci_high
    assert concat.values == () and concat.n == 0
    assert np.allclose((references[0].ci_low, references[0].ci_high), _t_interval(FINALS[5]), rtol=0, atol=1e-9)


def test_cell_curves_average_the_done_seeds_per_epoch(sweep):
    curves = cell_curves(load_manifest(sweep))
    assert sorted(curves) == [0, 1, 3, 4, 5]  # the concat cell has no done run
    # epochs counted from 1 (metrics.csv's epoch 0 is the first epoch)
    assert [epoch for epoch, _ in curves[0]] == [epoch for epoch, _ in curves[1]] == list(range(1, EPOCHS + 1))
    assert all(_close(value, 21.6 + 10 * (EPOCHS - epoch)) for epoch, value in curves[0])
    assert all(_close(value, 21.85 + 10 * (EPOCHS - epoch)) for epoch, value in curves[1])  # the failed run: out
    assert _close(curves[5][-1][1], 23.01)


def test_curve_estimates_give_the_95_ci_across_seeds_per_epoch(sweep):
    estimates = curve_estimates(load_manifest(sweep))
    assert sorted(estimates) == [0, 1, 3, 4, 5]
    for cell in (0, 1, 3, 5):  # every epoch estimated (the loops and all() below would pass over an empty list)
        assert [epoch for epoch, _ in estimates[cell]] == list(range(1, EPOCHS + 1)), cell
    for cell in (0, 3, 5):
        for epoch, found in estimates[cell]:
            values = [final + 10.0 * (EPOCHS - epoch) for final in FINALS[cell]]
            assert found.n == 2 and _close(found.mean, statistics.fmean(values))
            assert np.allclose((found.ci_low, found.ci_high), _t_interval(values), rtol=0, atol=1e-9)
    assert all(found.n == 1 and found.ci_low != found.ci_low for _, found in estimates[1])  # one run: no interval


def test_scatter_points_are_params_in_millions_against_mean_error(sweep):
    points = {point.cell: point for point in scatter_points(load_manifest(sweep))}
    assert sorted(points) == [0, 1, 3, 4, 5]
    assert _close(points[0].params_m, AN / 1e6) and _close(points[0].mean, 21.6) and points[0].kind == "base"
    assert _close(points[4].params_m, SMALL / 1e6) and points[4].label == SMALL_K
    assert (points[1].done, points[1].runs) == (1, 2) and points[5].kind == "baseline"
    assert np.allclose((points[4].ci_low, points[4].ci_high), _t_interval(FINALS[4]), rtol=0, atol=1e-9)
    assert points[1].values == (21.85,) and points[1].ci_low != points[1].ci_low


# ---------------------------------------------------------------- what the figures draw

PANELS = {"pooling": [0, 1, 2], "activation": [0, 3], "k": [0, 4], "baselines": [5]}
TICKS = {
    "pooling": ["rsd\n(n=2)", "mean\n(n=1 of 2)", "concat\n(n=0 of 2)"],
    "activation": ["hsigmoid\n(n=2)", "softmax\n(n=2)"],
    "k": ["(10,10,20,20)\n(n=2)", "(5,5,10,10)\n(n=2)"],
    "baselines": ["BN\n(n=2)"],
}


def _check_cell(gids: dict, prefix: str, x: float, values: list[float], near: float) -> int:
    """One cell as drawn: a point per done run near x, and for n >= 2 a whisker at x spanning the 95% CI of the
    mean computed here with scipy; for n = 1 no whisker. Returns the number of seed points."""
    seeds = gids[f"{prefix}-seeds"].get_offsets()
    assert sorted(seeds[:, 1].tolist()) == sorted(values)
    assert all(abs(seed_x - x) <= near for seed_x in seeds[:, 0]), (prefix, seeds)
    if len(values) == 1:
        assert f"{prefix}-ci" not in gids and seeds[0, 0] == x  # the single run at x, without an error bar
    else:
        (segment,) = gids[f"{prefix}-ci"].get_segments()
        assert segment[0, 0] == segment[1, 0] == x
        assert np.allclose(sorted(segment[:, 1]), _t_interval(values), rtol=0, atol=1e-9)
    return len(seeds)


def test_error_by_axis_is_a_dot_plot_of_95_ci_whiskers_and_every_seed(sweep):
    manifest = load_manifest(sweep)
    figure = build_figures(manifest)["error_by_axis"]
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == list(PANELS)
    _no_bars(figure)
    for position, ax in enumerate(axes):
        gids = _gids(ax)
        assert [label.get_text() for label in ax.get_xticklabels()] == TICKS[ax.get_title()]  # n per cell
        for x, cell in enumerate(PANELS[ax.get_title()]):
            prefix = f"panel{position}-cell{cell}"
            if FINALS[cell]:
                assert _check_cell(gids, prefix, x, FINALS[cell], near=0.4) == len(FINALS[cell])
            else:
                assert f"{prefix}-seeds" not in gids and f"{prefix}-ci" not in gids
        band = gids["baseline5-ci"]  # the baseline's CI across every panel, its mean dashed
        assert np.allclose((band.get_y(), band.get_y() + band.get_height()), _t_interval(FINALS[5]), atol=1e-9)
    low, high = axes[0].get_ylim()
    assert low <= min(_t_interval(FINALS[3])) and high >= max(_t_interval(FINALS[3]))  # no whisker cut off
    note = " ".join(text.get_text() for text in figure.texts)
    assert "error bars: 95% CI of the mean over seeds" in note and "n per cell shown" in note
    again = _gids(build_figures(manifest)["error_by_axis"].axes[1])
    assert np.array_equal(again["panel1-cell3-seeds"].get_offsets(), _gids(axes[1])["panel1-cell3-seeds"].get_offsets())


def test_val_curves_draw_the_mean_with_a_95_ci_band_and_none_for_one_run(sweep):
    figure = build_figures(load_manifest(sweep))["val_curves"]
    full, zoom = figure.axes
    _no_bars(figure)
    for ax in (full, zoom):
        gids = _gids(ax)
        assert "cell1-band" not in gids  # the mean cell has one done run: its line has no band
        assert {"cell0-band", "cell3-band", "cell4-band", "cell5-band"} <= set(gids)
        vertices = gids["cell0-band"].get_paths()[0].vertices
        last = [_curve(final)[-1] for final in FINALS[0]]
        at_last = sorted({round(float(y), 9) for x, y in vertices if x == EPOCHS})  # the last epoch, counted from 1
        assert np.allclose(at_last, _t_interval(last), rtol=0, atol=1e-9)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [
        f"{BASE} (n=2): 21.60%",
        f"{MEAN} (n=1 of 2): 21.85%",
        f"{SOFTMAX} (n=2): 22.20%",
        f"{SMALL_K} (n=2): 22.00%",
        "BN (n=2): 23.01%",
    ]
    (base,) = [line for line in full.get_lines() if line.get_label().startswith(BASE)]
    assert np.allclose(base.get_ydata(), [statistics.fmean(v) for v in zip(*map(_curve, FINALS[0]), strict=True)])
    note = " ".join(text.get_text() for text in figure.texts)
    assert "95% CI of the mean per epoch across seeds" in note


def test_params_vs_error_draws_each_cells_ci_and_every_seed(sweep):
    manifest = load_manifest(sweep)
    figure = build_figures(manifest)["params_vs_error"]
    (ax,) = figure.axes
    _no_bars(figure)
    gids = _gids(ax)
    points = {point.cell: point for point in scatter_points(manifest)}
    span = (AN - BN) / 1e6
    drawn = 0
    for cell, values in FINALS.items():
        if not values:
            assert f"cell{cell}-seeds" not in gids
            continue
        marker = gids[f"cell{cell}-seeds"] if len(values) == 1 else gids[f"cell{cell}-ci"]
        x = marker.get_offsets()[0, 0] if len(values) == 1 else marker.get_segments()[0][0, 0]
        assert abs(x - points[cell].params_m) <= 0.1 * span  # at its parameter count (cells with equal ones dodged)
        drawn += _check_cell(gids, f"cell{cell}", x, values, near=0.05 * span)
    assert drawn == (collect(manifest)["state"] == "done").sum() == 9  # every done run is a point
    labels = [text.get_text() for text in ax.texts]
    assert f"{MEAN} (n=1 of 2)  21.85%" in labels and f"{BASE} (n=2)  21.60%" in labels


@pytest.fixture
def single_seed_sweep(sweep) -> Path:
    """The sweep with the softmax cell planned and run for one seed only: complete with n=1."""
    manifest = json.loads((sweep / "manifest.json").read_text())
    manifest["cells"][3]["runs"] = manifest["cells"][3]["runs"][:1]
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    return sweep


def test_a_cell_with_one_run_is_its_point_without_an_error_bar_labelled_n_1(single_seed_sweep):
    figures = build_figures(load_manifest(single_seed_sweep))
    activation = figures["error_by_axis"].axes[1]
    assert [label.get_text() for label in activation.get_xticklabels()] == ["hsigmoid\n(n=2)", "softmax\n(n=1)"]
    assert _check_cell(_gids(activation), "panel1-cell3", 1, [22.0], near=0) == 1
    note = " ".join(text.get_text() for text in figures["error_by_axis"].texts)
    assert "n=1: a single run, drawn as its point without an error bar." in note
    assert "cell3-band" not in _gids(figures["val_curves"].axes[0])
    assert f"{SOFTMAX} (n=1): 22.00%" in [text.get_text() for text in figures["val_curves"].legends[0].get_texts()]
    assert "cell3-ci" not in _gids(figures["params_vs_error"].axes[0])


# ---------------------------------------------------------------- an-lab plot


def _png(path_or_bytes) -> Image.Image:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def _pdf(path: Path) -> None:
    """A whole PDF document (header to trailer) whose fonts are embedded TrueType, not Type 3."""
    data = path.read_bytes()
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF") and b"/Type /Page" in data
    assert b"/FontFile2" in data and b"/Type3" not in data


def _svg(path: Path) -> ElementTree.Element:
    root = ElementTree.fromstring(path.read_bytes())  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def test_plot_writes_png_pdf_and_svg_of_each_figure_into_the_sweep_folder(sweep, capsys):
    assert main(["plot", str(sweep)]) == 0
    printed = capsys.readouterr().out.split()
    names = [
        f"{stem}.{ext}" for stem in ("error_by_axis", "val_curves", "params_vs_error") for ext in ("png", "pdf", "svg")
    ]
    assert list(FIGURES) == names and STEMS == ("error_by_axis", "val_curves", "params_vs_error")
    assert printed == [str(sweep / "figures" / name) for name in names]
    for stem in STEMS:
        image = _png(sweep / "figures" / f"{stem}.png")
        width, height = image.size
        assert 800 <= width <= 4000 and 400 <= height <= 3000, (stem, image.size)
        colors = image.convert("RGB").getcolors(maxcolors=width * height)  # never None: as many slots as pixels
        assert colors is not None and len(colors) > 50  # drawn, not blank
        _pdf(sweep / "figures" / f"{stem}.pdf")
        texts = ["".join(element.itertext()) for element in _svg(sweep / "figures" / f"{stem}.svg").iter()]
        assert any("95% CI of the mean" in text for text in texts)  # the note travels with every format
    out = sweep.parent / "elsewhere"
    assert main(["plot", str(sweep), "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    for name in names:  # no creation date inside: the same runs give the same files
        assert (out / name).read_bytes() == (sweep / "figures" / name).read_bytes(), name


def test_plot_without_finished_runs_is_a_usage_error(sweep, capsys, tmp_path):
    """A copied sweep folder reads the runs beside it (none here), not those of the folder it was copied from."""
    copy = tmp_path / "archive" / "sweeps" / sweep.name
    shutil.copytree(sweep, copy)
    sweep = copy
    assert main(["plot", str(sweep)]) == 2
    said = capsys.readouterr().err
    assert "no finished runs yet" in said and f"reading the runs beside it, in {tmp_path / 'archive'}" in said
    assert not (sweep / "figures").exists()
    assert main(["report", str(sweep), "--html"]) == 0  # the page still shows the table and the runs' states
    page = (sweep / "summary.html").read_text()
    assert "No figures: no finished runs yet." in page and "<img" not in page and BASE in page


def test_plot_set_applies_to_sweep_files_only(sweep, capsys):
    assert main(["plot", str(sweep), "--set", "seeds=[0]"]) == 2
    assert "--set applies to a sweep file" in capsys.readouterr().err


# ---------------------------------------------------------------- an-lab report --wandb (offline)


def test_wandb_report_offline_writes_its_spec_and_says_how_to_publish(sweep, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["report", str(sweep), "--wandb", "--entity", "lab"]) == 0
    out = capsys.readouterr().out
    spec_path = sweep / "wandb-report.json"
    assert f"written to {spec_path}" in out and "WANDB_MODE=offline" in out
    assert f"an-lab report {sweep} --wandb --publish --entity lab --project an-lab-test" in out  # project: runs' config
    spec = json.loads(spec_path.read_text())
    assert (spec["group"], spec["entity"], spec["project"]) == ("known", "lab", "an-lab-test")
    report = spec["report"]
    assert report["project"] == {"name": "an-lab-test", "entityName": "lab"}
    nodes = list(walk(report))
    grids = [node for node in nodes if node.get("type") == "panel-grid"]
    assert len(grids) == 1
    (runset,) = grids[0]["metadata"]["runSets"]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "known", "disabled": False}
    ]
    assert [(key["section"], key["name"]) for key in runset["grouping"]] == [
        ("config", "model.value.an.pooling"),
        ("config", "model.value.an.activation"),
        ("config", "model.value.an.k"),
        ("config", "model.value.norm"),
    ]
    panels = grids[0]["metadata"]["panelBankSectionConfig"]["panels"]
    lines = [panel["config"] for panel in panels if panel["viewType"] == "Run History Line Plot"]
    bars = [panel["config"] for panel in panels if panel["viewType"] == "Bar Chart"]
    assert lines[0]["metrics"] == ["val_top1_err"] and lines[0]["xAxis"] == "epoch"
    assert len(bars) == 1 and bars[0]["metrics"] == ["val_top1_err"]
    markdown = [node["content"] for node in nodes if node.get("type") == "markdown-block"]
    table = render_table(load_manifest(sweep), "markdown")
    assert table in markdown
    assert "21.60 ± 0.14" in table and "21.85†" in table


def test_wandb_publish_without_a_network_fails_fast_and_keeps_the_spec(sweep, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    spec = tmp_path / "elsewhere" / "report.json"
    assert main(["report", str(sweep), "--wandb", "--publish", "--out", str(spec), "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "cannot publish the report: WANDB_MODE=offline" in err and str(spec) in err
    assert json.loads(spec.read_text())["report"]["displayName"].startswith("Sweep known")


def test_report_options_that_do_not_go_together(sweep, capsys):
    assert main(["report", str(sweep), "--html", "--publish"]) == 2
    assert "--publish goes with --wandb" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exactly one of --wandb / --html
        main(["report", str(sweep)])


# ---------------------------------------------------------------- an-lab sync (offline)


def _offline_data(sweep: Path) -> list[Path]:
    """An offline W&B folder for two runs, as WandbLogger(mode='offline') leaves them (content not needed)."""
    folders = []
    for run_id in ("an-0", "bn-1"):
        folder = sweep.parent.parent / run_id / "wandb" / "wandb" / f"offline-run-20260101_000000-{run_id}"
        folder.mkdir(parents=True)
        (folder / f"run-{run_id}.wandb").write_bytes(b"\0" * 64)
        folders.append(folder)
    return folders


def _sync(sweep: Path, env: dict[str, str], bound: float) -> subprocess.CompletedProcess:
    return an_lab(
        "sync",
        sweep,
        "--timeout",
        bound,
        cwd=ROOT,
        env=env,
        timeout=bound * 4 + 30,  # the test's own guard: a hang fails here instead of blocking the suite
    )


@pytest.mark.parametrize("case", ["offline mode", "no api key", "server down"])
def test_sync_without_a_network_ends_within_its_bound_with_a_clear_error(sweep, tmp_path, case):
    _offline_data(sweep)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    env.update(HOME=str(tmp_path), WANDB_ERROR_REPORTING="false")  # no ~/.netrc
    if case == "offline mode":
        env["WANDB_MODE"] = "offline"
        expected = "WANDB_MODE=offline is set"
    elif case == "no api key":
        expected = "no W&B API key"
    else:
        env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")  # nothing listens on port 9
        expected = "http://127.0.0.1:9 is not reachable"
    done = _sync(sweep, env, bound=10)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: cannot sync without W&B: {expected}" in done.stderr and "Traceback" not in done.stderr
    # the reason once (the error line), not once per run
    assert "not synced (offline)" not in done.stdout.replace("2 not synced (offline)", "")
    assert done.stderr.count(expected) == 1
    assert "BN [bn-0]: no offline data" in done.stdout and "2 not synced (offline)" in done.stdout


def test_a_hanging_command_is_stopped_at_the_bound_with_its_children():
    # like `wandb sync` without a network: the command waits forever, and a child it started holds the output open
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    status, output = run_bounded([sys.executable, "-c", script], timeout=10)  # room to print the pid when loaded
    assert status is None  # stopped at the bound, not run to its end
    child = int(output.split()[0])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the command's child {child} outlived the bound")
    assert run_bounded([sys.executable, "-c", "print('ok')"], timeout=20) == (0, "ok\n")


# ---------------------------------------------------------------- the HTML page


class _Table(HTMLParser):
    """The rows (cell texts) of the page's table of a given class."""

    def __init__(self, css_class: str):
        super().__init__()
        self.css_class = css_class
        self.rows: list[list[str]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._inside = self.css_class in (dict(attrs).get("class") or "").split()
        elif tag == "tr" and self._inside:
            self.rows.append([])
        elif tag in ("td", "th") and self._inside:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._inside = False
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


class _Dom(_Table):
    """The results table's rows (cell texts), the images of a page and any tag that loads something external."""

    def __init__(self):
        super().__init__("an-lab-results")
        self.images: list[dict] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("link", "script", "iframe") or any(
            name in ("src", "href") and value and not value.startswith(("data:", "#")) for name, value in attrs
        ):
            self.external.append(tag)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run_chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="an-lab-chromium-")
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_html_page_is_self_contained(sweep, capsys):
    assert main(["report", str(sweep), "--html"]) == 0
    page = (sweep / "summary.html").read_text()
    assert f"summary page: {sweep / 'summary.html'}" in capsys.readouterr().out
    dom = _Dom()
    dom.feed(page)
    assert dom.external == []
    assert [row[0] for row in dom.rows[1:]] == [BASE, MEAN, CONCAT, SOFTMAX, SMALL_K, "BN"]
    assert len(dom.images) == 3 and all(image["src"].startswith("data:image/png;base64,") for image in dom.images)


def _table(page: str, css_class: str) -> list[dict[str, str]]:
    parser = _Table(css_class)
    parser.feed(page)
    head, *rows = parser.rows
    return [dict(zip(head, row, strict=True)) for row in rows]


def test_html_page_has_description_base_config_and_hardware_per_run_and_no_machine_path(sweep, tmp_path):
    (sweep.parent.parent / "concat-0" / "result.json").write_text("{")  # damaged: its detail names the file
    assert main(["report", str(sweep), "--html"]) == 0
    page = (sweep / "summary.html").read_text()
    assert html.escape(DESCRIPTION) in page and DESCRIPTION not in page  # the user's text, escaped
    sections = _Table("config")
    sections.feed(page)
    assert [row[0] for row in sections.rows] == ["model", "data", "optim", "trainer"]  # wandb left out
    shown = dict(sections.rows)
    assert "name=resnet50" in shown["model"] and "an.k=(10,10,20,20)" in shown["model"]
    assert "image_size=16" in shown["data"] and "root=../../../data" in shown["data"]  # relative to the sweep folder
    assert "base_lr=0.4" in shown["optim"] and f"epochs={EPOCHS}" in shown["trainer"]
    assert "limit_train_batches=none" in shown["trainer"]
    runs = {row["run id"]: row for row in _table(page, "runs")}
    assert list(runs) == [run_id for *_, members in CELLS.values() for run_id, _, _ in members]
    first = runs["an-0"]
    assert (first["device"], first["precision"], first["wall time (h:mm:ss)"]) == (DEVICE, PRECISION, "1:02:05")
    assert (first["data"], first["epochs"], first["top-1 err (%)"], first["seed"]) == (
        "digits (16px)",
        "5",
        "21.50",
        "0",
    )
    assert (runs["bn-1"]["device"], runs["bn-1"]["wall time (h:mm:ss)"]) == (DEVICE, "0:00:10")
    assert (runs["mean-1"]["state"], runs["mean-1"]["wall time (h:mm:ss)"]) == ("failed", "")
    assert runs["concat-0"]["state"] == "corrupt" and runs["concat-0"]["detail"].startswith(
        "../../concat-0/result.json"
    )
    assert f"{DEVICE} (9 runs)" in page and "1:03:25 (h:mm:ss, summed over 9 done runs)" in page
    for folder in (tmp_path, sweep.parent.parent, sweep):  # no absolute path of this machine's folders
        assert str(folder) not in page


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_html_page_renders_in_headless_chromium(sweep, tmp_path):
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/test.sh installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    out = tmp_path / "page" / "summary.html"
    assert main(["report", str(sweep), "--html", "--out", str(out)]) == 0
    # A copy of the page with a probe writing each image's decoded width into the DOM (the page has no script).
    probe = (
        "<script>addEventListener('load', () => { for (const image of document.images) "
        "image.dataset.naturalWidth = image.naturalWidth; document.body.dataset.loaded = 'yes'; });</script>"
    )
    probed = out.with_name("probed.html")
    probed.write_text(out.read_text().replace("</body>", probe + "\n</body>"))
    done = _run_chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    assert 'data-loaded="yes"' in done.stdout, done.stdout[-2000:]
    rows = dom.rows
    assert rows[0][:3] == ["Method", "#Params (M)", "MACs (G)"]
    assert [row[0] for row in rows[1:]] == [BASE, MEAN, CONCAT, SOFTMAX, SMALL_K, "BN"]
    assert rows[1][3].startswith("21.60 ± 0.14") and rows[2][3].startswith("21.85†") and rows[3][3] == "—"
    assert len(dom.images) == 3
    for image in dom.images:
        assert int(image["data-natural-width"]) > 0
        prefix, data = image["src"].split(",", 1)
        assert prefix == "data:image/png;base64"
        decoded = _png(base64.b64decode(data))
        assert int(image["data-natural-width"]) == decoded.size[0]
    shot = tmp_path / "page.png"
    done = _run_chromium("--screenshot=" + str(shot), "--window-size=1200,2000", out.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    screenshot = _png(shot).convert("RGB")
    assert screenshot.size == (1200, 2000)
    colors = screenshot.getcolors(maxcolors=1200 * 2000)  # never None: as many slots as pixels
    assert colors is not None and len(colors) > 100  # text, table and a figure drawn


# ---------------------------------------------------------------- text from the manifest shown as typed

# Labels and tag values are the user's text: dollar signs, backslashes, _ and ^ must reach the
# figures verbatim (matplotlib would read "$...$" as mathtext and fail on an unknown command).
ODD_LABELS = {
    0: "$x$ base",  # valid mathtext: must stay "$x$", not become an italic x
    1: r"mean $\notacommand{x}$",  # invalid mathtext
    3: "soft_max^2 {hs}",
    5: r"BN $\notacommand{y}$",  # the baseline: its dashed line's annotation
}
ODD_K = r"$\notacommand{k}$"  # the k cell's tag value: an x tick label


@pytest.fixture
def odd_sweep(sweep) -> Path:
    """The sweep with user text that looks like mathtext in its labels and a tag value."""
    manifest = json.loads((sweep / "manifest.json").read_text())
    for cell in manifest["cells"]:
        cell["label"] = ODD_LABELS.get(cell["index"], cell["label"])
        if cell["index"] == 4:
            cell["tags"] = [tag if not tag.startswith("k=") else f"k={ODD_K}" for tag in cell["tags"]]
    (sweep / "manifest.json").write_text(json.dumps(manifest))
    return sweep


def _svg_texts(data: bytes) -> list[str]:
    """The text of every <text> element of an SVG figure (matplotlib writes plain text as one element)."""
    root = ElementTree.fromstring(data)
    return ["".join(element.itertext()) for element in root.iter("{http://www.w3.org/2000/svg}text")]


def test_labels_that_look_like_mathtext_plot_and_report_as_typed(odd_sweep, tmp_path):
    figures = tmp_path / "figures"
    done = an_lab("plot", odd_sweep, "--out", figures, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert sorted(path.name for path in figures.iterdir()) == sorted(FIGURES)
    for stem in STEMS:
        _png(figures / f"{stem}.png")
        _pdf(figures / f"{stem}.pdf")
        _svg(figures / f"{stem}.svg")
    page = tmp_path / "summary.html"
    done = an_lab("report", odd_sweep, "--html", "--out", page, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    dom = _Dom()
    dom.feed(page.read_text(encoding="utf-8"))
    labels = [ODD_LABELS[0], ODD_LABELS[1], CONCAT, ODD_LABELS[3], SMALL_K, ODD_LABELS[5]]
    assert [row[0] for row in dom.rows[1:]] == labels  # the results table: the labels as typed
    assert len(dom.images) == 3 and all(image["src"].startswith("data:image/png;base64,") for image in dom.images)


def test_figures_draw_user_text_verbatim_not_as_mathtext(odd_sweep):
    drawn = render_figures(load_manifest(odd_sweep), image_format="svg")
    assert sorted(drawn) == ["error_by_axis.svg", "params_vs_error.svg", "val_curves.svg"]
    texts = {name: _svg_texts(data) for name, data in drawn.items()}
    # mathtext would have been drawn glyph by glyph (or raised): whole strings show it was drawn as plain text
    curves = texts["val_curves.svg"]
    assert f"{ODD_LABELS[0]} (n=2): 21.60%" in curves and f"{ODD_LABELS[1]} (n=1 of 2): 21.85%" in curves
    assert f"{ODD_LABELS[3]} (n=2): 22.20%" in curves and f"{ODD_LABELS[5]} (n=2): 23.01%" in curves
    scatter = texts["params_vs_error.svg"]
    assert f"{ODD_LABELS[1]} (n=1 of 2)  21.85%" in scatter and f"{ODD_LABELS[5]} (n=2)  23.01%" in scatter
    bars = texts["error_by_axis.svg"]
    assert ODD_K in bars and f"{ODD_LABELS[5]} 23.01" in bars


# ---------------------------------------------------------------- a full disk or a read-only folder

WRITERS = {
    "plot": ("plot", "--out", "figures"),
    "report-html": ("report", "--html", "--out", "summary.html"),
    "report-wandb": ("report", "--wandb", "--out", "wandb-report.json"),
}


def _write(sweep: Path, writer: str, folder: Path) -> subprocess.CompletedProcess:
    """The real command writing its output into `folder` (offline: the W&B spec is only written)."""
    command, *options, target = WRITERS[writer]
    env = {**os.environ, "WANDB_MODE": "offline"}
    return an_lab(command, sweep, *options, folder / target, cwd=ROOT, env=env, timeout=300)


def _fill(disk) -> None:
    """Fill the full_disk fixture's file system; its filler's closing flush can fail with ENOSPC once it is full."""
    with contextlib.suppress(OSError):
        disk.fill()
    assert os.statvfs(disk.path).f_bavail == 0


def _assert_one_clear_error(done: subprocess.CompletedProcess, path: Path, reason: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == "", done.stdout + done.stderr
    message = done.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message  # one paragraph
    assert str(path) in message and reason in message, message


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writing_into_a_read_only_folder_is_one_clear_error(sweep, read_only_dir, writer):
    done = _write(sweep, writer, read_only_dir)
    _assert_one_clear_error(done, read_only_dir / WRITERS[writer][-1], "Read-only file system")
    assert os.listdir(read_only_dir) == []


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_writing_onto_a_full_disk_is_one_clear_error_and_leaves_no_temporary_file(sweep, full_disk, writer):
    _fill(full_disk)
    done = _write(sweep, writer, full_disk.path)
    _assert_one_clear_error(done, full_disk.path / WRITERS[writer][-1], "No space left on device")
    assert os.listdir(full_disk.path) == [".filler"]  # no temporary file, and no figures folder left empty


@pytest.mark.parametrize("writer", ["report-html", "report-wandb"])
def test_a_failed_rewrite_keeps_the_previous_file(sweep, full_disk, writer, tmp_path):
    target = full_disk.path / WRITERS[writer][-1]
    if writer == "report-wandb":  # a real previous specification (small enough for the 256 KiB disk)
        assert _write(sweep, writer, full_disk.path).returncode == 0
    else:  # the page embeds three figures and does not fit: a stand-in previous page
        target.write_text("<!DOCTYPE html>\n<p>the previous summary page</p>\n", encoding="utf-8")
    before = target.read_bytes()
    _fill(full_disk)
    done = _write(sweep, writer, full_disk.path)
    _assert_one_clear_error(done, target, "No space left on device")
    assert target.read_bytes() == before
    assert sorted(os.listdir(full_disk.path)) == sorted([".filler", target.name])


def test_a_failed_plot_keeps_the_previous_figures(sweep, full_disk, tmp_path):
    # the three figures do not fit on the 256 KiB disk together: a real previous figure, copied there
    assert main(["plot", str(sweep), "--out", str(tmp_path / "before")]) == 0
    figures = full_disk.path / "figures"
    figures.mkdir()
    shutil.copyfile(tmp_path / "before" / "error_by_axis.png", figures / "error_by_axis.png")
    before = (figures / "error_by_axis.png").read_bytes()
    _fill(full_disk)
    done = _write(sweep, "plot", full_disk.path)
    _assert_one_clear_error(done, figures, "No space left on device")
    assert os.listdir(figures) == ["error_by_axis.png"]
    assert (figures / "error_by_axis.png").read_bytes() == before
    _png(figures / "error_by_axis.png")


# ---------------------------------------------------------------- no torch


HEAVY = {"torch", "torchvision", "lightning", "pytorch_lightning", "torchmetrics"}


@pytest.mark.parametrize(
    "command",
    [("plot", "--out", "{tmp}/figures"), ("report", "--html", "--out", "{tmp}/s.html"), ("report", "--wandb")],
    ids=["plot", "report-html", "report-wandb"],
)
def test_commands_import_no_torch(sweep, tmp_path, command):
    args = [part.format(tmp=tmp_path) for part in command]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = an_lab(args[0], sweep, *args[1:], python=("-X", "importtime"), cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert modules, "no -X importtime output"
    assert [module for module in modules if module.split(".")[0] in HEAVY] == []
    if args[0] == "plot" or "--html" in args:
        assert not [module for module in modules if module.split(".")[0] in ("wandb", "wandb_workspaces")]
