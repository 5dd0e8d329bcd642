"""The requeue path inside a SLURM job (an_lab.launch.slurm_job._PreemptSignal), with real signals in this process."""

import os
import signal
import time

import pytest

from an_lab.launch.slurm_job import _PreemptSignal


@pytest.fixture
def handlers():
    saved = {number: signal.getsignal(number) for number in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def _deliver(number: int) -> None:
    os.kill(os.getpid(), number)
    time.sleep(0.05)  # Python runs the handler at the next bytecode boundary


def test_a_sigterm_during_the_requeue_handler_waits_until_it_has_finished(handlers):
    """SLURM's SIGTERM for the requeue can come while submitit's USR2 handler still runs `scontrol requeue`: the
    training's SIGTERM handler must not cut that handler short."""
    steps = []

    def training_sigterm(signum, frame):
        raise SystemExit(143)

    def submitit_requeue(signum, frame):
        steps.append("requeue started")
        _deliver(signal.SIGTERM)  # arrives before `scontrol requeue` returns
        steps.append("requeue finished")
        raise SystemExit(-1)  # submitit exits once requeued

    signal.signal(signal.SIGTERM, training_sigterm)
    signal.signal(signal.SIGUSR2, submitit_requeue)
    relay = _PreemptSignal()
    with pytest.raises(SystemExit) as ended:
        _deliver(signal.SIGUSR2)
    assert steps == ["requeue started", "requeue finished"]
    assert ended.value.code == -1 and relay.seen and relay.deferred_term
    assert signal.getsignal(signal.SIGTERM) is training_sigterm  # put back after the relay


def test_without_the_relay_the_same_sigterm_cuts_the_requeue_short(handlers):
    """What the relay prevents, shown with the same handlers."""
    steps = []

    def training_sigterm(signum, frame):
        raise SystemExit(143)

    def submitit_requeue(signum, frame):
        steps.append("requeue started")
        _deliver(signal.SIGTERM)
        steps.append("requeue finished")

    signal.signal(signal.SIGTERM, training_sigterm)
    signal.signal(signal.SIGUSR2, submitit_requeue)
    with pytest.raises(SystemExit) as ended:
        _deliver(signal.SIGUSR2)
    assert steps == ["requeue started"] and ended.value.code == 143


def test_a_requeue_signal_after_the_run_finished_requeues_nothing(handlers):
    calls = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    finished = []
    relay = _PreemptSignal(finished=lambda: bool(finished))
    _deliver(signal.SIGUSR2)
    assert calls == [signal.SIGUSR2]  # still running: submitit's handler requeues
    finished.append(True)
    _deliver(signal.SIGUSR2)
    assert calls == [signal.SIGUSR2] and relay.seen  # finished: the job ends as completed
    relay.restore()
    assert signal.getsignal(signal.SIGUSR2) is not relay._relay


def test_after_a_requeue_signal_lost_connections_leave_one_line_and_other_errors_their_stack(handlers, capfd):
    import threading

    previous = threading.excepthook
    reached: list[BaseException] = []  # what the hook in place before the requeue got (Python's prints the stack)
    threading.excepthook = lambda args: reached.append(args.exc_value)
    signal.signal(signal.SIGUSR2, lambda signum, frame: None)  # submitit's handler, here requeuing nothing
    relay = _PreemptSignal()
    try:
        _deliver(signal.SIGUSR2)

        def lost():
            raise ConnectionResetError(104, "Connection reset by peer")

        def broken():
            raise ValueError("a real bug")

        for target, name in ((lost, "wandb-sender"), (broken, "worker")):
            thread = threading.Thread(target=target, name=name)
            thread.start()
            thread.join()
        err = capfd.readouterr().err
        assert "note: wandb-sender lost its connection while the job was being requeued" in err
        assert "ConnectionResetError" not in err  # no stack for the lost connection ...
        assert [type(error) for error in reached] == [ValueError]  # ... while a real error goes on as before
    finally:
        relay.restore()
        threading.excepthook = previous


def test_a_scontrol_requeue_stopped_with_its_step_is_a_requeue_not_an_exception(handlers, tmp_path, capsys):
    """SLURM ends the job step (scontrol inside it) as soon as it accepts the requeue, sometimes before scontrol has
    returned: submitit then raises CalledProcessError from its handler. The relay reads that as the requeue it is
    and exits as submitit would (one line), while any other failure of the handler stays an error."""
    import subprocess

    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text("#!/bin/sh\nkill -TERM $$\n")  # dies of SIGTERM, like scontrol in a cancelled step
    (shims / "scontrol").chmod(0o755)

    def submitit_requeue_by_name(signum, frame):
        subprocess.check_call(["scontrol", "requeue", "123"], env={"PATH": str(shims)})

    signal.signal(signal.SIGUSR2, submitit_requeue_by_name)
    _PreemptSignal()
    with pytest.raises(SystemExit) as ended:
        _deliver(signal.SIGUSR2)
    assert ended.value.code == -1
    assert "requeued (scontrol ended with the job step it requeued)" in capsys.readouterr().out

    (shims / "scontrol").write_text("#!/bin/sh\nexit 1\n")  # refused by SLURM: stays an error
    signal.signal(signal.SIGUSR2, submitit_requeue_by_name)
    _PreemptSignal()
    with pytest.raises(subprocess.CalledProcessError):
        _deliver(signal.SIGUSR2)
