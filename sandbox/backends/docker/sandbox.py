"""DockerSandbox: one disposable, locked-down container per attempt.

This is `sandbox.backends.docker.sandbox`; its neighbours in the package hold the rest of
what needs the engine: `engine` (connecting), `labels` and `reaper` (ownership), `pool`
(warm containers), `images` (building them) and `health` (what `controller doctor` checks).

Lifecycle of an attempt (each step is one method below):
 1. create a labelled container whose PID 1 only idles (`sleep infinity`), with a
    size-capped tmpfs workspace, a read-only root, no network and no capabilities;
 2. stage the job's files by streaming a tar into `tar -x` (the archive API cannot see
    tmpfs mounts, and a tar copy never follows a host symlink);
 3. exec the job under `timeout -k`, streaming stdout/stderr into capped buffers, while a
    host timer kills the container if the in-container timeout fails;
 4. in one more exec, kill leftover processes, read the cgroup's own accounting (peak
    memory, CPU, OOM kills) and copy the workspace back as a tar stream, skipping links;
 5. remove the container, always, in `finally`.
The container's shape and the exec scripts are pure, in `container.py`; the result is built
by `sandbox.backends.capture`, as the local backend's is.
The workspace outlives the job because PID 1 is not the job: that is why outputs can be
read back from a tmpfs that the host disk never backs.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from docker.errors import APIError, NotFound
from docker.utils.socket import STDOUT, frames_iter
from typing_extensions import override

from sandbox.backends import RUNNER_IMAGE
from sandbox.backends.capture import Capture
from sandbox.backends.docker import labels
from sandbox.backends.docker.container import (
    CONTAINER_ARGS,
    FINISH_SCRIPT,
    STAGE_SCRIPT,
    STAGING_FAILED,
    container_kwargs,
    job_command,
    parse_probe,
)
from sandbox.backends.docker.engine import connect, engine_error_text
from sandbox.backends.docker.pool import DEFAULT_PRELOAD, WarmPool
from sandbox.base import WORKSPACE, Job, Sandbox
from sandbox.classify import classify
from sandbox.events import read_events_file
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.limits import (
    finish_pause_s,
    finish_tries,
    max_collect_bytes,
    probe_output_cap,
    spool_in_memory_bytes,
)
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Usage
from sandbox.staging import extract_outputs, pack_workspace

log = structlog.get_logger("sandlab.sandbox")


class DockerSandbox(Sandbox):
    """Runs each job in a fresh container and removes it afterwards, whatever happens."""

    name = "docker"

    def __init__(
        self,
        image: str = RUNNER_IMAGE,
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

    @property
    @override
    def seals_host_files(self) -> bool:
        """True: a container sees no host path but its staged workspace and read-only mounts."""
        return True

    @property
    @override
    def isolates_concurrent_jobs(self) -> bool:
        """True: each container has its own filesystem and pid namespace."""
        return True

    def image_id(self) -> str | None:
        """The image's content digest (looked up once); None, logged, when the engine cannot say."""
        if self._image_id is None:
            try:
                self._image_id = str(self.client.api.inspect_image(self.image)["Id"])
            except Exception as exc:
                log.warning("docker.image_id_failed", image=self.image, reason=engine_error_text(exc))
        return self._image_id

    @override
    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    @override
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        capture = Capture(policy, backend=self.name)
        container_id: str | None = None
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
                exit_code, deadline_hit, elapsed = self._stage_and_run(container_id, job, policy, capture, warm=warm)
            finish = self._finish(container_id, job, policy)
        except Exception as exc:  # the machinery failed, not the job
            return capture.infra_error(
                _describe_engine_error(exc, self.image), image=self.image, container_id=container_id
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
        return capture.result(
            status=status,
            reason=reason,
            exit_code=exit_code,
            events_blob=finish.events_blob,
            events_unread=finish.events_unread,
            usage=finish.usage,
            outputs_dir=job.outputs_dir,
            outputs_skipped=finish.skipped,
            image=self.image,
            image_id=self.image_id(),
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
        container_args = {k: kwargs.pop(k) for k in CONTAINER_ARGS}
        container_args["detach"] = kwargs.pop("detach", True)
        host_config = api.create_host_config(**kwargs)
        container_id = str(api.create_container(host_config=host_config, **container_args)["Id"])
        with self._lock:
            self._active.add(container_id)
        try:
            api.start(container_id)
        except Exception:
            self._remove(container_id)  # created but never started: the caller has no id to remove
            raise
        return container_id

    def _create_pooled(self, policy: Policy, gpu_ids: list[int], command: list[str], run_id: str) -> str:
        """A started container for the pool; it is not active until a job takes it."""
        placeholder = Job(command=["true"], run_id=run_id, attempt="pool")
        container_id = self._create(placeholder, policy, gpu_ids, command)
        with self._lock:
            self._active.discard(container_id)
        return container_id

    def _remove(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True, v=True)
        except NotFound:
            log.debug("docker.remove_already_gone", container_id=container_id)
        except Exception as exc:
            # It keeps its owner labels: `controller reap` removes it once this process is gone.
            log.warning("docker.remove_failed", container_id=container_id, reason=engine_error_text(exc))
        with self._lock:
            self._active.discard(container_id)

    def _kill(self, container_id: str) -> None:
        try:
            self.client.api.kill(container_id)
        except NotFound:
            log.debug("docker.kill_already_gone", container_id=container_id)
        except APIError as exc:
            # 409: it stopped on its own between the decision to kill it and the kill.
            level = log.debug if getattr(exc, "status_code", None) == 409 else log.warning
            level("docker.kill_failed", container_id=container_id, reason=engine_error_text(exc))
        except Exception as exc:
            log.warning("docker.kill_failed", container_id=container_id, reason=engine_error_text(exc))

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
        capture: Capture,
        *,
        warm: bool = False,
    ) -> tuple[int | None, bool, float]:
        """One exec: untar the workspace from stdin, then run the job under `timeout -k`.

        Staging and running share an exec to save a round trip; the timeout starts only
        once the files are in place. Returns (exit code, host deadline hit, seconds).
        """
        uid, _, gid = policy.user.partition(":")
        payload = pack_workspace(job.workspace, job.files, int(uid), int(gid or uid))
        cmd = ["sh", "-c", STAGE_SCRIPT, WORKSPACE, *job_command(job, policy, warm=warm)]
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
                (capture.out if stream_id == STDOUT else capture.err).write(data)
        finally:
            timer.cancel()
            sock.close()
        elapsed = time.monotonic() - t0
        if deadline_hit.is_set():
            return None, True, elapsed
        code = api.exec_inspect(exec_id).get("ExitCode")
        if code == STAGING_FAILED:
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
        for _ in range(finish_tries):
            probe = CappedBuffer(probe_output_cap)
            try:
                exec_id = api.exec_create(
                    container_id,
                    ["sh", "-c", FINISH_SCRIPT, WORKSPACE],
                    stdout=True,
                    stderr=True,
                    user=policy.user,
                )["Id"]
                with (
                    tempfile.TemporaryDirectory(prefix="sandlab-out-") as scratch,
                    tempfile.SpooledTemporaryFile(max_size=spool_in_memory_bytes, dir=scratch) as spool,
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
                        time.sleep(finish_pause_s)
                        continue
                    spool.seek(0)
                    dest = job.outputs_dir or Path(scratch) / "ws"
                    skipped = extract_outputs(spool, dest)
                    if size > max_collect_bytes:
                        skipped.append(f"(collection stopped at {max_collect_bytes} bytes)")
                    blob, unread = read_events_file(dest, int(policy.output_cap))
                usage, oom_kills = parse_probe(probe.getvalue())
                return _Finish(usage, oom_kills, skipped, blob, unread)
            except Exception as exc:
                last_error = engine_error_text(exc)
                time.sleep(finish_pause_s)
        return _Finish(Usage(), 0, [f"(workspace not collected: {last_error})"], b"", 0)


@dataclass
class _Finish:
    usage: Usage
    oom_kills: int
    skipped: list[str]
    events_blob: bytes
    events_unread: int


def _describe_engine_error(exc: BaseException, image: str) -> str:
    if type(exc).__name__ == "ImageNotFound":
        return f"image {image} not found; run `controller images build`"
    return f"engine failure ({engine_error_text(exc)})"


def _engine_error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}"
