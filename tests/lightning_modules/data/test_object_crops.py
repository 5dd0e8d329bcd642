"""Classification on a COCO-format set's objects (data.name shapes in a classification run)."""

import json

import pytest
from conftest import an_lab, write_config

from an_lab.config import load_config
from an_lab.data_sources import annotation_path
from an_lab.identity import run_dir
from an_lab.lightning_modules.data.coco_shapes import SHAPE_CLASSES, SHAPES_SETTINGS, write_shapes_dataset
from an_lab.lightning_modules.data.object_crops import CONTEXT, ObjectCrops

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops") / "shapes"
    write_shapes_dataset(root, **SHAPES_SETTINGS)  # data.name shapes: the set of these settings only
    return root


def test_one_crop_per_object_around_its_box_labelled_by_category(shapes):
    crops = ObjectCrops(shapes, "train2017")
    content = json.loads(annotation_path(shapes, "train2017").read_text())
    annotations = sorted(content["annotations"], key=lambda a: a["id"])
    assert len(crops) == len(annotations) > 100 and crops.classes == list(SHAPE_CLASSES)
    images = {image["id"]: image for image in content["images"]}
    for index in (0, len(crops) // 2, len(crops) - 1):
        crop, label = crops[index]
        annotation = annotations[index]
        assert label == annotation["category_id"] - 1  # shapes' category ids are 1..4, labels 0..3
        width, height = annotation["bbox"][2:]
        side = CONTEXT * max(width, height)
        image = images[annotation["image_id"]]
        # square around the box, cut only where it leaves the image
        assert crop.width <= round(side) + 1 and crop.height <= round(side) + 1
        assert crop.width >= min(round(side), image["width"]) // 2 and crop.height >= min(width, height)


@pytest.mark.slow
def test_a_classification_run_trains_on_the_crops_and_writes_its_result(tmp_path, shapes):
    tree = {
        "model": {"name": "cifar_resnet20", "norm": "bn"},
        "data": {"name": "shapes", "root": str(shapes), "image_size": 16, "batch_size": 16, "num_workers": 0},
        "optim": {"warmup_epochs": 0},
        "trainer": {"epochs": 2, "limit_train_batches": 4},
        "wandb": {"mode": "disabled"},
        "output_dir": str(tmp_path / "runs"),
    }
    config = write_config(tmp_path / "crops.yaml", tree)
    done = an_lab("train", config, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir(load_config(config)) / "result.json").read_text())
    assert 0 <= result["final"]["top1_err"] <= 100 and result["epochs"] == 2
