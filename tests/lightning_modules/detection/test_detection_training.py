"""Mask R-CNN training through the real Lightning Trainer on a generated COCO-format folder: the iteration stream,
the schedule, result.json's AP, exact resume after SIGKILL, backbone weights from a classification run."""

import json
import shutil
from collections import Counter

import pytest
import torch
from conftest import an_lab, kill_when, write_config

from an_lab.config import load_config
from an_lab.errors import UsageError
from an_lab.identity import run_dir
from an_lab.lightning_modules.data.coco_shapes import SHAPE_CLASSES, write_shapes_dataset
from an_lab.lightning_modules.detection.data import IterationBatches, ShardedBatches
from an_lab.lightning_modules.detection.detector import detection_lr, load_backbone
from an_lab.metrics import TASK_METRICS
from an_lab.models.detection import build_mask_rcnn
from an_lab.profiling import DETECTOR_BOX_ROIS, count_detector_macs, detector_image

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SMALL_DETECTOR = {
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "box_batch_size_per_image": 16,
    "box_detections_per_img": 10,
}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco") / "shapes"
    write_shapes_dataset(root, train_images=12, val_images=6, image_size=64, seed=3)
    return root


def detection_tree(root, output_dir, *, norm="gn", iterations=4, detector=None, **trainer) -> dict:
    model = {"name": "resnet50", "norm": norm, "head_norm": "none", "detector_options": SMALL_DETECTOR}
    return {
        "task": "detection",
        "model": model if detector is None else {**model, "detector": detector},
        "data": {"name": "coco", "root": str(root), "image_size": 64, "batch_size": 2, "num_workers": 0},
        "optim": {"base_lr": 0.02, "warmup_iterations": 2, "clip_grad_norm": 35.0},
        "trainer": {"iterations": iterations, "checkpoint_every": 2, **trainer},
        "wandb": {"mode": "disabled"},
        "output_dir": str(output_dir),
    }


# -- the iteration stream and the schedule (no training) -------------------------------------------------------


def _stream(groups, batch, seed, stretch, epochs, rank=0, world=1):
    sampler = IterationBatches(groups, batch, seed=seed, stretch=stretch, rank=rank, world_size=world)
    batches = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        epoch_batches = list(sampler)
        assert len(epoch_batches) == len(sampler) == stretch
        batches += epoch_batches
    return batches


def test_the_training_stream_does_not_depend_on_where_it_is_cut():
    groups = [i % 3 == 0 for i in range(23)]
    whole = _stream(groups, 4, seed=7, stretch=12, epochs=1)
    assert _stream(groups, 4, seed=7, stretch=3, epochs=4) == whole
    assert _stream(groups, 4, seed=8, stretch=12, epochs=1) != whole
    # every batch holds one aspect-ratio group, and 12 batches of 4 cover the 23 images about twice
    for batch in whole:
        assert len(batch) == 4 and len({groups[index] for _, index in batch}) == 1
    seen = Counter(index for batch in whole for _, index in batch)
    assert set(seen) == set(range(23)) and max(seen.values()) <= 3
    # the stream position travels with each index (it seeds the sample's augmentation)
    assert [batch[0][0] for batch in whole] == list(range(12))


def test_ranks_split_each_global_batch_without_overlap():
    groups = [0] * 10 + [1] * 9
    single = _stream(groups, 4, seed=1, stretch=5, epochs=1)
    ranks = [_stream(groups, 2, seed=1, stretch=5, epochs=1, rank=r, world=2) for r in range(2)]
    for position in range(5):
        assert ranks[0][position] + ranks[1][position] == single[position]
    sharded = [list(ShardedBatches(11, 2, rank, 3)) for rank in range(3)]
    flat = sorted(index for batches in sharded for batch in batches for index in batch)
    assert flat == list(range(11))


def test_the_papers_learning_rate_schedule():
    # 1x: warm-up from a third over 500 iterations, 10x drops at 60k and 80k of 90k
    assert detection_lr(0, 90_000, 500) == pytest.approx(1 / 3)
    assert detection_lr(250, 90_000, 500) == pytest.approx(1 / 3 + (2 / 3) * 0.5)
    assert detection_lr(500, 90_000, 500) == 1.0
    assert detection_lr(59_999, 90_000, 500) == 1.0
    assert detection_lr(60_000, 90_000, 500) == pytest.approx(0.1)
    assert detection_lr(79_999, 90_000, 500) == pytest.approx(0.1)
    assert detection_lr(80_000, 90_000, 500) == pytest.approx(0.01)
    assert detection_lr(120_000, 180_000, 500) == pytest.approx(0.1)
    assert detection_lr(160_000, 180_000, 500) == pytest.approx(0.01)
    # the cascades' 20e (optim.lr_steps 0.8, 0.95 of 146,600): drops after epochs 16 and 19 of 7,330 iterations
    steps = (0.8, 0.95)
    assert detection_lr(117_279, 146_600, 500, steps) == 1.0 and detection_lr(117_280, 146_600, 500, steps) == 0.1
    assert detection_lr(139_269, 146_600, 500, steps) == 0.1
    assert detection_lr(139_270, 146_600, 500, steps) == pytest.approx(0.01)


# -- real training ----------------------------------------------------------------------------------------------


@pytest.mark.slow
# HTC holds every part of Cascade Mask R-CNN plus its mask flow: its resume covers the cascade's state too (the suite's
# 20-minute budget keeps one cascade here; tests/models/test_detection_cascade.py trains both a step)
@pytest.mark.parametrize("detector", [None, "htc"])
def test_a_detection_run_writes_its_ap_and_resumes_exactly_after_sigkill(tmp_path, coco_root, detector):
    tree = detection_tree(coco_root, tmp_path / "killed", detector=detector)
    killed = write_config(tmp_path / "killed.yaml", tree)
    directory = run_dir(load_config(killed))
    kill_when(killed, (directory / "last.ckpt").exists)
    assert not (directory / "result.json").exists()
    resumed = an_lab("train", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {directory / 'last.ckpt'}" in resumed.stdout

    tree["output_dir"] = str(tmp_path / "straight")
    straight = an_lab("train", write_config(tmp_path / "straight.yaml", tree), "--quiet")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = json.loads((directory / "result.json").read_text())
    second = json.loads((tmp_path / "straight" / directory.name / "result.json").read_text())
    assert first["task"] == "detection" and first["iterations"] == 4 and first["epochs"] == 2
    assert set(TASK_METRICS["detection"]) <= set(first["final"])
    assert all(0 <= first["final"][name] <= 100 for name in ("bbox_ap", "bbox_ap50", "segm_ap", "segm_ap50"))
    assert first["final"] == second["final"] and first["best"] == second["best"]
    weights = [
        torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
        for folder in (directory, tmp_path / "straight" / directory.name)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.mark.parametrize("detector", ["cascade_mask_rcnn"])  # HTC goes through `an-lab train` in the resume test
def test_a_cascade_trains_through_the_same_module_and_reports_its_stage_losses(tmp_path, coco_root, detector):
    """Two iterations of Cascade Mask R-CNN / HTC through `an-lab train` on the generated shapes: the stage losses
    are logged, result.json holds the AP, the parameters and the MACs of the cascade."""
    tree = detection_tree(coco_root, tmp_path, iterations=2, detector=detector)
    config = write_config(tmp_path / "run.yaml", tree)
    done = an_lab("train", config, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    directory = run_dir(load_config(config))
    result = json.loads((directory / "result.json").read_text())
    assert result["iterations"] == 2 and all(0 <= result["final"][name] <= 100 for name in ("bbox_ap", "segm_ap"))
    reference = build_mask_rcnn("resnet50", num_classes=len(SHAPE_CLASSES) + 1, detector=detector, backbone_norm="gn")
    assert result["params"] == sum(p.numel() for p in reference.parameters())
    # MACs at the run's 64 x 107 image (padded to 64 x 128), 1000 box RoIs and 100 mask RoIs (profiling)
    assert detector_image(64) == (64, 128)
    assert result["macs"] == count_detector_macs(reference, 64, 128) > 3 * DETECTOR_BOX_ROIS * 256 * 49 * 1024
    logged = (directory / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {f"train_loss_{part}_s{stage}" for part in ("classifier", "box_reg", "mask") for stage in range(3)} <= set(
        logged
    )


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, data_root):
    """A ResNet-50 BN classification run of 2 steps on the digits, as a detection backbone's source."""
    output = tmp_path_factory.mktemp("classification")
    tree = {
        "model": {"name": "resnet50", "norm": "bn"},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 16, "num_workers": 0},
        "optim": {"warmup_epochs": 0},
        "trainer": {"epochs": 1, "limit_train_batches": 2},
        "wandb": {"mode": "disabled"},
        "output_dir": str(output),
    }
    done = an_lab("train", write_config(output / "run.yaml", tree), "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir(load_config(output / "run.yaml"))


@pytest.mark.parametrize("detector", ["mask_rcnn", "cascade_mask_rcnn", "htc"])
def test_backbone_weights_come_from_a_classification_run(classification_run, detector):
    detector = build_mask_rcnn("resnet50", num_classes=5, backbone_norm="bn_frozen", detector=detector)
    assert load_backbone(detector, str(classification_run)) == ([], [])
    state = torch.load(classification_run / "last.ckpt", weights_only=True)["state_dict"]
    body = detector.backbone.body
    assert torch.equal(body.layer3[1].conv2.weight, state["model.layer3.1.conv2.weight"])
    assert torch.equal(body.layer2[0].bn1.running_var, state["model.layer2.0.bn1.running_var"])
    assert torch.equal(body.bn1.weight, state["model.bn1.weight"])


def test_a_backbone_that_does_not_fit_is_refused_naming_the_keys(classification_run, tmp_path):
    detector = build_mask_rcnn("resnet50", num_classes=5, backbone_norm="an")
    with pytest.raises(UsageError, match=r"do not fit this backbone: \d+ backbone key\(s\) missing \(backbone\.body"):
        load_backbone(detector, str(classification_run))
    with pytest.raises(UsageError, match=r"do not fit this backbone: \d+ backbone key\(s\) missing \(backbone\.body"):
        load_backbone(build_mask_rcnn("aognet_12m", num_classes=5, detector="htc"), str(classification_run))
    # listed keys may be left out: the AN layers' own parameters and the BN affine they replace
    patterns = ("*.bn2.weight", "*.bn2.bias", "*.bn2.attention.*", "*.bn2.gamma", "*.bn2.beta")
    missing, unexpected = load_backbone(detector, str(classification_run), patterns)
    assert missing and unexpected
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes((classification_run / "last.ckpt").read_bytes()[:5000])
    with pytest.raises(UsageError, match="is not a readable checkpoint") as caught:
        load_backbone(detector, str(damaged))
    assert "weights_only" not in str(caught.value)  # torch's advice to unpickle: wrong for a damaged file
    unfinished = tmp_path / "unfinished"  # a copy of the run without its result: half trained, no backbone
    shutil.copytree(classification_run, unfinished)
    (unfinished / "result.json").unlink()
    with pytest.raises(UsageError, match=r"that classification run is not done \(interrupted"):
        load_backbone(detector, str(unfinished))
    with pytest.raises(UsageError, match="no such run folder or checkpoint file"):
        load_backbone(detector, str(tmp_path / "absent"))
    with pytest.raises(UsageError, match=r"holds no last\.ckpt"):
        load_backbone(detector, str(tmp_path))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("detector", [None, "htc"])
def test_two_processes_train_one_stream_and_evaluate_the_whole_split(tmp_path, coco_root, detector):
    """DDP over gloo with two CPU processes: each takes its half of every global batch, the evaluation gathers both
    halves of the validation split on every rank before COCOeval, and rank 0 writes the one result. HTC too (every
    head of every stage takes part in each step: DDP needs no unused-parameter search)."""
    tree = detection_tree(coco_root, tmp_path / "ddp", iterations=2, detector=detector)
    tree["trainer"].update(devices=2, accelerator="cpu")
    tree["data"]["batch_size"] = 1
    config = write_config(tmp_path / "ddp.yaml", tree)
    done = an_lab("train", config, "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir(load_config(config)) / "result.json").read_text())
    assert result["device"].startswith("2 x cpu") and result["iterations"] == 2
    assert all(0 <= result["final"][name] <= 100 for name in ("bbox_ap", "segm_ap"))


@pytest.mark.parametrize("detector", ["mask_rcnn", "cascade_mask_rcnn"])
def test_model_an_impl_reaches_every_an_layer_of_a_detector(tmp_path, detector):
    from an_lab.config import RunConfig
    from an_lab.lightning_modules.detection.detector import build_detector
    from an_lab.nn import AttentiveNorm2d

    tree = detection_tree(tmp_path / "coco", tmp_path / "runs", norm="an")
    tree["model"].update(name="mobilenet_v2", detector=detector, an={"impl": "torch"})
    layers = [m for m in build_detector(RunConfig.model_validate(tree), 5).modules() if isinstance(m, AttentiveNorm2d)]
    assert layers and all(layer.impl == "torch" for layer in layers)


@pytest.mark.parametrize(("trainable_layers", "frozen_blocks"), [(None, 7), (6, 0), (0, 19)])
def test_model_trainable_layers_reach_the_detectors_backbone(tmp_path, trainable_layers, frozen_blocks):
    # MobileNet-v2's features 0-18: 3 (the default) freezes features 0-6, 6 trains all of them, 0 none.
    from an_lab.config import RunConfig
    from an_lab.lightning_modules.detection.detector import build_detector

    tree = detection_tree(tmp_path / "coco", tmp_path / "runs", norm="bn_frozen")
    tree["model"].update(name="mobilenet_v2", trainable_layers=trainable_layers)
    with torch.device("meta"):
        features = build_detector(RunConfig.model_validate(tree), 5).backbone.body
    frozen = [name for name, block in features.named_children() if not any(p.requires_grad for p in block.parameters())]
    assert frozen == [str(index) for index in range(frozen_blocks)]
