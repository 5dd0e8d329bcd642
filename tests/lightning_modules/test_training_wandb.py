"""W&B only observes a run: an online start that cannot reach its server must not hold the run up or end it."""

import json
import os
import socket
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
