"""DockerSandbox: one disposable, locked-down container per attempt.

Lifecycle of an attempt (each step is one method below):
 1. create a labelled container whose PID 1 only idles (`sleep infinity`), with a
    size-capped tmpfs workspace, a read-only root, no network and no capabilities;
 2. stage the job's files by streaming a tar into `tar -x` (the archive API cannot see
    tmpfs mounts, and a tar copy never follows a host symlink);
 3. exec the job under `timeout -k`, streaming stdout/stderr into capped buffers, while a
    host timer kills the container if the in-container timeout fails;
 4. read usage (engine stats, then the cgroup files), kill leftover processes;
 5. copy the workspace back as a tar stream, skipping links;
 6. remove the container, always, in `finally`.
The workspace outlives the job because PID 1 is not the job: that is why outputs can be
read back from a tmpfs that the host disk never backs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

from typing_extensions import override

from sandbox import labels
from sandbox.base import WORKSPACE, Job, Sandbox
from sandbox.classify import classify
from sandbox.engine import connect
from sandbox.events import EVENTS_FILE, parse_events
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.limits import max_collect_bytes, max_event_line_bytes, max_events
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Status, Usage
from sandbox.staging import extract_outputs, pack_workspace

IDLE_COMMAND = ["sleep", "infinity"]
_QUIESCE_TRIES = 10
_QUIESCE_PAUSE_S = 0.3

# Run after the job (and after _quiesce): print the cgroup's own accounting. The cgroup
# files are mounted read-only, so the job cannot forge them.
_PROBE_SCRIPT = r"""
m=/sys/fs/cgroup/memory
if [ -r $m/memory.max_usage_in_bytes ]; then
  echo "peak_memory_bytes $(cat $m/memory.max_usage_in_bytes)"
  grep '^oom_kill ' $m/memory.oom_control
  echo "cpu_ns $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage 2>/dev/null || echo 0)"
elif [ -r /sys/fs/cgroup/memory.events ]; then
  [ -r /sys/fs/cgroup/memory.peak ] && echo "peak_memory_bytes $(cat /sys/fs/cgroup/memory.peak)"
  grep '^oom_kill ' /sys/fs/cgroup/memory.events
  grep '^usage_usec ' /sys/fs/cgroup/cpu.stat
fi
exit 0
"""


def container_kwargs(
    job: Job, policy: Policy, image: str, gpu_ids: list[int], owner: dict[str, str]
) -> dict[str, Any]:
    """The keyword arguments for `containers.create`; a pure function, unit-tested."""
    from docker.types import DeviceRequest, Mount, Ulimit

    uid, _, gid = policy.user.partition(":")
    gid = gid or uid
    env = {"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **job.env}
    device_requests = []
    if gpu_ids:
        ids = [str(i) for i in gpu_ids]
        device_requests.append(
            DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu", "utility"]])
        )
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
            WORKSPACE: (
                f"rw,nosuid,nodev,size={int(policy.workspace_size)},uid={uid},gid={gid},mode=0755"
            ),
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
        "mounts": [
            Mount(target=m.target, source=m.source, type=m.type, read_only=True)
            for m in policy.data_mounts
        ],
        "hostname": "sandbox",
    }


def job_command(job: Job, policy: Policy) -> list[str]:
    """The job's argv wrapped in the in-container layer of the timeout."""
    return ["timeout", "-k", f"{policy.kill_grace:g}s", f"{policy.timeout:g}s", *job.command]


class DockerSandbox(Sandbox):
    """Runs each job in a fresh container and removes it afterwards, whatever happens."""

    name = "docker"

    def __init__(self, image: str = "sandlab-runner:latest", client: Any | None = None) -> None:
        self.image = image
        self.client = client if client is not None else connect()
        self._active: set[str] = set()
        self._lock = threading.Lock()

    @override
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        container_id: str | None = None
        out, err = CappedBuffer(int(policy.output_cap)), CappedBuffer(int(policy.output_cap))
        try:
            gpu_ids = resolve_gpu_ids(policy)
            container_id = self._create(job, policy, gpu_ids)
            self._stage(container_id, job, policy)
            with GpuSampler(gpu_ids) as gpu:
                job_t0 = time.monotonic()
                exit_code, deadline_hit = self._exec_job(container_id, job, policy, out, err)
                elapsed = time.monotonic() - job_t0
            self._quiesce(container_id, policy)
            usage, oom_kills = self._usage(container_id, policy)
            usage.gpu_peak_memory_bytes = gpu.peak_memory_bytes
            usage.gpu_utilization_pct = gpu.mean_utilization_pct
            try:
                skipped, events_blob = self._collect(container_id, job, policy)
            except Exception as exc:
                # The job already has its verdict; a job that wrecked its own container
                # (a fork bomb filling the pid table, say) loses its outputs, not its status.
                skipped, events_blob = [f"(workspace not collected: {type(exc).__name__}: {exc})"], b""
        except Exception as exc:  # the machinery failed, not the job
            return AttemptResult(
                status=Status.infra_error,
                exit_code=None,
                duration_s=time.monotonic() - t0,
                started_at=started_at,
                stdout=out.text(),
                stderr=err.text(),
                truncated=out.truncated or err.truncated,
                limits=policy,
                image=self.image,
                container_id=container_id,
                reason=_describe_engine_error(exc, self.image),
            )
        finally:
            if container_id is not None:
                self._remove(container_id)
        status, reason = classify(
            exit_code, elapsed, policy, oom_killed=oom_kills > 0, host_deadline_hit=deadline_hit
        )
        events, stats = parse_events(events_blob)
        return AttemptResult(
            status=status,
            exit_code=exit_code,
            duration_s=time.monotonic() - t0,
            started_at=started_at,
            stdout=out.text(),
            stderr=err.text(),
            truncated=out.truncated or err.truncated,
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            events=events,
            event_stats=stats,
            usage=usage,
            limits=policy,
            image=self.image,
            container_id=container_id,
            reason=reason,
            outputs_dir=job.outputs_dir,
            outputs_skipped=skipped,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _create(self, job: Job, policy: Policy, gpu_ids: list[int]) -> str:
        owner = labels.owner_labels(job.run_id, job.attempt)
        kwargs = container_kwargs(job, policy, self.image, gpu_ids, owner)
        container = self.client.containers.create(**kwargs)
        with self._lock:
            self._active.add(container.id)
        container.start()
        return str(container.id)

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(Exception):
            self.client.api.remove_container(container_id, force=True, v=True)
        with self._lock:
            self._active.discard(container_id)

    def _kill(self, container_id: str) -> None:
        with contextlib.suppress(Exception):
            self.client.api.kill(container_id)

    @override
    def kill_all(self) -> int:
        with self._lock:
            active = list(self._active)
        for container_id in active:
            self._kill(container_id)
        return len(active)

    # -- I/O ------------------------------------------------------------------------------

    def _stage(self, container_id: str, job: Job, policy: Policy) -> None:
        uid, _, gid = policy.user.partition(":")
        payload = pack_workspace(job.workspace, job.files, int(uid), int(gid or uid))
        api = self.client.api
        exec_id = api.exec_create(
            container_id, ["tar", "-x", "-f", "-", "-C", WORKSPACE],
            stdin=True, stdout=True, stderr=True, user=policy.user,
        )["Id"]
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        try:
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
            while raw.recv(65536):
                pass
        finally:
            sock.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            msg = f"staging the workspace failed (tar exited {code}); is the workspace cap too small?"
            raise RuntimeError(msg)

    def _exec_job(
        self, container_id: str, job: Job, policy: Policy, out: CappedBuffer, err: CappedBuffer
    ) -> tuple[int | None, bool]:
        api = self.client.api
        exec_id = api.exec_create(
            container_id, job_command(job, policy), stdout=True, stderr=True,
            user=policy.user, workdir=WORKSPACE,
            environment={"HOME": "/tmp", **job.env},
        )["Id"]
        deadline_hit = threading.Event()

        def host_kill() -> None:
            deadline_hit.set()
            self._kill(container_id)

        timer = threading.Timer(policy.host_deadline_s, host_kill)
        timer.daemon = True
        timer.start()
        try:
            for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
                if chunk_out:
                    out.write(chunk_out)
                if chunk_err:
                    err.write(chunk_err)
        finally:
            timer.cancel()
        if deadline_hit.is_set():
            return None, True
        code = api.exec_inspect(exec_id).get("ExitCode")
        return (int(code) if code is not None else None), False

    def _quiesce(self, container_id: str, policy: Policy) -> None:
        """Kill everything the job left running, so the workspace stops changing.

        Retried because a job that filled its pid table leaves no room for the exec itself
        until the in-container timeout's group kill has freed some.
        """
        for _ in range(_QUIESCE_TRIES):
            try:
                api = self.client.api
                exec_id = api.exec_create(
                    container_id, ["sh", "-c", "kill -9 -1 2>/dev/null; exit 0"], user=policy.user
                )["Id"]
                api.exec_start(exec_id)
                if api.exec_inspect(exec_id).get("ExitCode") == 0:
                    return
            except Exception:  # noqa: S110 - retried below
                pass
            time.sleep(_QUIESCE_PAUSE_S)

    def _usage(self, container_id: str, policy: Policy) -> tuple[Usage, int]:
        usage = Usage()
        api = self.client.api
        with contextlib.suppress(Exception):
            stats = api.stats(container_id, stream=False, one_shot=True)
            mem = stats.get("memory_stats") or {}
            if mem.get("max_usage"):
                usage.peak_memory_bytes = int(mem["max_usage"])
            total_ns = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
            if total_ns:
                usage.cpu_s = total_ns / 1e9
        probe = _run_exec(api, container_id, ["sh", "-c", _PROBE_SCRIPT], user=policy.user)
        oom_kills = 0
        for line in probe.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if not value.strip().isdigit():
                continue
            number = int(value)
            if key == "oom_kill":
                oom_kills = number
            elif key == "peak_memory_bytes" and usage.peak_memory_bytes is None:
                usage.peak_memory_bytes = number
            elif key == "cpu_ns" and usage.cpu_s is None and number:
                usage.cpu_s = number / 1e9
            elif key == "usage_usec" and usage.cpu_s is None:
                usage.cpu_s = number / 1e6
        return usage, oom_kills

    def _collect(self, container_id: str, job: Job, policy: Policy) -> tuple[list[str], bytes]:
        api = self.client.api
        exec_id = api.exec_create(
            container_id, ["tar", "-c", "-f", "-", "-C", WORKSPACE, "."],
            stdout=True, stderr=False, user=policy.user,
        )["Id"]
        with tempfile.TemporaryDirectory(prefix="sandlab-out-") as scratch:
            dest = job.outputs_dir if job.outputs_dir is not None else os.path.join(scratch, "ws")
            with tempfile.SpooledTemporaryFile(max_size=32 * 1024**2, dir=scratch) as spool:
                size = 0
                for chunk in api.exec_start(exec_id, stream=True):
                    size += len(chunk)
                    if size > max_collect_bytes:
                        break
                    spool.write(chunk)
                spool.seek(0)
                from pathlib import Path

                skipped = extract_outputs(spool, Path(dest))  # type: ignore[arg-type]
            events_path = Path(dest) / EVENTS_FILE
            events_blob = b""
            if events_path.is_file() and not events_path.is_symlink():
                with events_path.open("rb") as fh:
                    events_blob = fh.read(max_events * max_event_line_bytes)
        return skipped, events_blob


def _run_exec(api: Any, container_id: str, cmd: list[str], user: str) -> bytes:
    exec_id = api.exec_create(container_id, cmd, stdout=True, stderr=False, user=user)["Id"]
    try:
        return bytes(api.exec_start(exec_id))
    except Exception:
        return b""


def _describe_engine_error(exc: BaseException, image: str) -> str:
    name = type(exc).__name__
    if name == "ImageNotFound":
        return f"image {image} not found; run `controller images build`"
    text = str(exc).splitlines()[0] if str(exc) else name
    return f"engine failure ({name}): {text[:500]}"
