"""How a sweep's cells are named: the paper's row titles ("RSD + A2 + hsigmoid + K=(10,10,20,20)", "BN*"), the other
changes a cell makes as key=value, and values written as users write them (show)."""

from __future__ import annotations

from typing import Any

from an_lab import catalog
from an_lab.config import RunConfig


def show(value: Any) -> str:
    """A value as users write it, compactly: (10,10,20,20), 0.1, rsd, true."""
    if isinstance(value, list | tuple):
        return "(" + ",".join(show(v) for v in value) + ")"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def model_title(name: str) -> str:
    if name.startswith("cifar_resnet"):
        return f"ResNet-{name.removeprefix('cifar_resnet')}"
    if name.startswith("resnet"):
        return f"ResNet-{name.removeprefix('resnet')}"
    titles = {
        "mobilenet_v2": "MobileNetV2",
        "aognet_12m": "AOGNet-12M",
        "aognet_40m": "AOGNet-40M",
        "cifar_aognet": "AOGNet-1M",
        "densenet161": "DenseNet-161",
        "cifar_densenet100": "DenseNet-BC-100",
    }
    return titles.get(name, name)


# Keys the label spells out itself; other changes are appended as key=value.
_LABELLED = {"model.name", "model.norm", "model.an.pooling", "model.an.head", "model.an.activation", "model.an.k"}
# Detection rows as the papers' Table 2: the backbone's norm, then the heads' ("AN (w/ BN) + AN (w/ GN) heads"); the
# backbone's starting weights follow the norm, so a change of backbone_init is not spelled out.
_DETECTION_NORMS = {"bn_frozen": "BN*", "syncbn": "SyncBN", "gn": "GN", "an": "AN (w/ BN)"}
_HEAD_NORMS = {"none": "", "gn": " + GN heads", "an_gn": " + AN (w/ GN) heads"}
_DETECTOR_TITLES = {"mask_rcnn": "Mask R-CNN", "cascade_mask_rcnn": "Cascade Mask R-CNN", "htc": "HTC"}
_DETECTION_LABELLED = {
    "model.head_norm",
    "model.detector",
    "model.backbone_init",
    *(f"model.backbone_init.{k}" for k in ("sweep", "cell")),
}


def row_title(config: RunConfig, with_model: bool, an_detail: bool) -> str:
    """The paper's way of naming a row: "RSD + A2 + hsigmoid + K=(10,10,20,20)" for AN, "BN" for a baseline; a
    cell's label is this, then its other changes as key=value (label_extras). It reads the network and its norms alone,
    so cells that share their model section share it.

    with_model: prefix the network ("ResNet-50 BN"; the recipe is then taken to go with it and left out);
    an_detail: spell out AN's choices (when the sweep varies them), else just "AN".
    """
    model = config.model
    if config.task == "detection":
        text = _DETECTION_NORMS[model.norm] + _HEAD_NORMS[model.head_norm or "none"]
    elif model.norm in ("an", "an_gn") and not an_detail:
        text = model.norm.upper().replace("_", "-")
    elif model.norm in ("an", "an_gn"):
        k = ",".join(str(v) for v in catalog.resolve_k(model.name, model.an.k))
        pooling = "RSD" if model.an.pooling == "rsd" else model.an.pooling.capitalize()
        text = f"{pooling} + {model.an.head.upper()} + {model.an.activation} + K=({k})"
        text = f"AN-GN {text}" if model.norm == "an_gn" else text
    else:
        text = model.norm.upper()
    if with_model:
        text = f"{model_title(model.name)} {text}"
    if config.task == "detection" and (model.detector or "mask_rcnn") != "mask_rcnn":
        text = f"{_DETECTOR_TITLES[model.detector]} {text}"  # the papers' rows: "Cascade Mask R-CNN ResNet-101 BN*"
    return text


def label_extras(task: str, shown: dict[str, str], with_model: bool) -> list[str]:
    """The changes a cell's label spells out after its row title (shown: key -> value as users write it)."""
    skip = _LABELLED | ({"recipe"} if with_model else set()) | (_DETECTION_LABELLED if task == "detection" else set())
    return [f"{key.rpartition('.')[2]}={text}" for key, text in shown.items() if key not in skip]
