"""The local backend's fork server: preload heavy modules once, fork one fresh child per job.

Importing torch costs seconds; a guard check of a generated module should not pay them on
a GPU box without Docker. The host (`sandbox.backends.local_fork`) starts this server with
its own interpreter and one end of an anonymous socketpair (`--control-fd`); no path on the
filesystem leads to it, and every forked child closes it before the job runs, so no job can
reach it. The server imports the preload list and never initialises CUDA: each child does
that itself, after the fork, on the GPUs its job was given.

Protocol: SOCK_SEQPACKET, one JSON object a message.
  server -> host  {"ready": true, "preloaded": [...], "missing": {name: why}}   once
  host -> server  N, a newline, then {"argv": [...], "cwd": ..., "env": {...}, "confine": {...}}
                  with the job's stdin, stdout and stderr as SCM_RIGHTS descriptors; the
                  server reads only N, the child it forks reads the rest
  server -> host  {"id": N, "pid": P}              the child is confined and about to run
                  {"id": N, "error": "..."}        confining it failed; it never ran
                  {"id": N, "exit": C, "maxrss_kib": K}   C as os.waitstatus_to_exitcode
The server forks and reaps; timeouts are the host's (it signals the job's process group).
One select loop serves every job at once, each child watched through a pidfd. When the host
closes its end, the server kills every job it still runs and exits.

Each child is used once: it moves into its own session (so its own process group), applies
the job's confinement (`confine`), closes every descriptor but stdio, and runs the job, in
process when it is a plain python job this interpreter can run, exec'd otherwise.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

from sandbox.harness.confine import confine, mapped_bytes, set_dumpable
from sandbox.harness.warm import become_job, is_plain_python

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest request (argv and environment); the host sizes its socket buffers to match."""
STDIO_FDS = 3
SETUP_FAILED_EXIT = 125
STARTUP_SENSITIVE_PREFIXES = ("PYTHON", "LD_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_")
"""Environment read when an interpreter or a native library starts, not when a job runs:
a job that sets one of these differently from the server is exec'd fresh, not forked."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """One message to the host; a host that is gone is noticed by the select loop."""
    with contextlib.suppress(OSError):
        sock.send(json.dumps(message).encode())


def receive(sock: socket.socket, buffer: bytearray) -> tuple[int | None, int, list[int]]:
    """One request into `buffer`: (its job id, its length, its descriptors).

    The id is None when the host closed its end. The request itself (after the id's line)
    is left in the buffer, unparsed: only the child that runs it reads it.
    """
    fds = array.array("i")
    size, ancdata, _, _ = sock.recvmsg_into([buffer], socket.CMSG_SPACE(STDIO_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not size:
        for fd in fds:
            os.close(fd)
        return None, 0, []
    header = buffer.find(b"\n", 0, min(size, 32))
    return int(buffer[:header]) if header > 0 else 0, size, list(fds)


def runs_in_process(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the job can run in a fork of this interpreter instead of a fresh one.

    It must be this interpreter (by the path the host gave it, never a lookalike resolved
    through symlinks: a venv's python and the system's differ in what they import), run
    as plain `python -c/-m/script`, with the startup environment this server had.
    """
    if not argv or argv[0] != sys.executable or not is_plain_python(argv):
        return False
    keys = {k for k in (*env, *os.environ) if k.startswith(STARTUP_SENSITIVE_PREFIXES)}
    return all(env.get(k) == os.environ.get(k) for k in keys)


def start_child(message: bytes, fds: list[int], report_fd: int, base: int) -> NoReturn:
    """In the forked child: read the request, confine, keep only stdio, become the job."""
    try:
        request: dict[str, Any] = json.loads(message.partition(b"\n")[2])
        for target, fd in enumerate(fds[:STDIO_FDS]):
            os.dup2(fd, target)
        os.chdir(request["cwd"])
        os.setsid()  # its own session and process group: the host signals the group
        confine(request["confine"], address_space_base=base)
        set_dumpable(True)
        argv: list[str] = request["argv"]
        env: dict[str, str] = request["env"]
        in_process = runs_in_process(argv, env)
        os.environ.clear()
        os.environ.update(env)
        _reseed()
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(report_fd, f"{type(exc).__name__}: {exc}".encode()[:4096])
        os._exit(SETUP_FAILED_EXIT)
    # Nothing of the server's survives into the job: not the control socket, not the
    # selector, not the pidfds of other jobs, not the report pipe (its closing tells the
    # server the job is about to run).
    os.closerange(STDIO_FDS, os.sysconf("SC_OPEN_MAX"))
    become_job(argv, in_process=in_process)


def _reseed() -> None:
    """Give the child its own random state, as a fresh interpreter would have.

    `random` reseeds itself after a fork; numpy's global generator does not, and every
    child would otherwise draw the same "random" numbers as its siblings.
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


class ForkServer:
    """The select loop: requests in, children forked, exits reported."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ)
        self.buffer = bytearray(MAX_MESSAGE_BYTES)
        """Where each request lands; wiped once its child is forked, so that no later child
        finds an earlier job's argv or environment in the memory it inherits."""
        self.jobs: dict[int, tuple[int, int]] = {}
        """pidfd -> (request id, pid) of every child still running."""

    def serve(self) -> None:
        """Until the host closes its end: fork what it asks for, report what ends."""
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.control:
                    job_id, size, fds = receive(self.control, self.buffer)
                    if job_id is None:
                        self.shutdown()
                        return
                    self.fork(job_id, size, fds)
                else:
                    self.reap(int(key.fd))

    def fork(self, job_id: int, size: int, fds: list[int]) -> None:
        """Fork one child for the request in the buffer; tell the host its pid, or why it never ran."""
        if len(fds) != STDIO_FDS:
            for fd in fds:
                os.close(fd)
            send(self.control, {"id": job_id, "error": f"expected {STDIO_FDS} stdio descriptors, got {len(fds)}"})
            return
        report_r, report_w = os.pipe()
        base = mapped_bytes()
        for stream in (sys.stdout, sys.stderr):  # nothing of ours may be flushed into the job's stdio
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            start_child(bytes(memoryview(self.buffer)[:size]), fds, report_w, base)
        self.buffer[:size] = bytes(size)
        os.close(report_w)
        for fd in fds:
            os.close(fd)
        with os.fdopen(report_r, "rb") as report:
            failure = report.read()  # EOF once the child closed every descriptor but stdio
        if failure:
            os.waitpid(pid, 0)
            send(self.control, {"id": job_id, "error": failure.decode(errors="replace")})
            return
        pidfd = os.pidfd_open(pid)
        self.jobs[pidfd] = (job_id, pid)
        self.selector.register(pidfd, selectors.EVENT_READ)
        send(self.control, {"id": job_id, "pid": pid})

    def reap(self, pidfd: int) -> None:
        """A child ended: collect its status and tell the host."""
        job_id, pid = self.jobs.pop(pidfd)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        send(self.control, {"id": job_id, "exit": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss})

    def shutdown(self) -> None:
        """The host is gone: no job outlives it."""
        for _, pid in self.jobs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pidfd, (_, pid) in list(self.jobs.items()):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            os.close(pidfd)
        self.jobs.clear()


def preload(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import what can be imported; never anything that initialises CUDA."""
    loaded: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional package must not take the server down
            missing[name] = f"{type(exc).__name__}: {exc}"
        else:
            loaded.append(name)
    return loaded, missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m sandbox.harness.forkserver")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    set_dumpable(False)  # no job of our uid may reach into this process for the socket
    loaded, missing = preload(args.preload)
    send(control, {"ready": True, "preloaded": loaded, "missing": missing})
    ForkServer(control).serve()


if __name__ == "__main__":
    main()
