"""The shape of a sandlab container and of the execs run in it: pure functions and scripts.

`container_kwargs` turns a job and a policy into the engine's create arguments (unit-tested
against a fake client); `job_command` wraps the job in the inner timeout; FINISH_SCRIPT
collects usage and outputs after the job, and `parse_probe` reads what it printed.
`sandbox.py` runs them against the engine.
"""

from __future__ import annotations

from typing import Any

from sandbox.backends.capture import timeout_argv
from sandbox.base import WORKSPACE, Job
from sandbox.policy import Policy
from sandbox.results import Usage

IDLE_COMMAND = ["sleep", "infinity"]
CONTAINER_ARGS = ("image", "command", "labels", "user", "working_dir", "environment", "hostname")
"""container_kwargs keys that belong to the container; the rest form its host config."""
WARM_CLIENT = ["python3", "-m", "sandbox.harness.client", "--"]

# Run after the job, as the job's user. First kill whatever the job left behind (a
# daemonized grandchild, say) so the workspace stops changing; then print the cgroup's own
# accounting on stderr (the files are mounted read-only: the job cannot forge them); then
# stream the workspace out as a tar on stdout. PID 1 survives `kill -1`: the kernel never
# delivers SIGKILL to a namespace's init from inside it.
FINISH_SCRIPT = r"""
kill -9 -1 2>/dev/null
m=/sys/fs/cgroup/memory
{
if [ -r $m/memory.max_usage_in_bytes ]; then
  echo "peak_memory_bytes $(cat $m/memory.max_usage_in_bytes)"
  grep '^oom_kill ' $m/memory.oom_control
  echo "cpu_ns $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null || echo 0)"
elif [ -r /sys/fs/cgroup/memory.events ]; then
  [ -r /sys/fs/cgroup/memory.peak ] && echo "peak_memory_bytes $(cat /sys/fs/cgroup/memory.peak)"
  grep '^oom_kill ' /sys/fs/cgroup/memory.events
  grep '^usage_usec ' /sys/fs/cgroup/cpu.stat
fi
} >&2
exec tar -c -f - -C "$0" .
"""
STAGING_FAILED = 125
"""Exit status of STAGE_SCRIPT when `tar -x` fails (the job never started)."""
STAGE_SCRIPT = f'tar -x -f - -C "$0" || exit {STAGING_FAILED}; exec "$@"'
"""Untar the workspace from stdin into $0, then become the job (argv after it)."""


def container_kwargs(job: Job, policy: Policy, image: str, gpu_ids: list[int], owner: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments for `containers.create`; a pure function, unit-tested."""
    from docker.types import DeviceRequest, Mount, Ulimit

    uid, _, gid = policy.user.partition(":")
    gid = gid or uid
    env = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **job.env}
    device_requests = []
    if gpu_ids:
        ids = [str(i) for i in gpu_ids]
        device_requests.append(DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu", "utility"]]))
        # The runtime renumbers the granted devices from 0 inside the container.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(ids)))
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(ids)
    return {
        "image": image,
        "command": IDLE_COMMAND,
        "detach": True,
        "labels": owner,
        "user": policy.user,
        "working_dir": WORKSPACE,
        "environment": env,
        "network_mode": policy.network,
        "read_only": policy.read_only_rootfs,
        "tmpfs": {
            "/tmp": f"rw,nosuid,nodev,size={int(policy.tmpfs_size)},mode=1777",
            WORKSPACE: (f"rw,nosuid,nodev,size={int(policy.workspace_size)},uid={uid},gid={gid},mode=0755"),
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": policy.pids,
        "mem_limit": int(policy.memory),
        "memswap_limit": int(policy.memory),
        "nano_cpus": int(policy.cpus * 1e9),
        "shm_size": int(policy.shm_size),
        "ulimits": [Ulimit(name="core", soft=0, hard=0)],
        "device_requests": device_requests,
        "mounts": [Mount(target=m.target, source=m.source, type=m.type, read_only=True) for m in policy.data_mounts],
        "hostname": "sandbox",
    }


def job_command(job: Job, policy: Policy, *, warm: bool = False) -> list[str]:
    """The job's argv wrapped in the in-container layer of the timeout.

    In a warm container the job is handed to the preloaded server through the client,
    which stands in for it (signals forwarded, same exit status). The image's `python3`
    is the right interpreter, so nothing is substituted.
    """
    return timeout_argv([*WARM_CLIENT, *job.command] if warm else job.command, policy)


def parse_probe(text: bytes) -> tuple[Usage, int]:
    """Usage and OOM kills from the accounting lines FINISH_SCRIPT prints on stderr."""
    usage = Usage()
    oom_kills = 0
    for line in text.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if not value.strip().isdigit():
            continue
        number = int(value)
        if key == "oom_kill":
            oom_kills = number
        elif key == "peak_memory_bytes":
            usage.peak_memory_bytes = number
        elif key == "cpu_ns" and number:
            usage.cpu_s = number / 1e9
        elif key == "usage_usec":
            usage.cpu_s = number / 1e6
    return usage, oom_kills
