"""The forkserver starter of the local executor (an_lab.launch.workers), with real server processes, real forked
children and the real Trainer: the same digits as fresh interpreters, the claim in the child, signals, a lost server,
a killed launcher, a bad config, and the fallback when no server can start."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from an_lab.config import load_config
from an_lab.errors import UsageError
from an_lab.identity import run_dir, run_id
from an_lab.launch.base import DONE, INTERRUPTED, RunRequest
from an_lab.launch.local import STARTER_ENV, LocalExecutor, default_starter, start_process
from an_lab.launch.workers import EXIT_UNKNOWN, ForkedProcess, Forkserver
from an_lab.rundir import CONFIG, epoch_metrics, read_json, read_result, try_claim, write_json_atomic


def no_fallback(*args):
    raise AssertionError("the forkserver did not start the run: the fallback starter was called")


def digits_tree(data_root, output: Path, seed: int = 0, epochs: int = 1, **changes) -> dict:
    """A run on the digits, a few seconds an epoch (8 training batches), W&B off unless changed."""
    tree = {
        "model": {"name": "cifar_resnet20", "norm": "an"},
        "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
        "optim": {"base_lr": 0.4, "warmup_epochs": 1},
        "trainer": {"epochs": epochs, "seed": seed, "limit_train_batches": 8},
        "wandb": {"mode": "disabled"},
        "output_dir": str(output),
    }
    for section, values in changes.items():
        tree[section].update(values)
    return tree


def claimed(tree: dict, folder: Path) -> RunRequest:
    """The run claimed and its config.json written, as the sweep hands a run to the local executor."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(tree))
    config = load_config(path)
    directory = run_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    claim = try_claim(directory, "test launcher")
    assert claim is not None
    write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
    return RunRequest(run_id(config), directory, config, claim=claim)


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ended(executor: LocalExecutor, seconds: float = 600):
    """The one handle that ends next."""
    deadline = time.monotonic() + seconds
    while True:
        handles = executor.poll()
        if handles:
            (handle,) = handles
            return handle
        assert time.monotonic() < deadline, "no run ended"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaps (an orphan under a PID 1 that does not reap)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def curves(directory: Path) -> list[dict]:
    """The per-epoch metrics that depend on the numbers only (not on time)."""
    return [
        {key: value for key, value in row.items() if key.startswith("val_") or key == "train_loss"}
        for row in epoch_metrics(directory)
    ]


@pytest.fixture(scope="module")
def forkserver():
    """One server for the tests that leave it alive: consecutive runs share it."""
    starter = Forkserver(fallback=no_fallback)
    yield starter
    starter.close()
    assert starter.server is None or starter.server.process.poll() is not None


# ---------------------------------------------------------------------------------------------------------------------
# Without training


def test_the_executor_uses_a_forkserver_unless_the_environment_asks_for_processes(monkeypatch):
    monkeypatch.delenv(STARTER_ENV, raising=False)
    executor = LocalExecutor(1)
    assert isinstance(executor.starter, Forkserver) and executor.starter.server is None  # started by the first run
    executor.close()
    monkeypatch.setenv(STARTER_ENV, "process")
    assert LocalExecutor(1).starter is start_process
    monkeypatch.setenv(STARTER_ENV, "threads")
    with pytest.raises(UsageError, match=STARTER_ENV):
        default_starter()


SERVER_THAT_FAILS = (
    "import json, socket, sys; "
    "socket.socket(fileno=int(sys.argv[1])).send(json.dumps({'op': 'failed', 'message': 'no torch here'}).encode())"
)


@pytest.mark.parametrize(
    ("server", "said"),
    [
        ([sys.executable, "-c", "import sys; sys.exit(3)"], "ended while importing the training stack (exit 3)"),
        ([sys.executable, "-c", SERVER_THAT_FAILS], "could not start: no torch here"),
        (["/nonexistent/python"], "cannot start the forkserver"),
    ],
)
def test_a_server_that_cannot_start_leaves_every_run_to_the_fallback_said_once(tmp_path, capsys, server, said):
    calls = []
    starter = Forkserver(fallback=lambda *args: calls.append(args) or "fresh", command=server)
    log = tmp_path / "train.log"
    assert starter(tmp_path / "config.json", log, {}, ()) == "fresh"
    assert starter(tmp_path / "config.json", log, {}, ()) == "fresh"
    assert len(calls) == 2 and said in starter.disabled
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and said in notes[0] and "fresh interpreter" in notes[0]


# ---------------------------------------------------------------------------------------------------------------------
# Real runs


@pytest.mark.slow
def test_runs_forked_from_one_server_match_fresh_interpreters_to_the_digit(tmp_path, data_root, forkserver):
    """Two consecutive runs in the same server (the second with a data loader worker and offline W&B) against the
    same runs started by start_process: every validation number and training loss, to the last digit."""
    trees = {
        where: [
            digits_tree(data_root, tmp_path / where, seed=0, epochs=2),
            digits_tree(
                data_root, tmp_path / where, seed=1, epochs=2, data={"num_workers": 1}, wandb={"mode": "offline"}
            ),
        ]
        for where in ("forked", "fresh")
    }
    forked = []

    def recorded(*args):
        forked.append(forkserver(*args))
        return forked[-1]

    results = {}
    for where, starter in (("forked", recorded), ("fresh", start_process)):
        executor = LocalExecutor(1, starter=starter)
        for tree in trees[where]:
            executor.submit([claimed(tree, tmp_path / where / "configs")])
            handle = ended(executor)
            assert handle.outcome == DONE, (handle.returncode, (handle.run_dir / "train.log").read_text()[-3000:])
            results.setdefault(where, []).append((read_result(handle.run_dir)[0], curves(handle.run_dir)))
    for (ours, our_curve), (theirs, their_curve) in zip(results["forked"], results["fresh"], strict=True):
        assert ours["final"] == theirs["final"] and ours["best"] == theirs["best"] and ours["tail"] == theirs["tail"]
        assert our_curve == their_curve and len(our_curve) == 2
    assert results["forked"][0][0]["final"] != results["forked"][1][0]["final"]  # two seeds: two different runs
    assert all(isinstance(process, ForkedProcess) for process in forked)
    assert forked[0].server_pid == forked[1].server_pid and forked[0].pid != forked[1].pid  # one server, two children


@pytest.mark.slow
def test_sigterm_stops_a_forked_run_cleanly_with_143_and_sigkill_reads_minus_9(tmp_path, data_root, forkserver):
    executor = LocalExecutor(1, starter=forkserver)
    (handle,) = executor.submit([claimed(digits_tree(data_root, tmp_path / "runs", epochs=20), tmp_path)])
    wait_for(lambda: (handle.run_dir / "last.ckpt").exists(), 300, "the first checkpoint")  # inside Trainer.fit
    executor.interrupt()  # SIGTERM to the child's process group, as on Ctrl-C of the sweep
    assert executor.poll() == [] and not executor.in_flight()
    assert handle.returncode == 143 and handle.outcome == INTERRUPTED  # train()'s handler: exit 143, not -15
    assert "stopped by SIGTERM" in read_json(handle.run_dir / "interrupted.json")["reason"]
    assert (handle.run_dir / "last.ckpt").exists() and read_result(handle.run_dir) == (None, None)
    assert try_claim(handle.run_dir, "test") is not None  # the child let go of it

    (handle,) = executor.submit([claimed(digits_tree(data_root, tmp_path / "runs", seed=1, epochs=20), tmp_path)])
    wait_for(lambda: (handle.run_dir / "started.json").exists(), 300, "the run's start")
    os.killpg(int(handle.job_id.split()[1]), signal.SIGKILL)  # as the OOM killer would
    assert ended(executor) is handle
    assert handle.returncode == -9 and handle.outcome == INTERRUPTED
    assert "killed by SIGKILL" in read_json(handle.run_dir / "interrupted.json")["reason"]


@pytest.mark.slow
def test_a_bad_config_exits_2_with_the_error_in_the_run_log(tmp_path, forkserver):
    directory = tmp_path / "runs" / "bad"
    directory.mkdir(parents=True)
    (directory / CONFIG).write_text(json.dumps({"model": {"name": "no_such_model"}}))
    process = forkserver(directory / CONFIG, directory / "train.log", {}, ())
    assert isinstance(process, ForkedProcess)
    assert process.wait(timeout=120) == 2
    log = (directory / "train.log").read_text()
    assert log.startswith("error:") and "no_such_model" in log and "Traceback" not in log


LAUNCHER = """
import json, sys, time
from pathlib import Path
from an_lab.config import load_config
from an_lab.identity import run_dir, run_id
from an_lab.launch.base import RunRequest
from an_lab.launch.local import LocalExecutor
from an_lab.rundir import CONFIG, try_claim, write_json_atomic

config = load_config(sys.argv[1])
directory = run_dir(config)
directory.mkdir(parents=True)
claim = try_claim(directory, "launcher")
write_json_atomic(directory / CONFIG, config.model_dump(mode="json"))
executor = LocalExecutor(1)
(handle,) = executor.submit([RunRequest(run_id(config), directory, config, claim=claim)])
print(json.dumps({"child": int(handle.job_id.split()[1]), "server": executor.starter.server.pid}), flush=True)
time.sleep(3600)
"""


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_server_and_its_child_trains_on_holding_the_claim(tmp_path, data_root):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(digits_tree(data_root, tmp_path / "runs", epochs=2)))
    directory = run_dir(load_config(config))
    env = {key: value for key, value in os.environ.items() if key != STARTER_ENV}
    launcher = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LAUNCHER), str(config)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        pids = json.loads(launcher.stdout.readline())
        assert try_claim(directory, "test") is None
        launcher.kill()
        launcher.wait()
        wait_for(lambda: gone(pids["server"]), 30, "the server to exit after its launcher died")
        assert not gone(pids["child"])
        assert try_claim(directory, "test") is None  # the child holds the claim alone now
        wait_for(lambda: (read_json(directory / "run.lock") or {}).get("trainer_pid") == pids["child"], 120, "train")
        wait_for(lambda: gone(pids["child"]), 300, "the child to finish")
        assert read_result(directory)[0] is not None, (directory / "train.log").read_text()[-3000:]
        claim = try_claim(directory, "test")
        assert claim is not None  # released with the child's end
        claim.release()
    finally:
        launcher.kill()
        launcher.wait()


@pytest.mark.slow
def test_a_lost_server_leaves_its_children_running_and_their_handles_sane(tmp_path, data_root, capsys):
    starter = Forkserver(fallback=no_fallback)
    executor = LocalExecutor(1, starter=starter)
    try:
        (handle,) = executor.submit([claimed(digits_tree(data_root, tmp_path / "runs", epochs=2), tmp_path)])
        first = starter.server
        wait_for(lambda: (handle.run_dir / "started.json").exists(), 300, "the run's start")
        os.kill(first.pid, signal.SIGKILL)
        wait_for(lambda: gone(first.pid), 30, "the server's end")
        assert ended(executor) is handle  # it trained on, and its end is seen without the server
        assert first.lost and handle.returncode == 0 and handle.outcome == DONE
        assert read_result(handle.run_dir)[0] is not None

        # The next run gets a new server; that one is lost too, then its child is killed: an unknown end.
        (handle,) = executor.submit([claimed(digits_tree(data_root, tmp_path / "runs", 1, 20), tmp_path)])
        second = starter.server
        assert second is not first and starter.restarts == 1
        assert "the forkserver (pid" in capsys.readouterr().err
        wait_for(lambda: (handle.run_dir / "started.json").exists(), 300, "the run's start")
        os.kill(second.pid, signal.SIGKILL)
        wait_for(lambda: gone(second.pid), 30, "the server's end")
        child = int(handle.job_id.split()[1])
        assert executor.poll() == [] and not gone(child)
        os.killpg(child, signal.SIGKILL)
        assert ended(executor) is handle
        assert handle.returncode == EXIT_UNKNOWN and handle.outcome == INTERRUPTED
        assert "how it ended is unknown" in read_json(handle.run_dir / "interrupted.json")["reason"]
    finally:
        executor.close()
