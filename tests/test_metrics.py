"""The metric registry (an_lab.metrics): every task's metrics with their titles and directions, the task of a
config or a result, and the helpers every reader of results shares (values as text, logged columns, task checks)."""

import math

import pytest

from an_lab import metrics
from an_lab.metrics import (
    DETECTION_HEADLINE,
    DETECTION_SIZES,
    METRICS,
    PRIMARY,
    TASK_METRICS,
    TASKS,
    better,
    check_task_metric,
    logged_metric,
    primary,
    task_of,
    task_of_metric,
)

AP_NAMES = [f"{kind}_{part}" for kind in ("bbox", "segm") for part in ("ap", "ap50", "ap75", "ap_s", "ap_m", "ap_l")]


def test_each_task_reports_its_metrics_and_every_metric_belongs_to_one_task():
    assert TASKS == ("classification", "detection")
    assert TASK_METRICS["classification"] == ("top1_err", "top5_err")
    assert list(TASK_METRICS["detection"]) == AP_NAMES
    names = [name for task in TASKS for name in TASK_METRICS[task]]
    assert sorted(names) == sorted(METRICS) and len(set(names)) == len(names) == 14
    assert {name: task_of_metric(name) for name in ("top5_err", "segm_ap_l", "val_loss")} == {
        "top5_err": "classification",
        "segm_ap_l": "detection",
        "val_loss": None,
    }


def test_errors_are_lower_is_better_and_ap_higher():
    assert [METRICS[name].lower_is_better for name in TASK_METRICS["classification"]] == [True, True]
    assert not any(METRICS[name].lower_is_better for name in AP_NAMES)
    assert (METRICS["top1_err"].direction, METRICS["bbox_ap"].direction) == ("minimize", "maximize")
    assert better("top1_err", 20.0, 21.0) and not better("top1_err", 21.0, 20.0) and not better("top1_err", 2.0, 2.0)
    assert better("bbox_ap", 31.0, 30.0) and not better("bbox_ap", 30.0, 31.0) and not better("segm_ap", 5.0, 5.0)


def test_titles_are_the_papers_and_the_headline_and_sizes_split_the_detection_metrics():
    titles = {name: METRICS[name].title for name in AP_NAMES}
    assert titles == {
        "bbox_ap": "AP^bb",
        "bbox_ap50": "AP^bb_50",
        "bbox_ap75": "AP^bb_75",
        "bbox_ap_s": "AP^bb_S",
        "bbox_ap_m": "AP^bb_M",
        "bbox_ap_l": "AP^bb_L",
        "segm_ap": "AP^m",
        "segm_ap50": "AP^m_50",
        "segm_ap75": "AP^m_75",
        "segm_ap_s": "AP^m_S",
        "segm_ap_m": "AP^m_M",
        "segm_ap_l": "AP^m_L",
    }
    assert DETECTION_HEADLINE == ("bbox_ap", "bbox_ap50", "bbox_ap75", "segm_ap", "segm_ap50", "segm_ap75")
    assert DETECTION_SIZES == ("bbox_ap_s", "bbox_ap_m", "bbox_ap_l", "segm_ap_s", "segm_ap_m", "segm_ap_l")
    assert sorted(DETECTION_HEADLINE + DETECTION_SIZES) == sorted(TASK_METRICS["detection"])
    assert METRICS["top1_err"].title == "top-1 err (%)" and METRICS["top1_err"].label == "top-1 err"
    assert (METRICS["top1_err"].phrase, METRICS["top5_err"].phrase, METRICS["segm_ap50"].phrase) == (
        "top-1 error",
        "top-5 error",
        "AP^m_50",
    )


def test_logged_columns_and_their_metrics():
    assert METRICS["top1_err"].logged == "val_top1_err" and METRICS["bbox_ap"].logged == "val_bbox_ap"
    assert logged_metric("val_segm_ap") is METRICS["segm_ap"] and logged_metric("val_top5_err") is METRICS["top5_err"]
    assert [logged_metric(name) for name in ("val_loss", "train_loss", "bbox_ap")] == [None, None, None]


def test_task_of_a_config_or_a_result_defaults_to_classification():
    assert task_of({"task": "detection", "model": {}}) == "detection"
    assert task_of({"task": "classification"}) == "classification"
    assert task_of({"model": {"name": "resnet50"}}) == "classification"  # configs from before detection
    assert task_of(None) == task_of([]) == task_of({"task": "segmentation"}) == "classification"
    assert primary(task_of({"task": "detection"})) is METRICS["bbox_ap"]
    assert PRIMARY == {"classification": "top1_err", "detection": "bbox_ap"}
    assert primary("classification") is METRICS["top1_err"]


def test_values_as_text_errors_with_a_percent_sign_ap_without():
    assert METRICS["top1_err"].show(21.5) == "top-1 err 21.50%"
    assert METRICS["bbox_ap"].show(31.2) == "AP^bb 31.20"
    assert METRICS["segm_ap_l"].show(None) == "AP^m_L n/a" and METRICS["bbox_ap"].value_text(math.nan) == "n/a"
    assert METRICS["top5_err"].value_text(0.004) == "0.00%"


def test_a_metric_of_another_task_is_refused_naming_the_task_and_its_metrics():
    assert check_task_metric("segm_ap75", "detection") is METRICS["segm_ap75"]
    with pytest.raises(ValueError) as error:
        check_task_metric("top1_err", "detection")
    message = str(error.value)
    assert message.startswith("metric 'top1_err' (a classification metric) is not reported by detection runs")
    assert message.endswith(", ".join(AP_NAMES))
    with pytest.raises(ValueError, match=r"metric 'top_1' is not reported by classification runs; choose one of "):
        check_task_metric("top_1", "classification")


def test_the_registry_imports_nothing_of_an_lab():
    source = metrics.__file__
    with open(source, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.startswith(("import ", "from "))]
    assert lines and not [line for line in lines if "an_lab" in line], lines
