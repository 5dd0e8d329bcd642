"""A short timed calibration of one run's training step on this machine: what `an-lab plan --calibrate` measures
for a network that has no finished run to time the sweep by.

It builds the run's network as the run does (classification: `build_model`; detection: `build_detector`), puts it
on the run's device with the run's thread count, and times `steps` SGD steps at the run's batch size and image size
on synthetic inputs (detection: one box and its mask per image), after `warmup` untimed steps. The figure is
seconds per training image of the training step alone: validation, data loading and start-up are not in it, so a
run takes longer than this predicts (`plan` says so).
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from an_lab.config import RunConfig
from an_lab.errors import UsageError

CLASSES = 10  # the classifier's output size during calibration: the last layer's cost, negligible at any size


def device_words(device: torch.device) -> str:
    """The device as result.json's "device" names it for one process (`1 x cpu (x86_64)`)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"1 x {device.type} ({name})"


def _device(config: RunConfig) -> torch.device:
    accelerator = config.trainer.accelerator
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError(
                f"trainer.accelerator is {accelerator!r} but this machine has no CUDA GPU: a calibration here would "
                "time the wrong device; calibrate on a machine like the one the runs will use, or finish one run"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _classification_step(config: RunConfig, device: torch.device):
    from an_lab.lightning_modules.classifier import build_model

    model = build_model(config, CLASSES).to(device).train()
    size, batch = config.data.image_size, config.data.batch_size
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def _detection_step(config: RunConfig, device: torch.device):
    from an_lab.lightning_modules.detection.detector import build_detector

    model = build_detector(config, CLASSES).to(device).train()
    size, batch = config.data.image_size, config.data.batch_size
    generator = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(batch):
        side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
        x, y = (int(v) for v in torch.randint(0, size - side, (2,), generator=generator))
        mask = torch.zeros(1, size, size, dtype=torch.uint8)
        mask[0, y : y + side, x : x + side] = 1
        images.append(torch.rand(3, size, size, generator=generator).to(device))
        targets.append(
            {
                "boxes": torch.tensor([[x, y, x + side, y + side]], dtype=torch.float32, device=device),
                "labels": torch.tensor([1], device=device),
                "masks": mask.to(device),
            }
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()
        optimizer.step()

    return step


def seconds_per_image(config: RunConfig, steps: int = 5, warmup: int = 2) -> tuple[float, str]:
    """(median seconds per training image of `steps` timed steps, the device's words) for a run like `config`."""
    device = _device(config)
    torch.manual_seed(0)
    torch.set_num_threads(config.trainer.cpu_threads)
    step = (_detection_step if config.task == "detection" else _classification_step)(config, device)
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times) / config.data.batch_size, device_words(device)
