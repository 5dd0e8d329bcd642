"""Mask R-CNN, Cascade Mask R-CNN and HTC fine-tuning (model.detector) as a LightningModule: the papers' iteration
schedule, COCO evaluation, backbone weights from a classification run.

Schedule (their mmdetection setup): SGD with momentum 0.9 and weight decay 1e-4 on every trainable parameter, learning
rate optim.base_lr x global batch / 16 (0.02 at 16 images), warmed up linearly from a third of it over
optim.warmup_iterations, divided by 10 at 2/3 and again at 8/9 of trainer.iterations (COCO 1x: 60k and 80k of 90k;
optim.lr_steps sets other fractions, the cascades' 20e schedule 0.8 and 0.95);
gradients clipped to an L2 norm of optim.clip_grad_norm (35) by the Trainer.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn

from an_lab import catalog
from an_lab.config import RunConfig
from an_lab.data_sources import few
from an_lab.errors import UsageError
from an_lab.lightning_modules.detection.coco_eval import encode_masks, evaluate_coco
from an_lab.metrics import TASK_METRICS
from an_lab.models.detection import build_mask_rcnn, map_classification_state
from an_lab.profiling import count_detector_macs, detector_image
from an_lab.rundir import CHECKPOINT, CONFIG, read_result, state

REFERENCE_BATCH = 16  # the batch the detection learning rate is given at
WARMUP_START = 1 / 3  # mmdetection's warm-up ratio
STEPS = (2 / 3, 8 / 9)


def build_detector(config: RunConfig, num_classes: int) -> nn.Module:
    model, data = config.model, config.data
    an_options = {}
    if model.norm == "an":
        an = model.an
        an_options = {
            "pooling": an.pooling,
            "head": an.head,
            "activation": an.activation,
            "placement": an.placement,
            "impl": an.impl,
        }
    return build_mask_rcnn(
        model.name,
        num_classes=num_classes,
        detector=model.detector or "mask_rcnn",
        backbone_norm=model.norm,
        head_norm=model.head_norm or "none",
        box_head=model.box_head,
        k=model.an.k if model.norm == "an" else None,
        k_head=model.head_k,
        an_mask_head=bool(model.an_mask_head),
        min_size=data.image_size,
        max_size=data.max_size or round(data.image_size * 1333 / 800),
        detector_options=model.detector_options,
        trainable_layers=catalog.TRAINABLE_STAGES if model.trainable_layers is None else model.trainable_layers,
        **an_options,
    )


def detector_macs(config: RunConfig, num_classes: int) -> int:
    """The run's detector's MACs (profiling.count_detector_macs: mmdetection's convention, 1000 box RoIs and 100 mask
    RoIs) at an image of data.image_size x data.max_size, counted on a copy built on the meta device (no compute)."""
    with torch.device("meta"):
        model = build_detector(config, num_classes)
    return count_detector_macs(model, *detector_image(config.data.image_size, config.data.max_size))


def detection_lr(step: int, iterations: int, warmup: int, steps: tuple[float, ...] | None = None) -> float:
    """The learning-rate factor at an optimizer step (module docstring); `steps`: optim.lr_steps (None: STEPS)."""
    factor = 0.1 ** sum(step >= round(iterations * fraction) for fraction in steps or STEPS)
    if step < warmup:
        factor *= WARMUP_START + (1 - WARMUP_START) * step / warmup
    return factor


class MaskRCNNModule(pl.LightningModule):
    """Trains with the sum of the detector's losses (a cascade's stage losses already weighted); evaluates COCO AP
    (boxes and masks) on the validation split and logs val_bbox_ap ... val_segm_ap_l (percent) once per evaluation."""

    def __init__(self, config: RunConfig, num_classes: int, label_to_category: dict[int, int], coco_gt) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.model = build_detector(config, num_classes)
        self.label_to_category = dict(label_to_category)
        self.coco_gt = coco_gt
        self._predictions: list[dict] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(list(images), [_plain(target) for target in targets])
        loss = sum(losses.values())
        size = len(images)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log("lr", lr, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(list(images))
        for target, output in zip(targets, outputs, strict=True):
            self._predictions.append({"image_id": int(target["image_id"]), **_compact(output)})

    def on_validation_epoch_end(self) -> None:
        predictions, self._predictions = self._predictions, []
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            gathered: list = [None] * self.trainer.world_size
            dist.all_gather_object(gathered, predictions)
            predictions = [prediction for part in gathered for prediction in part]
        image_ids = sorted(self.coco_gt.getImgIds())
        metrics = evaluate_coco(self.coco_gt, predictions, self.label_to_category, image_ids=image_ids)
        for name in TASK_METRICS["detection"]:
            self.log(f"val_{name}", metrics[name], prog_bar=name == "bbox_ap", sync_dist=False, rank_zero_only=False)

    def configure_optimizers(self):
        optim, trainer = self.config.optim, self.config.trainer
        world = self.trainer.world_size if self._trainer is not None else 1
        global_batch = self.config.data.batch_size * world
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            parameters,
            lr=optim.base_lr * global_batch / REFERENCE_BATCH,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
            foreach=True,  # one kernel per step for all tensors (on a CPU the per-tensor loop is about 8% of a step)
        )
        iterations, warmup, steps = trainer.iterations, optim.warmup_iterations, optim.lr_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: detection_lr(step, iterations, warmup, steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _plain(target: dict) -> dict:
    """The tensors Mask R-CNN's loss needs, as plain tensors (tv_tensors subclasses kept out of the model)."""
    return {key: target[key].as_subclass(torch.Tensor) for key in ("boxes", "labels", "masks")}


def _compact(output: dict) -> dict:
    """An output kept for evaluation: boxes, scores, labels on the CPU and the masks run-length encoded."""
    kept = {key: output[key].detach().cpu() for key in ("boxes", "scores", "labels")}
    if "masks" in output:
        kept["rles"] = encode_masks(output["masks"])
    return kept


# -- backbone weights from a classification run -------------------------------------------------------------------


def _checkpoint_file(source: Path) -> Path:
    if source.is_dir():
        if (source / CONFIG).is_file() and read_result(source)[0] is None:  # a run folder: only a finished run
            current, detail = state(source)
            raise UsageError(
                f"model.backbone_init {str(source)!r}: that classification run is not done ({current}"
                f"{': ' + detail if detail else ''}); its last.ckpt is a run half trained, no backbone: finish it "
                f"first (an-lab train {source / CONFIG}), then launch this again"
            )
        if not (source / CHECKPOINT).is_file():
            raise UsageError(
                f"model.backbone_init {str(source)!r}: the run folder holds no {CHECKPOINT} (has that run trained?)"
            )
        return source / CHECKPOINT
    if not source.is_file():
        raise UsageError(f"model.backbone_init {str(source)!r}: no such run folder or checkpoint file")
    return source


def _model_state(path: Path) -> dict[str, torch.Tensor]:
    """The bare classification model's state dict from a Lightning checkpoint (keys under `model.`) or a state dict
    file; torch.compile's `_orig_mod.` is taken out."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file: say which and why, never a traceback
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error):  # torch's advice to load untrusted pickles: wrong for a damaged file
            first = "it holds objects other than tensors and plain containers, or it is damaged"
        raise UsageError(
            f"model.backbone_init: {path} is not a readable checkpoint ({first[:200]}); point it at a finished "
            "classification run's folder or a state dict saved with torch.save"
        ) from None
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"model.backbone_init: {path} holds no state dict of tensors")
    prefixed = any(key.startswith("model.") for key in state)
    out = {}
    for key, value in state.items():
        if prefixed and not key.startswith("model."):
            continue
        out[key.removeprefix("model.").replace("_orig_mod.", "")] = value
    return out


def load_backbone(detector: nn.Module, source: str, ignore: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Put a classification run's weights into the detector's backbone. Every backbone key must be filled and every
    checkpoint key used (the classifier aside), except keys matching one of `ignore` (fnmatch patterns): otherwise a
    UsageError lists them. Returns the (missing, unexpected) keys that were ignored."""
    path = _checkpoint_file(Path(source))
    mapped, missing, unexpected = map_classification_state(_model_state(path), detector)

    def kept(keys: list[str]) -> list[str]:
        return [key for key in keys if not any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)]

    bad_missing, bad_unexpected = kept(missing), kept(unexpected)
    if bad_missing or bad_unexpected:
        raise UsageError(
            f"model.backbone_init: the weights of {path} do not fit this backbone: {len(bad_missing)} backbone "
            f"key(s) missing ({few(bad_missing, 4) or 'none'}), {len(bad_unexpected)} unexpected "
            f"({few(bad_unexpected, 4) or 'none'}); "
            "initialise from a classification run of the same network and norm, or list the keys to skip in "
            "model.backbone_init_ignore (fnmatch patterns)"
        )
    detector.load_state_dict(mapped, strict=False)
    return [k for k in missing if k not in bad_missing], [k for k in unexpected if k not in bad_unexpected]
