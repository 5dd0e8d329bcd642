"""Run configs: recipes, overrides, identity, and one clear error per mistake (exit 2, nothing started)."""

import typing

import pytest
from conftest import an_lab, write_config
from pydantic import ValidationError

from an_lab.config import RECIPES, RecipeName, RunConfig, load_config
from an_lab.errors import UsageError
from an_lab.identity import run_id


def test_recipes_are_presets_that_keys_override(tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml", {"recipe": "sota", "trainer": {"epochs": 3}}))
    assert config.model.stem == "deep" and config.optim.label_smoothing == 0.1 and config.optim.mixup_alpha == 0.2
    assert config.trainer.epochs == 3 and config.data.image_size == 224
    assert load_config(None, ["recipe=mobile"]).optim.weight_decay == 4e-5
    assert set(RECIPES) >= {"vanilla", "sota", "mobile", "cifar", "aognet", "aognet_sota"}
    # The AOGNet authors' configurations: the ResNet recipe without zero-init, 256 images per GPU, no ResNet-D stem.
    aognet = load_config(None, ["recipe=aognet_sota", "model.name=aognet_40m", "data.batch_size=128"])
    assert aognet.model.zero_init_residual is False and aognet.model.stem == "plain" and aognet.trainer.epochs == 200
    assert aognet.optim.label_smoothing == 0.1 and aognet.data.batch_size == 128


def test_the_recipe_names_are_the_keys_of_recipes():
    """RecipeName is derived from RECIPES, so a recipe added there cannot be forgotten in the config's type: every
    key is accepted (by load_config and by RunConfig itself), and an unknown name is refused with the list of them."""
    names = tuple(RECIPES)
    assert typing.get_args(RecipeName) == names
    for name in names:
        assert load_config(None, [f"recipe={name}"]).recipe == name
        assert RunConfig.model_validate({"recipe": name}).recipe == name
    with pytest.raises(UsageError) as refused:
        load_config(None, ["recipe=fancy"])
    assert str(refused.value).endswith(f"recipe 'fancy' is not valid; choose one of {', '.join(names)}")
    with pytest.raises(ValidationError) as invalid:
        RunConfig.model_validate({"recipe": "fancy"})
    (error,) = invalid.value.errors()
    assert error["type"] == "literal_error"
    assert error["ctx"]["expected"] == ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"


def test_gn_backed_an_takes_the_a1_head_unless_a_head_is_named():
    assert load_config(None, ["model.norm=an_gn"]).model.an.head == "a1"
    assert load_config(None, ["model.norm=an_gn", "model.an.head=a2"]).model.an.head == "a2"
    # AN on BN keeps a2, and its run ids are those of before (the default did not change for it).
    plain = load_config(None, ["model.norm=an"])
    assert plain.model.an.head == "a2" and run_id(plain) == run_id(load_config(None, ["model.an.head=a2"]))


def test_overrides_and_identity(tmp_path):
    base = load_config(None)
    changed = load_config(None, ["model.an.pooling=mean", "model.an.k=[5, 5, 10]"])
    assert changed.model.an.pooling == "mean" and changed.model.an.k == (5, 5, 10)
    assert run_id(changed) != run_id(base)
    # Where a run writes and how it logs does not change what it computes.
    assert run_id(load_config(None, ["output_dir=/elsewhere", "wandb.mode=online", "data.num_workers=7"])) == run_id(
        base
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.an.poolng=mean"], "unknown key 'model.an.poolng'; did you mean pooling?"),
        (["model.an.pooling=max"], "model.an.pooling: 'max' is not valid; choose one of 'rsd', 'mean' or 'concat'"),
        (["model.an.impl=cuda"], "model.an.impl: 'cuda' is not valid; choose one of 'auto', 'triton' or 'torch'"),
        (["model.an.k=[10, 20]"], "k=(10, 20) has 2 entries but cifar_resnet20 has 3 stages"),
        (["model.name=resnet49"], "model.name: 'resnet49' is not valid"),
        (
            ["recipe=fancy"],
            "recipe 'fancy' is not valid; choose one of vanilla, sota, mobile, aognet, aognet_sota, cifar, "
            "mask_rcnn_1x, mask_rcnn_2x, cascade_mask_rcnn_20e, custom",
        ),
        (["trainer.epochs=0"], "trainer.epochs: Input should be greater than or equal to 1"),
        (["model.norm=se"], "norm 'se' and stem 'deep' apply to torchvision ResNets only"),
        (["justakey"], "write KEY=VALUE"),
        # the detection keys of the cascades: every hostile value one paragraph
        (["recipe=cascade_mask_rcnn_20e", "model.detector=yolo"], "model.detector: 'yolo' is not valid; choose one"),
        (["recipe=cascade_mask_rcnn_20e", "model.detector=[htc]"], "model.detector: ['htc'] is not valid"),
        (["recipe=cascade_mask_rcnn_20e", "optim.lr_steps=[0.95, 0.8]"], "optim.lr_steps: give 1 to 8 increasing"),
        (["recipe=cascade_mask_rcnn_20e", "optim.lr_steps=[0, 1]"], "each between 0 and 1"),
        (["recipe=cascade_mask_rcnn_20e", "optim.lr_steps=[.nan]"], "optim.lr_steps.0: Input should be a finite"),
        (["recipe=cascade_mask_rcnn_20e", "optim.lr_steps=[true]"], "optim.lr_steps.0: expected a number"),
        (["recipe=cascade_mask_rcnn_20e", "model.name=densenet161"], "a detection backbone is one of resnet50"),
        (["optim.lr_steps=[0.5]"], "optim.lr_steps is a detection key"),
    ],
)
def test_config_mistakes_are_one_clear_message(overrides, message):
    with pytest.raises(UsageError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


def test_cli_reports_config_and_data_errors_with_exit_2_before_building_anything(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  name: [unclosed\n")
    result = an_lab("train", broken)
    assert result.returncode == 2 and f"{broken}: not valid YAML at line 3, column 1" in result.stderr
    assert "Traceback" not in result.stderr

    tree = {"data": {"name": "imagefolder", "root": str(tmp_path / "nowhere")}, "output_dir": str(tmp_path / "runs")}
    result = an_lab("train", write_config(tmp_path / "c.yaml", tree))
    assert result.returncode == 2
    assert "has no class folders in train/" in result.stderr and "/train/<class>/<image>" in result.stderr
    assert not (tmp_path / "runs").exists()

    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    tree["data"]["root"] = str(tmp_path / "empty")
    result = an_lab("train", write_config(tmp_path / "c.yaml", tree))
    assert result.returncode == 2 and "hold no images" in result.stderr

    result = an_lab("train", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path}")
    assert result.returncode == 2 and "set data.download: true to fetch it" in result.stderr


DETECTION = ["recipe=mask_rcnn_1x"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.name=coco"], "data.name 'coco' is a detection data set (set task: detection)"),
        (["model.head_norm=gn"], "model.head_norm is a detection key (set task: detection to use it)"),
        (["trainer.iterations=10"], "trainer.iterations is a detection key"),
        (["model.backbone_init=runs/x"], "model.backbone_init is a detection key"),
        (["model.norm=bn_frozen"], "model.norm 'bn_frozen' is a detection backbone norm; for classification choose"),
        ([*DETECTION, "model.name=cifar_resnet20"], "a detection backbone is one of resnet50, resnet101, mobilenet_v2"),
        ([*DETECTION, "model.norm=sn"], "a detection backbone's norm is one of bn_frozen, gn, syncbn, an"),
        ([*DETECTION, "data.name=digits"], "detection reads coco or shapes"),
        ([*DETECTION, "trainer.epochs=12"], "trainer.epochs: detection trains by iterations"),
        ([*DETECTION, "optim.mixup_alpha=0.2"], "optim.mixup_alpha is a classification key"),
        ([*DETECTION, "model.head_k=5"], "model.head_k is about AN in the heads: it needs model.head_norm: an_gn"),
        ([*DETECTION, "model.head_norm=an_gn", "model.head_k=[1, 2]"], "head_k: give one K or 4"),
        ([*DETECTION, "trainer.eval_every=7000"], "trainer.eval_every (7000) must divide trainer.iterations (90000)"),
        ([*DETECTION, "trainer.checkpoint_every=3000"], "checkpoint_every (3000) must divide trainer.eval_every"),
        ([*DETECTION, "data.val=../elsewhere"], "data.val: must name one folder under data.root"),
        ([*DETECTION, "model.detector_options={rpn_top: 5}"], "unknown detector option(s) rpn_top; choose among"),
        ([*DETECTION, "model.detector_options={box_detections_per_img: 0}"], "model.detector_options.box_detections"),
        ([*DETECTION, "model.backbone_init={sweep: a}"], "model.backbone_init"),
        ([*DETECTION, "model.trainable_layers=6"], "model.trainable_layers 6: resnet50 has 5 stages; give 0 to 5"),
        (["model.trainable_layers=5"], "model.trainable_layers is a detection key"),
        (
            [*DETECTION, "model.head_norm=gn", "model.detector_options={fpn_channels: 48}"],
            "fpn_channels 48: model.head_norm 'gn' normalizes the FPN and heads in 32 groups; give a multiple of 32",
        ),
        ([*DETECTION, "model.detector_options={fpn_channels: 4}"], "fpn_channels is 4; give 8 to 4096"),
        ([*DETECTION, "model.detector_options={box_fc_channels: 9999}"], "box_fc_channels is 9999; give 8 to 4096"),
        (["task=segmentation"], "task: 'segmentation' is not valid; choose one of 'classification' or 'detection'"),
    ],
)
def test_detection_keys_are_checked_against_the_task(overrides, message):
    with pytest.raises(UsageError) as caught:
        load_config(None, overrides)
    assert message in str(caught.value)


def test_trainable_layers_name_a_run_only_away_from_the_default_of_3():
    default = load_config(None, DETECTION)
    three = load_config(None, [*DETECTION, "model.trainable_layers=3"])
    every = load_config(None, [*DETECTION, "model.name=mobilenet_v2", "model.trainable_layers=6"])
    assert run_id(three) == run_id(default)
    assert every.model.trainable_layers == 6 and run_id(every) != run_id(
        load_config(None, [*DETECTION, "model.name=mobilenet_v2"])
    )


def test_a_detectors_widths_are_detector_options_and_join_its_id_only_when_set():
    narrow = load_config(None, [*DETECTION, "model.detector_options={fpn_channels: 64, box_fc_channels: 256}"])
    assert narrow.model.detector_options == {"fpn_channels": 64, "box_fc_channels": 256}
    default = load_config(None, DETECTION)
    assert run_id(narrow) != run_id(default)
    # torchvision's own values, spelt out, build the same detector: the same run
    spelt = load_config(None, [*DETECTION, "model.detector_options={fpn_channels: 256, rpn_batch_size_per_image: 256}"])
    assert spelt.model.detector_options == {} and run_id(spelt) == run_id(default)


def test_the_mask_rcnn_recipes_are_the_papers_schedules_and_classification_ids_are_unchanged():
    one, two = load_config(None, DETECTION), load_config(None, ["recipe=mask_rcnn_2x"])
    assert (one.task, one.model.norm, one.data.image_size, one.data.max_size) == ("detection", "bn_frozen", 800, 1333)
    assert (one.optim.base_lr, one.optim.clip_grad_norm, one.optim.warmup_iterations) == (0.02, 35.0, 500)
    assert (one.trainer.iterations, two.trainer.iterations, one.data.batch_size) == (90_000, 180_000, 2)
    # Pinned under identity scheme 2 (an_lab.identity; scheme 1 gave cifar_resnet20-an-73b7ce7ebb19): generated data
    # is named by what it is, so these ids are the same in every folder and on every machine; detection keys stay out
    # of a classification run's id.
    assert run_id(load_config(None)) == "cifar_resnet20-an-280631ac4d34"
    vanilla_bn = load_config(None, ["recipe=vanilla", "model.norm=bn", "data.name=fake"])
    assert run_id(vanilla_bn) == "resnet50-bn-d824ba935fc1"
    assert run_id(load_config(None, [*DETECTION, "model.head_norm=gn"])) != run_id(one)


def test_a_saved_detection_config_loads_back_to_the_same_run(tmp_path):
    """A run's config.json spells out every key (trainer.epochs included): reading it back must give the same run."""
    config = load_config(None, [*DETECTION, "model.norm=an", "model.backbone_init=runs/resnet50-an-0"])
    saved = write_config(tmp_path / "config.json", config.model_dump(mode="json"))
    assert run_id(load_config(saved)) == run_id(config)


def test_a_bad_an_impl_in_a_config_file_is_one_paragraph_with_exit_2(tmp_path):
    tree = {"model": {"an": {"impl": "cuda"}}, "output_dir": str(tmp_path / "runs")}
    config = write_config(tmp_path / "c.yaml", tree)
    result = an_lab("train", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {config}: model.an.impl: 'cuda' is not valid; choose one of 'auto', 'triton' or 'torch'"
    )
    assert not (tmp_path / "runs").exists()
