"""The Optuna journal of a search sweep and the one lock its writers share (owner of both file names).

Optuna's default journal lock is a symlink created per write and deleted after it. Its holder can die between the
two (a SIGKILLed orchestrator): the next process then waits Optuna's grace period (30 s), and with a relative journal
path the symlink dangles, the grace period never starts and the next process spins a core for ever.

This lock is a flock on a lock file that is never deleted (as the run claims of `an_lab.rundir`):

- The kernel drops a flock when its holder dies, however it dies, so a relaunch after a killed orchestrator on the
  same machine takes the lock at once. On a shared file system that supports flock (NFS maps it to its own locks),
  the server drops the lock of a client that died after its lease (NFSv4: 90 s by default).
- The holder writes its host, pid and time into the lock file and clears them before it lets go, so a description
  that is still there names a holder that died inside the critical section (`describe`), and a wait names who it
  waits for.
- A wait is bounded (`search.lock_wait_s`, 120 s by default): a holder that keeps the lock longer (a process stopped
  with Ctrl-Z, a hung client on another host) stops the command with one paragraph naming it and what to do; the
  journal is never written by two processes at once.

The journal and its lock are handed to Optuna as absolute, resolved paths.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.rundir import describe_owner, read_json

JOURNAL = "optuna-journal.log"
JOURNAL_LOCK = "optuna-journal.lock"
# What earlier an-lab versions left: Optuna's symlink lock beside the journal (nothing takes it any more).
OPTUNA_SYMLINK_LOCK = JOURNAL + ".lock"
LOCK_WAIT_S = 120.0
# A test hook: when this variable names a file and that file exists at an acquisition, the process deletes the file
# and stops itself (SIGSTOP) while holding the lock, so that a test can kill it exactly there.
STOP_HOLDING_ENV = "AN_LAB_TEST_STOP_HOLDING_JOURNAL_LOCK"


class JournalLockTimeout(UsageError):
    """The journal lock stayed with another live holder for longer than the wait allows."""


@dataclass(frozen=True)
class LockState:
    """What `describe` found: whether a process holds the lock now, and the description in the lock file."""

    held: bool
    owner: dict | None

    @property
    def stale(self) -> bool:
        """Nobody holds the lock, but a holder's description is left: it died inside the critical section."""
        return not self.held and bool(self.owner)


def _owner_text(owner: dict | None) -> str:
    """Who holds (or held) the lock, as run claims are described (rundir.describe_owner)."""
    if not owner:
        return "a process that wrote no description (another host, or an older an-lab)"
    return describe_owner(owner)


def _process_state(pid: object) -> str | None:
    """The state letter of a process of this machine (R, S, T for stopped, ...), None when there is none."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()  # type: ignore[call-overload]
    except (OSError, ValueError, TypeError):
        return None
    return text.rpartition(")")[2].split()[0]


class JournalLock:
    """Optuna's journal lock protocol (acquire / release) over a flock; see the module's docstring."""

    def __init__(self, path: Path, wait_s: float = LOCK_WAIT_S) -> None:
        self.path = Path(path)
        self.wait_s = wait_s
        self._fd = -1

    def acquire(self) -> bool:
        fd = self._open()
        started = time.monotonic()
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise self._unsupported(error) from None
            waited = time.monotonic() - started
            if waited >= self.wait_s:
                os.close(fd)
                raise JournalLockTimeout(self._timeout_text(waited))
            time.sleep(min(pause, self.wait_s - waited))
            pause = min(pause * 2, 0.05)
        self._fd = fd
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "role": "search orchestrator", "time": time.time()}
        with contextlib.suppress(OSError):  # a description is for humans: a full disk must not fail the write
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(owner, sort_keys=True) + "\n").encode(), 0)
        self._stop_here_if_asked()
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # cleared first: a description left behind means a holder that died holding it
        os.close(fd)  # closing the only descriptor drops the flock

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise UsageError(f"cannot open the search's journal lock {self.path}: {error.strerror or error}") from None

    def _unsupported(self, error: OSError) -> UsageError:
        return UsageError(
            f"cannot lock {self.path}: {error.strerror or error}. The search's Optuna journal needs a file system "
            "with flock (local disks and NFS do; a Lustre mount needs its `flock` option); or give `search.storage` "
            "an Optuna database URL (e.g. postgresql://...)."
        )

    def _timeout_text(self, waited: float) -> str:
        owner = read_json(self.path)
        here = bool(owner) and owner.get("host") == socket.gethostname()
        letter = _process_state(owner.get("pid")) if here and owner else None
        if letter == "T":
            advice = f"it is stopped (Ctrl-Z or SIGSTOP): resume it (kill -CONT {owner['pid']}) or end it"
        elif here:
            advice = "it is still running: wait for it, or end it"
        else:
            advice = (
                "if that process or its machine is gone, the file system's lock lease ends the lock (NFSv4: 90 s); "
                "otherwise end that process"
            )
        return (
            f"the search's Optuna journal lock {self.path} has been held by {_owner_text(owner)} for more than "
            f"{waited:.0f} s, so this command stopped rather than wait for ever (search.lock_wait_s); {advice}, "
            "then launch again: every trial so far is kept in the journal."
        )

    def _stop_here_if_asked(self) -> None:
        trigger = os.environ.get(STOP_HOLDING_ENV)
        if trigger and os.path.exists(trigger):
            with contextlib.suppress(OSError):
                os.unlink(trigger)
            os.kill(os.getpid(), signal.SIGSTOP)


def describe(path: Path) -> LockState:
    """Whether the lock at `path` is held now (tried without waiting, and let go at once) and its description."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return LockState(False, None)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        held = False
    except OSError:
        held = True
    finally:
        os.close(fd)
    return LockState(held, read_json(path))


def lock_note(sweep_dir: Path) -> str | None:
    """One line for `status` when the search's journal lock is stale or held; None when it is free and clean."""
    found = describe(sweep_dir / JOURNAL_LOCK)
    left = sweep_dir / OPTUNA_SYMLINK_LOCK
    if left.is_symlink():
        return (
            f"{left} is the journal lock of an earlier an-lab version, left by an orchestrator that died holding it; "
            "nothing uses it now, and the next launch removes it"
        )
    if found.stale:
        return (
            f"the Optuna journal lock {sweep_dir / JOURNAL_LOCK} was left by {_owner_text(found.owner)}, which died "
            "while holding it; the lock itself was freed with it, and the next launch takes it at once"
        )
    if found.held:
        return f"the Optuna journal lock is held now by {_owner_text(found.owner)} (a search orchestrator writing)"
    return None


def journal_storage(journal: Path, wait_s: float = LOCK_WAIT_S):
    """Optuna's JournalStorage over the journal file at `journal` (made absolute), locked with `JournalLock`."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = Path(journal).resolve()
    journal.parent.mkdir(parents=True, exist_ok=True)
    left = journal.with_name(journal.name + ".lock")
    if left.is_symlink():  # an earlier version's Optuna lock, left by an orchestrator killed holding it
        with contextlib.suppress(OSError):
            left.unlink()
    lock = JournalLock(journal.with_name(JOURNAL_LOCK), wait_s)
    return JournalStorage(JournalFileBackend(str(journal), lock_obj=lock))  # type: ignore[arg-type]
