"""The classification LightningModule: any model of an_lab.models with the papers' optimization recipe."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from an_lab.config import RunConfig
from an_lab.models import create
from an_lab.nn import AttentiveNorm2d, SwitchableNorm2d

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, AttentiveNorm2d, SwitchableNorm2d)


def build_model(config: RunConfig, num_classes: int) -> nn.Module:
    model, an = config.model, config.model.an
    return create(
        model.name,
        norm=model.norm,
        k=an.k,
        pooling=an.pooling,
        head=an.head,
        activation=an.activation,
        placement=an.placement,
        impl=an.impl,
        stem=model.stem,
        zero_init_residual=model.zero_init_residual,
        num_classes=num_classes,
    )


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine to 0, per iteration (the papers' schedule) as an LR multiplier."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class ImageClassifier(pl.LightningModule):
    def __init__(self, config: RunConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.model = build_model(config, num_classes)
        self.compiled = False
        if config.trainer.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        alpha = config.optim.mixup_alpha
        self.mixup = v2.MixUp(alpha=alpha, num_classes=num_classes) if alpha > 0 else None
        top5 = min(5, num_classes)
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def configure_model(self) -> None:
        # Lightning may call this hook more than once (e.g. on resume); compile the model only the first time.
        if self.config.trainer.compile and not self.compiled:
            self.model = torch.compile(self.model)
            self.compiled = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.trainer.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.mixup is not None:
            images, labels = self.mixup(images, labels)
        loss = F.cross_entropy(self(images), labels, label_smoothing=self.config.optim.label_smoothing)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_top1(logits, labels)
        self.val_top5(logits, labels)
        self.log("val_loss", F.cross_entropy(logits, labels), on_epoch=True, prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        # Errors in percent, as the papers report them.
        self.log("val_top1_err", 100 * (1 - self.val_top1.compute()), prog_bar=True, sync_dist=False)
        self.log("val_top5_err", 100 * (1 - self.val_top5.compute()), sync_dist=False)
        self.val_top1.reset()
        self.val_top5.reset()

    def configure_optimizers(self):
        optim = self.config.optim
        decay, no_decay = [], []
        for module in self.model.modules():
            for name, parameter in module.named_parameters(recurse=False):
                excluded = isinstance(module, NORM_TYPES) or name == "bias"
                (no_decay if optim.exclude_norm_and_bias_from_wd and excluded else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        global_batch = self.config.data.batch_size * self.trainer.world_size
        optimizer = torch.optim.SGD(
            groups, lr=optim.base_lr * global_batch / 256, momentum=optim.momentum, nesterov=optim.nesterov
        )
        total = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(total // max(self.trainer.max_epochs, 1), 1)
        warmup = round(optim.warmup_epochs * steps_per_epoch)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
