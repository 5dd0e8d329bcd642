"""result.json of a finished run: its metrics (a classification run's errors, a detection run's AP), its last epochs'
curve, its size and how it was made (time, device, versions, git revision); and the metrics.csv of all its epochs."""

from __future__ import annotations

import contextlib
import csv
import math
import platform
import subprocess
import time
from pathlib import Path

import lightning
import lightning.pytorch as pl
import torch
import torchvision

from an_lab.config import RunConfig
from an_lab.identity import config_hash, run_dir, run_id
from an_lab.lightning_modules.classifier import ImageClassifier
from an_lab.metrics import TASK_METRICS
from an_lab.profiling import count_macs, count_parameters
from an_lab.rundir import epoch_metrics

TAIL_EPOCHS = 5  # epochs of the validation curve kept in result.json


def _git_revision() -> str | None:
    package_dir = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _device(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    name = torch.cuda.get_device_name(root) if root.type == "cuda" else platform.processor() or platform.machine()
    return f"{trainer.world_size} x {root.type} ({name})"


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns = sorted({key for row in rows for key in row}, key=lambda key: (key != "epoch", key))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def classification_result(
    config: RunConfig, trainer: pl.Trainer, module: ImageClassifier, throughput, seconds: float, say
) -> dict:
    skipped: list[str] = []
    rows = [row for row in epoch_metrics(run_dir(config), skipped) if "val_top1_err" in row]
    if skipped:
        say(f"warning: skipped {len(skipped)} damaged row(s) of the metric logs: {', '.join(skipped[:3])}")
    final = rows[-1]
    best = min(rows, key=lambda row: row["val_top1_err"])
    tail = rows[-TAIL_EPOCHS:]
    return {
        **_identity_fields(config),
        "final": {
            "top1_err": final["val_top1_err"],
            "top5_err": final["val_top5_err"],
            "val_loss": final["val_loss"],
            "train_loss": final.get("train_loss"),
        },
        "best": {"top1_err": best["val_top1_err"], "top5_err": best["val_top5_err"], "epoch": int(best["epoch"])},
        # The last epochs' curve, so that tables can tell a converged run from one still improving without
        # reading every run's CSV log.
        "tail": {
            "epoch": [int(row["epoch"]) for row in tail],
            **{key: [row.get(key) for row in tail] for key in ("val_top1_err", "train_loss")},
        },
        "params": count_parameters(module.model),
        "macs": count_macs(module.model, config.data.image_size),
        "epochs": trainer.current_epoch,
        # the error's resolution: it moves in steps of 100 / val_images points (tables never claim more precision)
        "val_images": _validation_size(trainer),
        **_run_facts(config, trainer, throughput, seconds),
    }


def _validation_size(trainer: pl.Trainer) -> int | None:
    found = getattr(getattr(trainer, "datamodule", None), "val_set", None)
    try:
        return len(found) if found is not None else None
    except TypeError:
        return None


def _identity_fields(config: RunConfig) -> dict:
    return {"run_id": run_id(config), "config_hash": config_hash(config), "status": "done"}


def _run_facts(config: RunConfig, trainer: pl.Trainer, throughput, seconds: float) -> dict:
    """What every result.json records about how the run was made."""
    return {
        "wall_time_s": round(seconds, 3),
        "images_per_s": throughput.images_per_second,
        "device": _device(trainer),
        "precision": config.trainer.precision,
        "cpu_threads": config.trainer.cpu_threads,
        "versions": {
            "an_lab": _package_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightning": lightning.__version__,
            "python": platform.python_version(),
        },
        "git_revision": _git_revision(),
        "finished_at": time.time(),
    }


def detection_result(config: RunConfig, trainer: pl.Trainer, module, throughput, seconds: float, say) -> dict:
    """result.json of a detection run: the last evaluation's AP (percent) in "final", the evaluation with the highest
    box AP in "best", the last evaluations in "tail"."""
    from an_lab.lightning_modules.detection.detector import detector_macs
    from an_lab.models.detection import parameter_counts

    skipped: list[str] = []
    every = epoch_metrics(run_dir(config), skipped)
    if skipped:
        say(f"warning: skipped {len(skipped)} damaged row(s) of the metric logs: {', '.join(skipped[:3])}")
    rows = [row for row in every if "val_bbox_ap" in row]
    names = TASK_METRICS["detection"]
    final, tail = rows[-1], rows[-TAIL_EPOCHS:]
    best = max(rows, key=lambda row: row["val_bbox_ap"] if math.isfinite(row["val_bbox_ap"]) else -math.inf)
    counts = parameter_counts(module.model)
    return {
        **_identity_fields(config),
        "task": "detection",
        "final": {
            **{name: _number_or_none(final.get(f"val_{name}")) for name in names},
            "train_loss": every[-1].get("train_loss"),
        },
        "best": {**{name: _number_or_none(best.get(f"val_{name}")) for name in names}, "epoch": int(best["epoch"])},
        "tail": {
            "epoch": [int(row["epoch"]) for row in tail],
            **{
                key: [_number_or_none(row.get(key)) for row in tail]
                for key in ("val_bbox_ap", "val_segm_ap", "train_loss")
            },
        },
        "params": counts.total,
        "trainable_params": counts.trainable,
        "macs": detector_macs(config, module.num_classes),  # mmdetection's get_flops convention (profiling)
        "epochs": trainer.current_epoch,
        "iterations": trainer.global_step,
        **_run_facts(config, trainer, throughput, seconds),
    }


def _number_or_none(value) -> float | None:
    """A metric for result.json: None where COCO has no value (AP of a size the data lacks) rather than NaN."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        return version("an-lab")
    return "unknown"
