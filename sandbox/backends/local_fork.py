"""The host side of the local backend's fork server (`sandbox.harness.forkserver`).

`ForkServer` starts the server with this host's interpreter and one end of an anonymous
socketpair, hands it each job (argv, cwd, environment, confinement, and the job's stdio by
SCM_RIGHTS) and routes the server's replies back to the thread that runs that job. Many
jobs run at once over the one socket; a reader thread matches replies to jobs by id.

The server is a disposable helper, not a single point of failure: when it dies, every job
it was running is reported lost (the caller records an infra_error and kills the job's
process group) and the next job starts a fresh server, paying the preload once more.

Timeouts stay the host's: `wait_under_timeout` gives a forked job exactly what `timeout -k
GRACE LIMIT` gives a spawned one (SIGTERM to its process group at the limit, SIGKILL after
the grace, exit 124 or 137), so `sandbox.classify` cannot tell the two paths apart.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import structlog

from sandbox.errors import SandboxUnavailableError
from sandbox.harness.confine import Confinement
from sandbox.harness.forkserver import MAX_MESSAGE_BYTES
from sandbox.limits import fork_server_ready_timeout_s, fork_server_reply_timeout_s, fork_server_stop_timeout_s
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")

DEFAULT_PRELOAD = ("torch", "torchvision")
"""What the server imports once for every job (those that are not installed are skipped)."""
SERVER_MODULE = "sandbox.harness.forkserver"
STDERR_TAIL_BYTES = 2000
"""How much of a dead server's stderr goes into the reason its jobs were lost."""


class ForkServerError(SandboxUnavailableError):
    """The fork server could not start, or died: the job it ran is lost, not failed."""


class ForkedJob:
    """One job handed to the server: its pid once forked, its status once reaped."""

    def __init__(self, job_id: int) -> None:
        self.id = job_id
        self.pid: int | None = None
        self.raw_exit: int | None = None
        """As os.waitstatus_to_exitcode: the exit code, or minus the signal that killed it."""
        self.maxrss_bytes: int | None = None
        self.error: str | None = None
        self.started = threading.Event()
        self.ended = threading.Event()

    def wait(self, timeout: float | None) -> int | None:
        """The raw exit status, or None if still running after `timeout` seconds."""
        if not self.ended.wait(timeout):
            return None
        if self.error is not None:
            raise ForkServerError(self.error)
        return self.raw_exit

    def fail(self, reason: str) -> None:
        """The server will never report on this job."""
        self.error = reason
        self.started.set()
        self.ended.set()


class _ServerProcess:
    """One running server: its process, its socket, the jobs it holds, its reader thread."""

    def __init__(self, python: str, preload: Sequence[str], env: dict[str, str]) -> None:
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (host_end, server_end):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE_BYTES)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MAX_MESSAGE_BYTES)
        self.sock = host_end
        self.stderr: IO[bytes] = tempfile.TemporaryFile(prefix="sandlab-forkserver-")  # noqa: SIM115 - closed by stop()
        command = [python, "-m", SERVER_MODULE, "--control-fd", str(server_end.fileno())]
        for name in preload:
            command += ["--preload", name]
        try:
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self.stderr,
                pass_fds=[server_end.fileno()],
                start_new_session=True,  # out of the controller's terminal: no stray SIGINT
            )
        except OSError as exc:
            host_end.close()
            self.stderr.close()
            msg = f"cannot start the fork server with {python}: {exc}; fix the interpreter or run without --fork-server"
            raise ForkServerError(msg) from exc
        finally:
            server_end.close()
        self.jobs: dict[int, ForkedJob] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.dead: str | None = None
        self.preloaded: list[str] = []
        self.missing: dict[str, str] = {}
        self.warned = False
        """Whether the preload list's missing modules were logged (once a server)."""
        self.reader = threading.Thread(target=self._read, name="sandlab-forkserver-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE_BYTES)
            except OSError:
                data = b""
            if not data:
                self._lose_all()
                return
            try:
                message: dict[str, Any] = json.loads(data.decode())
            except ValueError:
                log.warning("local.fork_server_bad_reply", reply=data[:200].decode(errors="replace"))
                continue
            if message.get("ready"):
                self.preloaded, self.missing = list(message["preloaded"]), dict(message["missing"])
                self.ready.set()
                continue
            with self.lock:
                job = self.jobs.get(int(message["id"]))
            if job is None:
                continue
            if "error" in message:
                with self.lock:
                    self.jobs.pop(job.id, None)
                job.fail(f"the fork server could not start the job: {message['error']}")
            elif "pid" in message:
                job.pid = int(message["pid"])
                job.started.set()
            elif "exit" in message:
                job.raw_exit = int(message["exit"])
                job.maxrss_bytes = int(message.get("maxrss_kib") or 0) * 1024
                with self.lock:
                    self.jobs.pop(job.id, None)
                job.ended.set()

    def _lose_all(self) -> None:
        code = self.proc.wait()
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(self.stderr.tell() - STDERR_TAIL_BYTES, 0))
        tail = self.stderr.read().decode(errors="replace").strip()
        how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
        reason = f"the fork server {how}" + (f": {tail}" if tail else "")
        with self.lock:
            self.dead = reason
            lost = list(self.jobs.values())
            self.jobs.clear()
        self.ready.set()
        for job in lost:
            job.fail(f"{reason}; it is restarted for the next job")

    def submit(self, job: ForkedJob, request: dict[str, Any], stdio: tuple[int, int, int]) -> None:
        with self.lock:
            if self.dead is not None:
                job.fail(self.dead)
                return
            self.jobs[job.id] = job
        fds = array.array("i", stdio).tobytes()
        message = f"{job.id}\n".encode() + json.dumps(request).encode()
        try:
            self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError as exc:
            with self.lock:
                self.jobs.pop(job.id, None)
            job.fail(f"cannot hand the job to the fork server: {exc}")

    def stop(self) -> None:
        """Close our end (the server kills its jobs and exits); kill it if it lingers."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        try:
            self.proc.wait(timeout=fork_server_stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=fork_server_stop_timeout_s)
        self.stderr.close()


class ForkServer:
    """Hands jobs to a preloaded fork server, starting (and restarting) it as needed."""

    def __init__(self, python: str, preload: Sequence[str], env: dict[str, str]) -> None:
        self.python = python
        self.preload = tuple(preload)
        self.env = dict(env)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._slot: list[_ServerProcess | None] = [None]
        """The running server, in a list the finalizer can hold without holding `self`."""
        self._closed = False
        # A backend dropped without close() must not leave its server idling until exit.
        self._finalizer = weakref.finalize(self, _stop_quietly, self._slot)

    def start(self) -> None:
        """Start the server now (it preloads in the background) unless one is running."""
        self._current()

    @property
    def pid(self) -> int | None:
        """The running server's pid (tests kill it to prove a lost server is survived)."""
        server = self._slot[0]
        return server.proc.pid if server is not None and server.dead is None else None

    def _current(self) -> _ServerProcess:
        with self._lock:
            if self._closed:
                msg = "the local backend was closed; create a new one"
                raise ForkServerError(msg)
            server = self._slot[0]
            if server is None or server.dead is not None:
                if server is not None:
                    log.warning("local.fork_server_restart", reason=server.dead)
                    server.stop()
                server = self._slot[0] = _ServerProcess(self.python, self.preload, self.env)
            return server

    def submit(
        self, argv: list[str], cwd: Path, env: dict[str, str], confinement: Confinement, stdio: tuple[int, int, int]
    ) -> ForkedJob:
        """Fork one job; return once it runs (its pid known). Raise ForkServerError if it cannot."""
        server = self._current()
        if not server.ready.wait(fork_server_ready_timeout_s):
            preload = ", ".join(self.preload)
            msg = f"the fork server did not finish preloading {preload} in {fork_server_ready_timeout_s}s"
            raise ForkServerError(msg)
        if server.missing and not server.warned:
            server.warned = True
            log.warning("local.fork_server_preload_skipped", missing=server.missing)
        job = ForkedJob(next(self._ids))
        request = {"argv": argv, "cwd": str(cwd), "env": env, "confine": confinement}
        server.submit(job, request, stdio)
        if not job.started.wait(fork_server_reply_timeout_s):
            msg = f"the fork server did not start the job within {fork_server_reply_timeout_s}s"
            raise ForkServerError(msg)
        if job.error is not None:
            raise ForkServerError(job.error)
        return job

    def close(self) -> None:
        """Stop the server; its running jobs are killed with it."""
        with self._lock:
            self._closed = True
            server, self._slot[0] = self._slot[0], None
        if server is not None:
            server.stop()
        self._finalizer.detach()


def _stop_quietly(slot: list[_ServerProcess | None]) -> None:
    server = slot[0]
    if server is not None:
        with contextlib.suppress(Exception):
            server.stop()


def signal_group(pid: int, signum: int) -> None:
    """Signal a job's process group; one that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def exit_code(raw: int) -> int:
    """A status as a shell (and the docker engine) reports it: 128 + signal when killed."""
    return 128 - raw if raw < 0 else raw


def wait_under_timeout(job: ForkedJob, policy: Policy, t0: float) -> tuple[int | None, bool]:
    """(exit code, host deadline hit) for a forked job, with `timeout -k`'s semantics.

    At the policy's timeout its process group gets SIGTERM (and SIGCONT, should it be
    stopped), after the grace SIGKILL; a job that had to be signalled exits 124, or 137 if
    SIGKILL is what ended it, whatever it did with the signals, as with coreutils
    `timeout`. Past the host deadline it is given up on: (None, True).
    """

    def left(until: float) -> float:
        return max(t0 + until - time.monotonic(), 0.0)

    raw = job.wait(left(policy.timeout))
    if raw is not None:
        return exit_code(raw), False
    assert job.pid is not None  # submit returned, so the server reported it
    signal_group(job.pid, signal.SIGTERM)
    signal_group(job.pid, signal.SIGCONT)
    raw = job.wait(left(policy.timeout + policy.kill_grace))
    if raw is None:
        signal_group(job.pid, signal.SIGKILL)
        raw = job.wait(left(policy.host_deadline_s))
        if raw is None:
            return None, True
    return (137 if raw == -signal.SIGKILL else 124), False
