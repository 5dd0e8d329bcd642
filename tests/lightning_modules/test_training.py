"""Training through the real Lightning Trainer on real image files: accuracy, resume after SIGKILL, failures."""

import csv
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import an_lab, kill_when, write_config

from an_lab.config import load_config
from an_lab.identity import run_dir

pytestmark = pytest.mark.slow


def digits_config(data_root, output_dir, **trainer) -> dict:
    return {
        "model": {"name": "cifar_resnet20", "norm": "an"},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
        "optim": {"base_lr": 0.4, "warmup_epochs": 1, "weight_decay": 5e-4},
        "trainer": {"epochs": 8, **trainer},
        "wandb": {"mode": "offline"},
        "output_dir": str(output_dir),
    }


def test_an_resnet_learns_digits_far_below_chance(tmp_path, data_root):
    config = write_config(tmp_path / "run.yaml", digits_config(data_root, tmp_path / "runs", diagnostics=True))
    result = an_lab("train", config, "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]

    directory = run_dir(load_config(config))
    summary = json.loads((directory / "result.json").read_text())
    assert summary["final"]["top1_err"] < 10.0  # chance is 90%
    assert summary["epochs"] == 8
    assert summary["params"] == 300_538 and summary["macs"] > 0 and summary["images_per_s"] > 0
    assert summary["versions"]["torch"] and summary["config_hash"] in summary["run_id"]
    rows = (directory / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch") and len(rows) == 9
    assert (directory / "an_mixtures.png").stat().st_size > 10_000
    assert (directory / "an_attention_by_class.png").stat().st_size > 10_000
    assert list((directory / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B writes into <run>/wandb/

    again = an_lab("train", config, "--quiet")  # finished: not retrained
    assert again.returncode == 0 and "resuming" not in again.stdout
    assert len(list((directory / "logs").glob("attempt-*"))) == 1
    assert json.loads((directory / "result.json").read_text()) == summary


def _logged_train_loss(directory: Path) -> bool:
    from an_lab.rundir import epoch_metrics

    return any("train_loss" in row for row in epoch_metrics(directory))


def test_sigkill_then_restart_resumes_and_matches_an_uninterrupted_run(tmp_path, data_root):
    tree = digits_config(data_root, tmp_path / "killed", epochs=4)
    tree["wandb"]["mode"] = "disabled"
    killed = write_config(tmp_path / "killed.yaml", tree)
    directory = run_dir(load_config(killed))

    # The first epoch has ended: its checkpoint exists and its rows are logged (Lightning logs an epoch's training
    # loss after the epoch-end callbacks: a kill between the two loses that one value of the curve).
    kill_when(killed, lambda: (directory / "last.ckpt").exists() and _logged_train_loss(directory))
    assert not (directory / "result.json").exists()

    resumed = an_lab("train", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {directory / 'last.ckpt'}" in resumed.stdout

    tree["output_dir"] = str(tmp_path / "straight")
    straight = an_lab("train", write_config(tmp_path / "straight.yaml", tree), "--quiet")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = json.loads((directory / "result.json").read_text())
    second = json.loads((tmp_path / "straight" / directory.name / "result.json").read_text())
    assert first["final"] == second["final"] and first["best"] == second["best"]
    validation = ("epoch", "val_loss", "val_top1_err", "val_top5_err", "train_loss")
    curves = [
        [{key: row[key] for key in validation} for row in csv.DictReader((folder / "metrics.csv").open())]
        for folder in (directory, tmp_path / "straight" / directory.name)
    ]
    assert len(curves[0]) == 4 and curves[0] == curves[1]
    assert len(list((directory / "logs").glob("attempt-*"))) == 2


def test_a_diverging_run_stops_marks_failed_and_exits_non_zero(tmp_path, data_root):
    tree = digits_config(data_root, tmp_path / "runs", epochs=2)
    tree["optim"] = {"base_lr": 1e9, "warmup_epochs": 0}
    tree["wandb"]["mode"] = "disabled"
    config = write_config(tmp_path / "run.yaml", tree)
    result = an_lab("train", config, "--quiet")
    assert result.returncode == 1
    assert "diverged: training loss became nan" in result.stderr
    failed = json.loads((run_dir(load_config(config)) / "failed.json").read_text())
    assert failed["reason"].startswith("diverged")
    assert not (run_dir(load_config(config)) / "result.json").exists()


def test_sigterm_flushes_wandb_keeps_the_checkpoint_and_the_run_resumes(tmp_path, data_root):
    config = write_config(tmp_path / "run.yaml", digits_config(data_root, tmp_path / "runs", epochs=3))
    directory = run_dir(load_config(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "an_lab.cli", "train", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (directory / "last.ckpt").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before SIGTERM"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    offline_runs = list((directory / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline_runs and offline_runs[0].stat().st_size > 0
    assert (directory / "last.ckpt").exists() and not (directory / "result.json").exists()

    resumed = an_lab("train", config, "--quiet")
    assert resumed.returncode == 0 and f"resuming from {directory / 'last.ckpt'}" in resumed.stdout
    assert json.loads((directory / "result.json").read_text())["epochs"] == 3


def test_bf16_autocast_and_channels_last_train(tmp_path, data_root):
    tree = digits_config(data_root, tmp_path / "runs", epochs=1, precision="bf16-mixed", channels_last=True)
    tree["wandb"]["mode"] = "disabled"
    result = an_lab("train", write_config(tmp_path / "run.yaml", tree), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir(load_config(tmp_path / "run.yaml")) / "result.json").read_text())
    assert summary["precision"] == "bf16-mixed" and summary["final"]["top1_err"] < 90.0


# -- AttentiveNorm2d in half precision and on the GPU --------------------------------------------------------------

AN_DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


def _tiny_run(data_root, output_dir, **trainer) -> dict:
    """One epoch of two training batches, no W&B: a real run, kept short."""
    tree = digits_config(data_root, output_dir, epochs=1, limit_train_batches=2, **trainer)
    tree["wandb"]["mode"] = "disabled"
    return tree


def test_bf16_true_precision_trains_an_in_bf16_with_fp32_statistics(tmp_path, data_root):
    """precision="bf16-true" casts the whole model to bf16; the AN layers train with their statistics in fp32."""
    import lightning.pytorch as pl

    from an_lab.config import resolve
    from an_lab.lightning_modules.classifier import ImageClassifier
    from an_lab.lightning_modules.data.classification import ImageClassificationData
    from an_lab.nn import AttentiveNorm2d

    config = resolve(_tiny_run(data_root, tmp_path / "runs", precision="bf16-true", accelerator="cpu"))
    pl.seed_everything(config.trainer.seed, verbose=False)
    data = ImageClassificationData(config.data, seed=config.trainer.seed)
    data.prepare_data()
    data.setup("fit")
    module = ImageClassifier(config, data.num_classes)
    layers = [m for m in module.modules() if isinstance(m, AttentiveNorm2d)]
    gamma_before = [layer.gamma.detach().clone() for layer in layers]
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        precision=config.trainer.precision,
        limit_train_batches=config.trainer.limit_train_batches,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)

    assert layers and all(layer.gamma.dtype == layer.attention.fc.weight.dtype == torch.bfloat16 for layer in layers)
    assert all(layer.running_var.dtype == layer.attention.norm.weight.dtype == torch.float32 for layer in layers)
    assert all(int(layer.num_batches_tracked) == 2 for layer in layers)
    assert all(torch.isfinite(layer.running_var).all() for layer in layers)
    # gamma_before is fp32 from before the cast: rounded to bf16 it is where training started.
    pairs = zip(layers, gamma_before, strict=True)
    assert any(not torch.equal(layer.gamma, before.to(torch.bfloat16)) for layer, before in pairs)
    assert math.isfinite(trainer.callback_metrics["train_loss"].item())
    assert math.isfinite(trainer.callback_metrics["val_loss"].item())


def test_bf16_true_run_through_train_writes_its_result(tmp_path, data_root):
    from an_lab.config import resolve
    from an_lab.lightning_modules.train import train

    config = resolve(_tiny_run(data_root, tmp_path / "runs", precision="bf16-true", accelerator="cpu"))
    result = train(config, progress=False)
    assert result["precision"] == "bf16-true" and math.isfinite(result["final"]["train_loss"])


@pytest.mark.parametrize("device", AN_DEVICES)
def test_bf16_mixed_channels_last_training_step(tmp_path, data_root, device):
    from an_lab.config import resolve
    from an_lab.lightning_modules.train import train

    accelerator = "gpu" if device == "cuda" else "cpu"
    tree = _tiny_run(data_root, tmp_path / "runs", precision="bf16-mixed", channels_last=True, accelerator=accelerator)
    result = train(resolve(tree), progress=False)
    assert result["precision"] == "bf16-mixed" and result["epochs"] == 1
    assert math.isfinite(result["final"]["train_loss"]) and math.isfinite(result["final"]["val_loss"])


def test_model_an_impl_reaches_every_an_layer_of_the_model():
    from an_lab.lightning_modules.classifier import build_model
    from an_lab.nn import AttentiveNorm2d

    model = build_model(load_config(None, ["model.an.impl=torch"]), num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, AttentiveNorm2d)]
    assert layers and all(layer.impl == "torch" for layer in layers)
    assert all(m.impl == "auto" for m in build_model(load_config(None), 10).modules() if isinstance(m, AttentiveNorm2d))
