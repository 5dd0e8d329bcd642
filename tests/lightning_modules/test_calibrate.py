"""The timed training steps behind `an-lab plan --calibrate`, for both tasks."""

import math
import platform

import pytest

from an_lab.config import RunConfig
from an_lab.lightning_modules.calibrate import seconds_per_image


@pytest.mark.parametrize(
    "tree",
    [
        {"model": {"name": "cifar_resnet20", "norm": "an"}, "data": {"name": "digits", "image_size": 16}},
        {
            "task": "detection",
            "recipe": "custom",
            "model": {"name": "mobilenet_v2", "norm": "an", "head_norm": "none"},
            "data": {"name": "shapes", "image_size": 64, "batch_size": 2},
            "trainer": {"iterations": 10},
        },
    ],
    ids=["classification", "detection"],
)
def test_a_calibration_times_real_training_steps_of_the_runs_network(tree):
    config = RunConfig.model_validate({**tree, "trainer": {**tree.get("trainer", {}), "accelerator": "cpu"}})
    seconds, device = seconds_per_image(config, steps=2, warmup=1)
    assert math.isfinite(seconds) and 1e-5 < seconds < 60
    assert device == f"1 x cpu ({platform.processor() or platform.machine()})"
