"""The run directory is the ledger: what a run is, who trains it, how far it got and its result, without torch.

runs/<run_id>/
    config.json        resolved config (written first)
    run.lock           the claim: an exclusive flock held by whoever trains the run (its owner's host and pid inside)
    started.json       host, pid and time of the latest attempt
    last.ckpt          latest checkpoint (Lightning's format), replaced atomically at every epoch end
    previous.ckpt      the checkpoint before it, kept so that a damaged last.ckpt costs one epoch, not the run
    logs/attempt-N/    per-attempt CSV logs; metrics.csv merges them at the end
    interrupted.json   why the latest attempt stopped without failing (a signal, a full disk): it resumes
    failed.json        why the latest attempt failed by itself (removed when a later attempt starts)
    result.json        written once, atomically, at the very end: its valid presence means "done"

States: done, corrupt (a result.json that does not validate), failed, running, interrupted, pending.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from an_lab.atomic import write_json
from an_lab.metrics import TASKS, primary

CONFIG, STARTED, FAILED, RESULT, CHECKPOINT, METRICS = (
    "config.json",
    "started.json",
    "failed.json",
    "result.json",
    "last.ckpt",
    "metrics.csv",
)
PREVIOUS_CHECKPOINT = "previous.ckpt"
INTERRUPTED = "interrupted.json"
LOCK = "run.lock"
CORRUPT_SUFFIX = ".corrupt"  # a damaged ledger file is kept beside the run under this suffix, never deleted
# Exit codes of `an-lab train` that are not failures: another process owns the run; the run was stopped from outside
# (e.g. the disk filled up) and wrote interrupted.json. Any signal death or 128+N exit also counts as interrupted.
EXIT_BUSY, EXIT_INTERRUPTED = 73, 75
# The environment variable through which a launcher hands its claim (an open file descriptor) to the child it starts.
CLAIM_FD_ENV = "AN_LAB_CLAIM_FD"


# ---------------------------------------------------------------------------------------------------------------------
# Writing


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file beside the target and rename (an_lab.atomic): readers see the old file or the whole
    new one. On any failure (a full disk, a read-only folder) the old file stays as it was, and a UsageError names
    the path and the reason."""
    write_json(path, data)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def set_aside(path: Path) -> Path:
    """Rename a damaged ledger file to <name>.corrupt (replacing an older one) and return the new path."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    os.replace(path, target)
    return target


def mark_started(run_dir: Path) -> None:
    for name in (FAILED, INTERRUPTED):
        (run_dir / name).unlink(missing_ok=True)
    write_json_atomic(run_dir / STARTED, {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})


def mark_failed(run_dir: Path, reason: str) -> None:
    """The run failed by itself (divergence, bad data, a Python error): relaunched only with --retry-failed."""
    write_json_atomic(run_dir / FAILED, {"reason": reason, "time": time.time()})


def mark_interrupted(run_dir: Path, reason: str) -> None:
    """The run was stopped from outside (a signal, the OOM killer, a full disk): the next launch resumes it."""
    (run_dir / FAILED).unlink(missing_ok=True)
    write_json_atomic(run_dir / INTERRUPTED, {"reason": reason, "time": time.time()})


# ---------------------------------------------------------------------------------------------------------------------
# Results


class Result(TypedDict, total=False):
    """result.json, as the training layer writes it at the end of a run (an_lab.lightning_modules.train) and every
    reader may rely on once result_problem() finds nothing wrong: a run's "final" metrics (finite numbers or null,
    at least one number: top1_err, top5_err, val_loss, train_loss; bbox_ap ... of a detection run), its "best" epoch's,
    and how the run was made."""

    run_id: str
    config_hash: str
    status: str  # "done"
    final: dict[str, float | None]
    best: dict[str, float | None]  # the best epoch's metrics and that "epoch" (0-based)
    tail: dict[str, list]  # the last epochs' "epoch" and validation values, oldest first
    params: int
    macs: int
    epochs: int
    val_images: int | None  # the validation set's size: the error's resolution is 100 / val_images
    wall_time_s: float
    images_per_s: float
    device: str
    precision: str
    cpu_threads: int
    versions: dict[str, str]
    git_revision: str | None
    finished_at: float
    previous_run_ids: list[str]  # the ids it had before an_lab.migrate moved it


def _is_finite_number(value: object) -> bool:
    if type(value) is float or type(value) is int:  # what JSON gives, checked first (a result holds dozens)
        return math.isfinite(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def result_problem(result: object, run_id: str | None = None) -> str | None:
    """Why a parsed result.json is not a usable result (None when it is): the checks every reader relies on."""
    if not isinstance(result, dict):
        return "it is not a JSON object"
    earlier = result.get("previous_run_ids") or []  # ids it had before an_lab.migrate moved it
    if run_id is not None and result.get("run_id") != run_id and run_id not in earlier:
        return f"its run_id is {result.get('run_id')!r}, not {run_id!r}"
    if result.get("status", "done") != "done":
        return f"its status is {result.get('status')!r}, not 'done'"
    final = result.get("final")
    if not isinstance(final, dict) or not final:
        return "its 'final' metrics are missing"
    numbers = 0
    for name, value in final.items():
        if value is None:
            continue
        if not _is_finite_number(value):
            return f"final.{name} is {value!r}, not a finite number"
        numbers += 1
    if not numbers:
        return "it has no final metric"
    best = result.get("best", {})
    if not isinstance(best, dict) or not all(value is None or _is_finite_number(value) for value in best.values()):
        return "its 'best' metrics are not finite numbers"
    return None


def read_result(run_dir: Path) -> tuple[Result | None, str | None]:
    """(result, None) for a valid result.json, (None, why) for a damaged one, (None, None) when there is none."""
    path = run_dir / RESULT
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"{path}: cannot be read ({error.strerror})"
    try:
        result = json.loads(text)
    except ValueError as error:
        return None, f"{path}: not valid JSON ({error.msg} at line {error.lineno})"
    problem = result_problem(result, run_dir.name)
    return (None, f"{path}: {problem}") if problem else (result, None)


# ---------------------------------------------------------------------------------------------------------------------
# Claims: one owner per run


@dataclass
class Claim:
    """An exclusive claim on a run: a flock on <run_dir>/run.lock, held while this open file lives.

    flock locks belong to the open file, so a child started with the descriptor (pass_fds) holds the same claim: it
    outlives a killed launcher, and the kernel drops it when the last process holding it ends, however it ends.
    """

    run_dir: Path
    fd: int
    owner: dict = field(default_factory=dict)

    def release(self) -> None:
        """Let go: the owner description is cleared first (a lock file with a description means a live claim, or an
        owner that died without releasing it), then the lock is dropped with the descriptor."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def update(self, **owner) -> None:
        """Rewrite the owner description inside the lock file (the lock itself is not touched)."""
        self.owner.update(owner)
        data = (json.dumps(self.owner, sort_keys=True) + "\n").encode()
        with contextlib.suppress(OSError):  # a description is for humans: a full disk must not lose the claim
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _owner(role: str) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "role": role, "time": time.time()}


def try_claim(run_dir: Path, role: str) -> Claim | None:
    """Claim the run for this process, or None when another process holds it. The run folder must exist."""
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    claim = Claim(run_dir, fd)
    claim.update(**_owner(role))
    return claim


def inherited_claim(run_dir: Path) -> Claim | None:
    """The claim a launcher handed to this process (CLAIM_FD_ENV), if it is really this run's lock file."""
    text = os.environ.get(CLAIM_FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        mine, lock = os.fstat(fd), os.stat(run_dir / LOCK)
    except OSError:
        return None
    if (mine.st_dev, mine.st_ino) != (lock.st_dev, lock.st_ino):
        return None  # a stale variable (e.g. inherited by a grandchild): the descriptor is something else
    os.environ.pop(CLAIM_FD_ENV, None)
    return Claim(run_dir, fd, owner=read_json(run_dir / LOCK) or {})


def claim_owner(run_dir: Path) -> dict | None:
    """Who says they hold the run's claim (the lock file's description); None when nobody ever claimed it."""
    return read_json(run_dir / LOCK)


def describe_owner(owner: dict | None) -> str:
    if not owner:
        return "another process"
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["time"]))
        if _is_finite_number(owner.get("time"))
        else "?"
    )
    return f"{owner.get('role', 'a process')} pid {owner.get('pid', '?')} on {owner.get('host', '?')} (since {when})"


# ---------------------------------------------------------------------------------------------------------------------
# States


def _alive_here(started: dict, keys: tuple[str, ...] = ("pid",)) -> bool:
    """Whether one of the recorded processes lives; another machine's process is trusted (the scheduler's view
    refines this)."""
    if started.get("host") != socket.gethostname():
        return True
    for key in keys:
        try:
            os.kill(int(started[key]), 0)
        except (OSError, KeyError, ValueError, TypeError):
            continue
        return True
    return False


def _claimed(run_dir: Path) -> str | None:
    """Who holds the run's claim when a live process does (a launcher about to start it), else None."""
    owner = claim_owner(run_dir)
    if owner and _alive_here(owner, ("trainer_pid", "child_pid", "pid")):
        return f"claimed by {describe_owner(owner)}"
    return None


def state(run_dir: Path) -> tuple[str, str | None]:
    """(state, detail): done, corrupt (with the file and why), failed (with the reason), running, interrupted (may
    resume; with why it stopped when known) or pending."""
    result, problem = read_result(run_dir)
    if result is not None:
        return "done", None
    if problem is not None:
        return "corrupt", f"{problem}; --retry-failed retrains it"
    failed = read_json(run_dir / FAILED)
    if failed is not None:
        return "failed", str(failed.get("reason"))
    started = read_json(run_dir / STARTED)
    if started is not None and _alive_here(started):
        return "running", None
    claimed = _claimed(run_dir)
    if claimed is not None:
        return "running", claimed
    if started is None:
        return "pending", None
    stopped = read_json(run_dir / INTERRUPTED)
    resumes = "resumes from last.ckpt" if (run_dir / CHECKPOINT).exists() else "restarts"
    if stopped is not None:
        return "interrupted", f"{stopped.get('reason')}; {resumes}"
    return "interrupted", resumes if (run_dir / CHECKPOINT).exists() else None


def _listing(folder: Path) -> set[str] | None:
    """The names in an output folder (an empty set when it does not exist yet), or None when it cannot be listed."""
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()  # no output folder yet: nothing has started
    except OSError:
        return None  # not listable: each run is looked at on its own


def states(folder: Path, run_ids: Iterable[str]) -> list[tuple[str, str | None]]:
    """state() of many runs of one output folder, listing the folder once: a run without a folder there is pending
    without a look inside (a plan of 100,000 runs that have not started opens no file)."""
    present = _listing(folder)
    return [state(folder / run_id) if present is None or run_id in present else ("pending", None) for run_id in run_ids]


def read_runs(folder: Path, run_ids: Iterable[str]) -> Iterator[tuple[str, str | None, Result | None]]:
    """(state, detail, result) of many runs of one output folder, as state() and read_result() tell them, in the
    order given: the folder is listed once, a finished run costs one file read (its result.json, read first) and a
    run without a folder none; anything else is looked at by state()."""
    for current, detail, result, _ in scan_runs(folder, run_ids):
        yield current, detail, result


# What identifies one version of a result file: (inode, size, mtime_ns, ctime_ns) of its stat. A result written
# again (atomically: a new inode; or in place: a new ctime) gets another stamp.
Stamp = tuple[int, int, int, int]


def stamp(stat: os.stat_result) -> Stamp:
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def scan_runs(
    folder: Path, run_ids: Iterable[str], known: Mapping[str, Stamp] | None = None
) -> Iterator[tuple[str, str | None, Result | None, Stamp | None]]:
    """read_runs() with the stamp of each valid result.json it read (taken from the open file before reading it, so
    that a file replaced meanwhile never pairs a new result with an old stamp; None for a run not done, or done but
    found by the slower second look). `known`: run id -> the stamp of a result the caller holds already; a run whose
    result.json still has that stamp is yielded as ("done", None, None, stamp) after one stat, without being read."""
    present, text, known = _listing(folder), os.fspath(folder), known or {}
    for run_id in run_ids:
        if present is not None and run_id not in present:
            yield "pending", None, None, None
            continue
        path = f"{text}/{run_id}/{RESULT}"
        held = known.get(run_id)
        if held is not None:
            try:
                now = stamp(os.stat(path))
            except OSError:
                now = None
            if now == held:
                yield "done", None, None, held
                continue
        result, found = _valid_result(path, run_id)
        if result is not None:
            yield "done", None, result, found
            continue
        run_dir = folder / run_id
        current, detail = state(run_dir)
        if current == "done":  # written between the two looks
            result, _ = read_result(run_dir)
        yield (current, detail, None, None) if result is None else ("done", None, result, None)


_READ = 1 << 16


def _valid_result(path: str, run_id: str) -> tuple[Result | None, Stamp | None]:
    """(the result at path, the stamp of the file it was read from) when it is there and valid, else (None, None)
    (read_result says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        found = stamp(os.fstat(fd))
        chunks = [os.read(fd, _READ)]
        while len(chunks[-1]) == _READ:  # a result larger than one read
            chunks.append(os.read(fd, _READ))
        result = json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None, None
    finally:
        os.close(fd)
    return (None, None) if result_problem(result, run_id) else (result, found)


# ---------------------------------------------------------------------------------------------------------------------
# Per-epoch metrics


def attempt_logs(directory: Path) -> list[Path]:
    attempts = [p for p in (directory / "logs").glob("attempt-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(attempts, key=lambda p: int(p.name.split("-", 1)[1]))


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value  # nan / inf are kept: a diverged epoch is data


# The validation column of each task's primary metric (an_lab.metrics): a row with one of them is a validated epoch.
PRIMARY_LOGGED = tuple(primary(task).logged for task in TASKS)  # val_top1_err, val_bbox_ap


def validated_epochs(directory: Path) -> tuple[int, float | None]:
    """(epochs with a validation result so far, the last value of the primary validation metric: the top-1 error of
    a classification run, AP^bb of a detection run): a running run's progress."""
    rows = [row for row in epoch_metrics(directory) if any(column in row for column in PRIMARY_LOGGED)]
    if not rows:
        return 0, None
    value = next(rows[-1][column] for column in PRIMARY_LOGGED if column in rows[-1])
    return int(rows[-1]["epoch"]) + 1, value


def trained_iterations(directory: Path) -> int:
    """Optimizer steps a run has logged (the last training row's step + 1): a detection run's progress, whose epochs
    are stretches of iterations between checkpoints."""
    steps = [row["step"] for row in epoch_metrics(directory) if "train_loss" in row and "step" in row]
    return int(max(steps)) + 1 if steps else 0


def epoch_metrics(directory: Path, skipped: list[str] | None = None) -> list[dict]:
    """Per-epoch rows over all attempts' CSV logs; an epoch logged again after a resume replaces the old row.

    A damaged row (cut short, not numbers, no epoch) is skipped, never fatal; each skip is described in `skipped`
    when a list is given, so that callers can say so.
    """
    merged: dict[int, dict] = {}
    for attempt in attempt_logs(directory):
        path = attempt / METRICS
        try:
            handle = path.open(newline="", errors="replace")
        except OSError:
            continue
        with handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            for number, cells in enumerate(reader, start=2):
                row = _parse_row(header, cells)
                if row is None:
                    if skipped is not None:
                        skipped.append(f"{path}, line {number}")
                    continue
                merged.setdefault(int(row["epoch"]), {}).update(row)
    return [merged[epoch] for epoch in sorted(merged)]


def _parse_row(header: list[str] | None, cells: list[str]) -> dict | None:
    if not header or len(cells) != len(header) or "\0" in "".join(cells):
        return None
    row: dict[str, float] = {}
    for key, text in zip(header, cells, strict=True):
        value = _number(text)
        if value is None and text != "":
            return None  # not a number: the row was damaged
        if value is not None:
            row[key] = value
    epoch = row.get("epoch")
    if epoch is None or not math.isfinite(epoch) or epoch < 0 or epoch != int(epoch):
        return None
    return row
