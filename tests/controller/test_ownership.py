"""Who owns a run: host, pid and start time, so a recycled pid is never mistaken for it."""

from __future__ import annotations

import subprocess
import sys

from controller.ownership import claim, owner_alive
from controller.registry import RunConfig, RunState
from sandbox.owners import current_owner, process_start_ticks


def test_a_live_owner_a_dead_one_a_recycled_pid_and_another_host() -> None:
    state = RunState(run_id="r", config=RunConfig(budget_s=60))
    claim(state)
    assert state.status == "running" and state.owner_start == current_owner().start_ticks
    assert not owner_alive(state)  # this process is never "another live owner"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state.owner_pid, state.owner_start = child.pid, process_start_ticks(child.pid)
        assert owner_alive(state)
        assert not owner_alive(state.model_copy(update={"owner_start": "1"}))  # same pid, another process
        assert not owner_alive(state.model_copy(update={"owner_host": "elsewhere"}))
    finally:
        child.kill()
        child.wait()
    assert not owner_alive(state)


def test_a_dead_owner_not_yet_reaped_is_dead() -> None:
    """A zombie still has /proc entries (and its start time); its containers are orphans all the same."""
    import socket
    import time
    from pathlib import Path

    from sandbox.owners import owner_is_alive

    child = subprocess.Popen(["sleep", "30"])
    ticks = process_start_ticks(child.pid)
    assert ticks is not None and owner_is_alive(socket.gethostname(), child.pid, ticks)
    child.kill()
    time.sleep(0.3)  # killed, and not waited for: a zombie
    assert Path(f"/proc/{child.pid}").exists()
    assert process_start_ticks(child.pid) is None
    assert not owner_is_alive(socket.gethostname(), child.pid, ticks)
    child.wait()
