"""What a host process can be given without an engine: the local backend's isolation.

Probes for what this host permits (a fresh network namespace, dropping to another uid with
the interpreter still usable) and a per-job memory/pids cgroup where one is writable. Each
degrades to "not available", and `LocalSandbox.unenforced` names what that leaves open.
What is done in the job's process with them is `sandbox.harness.confine`'s, on both paths
(a spawned job and a fork-server child).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import structlog

from sandbox.harness.confine import CLONE_NEWNET
from sandbox.limits import (
    cgroup_kill_pause_s,
    cgroup_kill_rounds,
    local_probe_timeout_s,
    local_python_probe_timeout_s,
)
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")

CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))
"""cgroup v1's memory hierarchy, then the v2 unified one."""
PIDS_V1_ROOT = Path("/sys/fs/cgroup/pids")
"""cgroup v1's pids hierarchy: beside a v1 memory cgroup, the job joins one here too."""


def network_isolation_mode() -> str | None:
    """'direct' (root: unshare in the child), 'userns' (unshare -rn wrapper), or None."""
    probes: list[tuple[str, list[str]]] = []
    if os.geteuid() == 0:
        probes.append(
            ("direct", [sys.executable, "-c", f"import ctypes; assert ctypes.CDLL(None).unshare({CLONE_NEWNET}) == 0"])
        )
    unshare = shutil.which("unshare")
    if unshare is not None:
        probes.append(("userns", [unshare, "-rn", "true"]))
    for mode, cmd in probes:
        try:
            if subprocess.run(cmd, capture_output=True, timeout=local_probe_timeout_s, check=False).returncode == 0:
                return mode
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def unprivileged_python_works(python: str, uid: int = 1000) -> bool:
    """Whether `python` (and this repo, for the harness) can run after dropping to `uid`."""

    def drop() -> None:
        os.setgid(uid)
        os.setuid(uid)

    repo_root = str(Path(__file__).resolve().parents[2])
    try:
        probe = subprocess.run(
            [python, "-c", "import sandbox.harness"],
            env={"PYTHONPATH": repo_root},
            capture_output=True,
            timeout=local_python_probe_timeout_s,
            preexec_fn=drop,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


class JobCgroup:
    """A memory (+pids) cgroup for one job, when the host lets us create one (root)."""

    def __init__(self, policy: Policy) -> None:
        self.path: Path | None = None
        self.v2 = False
        self.pids_path: Path | None = None
        """cgroup v1 only: the job's pids cgroup (v2 caps pids in `path`)."""
        name = f"sandlab-{uuid.uuid4().hex[:12]}"
        for root in CGROUP_ROOTS:
            try:
                if root.name == "memory" and (root / "memory.limit_in_bytes").exists():
                    path = root / name
                    path.mkdir()
                    (path / "memory.limit_in_bytes").write_text(str(int(policy.memory)))
                    with_swap = path / "memory.memsw.limit_in_bytes"
                    if with_swap.exists():
                        with_swap.write_text(str(int(policy.memory)))
                    self.path = path
                    self.pids_path = _pids_v1(name, policy.pids)
                    return
                if (root / "cgroup.controllers").exists():
                    path = root / name
                    path.mkdir()
                    (path / "memory.max").write_text(str(int(policy.memory)))
                    (path / "memory.swap.max").write_text("0")
                    (path / "pids.max").write_text(str(policy.pids))
                    self.path, self.v2 = path, True
                    return
            except OSError:
                continue

    def kill_remaining(self) -> int:
        """SIGKILL whatever the job left in its cgroup; return how many were signalled.

        Killing the job's process group misses a daemon that called setsid(): it has a
        group of its own, but not a cgroup of its own, so it goes here. Waits (briefly)
        until the cgroup is empty, so that `remove` can delete it.
        """
        if self.path is None:
            return 0
        killed = 0
        for _ in range(cgroup_kill_rounds):
            try:
                pids = [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return killed
            if not pids:
                return killed
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
            time.sleep(cgroup_kill_pause_s)
        log.warning("local.cgroup_not_emptied", cgroup=str(self.path), signalled=killed)
        return killed

    def read(self) -> tuple[int | None, int]:
        """Peak memory and OOM kills."""
        if self.path is None:
            return None, 0
        try:
            if self.v2:
                peak_file = self.path / "memory.peak"
                peak = int(peak_file.read_text()) if peak_file.exists() else None
                events = (self.path / "memory.events").read_text()
            else:
                peak = int((self.path / "memory.max_usage_in_bytes").read_text())
                events = (self.path / "memory.oom_control").read_text()
        except (OSError, ValueError):
            return None, 0
        kills = 0
        for line in events.splitlines():
            if line.startswith("oom_kill "):
                kills = int(line.split()[1])
        return peak, kills

    @property
    def limits_pids(self) -> bool:
        return self.v2 or self.pids_path is not None

    def procs_files(self) -> list[str]:
        """The `cgroup.procs` files the job's first process writes its pid into."""
        return [str(folder / "cgroup.procs") for folder in (self.path, self.pids_path) if folder is not None]

    def remove(self) -> None:
        """Delete the cgroups; one that cannot go (a process still in it) is logged and left."""
        for folder in (self.path, self.pids_path):
            if folder is not None:
                try:
                    folder.rmdir()
                except OSError as exc:
                    log.warning("local.cgroup_remove_failed", cgroup=str(folder), reason=str(exc))


def _pids_v1(name: str, pids: int) -> Path | None:
    """A v1 pids cgroup capped at `pids`, or None where the hierarchy is absent or not writable."""
    path = PIDS_V1_ROOT / name
    try:
        path.mkdir()  # fails where the hierarchy is absent (v2 hosts) or not ours to write
    except OSError:
        return None
    try:
        (path / "pids.max").write_text(str(pids))
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


def cgroup_limits() -> tuple[bool, bool]:
    """Whether a job here gets a memory cgroup, and whether it gets a pids cap (v2, or v1's pids).

    Probed by creating (and deleting) the cgroup a job would get, as `JobCgroup` does.
    """
    probe = JobCgroup(Policy())
    try:
        return probe.path is not None, probe.limits_pids
    finally:
        probe.remove()
