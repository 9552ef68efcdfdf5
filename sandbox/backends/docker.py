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
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docker.utils.socket import STDOUT, frames_iter
from typing_extensions import override

from sandbox import labels
from sandbox.base import WORKSPACE, Job, Sandbox
from sandbox.classify import classify
from sandbox.engine import connect
from sandbox.events import read_events_file
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.limits import max_collect_bytes
from sandbox.policy import Policy
from sandbox.pool import DEFAULT_PRELOAD, WarmPool
from sandbox.results import AttemptResult, CappedBuffer, Status, Usage
from sandbox.staging import extract_outputs, pack_workspace

IDLE_COMMAND = ["sleep", "infinity"]
_CONTAINER_ARGS = ("image", "command", "labels", "user", "working_dir", "environment", "hostname")
"""container_kwargs keys that belong to the container; the rest form its host config."""
WARM_CLIENT = ["python3", "-m", "sandbox.harness.client", "--"]

# Run after the job, as the job's user. First kill whatever the job left behind (a
# daemonized grandchild, say) so the workspace stops changing; then print the cgroup's own
# accounting on stderr (the files are mounted read-only: the job cannot forge them); then
# stream the workspace out as a tar on stdout. PID 1 survives `kill -1`: the kernel never
# delivers SIGKILL to a namespace's init from inside it.
_FINISH_SCRIPT = r"""
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
_FINISH_TRIES = 10
_FINISH_PAUSE_S = 0.3
_PROBE_OUTPUT_CAP = 64 * 1024
_SPOOL_IN_MEMORY = 32 * 1024**2
_STAGING_FAILED = 125


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
    which stands in for it (signals forwarded, same exit status).
    """
    argv = [*WARM_CLIENT, *job.command] if warm else job.command
    return ["timeout", "-k", f"{policy.kill_grace:g}s", f"{policy.timeout:g}s", *argv]


class DockerSandbox(Sandbox):
    """Runs each job in a fresh container and removes it afterwards, whatever happens."""

    name = "docker"

    def __init__(
        self,
        image: str = "sandlab-runner:latest",
        client: Any | None = None,
        *,
        pool_size: int = 0,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
    ) -> None:
        self.image = image
        self.client = client if client is not None else connect()
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._image_id: str | None = None
        self.pool = WarmPool(self._create_pooled, self._remove, pool_size, preload) if pool_size else None

    def image_id(self) -> str | None:
        """The image's content digest (looked up once)."""
        if self._image_id is None:
            with contextlib.suppress(Exception):
                self._image_id = str(self.client.api.inspect_image(self.image)["Id"])
        return self._image_id

    @override
    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    @override
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        container_id: str | None = None
        out, err = CappedBuffer(int(policy.output_cap)), CappedBuffer(int(policy.output_cap))
        try:
            gpu_ids = resolve_gpu_ids(policy)
            container_id = self.pool.take(policy, gpu_ids, job.run_id) if self.pool is not None else None
            warm = container_id is not None
            if container_id is None:
                container_id = self._create(job, policy, gpu_ids)
            else:
                with self._lock:
                    self._active.add(container_id)
            with GpuSampler(gpu_ids) as gpu:
                exit_code, deadline_hit, elapsed = self._stage_and_run(container_id, job, policy, out, err, warm=warm)
            finish = self._finish(container_id, job, policy)
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
                host=socket.gethostname(),
                container_id=container_id,
                reason=_describe_engine_error(exc, self.image),
            )
        finally:
            if container_id is not None:
                self._remove(container_id)
        finish.usage.gpu_peak_memory_bytes = gpu.peak_memory_bytes
        finish.usage.gpu_utilization_pct = gpu.mean_utilization_pct
        status, reason = classify(
            exit_code,
            elapsed,
            policy,
            oom_killed=finish.oom_kills > 0,
            host_deadline_hit=deadline_hit,
        )
        return AttemptResult.from_capture(
            status=status,
            reason=reason,
            exit_code=exit_code,
            duration_s=time.monotonic() - t0,
            started_at=started_at,
            out=out,
            err=err,
            events_blob=finish.events_blob,
            usage=finish.usage,
            limits=policy,
            outputs_dir=job.outputs_dir,
            outputs_skipped=finish.skipped,
            image=self.image,
            image_id=self.image_id(),
            host=socket.gethostname(),
            container_id=container_id,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _create(self, job: Job, policy: Policy, gpu_ids: list[int], command: list[str] | None = None) -> str:
        owner = labels.owner_labels(job.run_id, job.attempt)
        kwargs = container_kwargs(job, policy, self.image, gpu_ids, owner)
        if command is not None:
            kwargs["command"] = command
        # The low-level API: the high-level `containers.create` re-reads the container with
        # an extra request, which is a tenth of a trivial attempt's latency.
        api = self.client.api
        container_args = {k: kwargs.pop(k) for k in _CONTAINER_ARGS}
        container_args["detach"] = kwargs.pop("detach", True)
        host_config = api.create_host_config(**kwargs)
        container_id = str(api.create_container(host_config=host_config, **container_args)["Id"])
        with self._lock:
            self._active.add(container_id)
        api.start(container_id)
        return container_id

    def _create_pooled(self, policy: Policy, gpu_ids: list[int], command: list[str], run_id: str) -> str:
        """A started container for the pool; it is not active until a job takes it."""
        placeholder = Job(command=["true"], run_id=run_id, attempt="pool")
        container_id = self._create(placeholder, policy, gpu_ids, command)
        with self._lock:
            self._active.discard(container_id)
        return container_id

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

    def _stage_and_run(
        self,
        container_id: str,
        job: Job,
        policy: Policy,
        out: CappedBuffer,
        err: CappedBuffer,
        *,
        warm: bool = False,
    ) -> tuple[int | None, bool, float]:
        """One exec: untar the workspace from stdin, then run the job under `timeout -k`.

        Staging and running share an exec to save a round trip; the timeout starts only
        once the files are in place. Returns (exit code, host deadline hit, seconds).
        """
        uid, _, gid = policy.user.partition(":")
        payload = pack_workspace(job.workspace, job.files, int(uid), int(gid or uid))
        script = 'tar -x -f - -C "$0" || exit 125; exec "$@"'
        cmd = ["sh", "-c", script, WORKSPACE, *job_command(job, policy, warm=warm)]
        api = self.client.api
        exec_id = api.exec_create(
            container_id,
            cmd,
            stdin=True,
            stdout=True,
            stderr=True,
            user=policy.user,
            workdir=WORKSPACE,
            environment={"HOME": "/tmp", **job.env},
        )["Id"]
        deadline_hit = threading.Event()

        def host_kill() -> None:
            deadline_hit.set()
            self._kill(container_id)

        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        t0 = time.monotonic()
        timer = threading.Timer(policy.host_deadline_s, host_kill)
        timer.daemon = True
        timer.start()
        try:
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
            for stream_id, data in frames_iter(raw, tty=False):
                (out if stream_id == STDOUT else err).write(data)
        finally:
            timer.cancel()
            sock.close()
        elapsed = time.monotonic() - t0
        if deadline_hit.is_set():
            return None, True, elapsed
        code = api.exec_inspect(exec_id).get("ExitCode")
        if code == _STAGING_FAILED:
            msg = "staging the workspace failed; is the policy's workspace_size too small?"
            raise RuntimeError(msg)
        return (int(code) if code is not None else None), False, elapsed

    def _finish(self, container_id: str, job: Job, policy: Policy) -> _Finish:
        """One exec: kill leftovers, print cgroup accounting to stderr, tar the workspace out.

        Retried because a job that filled its pid table leaves no room for the exec itself
        until the in-container timeout's group kill has freed some. A job that wrecked its
        own container that badly loses its outputs, not its verdict.
        """
        api = self.client.api
        last_error = "no attempt"
        for _ in range(_FINISH_TRIES):
            probe = CappedBuffer(_PROBE_OUTPUT_CAP)
            try:
                exec_id = api.exec_create(
                    container_id,
                    ["sh", "-c", _FINISH_SCRIPT, WORKSPACE],
                    stdout=True,
                    stderr=True,
                    user=policy.user,
                )["Id"]
                with (
                    tempfile.TemporaryDirectory(prefix="sandlab-out-") as scratch,
                    tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY, dir=scratch) as spool,
                ):
                    size = 0
                    for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
                        if chunk_err:
                            probe.write(chunk_err)
                        if chunk_out and size <= max_collect_bytes:
                            size += len(chunk_out)
                            spool.write(chunk_out)
                    if api.exec_inspect(exec_id).get("ExitCode") is None:
                        last_error = "the collecting exec did not run"
                        time.sleep(_FINISH_PAUSE_S)
                        continue
                    spool.seek(0)
                    dest = job.outputs_dir or Path(scratch) / "ws"
                    skipped = extract_outputs(spool, dest)
                    if size > max_collect_bytes:
                        skipped.append(f"(collection stopped at {max_collect_bytes} bytes)")
                    blob = read_events_file(dest)
                usage, oom_kills = _parse_probe(probe.getvalue())
                return _Finish(usage, oom_kills, skipped, blob)
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(_FINISH_PAUSE_S)
        return _Finish(Usage(), 0, [f"(workspace not collected: {last_error})"], b"")


@dataclass
class _Finish:
    usage: Usage
    oom_kills: int
    skipped: list[str]
    events_blob: bytes


def _parse_probe(text: bytes) -> tuple[Usage, int]:
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


def _describe_engine_error(exc: BaseException, image: str) -> str:
    name = type(exc).__name__
    if name == "ImageNotFound":
        return f"image {image} not found; run `controller images build`"
    text = str(exc).splitlines()[0] if str(exc) else name
    return f"engine failure ({name}): {text[:500]}"
