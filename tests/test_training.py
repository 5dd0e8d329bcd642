"""Training through the real Lightning Trainer on real image files: accuracy, resume after SIGKILL, failures."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import an_lab, write_config

from an_lab.config import load_config, run_dir

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
    assert list((directory / "wandb").glob("wandb/offline-run-*/run-*.wandb"))

    again = an_lab("train", config, "--quiet")  # finished: not retrained
    assert again.returncode == 0 and "Trainer.fit" not in again.stderr
    assert json.loads((directory / "result.json").read_text()) == summary


def test_sigkill_then_restart_resumes_and_matches_an_uninterrupted_run(tmp_path, data_root):
    tree = digits_config(data_root, tmp_path / "killed", epochs=4)
    tree["wandb"]["mode"] = "disabled"
    killed = write_config(tmp_path / "killed.yaml", tree)
    directory = run_dir(load_config(killed))

    process = subprocess.Popen([sys.executable, "-m", "an_lab.cli", "train", str(killed), "--quiet"])
    deadline = time.time() + 300
    while not (directory / "last.ckpt").exists():  # the first epoch has ended
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (directory / "result.json").exists()

    resumed = an_lab("train", killed, "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stderr

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
    offline_runs = list((directory / "wandb").glob("wandb/offline-run-*/run-*.wandb"))
    assert offline_runs and offline_runs[0].stat().st_size > 0
    assert (directory / "last.ckpt").exists() and not (directory / "result.json").exists()

    resumed = an_lab("train", config, "--quiet")
    assert resumed.returncode == 0 and "Restoring states from the checkpoint" in resumed.stderr
    assert json.loads((directory / "result.json").read_text())["epochs"] == 3


def test_bf16_autocast_and_channels_last_train(tmp_path, data_root):
    tree = digits_config(data_root, tmp_path / "runs", epochs=1, precision="bf16-mixed", channels_last=True)
    tree["wandb"]["mode"] = "disabled"
    result = an_lab("train", write_config(tmp_path / "run.yaml", tree), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir(load_config(tmp_path / "run.yaml")) / "result.json").read_text())
    assert summary["precision"] == "bf16-mixed" and summary["final"]["top1_err"] < 90.0
