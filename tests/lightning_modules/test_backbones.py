"""The CIFAR-size AOGNet and DenseNet-BC train through the real pipeline (train(), a Lightning Trainer, digits)."""

import math

import pytest

from an_lab.config import resolve
from an_lab.identity import run_dir
from an_lab.lightning_modules.train import train
from an_lab.models import create
from an_lab.profiling import count_parameters
from an_lab.rundir import epoch_metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar_aognet", "cifar_densenet100"])
def test_cifar_size_backbones_train_with_an(tmp_path, data_root, name):
    tree = {
        "model": {"name": name, "norm": "an", "zero_init_residual": False},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
        "optim": {"base_lr": 0.2, "warmup_epochs": 1, "weight_decay": 5e-4},
        "trainer": {"epochs": 3, "limit_train_batches": 8},
        "wandb": {"mode": "disabled"},
        "output_dir": str(tmp_path / "runs"),
    }
    config = resolve(tree)
    result = train(config, progress=False)
    assert result["params"] == count_parameters(create(name, norm="an", num_classes=10))
    assert result["epochs"] == 3 and math.isfinite(result["final"]["train_loss"])
    losses = [float(row["train_loss"]) for row in epoch_metrics(run_dir(config)) if row.get("train_loss")]
    assert len(losses) == 3 and losses[-1] < 0.95 * losses[0], losses  # it learns: the training loss falls
