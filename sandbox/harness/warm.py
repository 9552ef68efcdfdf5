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
import contextlib
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import traceback
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
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102 - it is the job
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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv: list[str] = request["argv"]
    if not is_plain_python(argv):
        os.execvp(argv[0], argv)  # noqa: S606 - the job's own command
    code = 0
    try:
        run_python(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


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
