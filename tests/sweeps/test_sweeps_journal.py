"""The search's Optuna journal lock (an_lab.sweeps.journal): a holder killed inside the critical section costs the
next process nothing, a live holder is waited for within a bound, never a hang or a spinning core."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_stopped

from an_lab.sweeps.journal import (
    JOURNAL,
    JOURNAL_LOCK,
    OPTUNA_SYMLINK_LOCK,
    STOP_HOLDING_ENV,
    JournalLock,
    JournalLockTimeout,
    describe,
    journal_storage,
    lock_note,
)

# A process that takes the lock through Optuna (one study created) and stops itself while holding it (the test hook).
HOLDER = """
import sys, optuna
from pathlib import Path
from an_lab.sweeps.journal import journal_storage
optuna.create_study(study_name="s", storage=journal_storage(Path(sys.argv[1])), load_if_exists=True)
"""


def stopped_holder(folder: Path, cwd: Path, journal: str) -> subprocess.Popen:
    """A child that holds the journal lock, stopped (SIGSTOP) inside the critical section: placed there by the hook,
    not by timing."""
    trigger = folder / "stop-now"
    trigger.touch()
    env = {**os.environ, STOP_HOLDING_ENV: str(trigger)}
    child = subprocess.Popen([sys.executable, "-c", HOLDER, journal], cwd=cwd, env=env)
    wait_stopped(child.pid)
    assert not trigger.exists()  # the hook fired: the child stopped while it held the lock
    return child


@pytest.mark.parametrize("relative", [True, False], ids=["relative journal path", "absolute journal path"])
def test_a_holder_killed_inside_the_critical_section_costs_the_next_process_nothing(tmp_path, relative):
    import optuna

    folder = tmp_path / "runs" / "sweeps" / "s"
    folder.mkdir(parents=True)
    journal = f"runs/sweeps/s/{JOURNAL}" if relative else str(folder / JOURNAL)
    child = stopped_holder(tmp_path, tmp_path, journal)
    found = describe(folder / JOURNAL_LOCK)
    assert found.held and found.owner["pid"] == child.pid, found
    child.kill()
    child.wait()

    found = describe(folder / JOURNAL_LOCK)
    assert found.stale and found.owner["pid"] == child.pid, found
    note = lock_note(folder)
    assert f"pid {child.pid}" in note and "died while holding it" in note and "takes it at once" in note

    lock = JournalLock(folder / JOURNAL_LOCK, wait_s=5)
    started = time.monotonic()
    assert lock.acquire()
    took = time.monotonic() - started
    lock.release()
    assert took < 1.0, f"the lock of a dead holder took {took:.2f} s to take"  # no grace period: the kernel freed it
    assert describe(folder / JOURNAL_LOCK) == describe(folder / JOURNAL_LOCK).__class__(False, None)
    assert lock_note(folder) is None

    # The child died before its write: nothing of it is in the journal, which a new process goes on writing.
    assert (folder / JOURNAL).read_text() == ""
    study = optuna.create_study(study_name="s", storage=journal_storage(folder / JOURNAL), load_if_exists=True)
    study.ask()
    assert len(optuna.load_study(study_name="s", storage=journal_storage(folder / JOURNAL)).trials) == 1


def test_a_live_holder_is_waited_for_within_the_bound_without_spinning_and_named(tmp_path):
    child = stopped_holder(tmp_path, tmp_path, str(tmp_path / JOURNAL))
    try:
        lock = JournalLock(tmp_path / JOURNAL_LOCK, wait_s=2)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        with pytest.raises(JournalLockTimeout) as raised:
            lock.acquire()
        waited = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        child.kill()
        child.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert waited >= 2.0
    assert cpu < 0.5 * waited, f"{cpu:.2f} s of CPU in a {waited:.2f} s wait: the wait spins"
    text = str(raised.value)
    assert f"pid {child.pid}" in text and "it is stopped" in text and f"kill -CONT {child.pid}" in text, text
    assert "search.lock_wait_s" in text and "every trial so far is kept" in text
    assert raised.value.exit_code == 2
    assert lock.acquire()  # once the holder is gone, at once
    lock.release()


def test_an_earlier_versions_dangling_optuna_lock_is_named_by_status_and_removed(tmp_path):
    folder = tmp_path / "sweeps" / "s"
    folder.mkdir(parents=True)
    (folder / JOURNAL).touch()
    os.symlink(f"runs/sweeps/s/{JOURNAL}", folder / OPTUNA_SYMLINK_LOCK)  # relative: dangles, as Optuna left it
    note = lock_note(folder)
    assert "earlier an-lab version" in note and "the next launch removes it" in note
    journal_storage(folder / JOURNAL)
    assert not os.path.lexists(folder / OPTUNA_SYMLINK_LOCK)
    assert lock_note(folder) is None


def test_the_lock_file_describes_its_holder_only_while_held(tmp_path):
    lock = JournalLock(tmp_path / JOURNAL_LOCK)
    lock.acquire()
    owner = json.loads((tmp_path / JOURNAL_LOCK).read_text())
    assert owner["pid"] == os.getpid() and describe(tmp_path / JOURNAL_LOCK).held
    lock.release()
    assert (tmp_path / JOURNAL_LOCK).read_text() == "" and not describe(tmp_path / JOURNAL_LOCK).held
    lock.release()  # a second release is a no-op


def test_an_unwritable_lock_folder_is_one_paragraph(tmp_path):
    from an_lab.errors import UsageError

    with pytest.raises(UsageError, match="cannot open the search's journal lock"):
        JournalLock(tmp_path / "missing" / JOURNAL_LOCK).acquire()


def test_the_test_hook_is_inert_without_its_file(tmp_path, monkeypatch):
    monkeypatch.setenv(STOP_HOLDING_ENV, str(tmp_path / "absent"))
    signal.signal(signal.SIGCONT, signal.SIG_DFL)
    lock = JournalLock(tmp_path / JOURNAL_LOCK)
    assert lock.acquire()
    lock.release()
