"""Shared fixtures: real data written to disk once per session, and a helper to run the real `an-lab` command."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

# Triton's interpreter runs the fused AN kernels on CPU tensors where there is no GPU. Triton reads this when it is
# first imported (its standard library, tl.zeros and the like, is defined then), and any test may import it first
# (torch._dynamo does, at collection): so it is set here, before anything else is imported (tests/nn/test_fused.py).
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from an_lab.identity import IDENTITY_SCHEME

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("WANDB_SILENT", "true")

# scripts/test.sh runs the suite on two pytest-xdist workers (--dist loadgroup); each worker is its own session.
SLURM_GROUP = "slurm-cluster"  # one machine holds one local SLURM cluster: every test that needs it runs on one worker


def _in_slurm_group(item) -> bool:
    return any(mark.args[:1] == (SLURM_GROUP,) for mark in item.iter_markers("xdist_group"))


def _workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Every test of the SLURM cluster goes to one xdist group (so one worker starts the one cluster); SLURM tests
    run first, then the other slow ones, so that the long group starts at once and the other worker's last tests
    are short ones. The sort is stable: tests keep their order within each of the three tiers."""
    for item in items:
        if item.get_closest_marker("slurm") or "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))
    items.sort(key=lambda item: 0 if _in_slurm_group(item) else 1 if item.get_closest_marker("slow") else 2)


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_worker():
    """With several xdist workers on the machine's cores, each worker's in-process torch uses one thread, like each
    training process (trainer.cpu_threads defaults to 1): two workers of two threads each on two cores would thrash."""
    if _workers() > 1:
        import torch

        torch.set_num_threads(1)
    yield


SMALL_SHAPES = {"train_images": 24, "val_images": 12, "image_size": 64, "seed": 3}  # a COCO-format set in seconds


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test: code that reads COCO folders must never reach out."""

    def refuse(*args, **kwargs):
        raise AssertionError("the COCO code tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A small generated shapes set (SMALL_SHAPES), written once per test module."""
    from an_lab.lightning_modules.data.coco_shapes import write_shapes_dataset

    root = tmp_path_factory.mktemp("coco") / "shapes"
    write_shapes_dataset(root, **SMALL_SHAPES)
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """scikit-learn's digits written as PNG files in an imagefolder layout (done once per session)."""
    from an_lab.lightning_modules.data.classification import materialize_digits

    root = tmp_path_factory.mktemp("data")
    materialize_digits(root)
    return root


def an_lab(
    *args, cwd: Path | None = None, env: dict | None = None, python: tuple[str, ...] = (), timeout: float = 600
) -> subprocess.CompletedProcess:
    """The real `an-lab` command in a fresh interpreter (`python` adds interpreter flags such as -X importtime)."""
    return subprocess.run(
        [sys.executable, *python, "-m", "an_lab.cli", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def small_sweep(data_root, output_dir, axes: dict) -> dict:
    """A CPU-sized ablation on the digits: CIFAR ResNet-20 at 16x16, 2 epochs, a BN baseline, W&B off."""
    return {
        "name": "small",
        "mode": "ablation",
        "base": {
            "model": {"name": "cifar_resnet20", "norm": "an"},
            "data": {"name": "digits", "root": str(data_root), "image_size": 16, "batch_size": 64, "num_workers": 0},
            "optim": {"base_lr": 0.4, "warmup_epochs": 1},
            "trainer": {"epochs": 2},
            "wandb": {"mode": "disabled"},
        },
        "axes": axes,
        "baselines": {"bn": {"model.norm": "bn"}},
        "launcher": {"executor": "local", "max_parallel": 2},
        "output_dir": str(output_dir),
    }


def write_manifest(runs: Path, cells: list[dict], name: str = "known") -> Path:
    """A sweep folder <runs>/sweeps/<name>/ holding a hand-written manifest of runs that live in `runs` (where
    `an-lab sweep` puts it: the folder sits in its output_dir)."""
    folder = runs / "sweeps" / name
    folder.mkdir(parents=True)
    # hand-made runs are today's runs, whatever their ids: no migration is due (an_lab.migrate)
    (runs / ".an-lab-ids").write_text(json.dumps({"scheme": IDENTITY_SCHEME}))
    manifest = {"name": name, "mode": "ablation", "sweep_file": f"{name}.yaml", "output_dir": str(runs)}
    manifest.update(updated=1.7e9, cells=cells)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def kill_when(config: Path, ready, timeout: float = 300) -> None:
    """Start `an-lab train CONFIG` and SIGKILL it as soon as ready() holds (it must not end first)."""
    process = subprocess.Popen([sys.executable, "-m", "an_lab.cli", "train", str(config), "--quiet"])
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def wait_stopped(pid: int, timeout: float = 120) -> None:
    """Wait until process `pid` is stopped (state T in /proc), as the journal lock's test hook leaves it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = Path(f"/proc/{pid}/stat").read_text()
        if text.rpartition(")")[2].split()[0] == "T":
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def kill_holding_the_journal_lock(command: list, log, ready, trigger: Path, cwd: Path | None = None) -> int:
    """Start a search orchestrator, and once ready() holds, have it stop itself inside the Optuna journal lock (the
    test hook of an_lab.sweeps.journal: placed there, not timed) and SIGKILL it there. Returns its pid."""
    from an_lab.sweeps.journal import STOP_HOLDING_ENV, describe

    env = {**os.environ, STOP_HOLDING_ENV: str(trigger)}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, "the orchestrator ended before it was ready"
        time.sleep(0.1)
    trigger.touch()
    wait_stopped(process.pid)
    assert not trigger.exists(), "the orchestrator stopped, but not in the journal lock"
    lock = next(Path(trigger.parent).rglob("optuna-journal.lock"), None)
    held = describe(lock) if lock else None
    assert held is not None and held.held and held.owner["pid"] == process.pid, held
    process.kill()
    process.wait()
    return process.pid


def kill_outside_the_journal_lock(process: subprocess.Popen, lock: Path) -> None:
    """SIGKILL an orchestrator at a moment it does not hold the journal lock: stopped, checked, killed (resumed and
    tried again when the stop caught it inside)."""
    from an_lab.sweeps.journal import describe

    while True:
        os.kill(process.pid, signal.SIGSTOP)
        wait_stopped(process.pid)
        found = describe(lock)
        if not (found.held and found.owner and found.owner.get("pid") == process.pid):
            break
        os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.01)
    process.kill()
    process.wait()


def walk(node):
    """Every dict inside a nested structure of dicts and lists (a W&B report spec), depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def write_config(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster with accounting (scripts/local-slurm.sh) for the whole session.

    Installs the Debian packages if missing, starts the daemons with their state in a fresh temporary folder,
    exports SLURM_CONF for this process and every command it starts, and stops exactly those daemons at the end.
    """
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("the local SLURM cluster needs root on a Debian machine (scripts/local-slurm.sh)")
    script = ROOT / "scripts" / "local-slurm.sh"
    running = os.environ.get("AN_LAB_TEST_SLURM_STATE")  # a cluster already up (local-slurm.sh up DIR): reuse it
    if running:
        healthy = subprocess.run([script, "status", running], capture_output=True, text=True, timeout=60)
        assert healthy.returncode == 0, f"AN_LAB_TEST_SLURM_STATE={running} is not a healthy cluster: {healthy.stderr}"
        os.environ["SLURM_CONF"] = str(Path(running) / "etc" / "slurm.conf")
        yield Path(running)
        return
    state = tmp_path_factory.mktemp("slurm-cluster")
    install = subprocess.run([script, "install"], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.fail(f"local-slurm.sh install failed:\n{install.stderr[-3000:]}")
    up = subprocess.run([script, "up", state], capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        subprocess.run([script, "down", state], capture_output=True, timeout=300)
        pytest.fail(f"local-slurm.sh up failed:\n{up.stderr[-3000:]}")
    export = up.stdout.strip().splitlines()[-1]
    assert export.startswith("export SLURM_CONF="), up.stdout
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = export.split("=", 1)[1]
    try:
        yield state
    finally:
        subprocess.run([script, "down", state], capture_output=True, timeout=300)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@contextlib.contextmanager
def _tmpfs(target: Path, options: str):
    """A tmpfs mounted at target for the duration (skipped where mounting needs root this process lacks)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full or read-only file system is made with a tmpfs mount, which needs root")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 256 KiB tmpfs: `fill()` writes a file until the file system is full (ENOSPC)."""
    with _tmpfs(tmp_path / "full-disk", "size=256k") as target:

        class Disk:
            path = target

            @staticmethod
            def fill() -> None:
                fill_disk(target)

        yield Disk


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only tmpfs (root ignores permission bits, so chmod alone proves nothing)."""
    with _tmpfs(tmp_path / "read-only", "ro,size=64k") as target:
        yield target


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size) -> a folder on a fresh tmpfs of that size ("8m"); unmounted at the end."""
    with contextlib.ExitStack() as mounts:
        count = iter(range(1000))
        yield lambda size: mounts.enter_context(_tmpfs(tmp_path / f"disk-{next(count)}", f"size={size}"))


def fill_disk(folder: Path) -> Path:
    """Write a filler file into folder until its file system is full (ENOSPC); returns the filler's path."""
    filler = folder / ".filler"
    with filler.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError:
                continue
    return filler
