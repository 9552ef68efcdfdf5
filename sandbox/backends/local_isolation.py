"""What a host process can be given without an engine: the local backend's isolation.

Probes for what this host permits (a fresh network namespace, dropping to another uid with
the interpreter still usable) and a per-job memory/pids cgroup where one is writable. Each
degrades to "not available", and `LocalSandbox.unenforced` names what that leaves open.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import structlog

from sandbox.limits import local_probe_timeout_s, local_python_probe_timeout_s
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")

CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))
"""cgroup v1's memory hierarchy, then the v2 unified one."""
_CLONE_NEWNET = 0x40000000
"""unshare(2) flag for a new network namespace (from <sched.h>)."""


def unshare_network() -> None:
    """Move the calling process into a fresh network namespace (only loopback, down)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def network_isolation_mode() -> str | None:
    """'direct' (root: unshare in the child), 'userns' (unshare -rn wrapper), or None."""
    probes: list[tuple[str, list[str]]] = []
    if os.geteuid() == 0:
        probes.append(
            ("direct", [sys.executable, "-c", f"import ctypes; assert ctypes.CDLL(None).unshare({_CLONE_NEWNET}) == 0"])
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

    def add_self(self) -> None:
        """Called in the child before exec: move it into the cgroup."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

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

    def remove(self) -> None:
        """Delete the cgroup; one that cannot go (a process still in it) is logged and left."""
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError as exc:
                log.warning("local.cgroup_remove_failed", cgroup=str(self.path), reason=str(exc))
