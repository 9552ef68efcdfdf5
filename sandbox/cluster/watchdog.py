"""A node-side watchdog: when the Ray worker that runs sandlab jobs dies, its containers go too.

A Ray worker can die without running a line of cleanup: the controller cancels its task at
the budget deadline (a forced cancel kills the worker), the controller itself dies (Ray then
kills the workers it owned), or the raylet dies under it. The containers the worker started
would outlive it. So each worker that runs jobs starts this process once, in a session of
its own, holding the read end of a pipe whose write end only the worker has. End of file
on that pipe means the worker is gone, whatever killed it: the watchdog then waits for its
pid to disappear and removes every sandlab container on this host whose owner is provably
dead (`reap_orphans`: the same rule as `controller reap`), then exits.

    python -m sandbox.cluster.watchdog --owner PID   (stdin: the pipe)

It detaches at once (fork, the first process exits, setsid): Ray kills a dying worker's
child processes, and a watchdog that stayed the worker's child would die with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from sandbox.owners import process_start_ticks

OWNER_EXIT_WAIT_S = 30.0
POLL_S = 0.05


def wait_for_exit(pid: int, start_ticks: str | None) -> None:
    """Until that process is gone (or is another process that got its pid)."""
    deadline = time.monotonic() + OWNER_EXIT_WAIT_S
    while time.monotonic() < deadline:
        ticks = process_start_ticks(pid)  # None for a zombie too
        if ticks is None or ticks != start_ticks:
            return
        time.sleep(POLL_S)


def reap() -> int:
    """Remove this host's sandlab containers whose owner is dead; how many went."""
    from sandbox.backends.docker import connect, reap_orphans

    try:
        client = connect()
    except Exception as exc:
        print(f"sandlab watchdog: no engine to reap ({exc})", file=sys.stderr)
        return 0
    return len(reap_orphans(client).removed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.cluster.watchdog")
    parser.add_argument("--owner", type=int, required=True)
    args = parser.parse_args(argv)
    start_ticks = process_start_ticks(args.owner)
    if os.fork() > 0:
        os._exit(0)  # the worker reaps this first process; the watchdog is nobody's child now
    os.setsid()
    while os.read(0, 4096):  # the worker never writes: only end of file ends this
        pass
    wait_for_exit(args.owner, start_ticks)
    removed = reap()
    print(f"sandlab watchdog: owner {args.owner} is gone; removed {removed} container(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
