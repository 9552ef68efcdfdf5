"""PID 1 of a pooled container: preload heavy modules, then run exactly one job by fork.

Importing torch costs seconds; a guard check of a generated module should not. A pooled
container starts this server ahead of time. It imports the preload list, listens on a
unix socket, accepts one client (`sandbox.harness.client`, exec'd by the host under
`timeout -k`), receives the client's argv, environment and stdio descriptors, and forks:
the child runs the job with the already-imported modules. The container is still used
once: the server never accepts a second job.
"""

from __future__ import annotations

import argparse
import array
import atexit
import contextlib
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import threading
import traceback
import types
from typing import Any, NoReturn

SOCKET_PATH = "/tmp/.sandlab-warm/warm.sock"
MAX_REQUEST_BYTES = 1024 * 1024
STDIO_FDS = 3


def recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One JSON request plus the client's stdin, stdout and stderr descriptors."""
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(MAX_REQUEST_BYTES, socket.CMSG_SPACE(STDIO_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return json.loads(data.decode()), list(fds)


def run_python(argv: list[str]) -> None:
    """Run `python3 -c/-m/script ...` in this (preloaded) interpreter, as python would."""
    args = argv[1:]
    if args and args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        sys.path.insert(0, "")
        code = compile(args[1], "<string>", "exec")
        # A module of its own as __main__, as python gives it (pickle and multiprocessing
        # look classes and functions up there), not this server's.
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        exec(code, main.__dict__)  # noqa: S102 - it is the job
    elif args and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path.insert(0, os.getcwd())
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")


def is_plain_python(argv: list[str]) -> bool:
    """Whether argv is python with -c, -m or a script (and no other interpreter flags)."""
    if not argv or os.path.basename(argv[0]) not in {"python", "python3", "python3.11"}:
        return False
    if len(argv) < 2:
        return False
    if argv[1] in {"-c", "-m"}:
        return len(argv) >= 3
    return not argv[1].startswith("-")


def child(request: dict[str, Any], fds: list[int]) -> NoReturn:
    """In the forked child: take over the client's stdio, then become the job."""
    os.setpgid(0, 0)
    for target, fd in enumerate(fds[:STDIO_FDS]):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    become_job(request["argv"], in_process=is_plain_python(request["argv"]))


def become_job(argv: list[str], *, in_process: bool) -> NoReturn:
    """Run the job in this process and exit with its status; never returns.

    In-process when `in_process` (a plain python job that can use what is preloaded);
    otherwise exec its argv, failing as `timeout` would (126 not executable, 127 not found).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not in_process:
        for ignored in (signal.SIGPIPE, signal.SIGXFSZ):  # python ignores them; an exec'd job must not
            signal.signal(ignored, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)  # noqa: S606 - the job's own command
        except OSError as exc:
            print(f"sandlab: failed to run command {argv[0]!r}: {exc.strerror}", file=sys.stderr)
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
    code = 0
    try:
        run_python(argv)
        _wait_for_threads()
    except SystemExit as exc:
        code = exit_status(exc)
    except BaseException as exc:
        _print_job_traceback(exc)
        code = 1
    # What the interpreter does on its way out, which os._exit skips: atexit handlers run
    # (a job's own, and those of the modules it imported) and the streams are flushed.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _print_job_traceback(exc: BaseException) -> None:
    """The traceback python would print for the job, without the frames that ran it here."""
    tb = exc.__traceback__
    while tb is not None and _is_launcher_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)


def _is_launcher_frame(filename: str) -> bool:
    return filename in (__file__, runpy.__file__) or filename.startswith("<frozen runpy")


def _wait_for_threads() -> None:
    """Join the job's non-daemon threads, as the interpreter does before it exits."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()


def exit_status(exc: SystemExit) -> int:
    """The status python exits with for this SystemExit (printing a non-int code, as it does)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def serve(preload: list[str]) -> None:
    """Preload, accept one job, fork it, report its status, then idle until removed."""
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"sandlab warm: cannot preload {name}: {exc}", file=sys.stderr)
    os.makedirs(os.path.dirname(SOCKET_PATH), mode=0o700, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(SOCKET_PATH + ".tmp")
    os.rename(SOCKET_PATH + ".tmp", SOCKET_PATH)  # appears only once the preload is done
    server.listen(1)
    conn, _ = server.accept()
    server.close()
    os.unlink(SOCKET_PATH)
    request, fds = recv_request(conn)
    pid = os.fork()
    if pid == 0:
        conn.close()
        child(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    # The client may be gone (killed by timeout -k); the host then reads the exec's code.
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
    conn.close()
    while True:  # PID 1 keeps the container (and its tmpfs workspace) alive for collection
        try:
            os.waitpid(-1, 0)  # reap whatever the job left behind
        except ChildProcessError:
            signal.pause()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m sandbox.harness.warm")
    parser.add_argument("--preload", action="append", default=[])
    serve(parser.parse_args().preload)


if __name__ == "__main__":
    main()
