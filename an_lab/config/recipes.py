"""The papers' training setups as data: a config names one (recipe: NAME) and overrides what it needs."""

from __future__ import annotations

from typing import Any

_MASK_RCNN: dict[str, Any] = {
    "task": "detection",
    "model": {"name": "resnet50", "norm": "bn_frozen", "head_norm": "none"},
    "data": {"name": "coco", "root": "data/coco", "image_size": 800, "max_size": 1333, "batch_size": 2},
    "optim": {"base_lr": 0.02, "weight_decay": 1e-4, "warmup_iterations": 500, "clip_grad_norm": 35.0},
    "trainer": {"iterations": 90_000, "checkpoint_every": 2_000, "eval_every": 10_000},
}

# The papers' training setups (their ImageNet and CIFAR recipes); a config names one and overrides what it needs.
RECIPES: dict[str, dict[str, Any]] = {
    "vanilla": {
        "model": {"name": "resnet50", "zero_init_residual": True},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5},
        "trainer": {"epochs": 120, "precision": "16-mixed"},
    },
    "sota": {
        "model": {"name": "resnet50", "stem": "deep", "zero_init_residual": True},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5, "label_smoothing": 0.1, "mixup_alpha": 0.2},
        "trainer": {"epochs": 200, "precision": "16-mixed"},
    },
    "mobile": {
        "model": {"name": "mobilenet_v2"},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 128},
        "optim": {"base_lr": 0.05, "weight_decay": 4e-5, "warmup_epochs": 5},
        "trainer": {"epochs": 150, "precision": "16-mixed"},
    },
    # The AOGNet authors' ImageNet configurations: the ResNet recipe with no zero-init and 256 images per GPU for
    # AOGNet-12M (128 for AOGNet-40M: set data.batch_size), 8 GPUs; the 200-epoch ones add label smoothing and mixup
    # (and keep the AOGNet stem: no ResNet-D).
    "aognet": {
        "model": {"name": "aognet_12m", "zero_init_residual": False},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 256},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5},
        "trainer": {"epochs": 120, "precision": "16-mixed"},
    },
    "aognet_sota": {
        "model": {"name": "aognet_12m", "zero_init_residual": False},
        "data": {"name": "imagefolder", "image_size": 224, "batch_size": 256},
        "optim": {"base_lr": 0.1, "weight_decay": 1e-4, "warmup_epochs": 5, "label_smoothing": 0.1, "mixup_alpha": 0.2},
        "trainer": {"epochs": 200, "precision": "16-mixed"},
    },
    "cifar": {
        "model": {"name": "cifar_resnet20"},
        "data": {"name": "cifar100", "image_size": 32, "batch_size": 128},
        "optim": {"base_lr": 0.1, "weight_decay": 5e-4, "warmup_epochs": 1},
        "trainer": {"epochs": 160},
    },
    # Mask R-CNN + FPN fine-tuning as the papers (their mmdetection setup): 8 GPUs x 2 images, lr 0.02 at 16 images,
    # 90k (1x) or 180k (2x) iterations with 10x drops at 2/3 and 8/9, 500 warm-up iterations, weight decay 1e-4,
    # gradients clipped at L2 norm 35, images resized to 800 on the shorter side (at most 1333 on the longer).
    "mask_rcnn_1x": _MASK_RCNN,
    "mask_rcnn_2x": {**_MASK_RCNN, "trainer": {**_MASK_RCNN["trainer"], "iterations": 180_000}},
    # The cascades' "20e" schedule (the authors' cascade_mask_rcnn_*_fpn_20e configurations): 20 epochs of COCO
    # train2017 at 16 images per iteration, mmdetection's 7,330 iterations per epoch (the 117,266 images with
    # annotations; 146,600 in all), the rate divided by 10 after epochs 16 and 19 (iterations 117,280 and 139,270),
    # the same warm-up, clipping and resize; Cascade Mask R-CNN with 2fc heads and no head norms. A checkpoint every
    # fifth of an epoch, an evaluation every 2 epochs.
    "cascade_mask_rcnn_20e": {
        **_MASK_RCNN,
        "model": {**_MASK_RCNN["model"], "detector": "cascade_mask_rcnn", "box_head": "2fc"},
        "optim": {**_MASK_RCNN["optim"], "lr_steps": [0.8, 0.95]},
        "trainer": {"iterations": 146_600, "checkpoint_every": 1_466, "eval_every": 14_660},
    },
    "custom": {},
}
