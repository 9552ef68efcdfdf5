"""What the local backend does to a job's process before the job's own code runs.

One routine for both ways the local backend starts a job: `LocalSandbox` calls `confine`
between fork and exec (Popen's preexec_fn), and the fork server (`forkserver`) calls it in
each forked child before the job runs in-process. So the two paths cannot drift apart.

The spec is plain JSON (it crosses the fork server's socket), built by the host from the
policy. Order matters and follows what each step needs: the cgroup is joined and the network
namespace entered while still privileged, the rlimits are set next, and the uid is dropped
last (RLIMIT_NPROC counts the processes of the uid it is set under, so it comes after).

Standard library only, like the rest of the harness.
"""

from __future__ import annotations

import ctypes
import os
import resource
from typing import Any, TypedDict

CLONE_NEWNET = 0x40000000
"""unshare(2) flag for a new network namespace (from <sched.h>)."""
CLONE_NEWUSER = 0x10000000
"""unshare(2) flag for a new user namespace (from <sched.h>)."""
PR_SET_DUMPABLE = 4
"""prctl(2) option (from <linux/prctl.h>)."""


class Confinement(TypedDict):
    """How to confine one job's process; every field is JSON."""

    cgroup_procs: list[str]
    """The job cgroups' `cgroup.procs` files to write this pid into (cgroup v1 keeps memory and
    pids in separate hierarchies; v2 has one; none where no cgroup is writable)."""
    network: str | None
    """'direct' (unshare a network namespace, needs root), 'userns' (a user namespace that
    maps this uid to root, then a network namespace: what `unshare -rn` does), or None."""
    rlimits: list[tuple[str, int]]
    """(name in the resource module, hard = soft limit), applied in this order."""
    user: tuple[int, int] | None
    """(uid, gid) to drop to, with no supplementary groups; None to stay as we are."""
    nproc: int | None
    """RLIMIT_NPROC, set after the drop (None: unchanged)."""


def unshare(flags: int) -> None:
    """unshare(2) for the calling process; raise OSError when the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def set_dumpable(dumpable: bool) -> None:
    """Whether processes of the same uid may ptrace this one or open its descriptors via /proc.

    The fork server makes itself non-dumpable, so a job running as its uid cannot take its
    control socket with pidfd_getfd(2); each child becomes dumpable again, as exec would
    make it. (Root, with CAP_SYS_PTRACE, is not stopped by this; a root job is not confined.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def unshare_network(mode: str) -> None:
    """Move the calling (single-threaded) process into a fresh network namespace.

    In 'userns' mode an unprivileged process first enters a user namespace where its uid is
    root, as `unshare -rn` does; only loopback exists in the new namespace, and it is down.
    """
    if mode == "userns":
        uid, gid = os.getuid(), os.getgid()
        unshare(CLONE_NEWUSER | CLONE_NEWNET)
        with open("/proc/self/setgroups", "w") as fh:
            fh.write("deny")
        with open("/proc/self/uid_map", "w") as fh:
            fh.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as fh:
            fh.write(f"0 {gid} 1")
    else:
        unshare(CLONE_NEWNET)


def confine(spec: Confinement | dict[str, Any], *, address_space_base: int = 0) -> None:
    """Apply `spec` to the calling process (in the child, before the job's code runs).

    `address_space_base` is added to RLIMIT_AS: a fork server's child starts with the
    server's preloaded modules already mapped (torch maps gigabytes of address space it
    never touches), and those mappings are not the job's to pay for.
    """
    for procs in spec["cgroup_procs"]:
        with open(procs, "w") as fh:
            fh.write(str(os.getpid()))
    if spec["network"]:
        unshare_network(spec["network"])
    for name, limit in spec["rlimits"]:
        value = limit + address_space_base if name == "RLIMIT_AS" else limit
        resource.setrlimit(getattr(resource, name), (value, value))
    if spec["user"] is not None:
        uid, gid = spec["user"]
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    if spec["nproc"] is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (spec["nproc"], spec["nproc"]))


def mapped_bytes() -> int:
    """The calling process's virtual size (VmSize), or 0 when /proc cannot tell."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0
