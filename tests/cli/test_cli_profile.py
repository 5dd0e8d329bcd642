"""`an-lab profile` as a user runs it: a real process."""

import functools
import json

import pytest
from conftest import an_lab

from an_lab.cli import main

an_lab = functools.partial(an_lab, timeout=300)


def test_profile_reports_the_papers_counts():
    result = an_lab("profile", "resnet50", "--norm", "an", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["params"] == 25_755_420 and counts["params_over_bn"] == 198_388
    assert round(counts["macs"] / 1e9, 2) == 4.09 and counts["an_layers"] == 16

    text = an_lab("profile", "mobilenet_v2", "--k", "5,5,5,5,10,10,10").stdout
    assert "3,672,760" in text and "+167,888" in text


def test_profile_gives_the_aognet_papers_cost_convention_too():
    """AOGNet-12M with AN: the authors' count, 24 AN layers, and the 2.19 G their thop-based FLOPs column gives."""
    result = an_lab("profile", "aognet_12m", "--norm", "an", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["params"] == 12_373_355 and counts["params_over_bn"] == 114_256 and counts["an_layers"] == 24
    assert counts["macs"] == 2_108_037_951
    assert abs(counts["macs_with_pointwise"] / 2.19e9 - 1) < 0.01
    text = an_lab("profile", "densenet161", "--norm", "an_gn").stdout
    assert "AN layers        78" in text and "thop" in text


def test_profile_usage_errors_exit_2_with_one_clear_line():
    result = an_lab("profile", "resnet50", "--k", "10,20")
    assert result.returncode == 2
    assert "k=(10, 20) has 2 entries but resnet50 has 4 stages" in result.stderr
    assert "Traceback" not in result.stderr
    result = an_lab("profile", "resnet99")
    assert result.returncode == 2 and "invalid choice: 'resnet99'" in result.stderr


def test_profile_takes_detectors_and_gives_the_papers_counts(capsys):
    result = an_lab("profile", "cascade_mask_rcnn", "--backbone", "resnet101", "--norm", "an", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["model"], counts["backbone"], counts["norm"], counts["box_head"]) == (
        "cascade_mask_rcnn",
        "resnet101",
        "an",
        "2fc",
    )
    assert counts["params"] == 96_768_989 and counts["num_classes"] == 80 and counts["an_layers"] == 33
    assert counts["image"] == [800, 1344] and (counts["box_rois"], counts["mask_rois"]) == (1000, 100)
    # the BN* cascade counts the same MACs but for AN's attention heads (1x1 convs of C -> K on pooled features)
    assert 482_134_793_472 < counts["macs"] < 482_134_793_472 + 10**6
    arguments = ["profile", "mask_rcnn", "--backbone", "aognet_12m", "--norm", "an", "--head-norm", "an_gn"]
    assert main([*arguments, "--num-classes", "80"]) == 0  # in this process, as the refusals below
    text = capsys.readouterr().out
    assert "33,257,204 (33.26M" in text and "box head=4conv1fc" in text and "800x1344" in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["mask_rcnn"], "name the backbone with --backbone, one of resnet50"),
        (["htc", "--backbone", "resnet101", "--norm", "bn"], "a detector's backbone norm is one of bn_frozen, gn"),
        (["resnet50", "--head-norm", "gn"], "--head-norm apply to detectors"),
        (["resnet50", "--norm", "syncbn"], "syncbn is a detection backbone norm"),
        (["htc", "--backbone", "resnet50", "--num-classes", "-3"], "give the categories, 1 to 100000"),
        (["htc", "--backbone", "resnet50", "--input-size", "100000"], "shorter image side is 32 to 4096"),
        (["htc", "--backbone", "resnet50", "--head-norm", "gn", "--box-head", "2fc"], "needs box_head='4conv1fc'"),
        (["cascade_mask_rcnn", "--backbone", "resnet50", "--pooling", "mean"], "--pooling apply to networks"),
    ],
)
def test_profile_refuses_hostile_detector_options_in_one_paragraph(arguments, message, capsys):
    assert main(["profile", *arguments]) == 2
    out, err = capsys.readouterr()
    assert message in err and not out and len(err.strip().splitlines()) == 1, err


def test_an_unknown_backbone_is_an_argparse_choice_error():
    result = an_lab("profile", "cascade_mask_rcnn", "--backbone", "resnet18")
    assert result.returncode == 2 and "invalid choice: 'resnet18'" in result.stderr
