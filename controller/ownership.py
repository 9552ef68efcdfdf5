"""Which process owns a run, and how that process lets go of it.

Ownership is recorded in run.json (host, pid, start time) so that `resume`, `status` and
`logs --follow` can tell a live run from one whose controller died. Liveness is the one
check in sandbox.owners, which also tells a recycled pid from the real owner.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol

from controller.registry import RunState
from sandbox.owners import current_owner, owner_is_alive


class Interruptible(Protocol):
    """What a signal handler needs of a running loop."""

    def interrupt(self) -> None: ...


def claim(state: RunState) -> None:
    """Mark this process as the run's owner."""
    owner = current_owner()
    state.owner_pid, state.owner_host, state.owner_start = owner.pid, owner.host, owner.start_ticks
    state.status = "running"


def owner_alive(state: RunState) -> bool:
    """Whether another live process on this host owns the run (never this process)."""
    if state.owner_pid == current_owner().pid:
        return False
    return owner_is_alive(state.owner_host, state.owner_pid, state.owner_start)


def shown_status(state: RunState) -> str:
    """The status to show a user: a "running" run whose controller died (kill -9, a reboot)
    is "orphaned", which `controller resume` continues; run.json keeps "running"."""
    return "orphaned" if state.status == "running" and not owner_alive(state) else state.status


@contextmanager
def signals_interrupt(loop: Interruptible) -> Iterator[None]:
    """SIGINT/SIGTERM kill the run's containers and unwind it as `interrupted`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.interrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
