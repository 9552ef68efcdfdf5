"""Reaping, with real Docker: orphans go, live owners' containers stay, kill -9 leaks nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from sandbox import owners
from sandbox.backends import RUNNER_IMAGE
from sandbox.backends.docker import labels, owner_is_alive, reap_orphans

pytestmark = pytest.mark.docker


def _labelled(client: Any, run_id: str, pid: int, start: str = "") -> Any:
    return client.containers.create(
        RUNNER_IMAGE,
        ["sleep", "infinity"],
        network_mode="none",
        labels={
            labels.RUN: run_id,
            labels.ATTEMPT: "0001",
            labels.OWNER_PID: str(pid),
            labels.OWNER_HOST: socket.gethostname(),
            labels.OWNER_START: start,
        },
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphans_are_removed_and_live_owners_are_kept(docker_client: Any) -> None:
    orphan = _labelled(docker_client, "reap-test", _dead_pid())
    live = _labelled(docker_client, "reap-test", os.getpid(), owners.process_start_ticks(os.getpid()) or "")
    recycled = _labelled(docker_client, "reap-test", os.getpid(), "1")  # same pid, other start time
    try:
        report = reap_orphans(docker_client, run_id="reap-test")
        left = {c.id for c in docker_client.containers.list(all=True, filters={"label": f"{labels.RUN}=reap-test"}, ignore_removed=True)}
        assert orphan.id not in left and recycled.id not in left
        assert live.id in left
        assert report.kept_live_owner == 1 and len(report.removed) == 2
    finally:
        for container in (orphan, live, recycled):
            try:
                container.remove(force=True)
            except Exception:
                pass


def test_owner_liveness_uses_pid_and_start_time() -> None:
    me = {
        labels.OWNER_HOST: socket.gethostname(),
        labels.OWNER_PID: str(os.getpid()),
        labels.OWNER_START: owners.process_start_ticks(os.getpid()) or "",
    }
    assert owner_is_alive(me)
    assert not owner_is_alive({labels.OWNER_PID: str(_dead_pid())})
    assert not owner_is_alive({labels.OWNER_PID: "garbage"})
    assert not owner_is_alive({**me, labels.OWNER_START: "1"})  # a recycled pid is not the owner
    assert not owner_is_alive({**me, labels.OWNER_HOST: "another-host"})


def test_sigkill_of_sandbox_exec_then_reap_leaves_nothing(docker_client: Any) -> None:
    controller = [sys.executable, "-m", "controller"]
    proc = subprocess.Popen(
        [*controller, "sandbox", "exec", "--timeout", "60s", "--", "python3", "-c", "import time; time.sleep(60)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    label = {"label": f"{labels.OWNER_PID}={proc.pid}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not docker_client.containers.list(all=True, filters=label, ignore_removed=True):
        time.sleep(0.2)
    assert docker_client.containers.list(all=True, filters=label, ignore_removed=True), "the attempt never started"
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert docker_client.containers.list(all=True, filters=label, ignore_removed=True), "expected an orphan after kill -9"
    out = subprocess.run([*controller, "reap"], capture_output=True, text=True, check=True)
    assert "removed 1" in out.stdout
    assert docker_client.containers.list(all=True, filters=label, ignore_removed=True) == []
