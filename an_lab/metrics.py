"""The metrics a run reports, per task, in one torch-free place: what result.json's "final" holds, which way is better,
how tables title them, and which validation column of the logs follows each one.

Classification reports top-1 / top-5 error in percent (lower is better); detection reports COCO AP in percent for
boxes (bbox_) and instance masks (segm_): AP over IoU 0.50:0.95, AP50, AP75 and AP of small, medium and large objects
(higher is better; NaN where the data has no object of a size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TASKS = ("classification", "detection")
METRIC_RANGE = (0.0, 100.0)  # every metric is a percentage: errors and APs; intervals are clipped to it


@dataclass(frozen=True)
class Metric:
    name: str  # the key in result.json's "final" and the results column
    title: str  # the column header of tables and plots
    lower_is_better: bool

    @property
    def logged(self) -> str:
        """The validation column of the run's metric logs (one row per evaluation)."""
        return f"val_{self.name}"

    @property
    def label(self) -> str:
        """The title without its unit, for text around a number: "top-1 err", "AP^bb_50"."""
        return self.title.removesuffix(" (%)")

    @property
    def phrase(self) -> str:
        """The metric in words for titles and sentences: "top-1 error", "AP^bb"."""
        return _PHRASES.get(self.name, self.label)

    @property
    def direction(self) -> str:
        """What an optimizer does with it: "minimize" or "maximize"."""
        return "minimize" if self.lower_is_better else "maximize"

    def value_text(self, value: float | None) -> str:
        """A value with two decimals: errors with a percent sign ("21.50%"), AP without one ("31.20", the papers'
        way); "n/a" for a missing or NaN value."""
        if value is None or value != value:
            return "n/a"
        return f"{value:.2f}%" if self.title.endswith("(%)") else f"{value:.2f}"

    def show(self, value: float | None) -> str:
        """The metric and a value, as status lines write them: "top-1 err 21.50%", "AP^bb 31.20"."""
        return f"{self.label} {self.value_text(value)}"


_PHRASES = {"top1_err": "top-1 error", "top5_err": "top-5 error"}
_AP_PARTS = (("ap", ""), ("ap50", "50"), ("ap75", "75"), ("ap_s", "S"), ("ap_m", "M"), ("ap_l", "L"))
_AP_KINDS = (("bbox", "AP^bb"), ("segm", "AP^m"))

METRICS: dict[str, Metric] = {
    "top1_err": Metric("top1_err", "top-1 err (%)", True),
    "top5_err": Metric("top5_err", "top-5 err (%)", True),
    **{
        f"{kind}_{part}": Metric(f"{kind}_{part}", f"{title}{'_' + suffix if suffix else ''}", False)
        for kind, title in _AP_KINDS
        for part, suffix in _AP_PARTS
    },
}

# The metric a task's tables lead with, searches and seed policies optimize by default, and status ranks cells by.
PRIMARY = {"classification": "top1_err", "detection": "bbox_ap"}
# Every metric of a task's result.json "final", in table order.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("top1_err", "top5_err"),
    "detection": tuple(f"{kind}_{part}" for kind, _ in _AP_KINDS for part, _ in _AP_PARTS),
}
# The detection table's default columns (the papers' AP^bb, AP^bb_50, AP^bb_75, AP^m, AP^m_50, AP^m_75); the size
# splits come with --detail.
DETECTION_HEADLINE = tuple(f"{kind}_{part}" for kind, _ in _AP_KINDS for part in ("ap", "ap50", "ap75"))
DETECTION_SIZES = tuple(f"{kind}_{part}" for kind, _ in _AP_KINDS for part in ("ap_s", "ap_m", "ap_l"))


def task_of(config: dict | None) -> str:
    """The task of a resolved run config as JSON (a manifest's base_config); configs from before detection existed
    have no task key and are classification."""
    task = config.get("task") if isinstance(config, dict) else None
    return task if task in TASKS else "classification"


def manifest_task(manifest: Mapping[str, Any]) -> str:
    """The task of every run of a sweep: the manifest's "task" (written from every cell's config: a list-mode sweep
    has no base cell), else its base config's (manifests written before "task" was)."""
    task = manifest.get("task")
    return task if task in TASKS else task_of(manifest.get("base_config"))


def primary(task: str) -> Metric:
    return METRICS[PRIMARY[task]]


def better(metric: str, a: float, b: float) -> bool:
    """Whether value a is strictly better than b for the metric."""
    return a < b if METRICS[metric].lower_is_better else a > b


def logged_metric(column: str) -> Metric | None:
    """The metric whose validation column of the logs is `column` ("val_bbox_ap" -> bbox_ap); None for any other
    column (losses, learning rates)."""
    return next((metric for metric in METRICS.values() if metric.logged == column), None)


def check_task_metric(metric: str, task: str) -> Metric:
    """The metric of that name, when runs of `task` report it; ValueError naming the task's metrics otherwise."""
    if metric not in TASK_METRICS.get(task, ()):
        known = f" (a {task_of_metric(metric)} metric)" if metric in METRICS else ""
        raise ValueError(
            f"metric {metric!r}{known} is not reported by {task} runs; choose one of "
            f"{', '.join(TASK_METRICS.get(task, ()))}"
        )
    return METRICS[metric]


def task_of_metric(metric: str) -> str | None:
    """The task whose runs report the metric; None for a name that is not in the registry."""
    return next((task for task, names in TASK_METRICS.items() if metric in names), None)
