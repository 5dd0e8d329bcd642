"""The shipped sweeps of the cascades and the AOGNet detectors: the papers' rows (first paper Table 3, second paper
Tables 4 and 5), each backbone resolved to the run of sweeps/table2.yaml with the same network and norm."""

from pathlib import Path

from an_lab.sweeps.expand import expand
from an_lab.sweeps.manifest import find_sweep
from an_lab.sweeps.spec import load_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def _rows(name: str, root: Path) -> dict[str, object]:
    classification = {
        (run.config.model.name, run.config.model.norm): run.run_id for run in expand(load_sweep(SWEEPS / "table2.yaml"))
    }
    rows = {}
    for run in expand(load_sweep(SWEEPS / f"{name}.yaml", [f"base.data.root={root}"]), find=find_sweep):
        model = run.config.model
        source = "bn" if model.norm == "bn_frozen" else model.norm
        assert Path(model.backbone_init).name == classification[(model.name, source)], run.cell.label
        assert run.config.task == "detection" and run.config.data.name == "coco"
        assert model.head_norm == "none" or (model.head_norm == "an_gn" and name == "detection-aognet")
        rows[run.cell.label] = run.config
    return rows


def test_the_cascade_tables_run_the_20e_schedule_on_the_papers_rows(tmp_path):
    table3 = _rows("detection-table3", tmp_path)
    assert {label: (c.model.detector, c.model.name, c.model.norm) for label, c in table3.items()} == {
        "Cascade Mask R-CNN BN*": ("cascade_mask_rcnn", "resnet101", "bn_frozen"),
        "Cascade Mask R-CNN AN (w/ BN)": ("cascade_mask_rcnn", "resnet101", "an"),
        "HTC BN*": ("htc", "resnet101", "bn_frozen"),
        "HTC AN (w/ BN)": ("htc", "resnet101", "an"),
    }
    table5 = _rows("detection-table5", tmp_path)
    assert {label: (c.model.name, c.model.norm) for label, c in table5.items()} == {
        "Cascade Mask R-CNN ResNet-101 BN*": ("resnet101", "bn_frozen"),
        "Cascade Mask R-CNN ResNet-101 AN (w/ BN)": ("resnet101", "an"),
        "Cascade Mask R-CNN AOGNet-40M BN*": ("aognet_40m", "bn_frozen"),
        "Cascade Mask R-CNN AOGNet-40M AN (w/ BN)": ("aognet_40m", "an"),
    }
    for config in [*table3.values(), *table5.values()]:
        assert config.recipe == "cascade_mask_rcnn_20e" and config.model.box_head == "2fc"
        # 20 epochs of 7,330 iterations, 10x drops after epochs 16 and 19
        assert config.trainer.iterations == 146_600 and config.optim.lr_steps == (0.8, 0.95)
        assert [round(config.trainer.iterations * f) for f in config.optim.lr_steps] == [16 * 7_330, 19 * 7_330]
    assert all(c.model.detector == "cascade_mask_rcnn" for c in table5.values())


def test_the_aognet_rows_of_the_second_papers_table_4(tmp_path):
    rows = _rows("detection-aognet", tmp_path)
    assert {label: (c.model.name, c.model.norm, c.model.head_norm) for label, c in rows.items()} == {
        "AOGNet-12M BN*": ("aognet_12m", "bn_frozen", "none"),
        "AOGNet-12M AN (w/ BN)": ("aognet_12m", "an", "none"),
        "AOGNet-12M AN (w/ BN) + AN (w/ GN) heads": ("aognet_12m", "an", "an_gn"),
        "AOGNet-40M BN*": ("aognet_40m", "bn_frozen", "none"),
        "AOGNet-40M AN (w/ BN)": ("aognet_40m", "an", "none"),
        "AOGNet-40M AN (w/ BN) + AN (w/ GN) heads": ("aognet_40m", "an", "an_gn"),
    }
    assert all(
        c.model.detector is None and c.model.box_head == "4conv1fc" and c.trainer.iterations == 180_000
        for c in rows.values()
    )
