"""Run identity (an_lab.identity) and the path rule (an_lab.paths): one result has one id, however it is spelled or
wherever the command is typed; ids follow the data, not the text of data.root."""

import os
from pathlib import Path

import pytest

from an_lab.config import load_config
from an_lab.errors import UsageError
from an_lab.identity import RunIds, fingerprint, remember_data, run_id, seeded_run_ids
from an_lab.paths import anchor


def imagefolder(root, classes=("a", "b"), images=("1.png", "2.png")):
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for image in images:
                (root / split / name / image).write_bytes(b"png")
    return root


def folder_id(root_text: str, cwd=None) -> str:
    overrides = ["data.name=imagefolder", "data.num_classes=2", f"data.root={root_text}"]
    return run_id(load_config(None, overrides))


def test_six_spellings_and_a_symlink_of_one_data_folder_give_one_id(tmp_path, monkeypatch):
    data = imagefolder(tmp_path / "data")
    os.symlink(data, tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    spellings = ["data", "./data", str(data), f"{data}/", f"{tmp_path}/./data", "link", "sub/../data"]
    assert len({folder_id(text) for text in spellings}) == 1


def test_two_folders_with_other_images_give_two_ids_and_a_changed_image_list_a_new_one(tmp_path):
    one = imagefolder(tmp_path / "one")
    two = imagefolder(tmp_path / "two", images=("1.png", "2.png", "3.png"))
    assert folder_id(str(one)) != folder_id(str(two))
    before = folder_id(str(one))
    (one / "train" / "a" / "3.png").write_bytes(b"png")
    fingerprint.cache_clear()  # a new process sees the new list
    assert folder_id(str(one)) != before


def test_generated_data_is_named_by_what_it_is_not_where_it_is_written(tmp_path, monkeypatch):
    assert run_id(load_config(None, ["data.root=/a"])) == run_id(load_config(None, [f"data.root={tmp_path}/b"]))
    monkeypatch.chdir(tmp_path)
    assert run_id(load_config(None)) == "cifar_resnet20-an-280631ac4d34"  # the digits default, from any folder


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (["model.norm=bn"], ["model.norm=bn", "model.an.pooling=mean", "model.an.head=a1"]),  # BN under two AN bases
        ([], ["model.an.k=[10, 10, 20]"]),  # k: null is the schedule it resolves to
        (["model.an.k=10"], ["model.an.k=[10, 10, 10]"]),
        (["trainer.accelerator=cpu"], ["trainer.accelerator=cpu", "trainer.devices=auto"]),
        ([], ["data.fake_size=99"]),  # fake_size is read by fake data only
        ([], ["data.download=true"]),  # fetching does not change what is read
        ([], ["model.an.impl=triton"]),  # AN's kernels, not its maths: default-config runs keep their ids
        (["model.an.impl=torch"], ["model.an.impl=auto"]),
    ],
)
def test_keys_that_cannot_change_a_run_do_not_change_its_id(one, two):
    assert run_id(load_config(None, one)) == run_id(load_config(None, two))


def test_keys_that_change_a_run_change_its_id():
    base = run_id(load_config(None))
    assert run_id(load_config(None, ["model.an.pooling=mean"])) != base
    assert run_id(load_config(None, ["data.name=fake", "data.fake_size=99"])) != run_id(
        load_config(None, ["data.name=fake"])
    )


# Two detection runs as the code before model.detector named them (ids computed at commit dfd6b29).
MASK_RCNN_RUNS = [
    (
        [
            "recipe=mask_rcnn_2x",
            "model.name=resnet101",
            "model.norm=an",
            "model.box_head=4conv1fc",
            "model.head_norm=an_gn",
            "model.backbone_init=runs/resnet101-an-0123456789ab",
            "data.name=shapes",
            "data.image_size=64",
            "trainer.devices=8",
        ],
        "resnet101-an-a1af146e612a",
    ),
    (["recipe=mask_rcnn_1x", "data.name=shapes"], "resnet50-bn_frozen-f836b2db1e3f"),
]


@pytest.mark.parametrize(("overrides", "expected"), MASK_RCNN_RUNS)
def test_model_detector_leaves_the_ids_of_mask_rcnn_runs_as_they_were(overrides, expected):
    assert run_id(load_config(None, overrides)) == expected
    assert run_id(load_config(None, [*overrides, "model.detector=mask_rcnn"])) == expected  # the default, spelled out
    others = {
        run_id(load_config(None, [*overrides, f"model.detector={name}"])) for name in ("cascade_mask_rcnn", "htc")
    }
    assert len(others) == 2 and expected not in others
    assert run_id(load_config(None, [*overrides, "optim.lr_steps=[0.8,0.95]"])) != expected  # set: a new run


def test_a_detection_key_on_classification_is_refused_not_ignored():
    with pytest.raises(UsageError, match=r"optim\.warmup_iterations is a detection key"):
        load_config(None, ["optim.warmup_iterations=100"])
    with pytest.raises(UsageError, match=r"model\.detector is a detection key"):
        load_config(None, ["model.detector=htc"])
    with pytest.raises(UsageError, match=r"model\.detector: 'retinanet' is not valid; choose one of 'mask_rcnn', "):
        load_config(None, ["recipe=mask_rcnn_1x", "model.detector=retinanet"])


def test_paths_in_a_config_file_follow_the_file_and_command_line_paths_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "run.yaml").write_text("data: {name: digits, root: data}\noutput_dir: out\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config("../cfg/run.yaml")
    assert (config.data.root, config.output_dir) == (str(tmp_path / "cfg" / "data"), str(tmp_path / "cfg" / "out"))
    typed = load_config("../cfg/run.yaml", ["data.root=mine", "output_dir=../o"])
    assert (typed.data.root, typed.output_dir) == (str(tmp_path / "elsewhere" / "mine"), str(tmp_path / "o"))


def test_home_and_variables_are_expanded_and_an_unset_variable_is_one_paragraph(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AN_LAB_TEST_DIR", str(tmp_path / "v"))
    monkeypatch.delenv("AN_LAB_TEST_UNSET", raising=False)
    assert anchor("~/runs", "/x", "here") == str(tmp_path / "runs")
    assert anchor("$AN_LAB_TEST_DIR/r2", "/x", "here") == str(tmp_path / "v" / "r2")
    assert anchor("${AN_LAB_TEST_DIR}/r2", "/x", "here") == str(tmp_path / "v" / "r2")
    with pytest.raises(UsageError, match=r"s\.yaml: output_dir: .*\$AN_LAB_TEST_UNSET, which is not set"):
        anchor("$AN_LAB_TEST_UNSET/runs", "/x", "s.yaml: output_dir")


def test_the_wrong_file_for_the_command_says_which_command_it_is_for(tmp_path):
    from conftest import an_lab

    root = Path(__file__).resolve().parents[1]
    train = an_lab("train", root / "sweeps" / "quickstart.yaml")
    assert train.returncode == 2 and "this is a sweep file" in train.stderr and "an-lab sweep" in train.stderr
    plan = an_lab("plan", root / "configs" / "quickstart.yaml")
    assert plan.returncode == 2 and "this is a run config" in plan.stderr and "an-lab train" in plan.stderr
    assert "Traceback" not in train.stderr + plan.stderr


@pytest.mark.parametrize(("model", "side", "smallest"), [("aognet_12m", 24, 31), ("densenet161", 16, 29)])
def test_a_network_that_cannot_take_the_image_size_is_refused_with_the_smallest_it_takes(model, side, smallest):
    from conftest import an_lab

    with pytest.raises(UsageError, match=f"{model} takes images of at least {smallest}x{smallest} pixels"):
        load_config(None, [f"model.name={model}", f"data.image_size={side}", "model.norm=bn"])
    profiled = an_lab("profile", model, "--input-size", str(side))
    assert profiled.returncode == 2 and f"at least {smallest}x{smallest}" in profiled.stderr


def test_the_ids_of_a_cells_seeds_hashed_at_once_are_the_ids_of_its_seeded_configs(tmp_path):
    """seeded_run_ids writes the identity once and puts each seed in its place: the same ids as run_id of each
    seeded config, for generated data and for a data folder (whose identity holds its fingerprint)."""
    data = imagefolder(tmp_path / "data")
    for overrides in ([], ["data.name=imagefolder", "data.num_classes=2", f"data.root={data}"]):
        config = load_config(None, [*overrides, "trainer.seed=3"])
        seeds = [0, 3, 1, 17, 2**31 - 1]
        one_by_one = [
            run_id(config.model_copy(update={"trainer": config.trainer.model_copy(update={"seed": seed})}))
            for seed in seeds
        ]
        assert seeded_run_ids(config, seeds) == one_by_one
        assert len(set(one_by_one)) == len(seeds)


def test_one_run_ids_cache_over_configs_that_share_sections_gives_each_its_own_id(tmp_path):
    """RunIds (what a sweep's expansion uses) writes each distinct section's part once and tells sections apart by
    object: configs sharing section objects but differing in the task, in output_dir (where an absent data folder's
    last fingerprint is recorded) or in one section must each get run_id of their own config."""
    data = imagefolder(tmp_path / "data")
    folder = ["data.name=imagefolder", "data.num_classes=2", f"data.root={data}"]
    detection = MASK_RCNN_RUNS[0][0]
    configs = [load_config(None, overrides) for overrides in ([], folder, detection, ["recipe=mask_rcnn_1x"])]
    configs += [load_config(None, [*detection, "model.head_k=3"]), load_config(None, ["model.norm=bn"])]
    first = configs[0]
    configs += [  # the same section objects under another task, another output_dir, one section changed
        first.model_copy(update={"task": "detection"}),
        configs[1].model_copy(update={"output_dir": str(tmp_path / "elsewhere")}),
        first.model_copy(update={"model": first.model.model_copy(update={"norm": "bn"})}),
        first.model_copy(update={"trainer": first.trainer.model_copy(update={"devices": "auto"})}),
    ]
    ids = RunIds()
    seeds = [0, 5]
    for _ in range(2):  # the second pass is served from the cache
        got = [ids.seeded(config, seeds) for config in configs]
        expected = [
            [run_id(c.model_copy(update={"trainer": c.trainer.model_copy(update={"seed": s})})) for s in seeds]
            for c in configs
        ]
        assert got == expected
    firsts = [pair[0] for pair in got]
    assert firsts[7] == firsts[1] and firsts[8] == firsts[5]  # a folder there now: output_dir is no part; bn is bn
    assert len(set(firsts)) == len(firsts) - 2  # the task, devices "auto" (accelerator auto) and the rest: new ids


def test_an_absent_data_folder_keeps_the_fingerprint_its_output_folder_recorded_in_a_shared_cache(tmp_path):
    """Two output folders that recorded two fingerprints of one data folder, since removed: their runs keep two
    ids, also when one RunIds serves both with the same data section object."""
    data = imagefolder(tmp_path / "data")
    one, two = tmp_path / "one", tmp_path / "two"
    config = load_config(None, ["data.name=imagefolder", "data.num_classes=2", f"data.root={data}"])
    ids = []
    for output, image in ((one, "3.png"), (two, "4.png")):
        output.mkdir()
        (data / "train" / "a" / image).write_bytes(b"png")
        fingerprint.cache_clear()
        remember_data(config.model_copy(update={"output_dir": str(output)}))
        ids.append(run_id(config.model_copy(update={"output_dir": str(output)})))
    for path in data.rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted(data.rglob("*"), reverse=True):
        path.rmdir()
    data.rmdir()
    fingerprint.cache_clear()
    cache = RunIds()
    shared = [config.model_copy(update={"output_dir": str(output)}) for output in (one, two)]
    assert shared[0].data is shared[1].data
    assert [cache.seeded(c, [c.trainer.seed])[0] for c in shared] == ids and ids[0] != ids[1]
