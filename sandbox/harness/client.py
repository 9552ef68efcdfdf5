"""Hands one job to the warm server (sandbox.harness.warm) and becomes its stand-in.

The host execs this under `timeout -k` exactly as it would exec the job itself: stdout and
stderr are passed to the forked job by descriptor, signals are forwarded to its process
group, and this process exits with the job's status.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import sys
import time
from types import FrameType

from sandbox.harness.warm import SOCKET_PATH

CONNECT_WAIT_S = 120.0
CONNECT_POLL_S = 0.01


def connect() -> socket.socket:
    """Connect, waiting while the server is still preloading."""
    deadline = time.monotonic() + CONNECT_WAIT_S
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(SOCKET_PATH)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                print("sandlab: the warm server never came up", file=sys.stderr)
                sys.exit(125)
            time.sleep(CONNECT_POLL_S)
        else:
            return sock


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    sock = connect()
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    stdio = array.array("i", [0, 1, 2]).tobytes()
    sock.sendmsg([json.dumps(request).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, stdio)])
    reader = sock.makefile("r")
    child_pid = int(json.loads(reader.readline())["pid"])

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child_pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    line = reader.readline()
    if not line:
        return 125
    code = int(json.loads(line)["exit"])
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
