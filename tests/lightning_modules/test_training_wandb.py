"""W&B only observes a run: an online start that cannot reach its server must not hold the run up or end it."""

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
from conftest import an_lab, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def silent_server():
    """A server on the loopback that accepts connections and never answers (a network that drops replies)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.5)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def test_an_online_run_without_a_reachable_server_falls_back_to_offline_with_one_warning(
    tmp_path, data_root, silent_server
):
    config = write_config(
        tmp_path / "online.yaml",
        {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
            "trainer": {"epochs": 1, "limit_train_batches": 2},
            "wandb": {"mode": "online", "init_timeout": 5},
            "output_dir": str(tmp_path / "runs"),
        },
    )
    env = {key: value for key, value in os.environ.items() if key != "WANDB_MODE"}
    env.update(WANDB_BASE_URL=silent_server, WANDB_API_KEY="a" * 40)
    done = an_lab("train", config, "--quiet", env=env, timeout=240)  # hangs past the timeout without the bound
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    warnings = [line for line in output.splitlines() if line.startswith("warning: W&B could not start online")]
    assert len(warnings) == 1 and "logging offline" in warnings[0]
    (run,) = [path for path in (tmp_path / "runs").iterdir() if path.is_dir()]
    assert json.loads((run / "result.json").read_text())["final"]["top1_err"] >= 0
    assert len(list((run / "wandb").rglob("offline-run-*"))) == 1


LEAVING_SCRIPT = """
import os, signal, sys, threading, time
from pathlib import Path
from an_lab.config import load_config
from an_lab.lightning_modules.train import train

config = load_config(sys.argv[1])
run = Path(sys.argv[2])

def requeue(signum, frame):  # what submitit's handler does on a time limit: checkpoint, requeue, sys.exit(-1)
    sys.exit(-1)

def signal_after_first_checkpoint():
    while not any(run.glob("*/last.ckpt")):
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGUSR2)

signal.signal(signal.SIGUSR2, requeue)
threading.Thread(target=signal_after_first_checkpoint, daemon=True).start()
try:
    train(config, progress=False)
finally:
    # SLURM ends every process of the step on a requeue: W&B's service dies before this interpreter exits.
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if parent == me:
                os.kill(int(entry.name), signal.SIGKILL)
"""


def test_a_run_left_by_a_requeue_exit_tears_wandb_down_before_its_service_dies(tmp_path, data_root):
    # CI once caught W&B's atexit teardown failing with a ConnectionResetError traceback in a requeued job's log: the
    # run had finished while the service was alive, then SLURM killed the service before the interpreter exited.
    config = write_config(
        tmp_path / "leaving.yaml",
        {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
            "trainer": {"epochs": 3, "limit_train_batches": 2},
            "wandb": {"mode": "offline"},
            "output_dir": str(tmp_path / "runs"),
        },
    )
    script = tmp_path / "leaving.py"
    script.write_text(LEAVING_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(config), str(tmp_path / "runs")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 255, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
    assert any((tmp_path / "runs").glob("*/wandb/offline-run-*")), "W&B never started: the test would prove nothing"
