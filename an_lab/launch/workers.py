"""A forkserver for the local executor: torch, Lightning and W&B are imported once per launcher, not once per run.

    launcher (torch-free)                          server: python -m an_lab.launch.workers FD
    Forkserver()(config, log, env, fds)  ------->  imported the training stack once, waits on its socket
        sends the request, the log's and claim's      forks a child per run: own session, the run's environment,
        descriptors (SCM_RIGHTS)                       cwd and log, the claim's descriptor; it trains the run as
                                         <-------      `python -m an_lab.launch.entry CONFIG` would
        ForkedProcess: pid, poll(), wait()            started: the child's pid, once it leads its own session
                                         <-------      ended: its exit status (only the server can reap it)

Each run is still its own process: its state, seeds and threads are its own, it leads its own session (os.killpg
stops it with its data loader workers), and it holds the same open file description as the launcher's claim, so the
lock outlives a killed launcher and goes with the child. The server imports without starting a thread or touching
CUDA, and checks both before it forks anything. Every child starts from the server's state right after the imports.

Lifetimes. The server exits when the launcher's end of the socket closes (LocalExecutor.close(), the launcher's exit,
or its death by any signal); children keep running. A launcher whose server is gone still follows its children: a
handle sees the end of its child from /proc (pid and start time, a zombie counts as ended), but not its exit status.
It then reports, from the run folder: 0 when the run wrote its result, 1 when it wrote its own failure in this
attempt, and otherwise EXIT_UNKNOWN, written into interrupted.json as such, so that the run resumes from its last
checkpoint on the next launch, as after any signal.

Fallback. When the server cannot start (an import fails, a thread or CUDA was started while importing), each run is
started by the fallback starter (a fresh interpreter), said once on stderr. A server lost during a sweep is replaced
at the next run, up to MAX_RESTARTS times.

What differs from a fresh interpreter: modules are imported with the launcher's environment of the server's start,
plus the thread counts of the first run (so that OpenBLAS sizes its pool the same way); a variable a library reads
only at import time does not follow later changes. Python's hash seed is the server's. Children's stdin is /dev/null,
and `ps` shows them as `python -m an_lab.launch.workers`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from an_lab.launch.entry import EXIT_FAILED
from an_lab.rundir import (
    CLAIM_FD_ENV,
    EXIT_INTERRUPTED,
    FAILED,
    INTERRUPTED,
    STARTED,
    mark_interrupted,
    read_json,
    read_result,
)

# The exit status reported for a child that ended while its server was gone (nobody could read its status): the run
# stops "from outside", interrupted.json says why, and the next launch resumes it from its last checkpoint.
EXIT_UNKNOWN = EXIT_INTERRUPTED
START_TIMEOUT_S = 600.0  # importing the training stack; minutes on a loaded machine with a cold file cache
REPLY_TIMEOUT_S = 60.0  # a fork and the child's setup
MAX_RESTARTS = 3
MAX_REQUEST = 1 << 20  # bytes: the request carries the whole environment
MAX_FDS = 16
# The thread counts the server takes from the first run's environment: libraries size their pools when loaded.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Imported by the server after the training stack, when present: what a run would otherwise import on its way
# (W&B's run machinery, image decoders, checkpoint I/O). A failure here costs nothing but the time saved.
PRELOADS = (
    "an_lab.yamlio",
    "wandb.wandb_run",
    "wandb.apis.public",
    "wandb.sdk.launch",
    "torch.utils.serialization",
    "fsspec.implementations.chained",
    "PIL.BmpImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.JpegImagePlugin",
    "PIL.PpmImagePlugin",
)


def _send(sock: socket.socket, message: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


# ---------------------------------------------------------------------------------------------------------------------
# The launcher's side


class ServerGone(OSError):
    """The server ended before it took the request: nothing was started, the run may be started another way."""


class _StartFailed(Exception):
    pass


class _Server:
    """One server process and the launcher's end of its socket (SOCK_SEQPACKET: one message per request or event)."""

    def __init__(self, command: list[str], env: dict[str, str], timeout: float) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [*command, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # no Ctrl-C from the terminal: the launcher stops the runs itself
            )
        except OSError as error:
            mine.close()
            raise _StartFailed(f"cannot start the forkserver: {error.strerror or error}") from None
        finally:
            theirs.close()
        self.sock = mine
        self.lost = False
        self.ready: dict | None = None
        self.failure: str | None = None
        self.replies: dict[int, dict] = {}  # request id -> started / error
        self.ended: dict[int, int] = {}  # request id -> exit status
        self.next_id = 0
        # Closing the socket is what stops the server: done by close(), or when this object is collected, or at exit.
        self._finalizer = weakref.finalize(self, _shut, mine, self.process)
        self._await(lambda: self.ready is not None or self.failure is not None, timeout)
        if self.ready is None:
            if self.failure is None and not self.lost:
                self.failure = f"the forkserver did not finish importing the training stack within {timeout:.0f} s"
            elif self.failure is None:
                self.failure = f"the forkserver ended while importing the training stack (exit {self.process.poll()})"
            self.close()
            raise _StartFailed(self.failure)

    @property
    def pid(self) -> int:
        return self.process.pid

    def pump(self, wait: float = 0.0) -> None:
        """Take every message the server has sent, waiting up to `wait` seconds for the first one."""
        if self.lost:
            return
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(max(0, int(wait * 1000))):
                return
            while True:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if not data:
                    self._lose()
                    return
                self._take(json.loads(data))
        except BlockingIOError:
            return
        except (OSError, ValueError):
            self._lose()

    def _take(self, message: dict) -> None:
        kind = message.get("op")
        if kind == "ready":
            self.ready = message
        elif kind == "failed":
            self.failure = f"the forkserver could not start: {message.get('message')}"
        elif kind in ("started", "error"):
            self.replies[message["id"]] = message
        elif kind == "ended" and message.get("id") is not None:
            self.ended[message["id"]] = int(message["code"])

    def _await(self, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and not self.lost:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.pump(min(left, 1.0))

    def _lose(self) -> None:
        self.lost = True
        self._finalizer()

    def close(self) -> None:
        """Stop the server (its children keep running; their handles follow them through /proc)."""
        self.lost = True
        self._finalizer()

    def start(self, config: Path, log: Path, env: dict[str, str], fds: tuple[int, ...]) -> ForkedProcess:
        self.pump()  # notice a server that ended since the last call
        if self.lost:
            raise ServerGone(errno.EPIPE, "the forkserver has ended")
        request_id, self.next_id = self.next_id, self.next_id + 1
        request = {
            "op": "start",
            "id": request_id,
            "config": str(config),
            "cwd": os.getcwd(),
            "env": dict(os.environ, **env),
            "fd_numbers": list(fds),
        }
        with log.open("ab") as out:  # opened here, as start_process does: the same path, mode and permissions
            try:
                _send(self.sock, request, [out.fileno(), *fds])
            except (BrokenPipeError, ConnectionResetError):
                self._lose()
                raise ServerGone(errno.EPIPE, "the forkserver has ended") from None
            self._await(lambda: request_id in self.replies, REPLY_TIMEOUT_S)
        reply = self.replies.pop(request_id, None)
        if reply is None:  # it may have forked the child: the run must not be started again by another process
            if not self.lost:
                self.process.kill()
                self.close()
            raise OSError(errno.EIO, "the forkserver ended or hung while starting the run")
        if reply["op"] == "error":
            self.ended.pop(request_id, None)
            raise OSError(errno.EIO, f"the forkserver could not start the run: {reply['message']}")
        return ForkedProcess(self, request_id, int(reply["pid"]), Path(config).absolute().parent)


def _shut(sock: socket.socket, process: subprocess.Popen) -> None:
    sock.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: fall back on signal 0, without a start time
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "R", ""
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces and parentheses
    return fields[0], fields[19]


class ForkedProcess:
    """The launcher's handle on a run's forked child, as subprocess.Popen offers it: pid, returncode, poll(), wait().

    The exit status comes from the server (-N when a signal N killed the child, as subprocess says it). When the server
    is gone the end is seen through /proc and reported as described in the module's docstring."""

    def __init__(self, server: _Server, request_id: int, pid: int, run_dir: Path) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.server_pid = server.pid
        self._server, self._id, self._run_dir = server, request_id, run_dir
        self._started_at = time.time()
        stat = _proc_stat(pid)
        self._start_time = stat[1] if stat else None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._check(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            self._check(min(left, 0.2))
        return self.returncode

    def _check(self, wait: float) -> None:
        server = self._server
        server.pump(wait)
        if self._id in server.ended:
            self.returncode = server.ended.pop(self._id)
        elif server.lost:
            if self._alive():
                time.sleep(wait)
            else:
                self.returncode = self._unknown_end()

    def _alive(self) -> bool:
        stat = _proc_stat(self.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return self._start_time is None or not stat[1] or stat[1] == self._start_time  # else the pid was reused

    def _unknown_end(self) -> int:
        """The child ended while nobody could read its exit status: say what the run folder says."""
        directory = self._run_dir
        if read_result(directory)[0] is not None:
            return 0
        failed = read_json(directory / FAILED)
        if failed is not None and float(failed.get("time") or 0) >= self._started_at:
            return EXIT_FAILED
        own = read_json(directory / INTERRUPTED)
        started = read_json(directory / STARTED) or {}
        if (own is None or float(own.get("time") or 0) < self._started_at) and started.get("pid") == self.pid:
            with contextlib.suppress(Exception):  # a full disk: the executor's own record says it instead
                mark_interrupted(
                    directory,
                    f"pid {self.pid} ended after its forkserver (pid {self.server_pid}) was gone: how it ended is "
                    "unknown",
                )
        return EXIT_UNKNOWN


class Forkserver:
    """A starter for LocalExecutor: `starter(config, log, env, fds)` returns a ForkedProcess, or what `fallback` returns
    when no server can run. The server starts at the first run (its imports take as long as one fresh interpreter's);
    close() stops it."""

    def __init__(self, fallback, command: list[str] | None = None, start_timeout: float = START_TIMEOUT_S) -> None:
        self.fallback = fallback
        self.command = command or [sys.executable, "-m", "an_lab.launch.workers"]
        self.start_timeout = start_timeout
        self.server: _Server | None = None
        self.disabled: str | None = None  # why runs are started by the fallback
        self.restarts = 0

    def __call__(self, config: Path, log: Path, env: dict[str, str], fds: tuple[int, ...]):
        for _ in range(2):
            server = self._server(env)
            if server is None:
                break
            try:
                return server.start(config, log, env, fds)
            except ServerGone:
                continue  # nothing reached it: a new server, or the fallback, starts the run
            except OSError as error:
                if error.errno != errno.EMSGSIZE:
                    raise
                _say(f"the environment is too large for the forkserver: {config.parent.name} starts apart", fresh=False)
                break
        return self.fallback(config, log, env, fds)

    def _server(self, env: dict[str, str]) -> _Server | None:
        if self.disabled is not None:
            return None
        if self.server is not None and not self.server.lost:
            return self.server
        if self.server is not None:
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                self._disable(f"the forkserver ended {self.restarts} times")
                return None
            _say(f"the forkserver (pid {self.server.pid}) ended; starting another", fresh=False)
        server_env = dict(os.environ, PYTORCH_NVML_BASED_CUDA_CHECK="1")  # a stray CUDA check must not spoil forks
        server_env.update((name, env[name]) for name in THREAD_VARIABLES if name in env)
        try:
            self.server = _Server(self.command, server_env, self.start_timeout)
        except _StartFailed as error:
            self.server = None
            self._disable(str(error))
            return None
        return self.server

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        _say(reason)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _say(reason: str, fresh: bool = True) -> None:
    tail = "; each run starts in a fresh interpreter (slower: torch is imported for every run)" if fresh else ""
    print(f"note: {reason}{tail}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# The server's side


@dataclass
class _Job:
    config: str


def _import_training_stack() -> None:
    import importlib

    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    import wandb  # noqa: F401

    import an_lab.config
    import an_lab.launch.entry
    import an_lab.lightning_modules.train  # noqa: F401

    for name in PRELOADS:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _fork_problem() -> str | None:
    """Why forking this process would give children a broken state, or None."""
    import threading

    import torch

    if threading.active_count() > 1:
        names = ", ".join(thread.name for thread in threading.enumerate() if thread is not threading.main_thread())
        return f"importing the training stack started threads ({names}), which a fork does not carry"
    if torch.cuda.is_initialized():
        return "importing the training stack initialised CUDA, which a forked child cannot use"
    return None


def main(argv: list[str] | None = None) -> int:
    """The server: import once, then fork a child per request until the launcher's socket closes. In a child this
    returns the run's exit code, as `python -m an_lab.launch.entry` would."""
    import gc

    args = sys.argv[1:] if argv is None else argv
    # What a fresh interpreter started by the launcher has, for the children to start from.
    dispositions = {number: signal.getsignal(number) for number in signal.valid_signals()}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    started = time.perf_counter()
    try:
        _import_training_stack()
        problem = _fork_problem()
    except Exception as error:
        problem = f"{type(error).__name__}: {error}"
    try:
        if problem is not None:
            _send(sock, {"op": "failed", "message": problem})
            return 1
        gc.freeze()  # the imported objects stay shared with the children instead of being copied by their collector
        _send(sock, {"op": "ready", "pid": os.getpid(), "seconds": round(time.perf_counter() - started, 3)})
        job = _serve(sock, dispositions, mask)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the launcher is gone
    if job is None:
        return 0
    return _run(job)


def _serve(sock: socket.socket, dispositions: dict, mask: set) -> _Job | None:
    """Fork a child per request and report its pid, then its exit status; None when the launcher's end closes. In a
    child, returns its job."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda number, frame: None)  # wakes poll() through the wakeup pipe
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    children: dict[int, int] = {}  # pid -> request id
    while True:
        events = dict(poller.poll())
        if wake_r in events:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        _reap(sock, children)
        if sock.fileno() not in events:
            continue
        try:
            data, fds, flags, _ = socket.recv_fds(sock, MAX_REQUEST, MAX_FDS, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        request = json.loads(data)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1 + len(request.get("fd_numbers", ())):
            for fd in fds:
                os.close(fd)
            _send(sock, {"op": "error", "id": request.get("id"), "message": "a malformed request"})
            continue
        job = _fork(sock, request, fds, children, (wake_r, wake_w), dispositions, mask)
        if job is not None:
            return job


def _reap(sock: socket.socket, children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        request_id = children.pop(pid, None)
        _send(sock, {"op": "ended", "id": request_id, "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(sock, request: dict, fds: list[int], children: dict, wake: tuple, dispositions: dict, mask) -> _Job | None:
    """Fork the run's child; in the server, report it and return None; in the child, return its job."""
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as error:
        for fd in (*fds, ready_r, ready_w):
            os.close(fd)
        _send(sock, {"op": "error", "id": request["id"], "message": f"fork: {error.strerror}"})
        return None
    if pid == 0:  # the child: nothing of the server's may run past this point
        os.close(ready_r)
        try:
            job = _become_run(sock, request, fds, wake, dispositions, mask)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.write(ready_w, f"{type(error).__name__}: {error}".encode())
            os._exit(127)
        with contextlib.suppress(OSError):
            os.write(ready_w, b"ok")
        os.close(ready_w)
        return job
    os.close(ready_w)
    for fd in fds:  # the child has them; another child must not
        os.close(fd)
    answer = b""
    while chunk := os.read(ready_r, 4096):  # until the child has its session (os.killpg reaches it) or failed
        answer += chunk
    os.close(ready_r)
    children[pid] = request["id"]
    if answer == b"ok":
        _send(sock, {"op": "started", "id": request["id"], "pid": pid})
    else:
        why = answer.decode(errors="replace")[:2000] or "it ended during its set-up"
        _send(sock, {"op": "error", "id": request["id"], "message": why})
    return None


def _become_run(sock, request: dict, fds: list[int], wake: tuple, dispositions: dict, mask) -> _Job:
    """The child's setup: what a fresh `python -m an_lab.launch.entry` started by start_process would have."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for fd in wake:
        os.close(fd)
    sock.close()
    for number, handler in dispositions.items():
        if handler is not None and signal.getsignal(number) != handler:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(number, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.chdir(request["cwd"])
    log, claims = fds[0], fds[1:]
    env = dict(request["env"])
    numbers = {str(number): str(fd) for number, fd in zip(request["fd_numbers"], claims, strict=True)}
    if env.get(CLAIM_FD_ENV) in numbers:  # the claim has another number here
        env[CLAIM_FD_ENV] = numbers[env[CLAIM_FD_ENV]]
    os.environ.clear()
    os.environ.update(env)
    for fd in claims:
        os.set_inheritable(fd, True)  # as pass_fds leaves it
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return _Job(request["config"])


def _run(job: _Job) -> int:
    """Train the run in this child, as `python -m an_lab.launch.entry CONFIG` would."""
    import numpy
    import torch

    from an_lab.launch import entry

    sys.argv = [entry.__file__, job.config]
    # Fresh entropy where a fresh interpreter would have it (os.fork already reseeds Python's random); torch's generator
    # has its fixed default seed in both. train() seeds all three anyway.
    numpy.random.seed()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:  # the OpenMP runtime read the variable when the server loaded it
        torch.set_num_threads(int(threads))
    code = entry.main([job.config])
    # The run has said all it has to say. At interpreter shutdown a forked child's extension modules (triton's, which
    # Lightning imports) report "leaked" objects they share with the server: noise that would end the run's log and
    # hide the run's own last words, so stderr goes to /dev/null for the shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    return code


if __name__ == "__main__":
    sys.exit(main())
