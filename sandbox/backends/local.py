"""LocalSandbox: host subprocesses for machines with no container engine (GPU boxes).

This is weaker isolation and says so loudly. It enforces what a process can be given
without an engine: its own session and process group, rlimits, a fresh network namespace
(`unshare -n`) where the kernel allows, an unprivileged uid when started as root, a
memory/pids cgroup when one is writable, and read-only copies of the policy's data mounts
(`local_mounts`). It cannot give a read-only root filesystem or a size-capped workspace; a
policy asking for those is refused unless `allow_weaker` is set.

Each job gets a private scratch folder: `workspace/` (its files, owned by the job's uid) and
`mounts/` (the data copies, owned by this process). Its timeout argv and its AttemptResult
come from `capture`, as docker's do.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from typing_extensions import override

from sandbox.backends.capture import Capture, timeout_argv
from sandbox.backends.local_isolation import (
    JobCgroup,
    network_isolation_mode,
    unprivileged_python_works,
    unshare_network,
)
from sandbox.backends.local_mounts import MOUNT_PREFIX_ENV, stage_mounts, unseal
from sandbox.base import Job, Sandbox
from sandbox.classify import classify
from sandbox.errors import WeakerIsolationError
from sandbox.events import read_events_file
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.limits import reader_join_timeout_s, stream_chunk_bytes
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Usage
from sandbox.staging import extract_outputs, pack_workspace

WARNING = (
    "WARNING: sandlab LocalSandbox runs generated code as host processes. There is no "
    "read-only root, no workspace cap and no engine-level isolation. Use Docker wherever "
    "you can."
)


class LocalSandbox(Sandbox):
    """Runs jobs as host subprocesses; refuses what it cannot enforce unless allowed."""

    name = "local"

    def __init__(self, *, allow_weaker: bool = False, python: str | None = None) -> None:
        self.allow_weaker = allow_weaker
        self.python = python or sys.executable
        self._netns_mode = network_isolation_mode()
        self._netns = self._netns_mode is not None
        self._is_root = os.geteuid() == 0
        self._can_drop = self._is_root and unprivileged_python_works(self.python)
        self._active: set[int] = set()
        self._lock = threading.Lock()
        print(WARNING, file=sys.stderr)

    def unenforced(self, policy: Policy) -> list[str]:
        """The parts of the policy this host cannot enforce."""
        gaps = []
        if policy.read_only_rootfs:
            gaps.append("read_only_rootfs (the job can write wherever its user can)")
        gaps.append("workspace_size (only a per-file size limit)")
        if policy.network == "none" and not self._netns:
            gaps.append("network: none (unshare -n is not permitted here)")
        if not self._can_drop:
            why = "the interpreter is not usable by that uid" if self._is_root else "not root"
            gaps.append(f"user {policy.user} ({why}, so the job runs as uid {os.getuid()})")
        if any(m.type == "volume" for m in policy.data_mounts):
            gaps.append("data_mounts of type volume (named volumes need the docker engine; they are skipped)")
        if any(m.type == "bind" for m in policy.data_mounts) and not self._can_drop:
            gaps.append("data_mounts (copies are not read-only to the job: it runs as their owner)")
        return gaps

    @property
    @override
    def seals_host_files(self) -> bool:
        """True only when jobs run as another, unprivileged uid (this process is root).

        Then files this process keeps owner-only are out of the job's reach; world-readable
        host files still are not. Running as this process's own uid, a job reads all it can.
        """
        return self._can_drop

    def check_policy(self, policy: Policy) -> None:
        """Raise WeakerIsolationError when the policy cannot be honoured and that is not allowed."""
        gaps = self.unenforced(policy)
        if gaps and not self.allow_weaker:
            msg = (
                f"the local backend cannot enforce policy {policy.name!r}: {'; '.join(gaps)}. "
                "Use the docker backend, or pass --allow-weaker to accept this"
            )
            raise WeakerIsolationError(msg)

    @override
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        self.check_policy(policy)
        capture = Capture(policy, backend=self.name)
        with tempfile.TemporaryDirectory(prefix="sandlab-local-") as scratch_dir:
            scratch = Path(scratch_dir)
            uid, _, gid = policy.user.partition(":")
            run_uid = int(uid) if self._can_drop else os.getuid()
            run_gid = int(gid or uid) if self._can_drop else os.getgid()
            if self._can_drop:
                # Traversable, not listable: the job (another uid) reaches its workspace and
                # the mount copies by absolute path, and lists neither this folder nor others.
                scratch.chmod(0o711)
            workspace = scratch / "workspace"
            workspace.mkdir()
            payload = pack_workspace(job.workspace, job.files, run_uid, run_gid)
            extract_outputs(io.BytesIO(payload), workspace)
            if self._can_drop:
                for path in [workspace, *workspace.rglob("*")]:
                    os.chown(path, run_uid, run_gid, follow_symlinks=False)
            try:
                mounts = stage_mounts(policy, scratch)
            except (OSError, ValueError) as exc:
                reason = f"cannot stage the policy's data mounts ({exc}); fix data_mounts or fetch the data"
                return capture.infra_error(reason)
            try:
                return self._run_staged(job, policy, capture, workspace, mounts, run_uid, run_gid)
            finally:
                if mounts is not None:
                    unseal(mounts)

    def _run_staged(
        self,
        job: Job,
        policy: Policy,
        capture: Capture,
        workspace: Path,
        mounts: Path | None,
        run_uid: int,
        run_gid: int,
    ) -> AttemptResult:
        cgroup = JobCgroup(policy)
        try:
            gpu_ids = resolve_gpu_ids(policy)
            extra_env = {MOUNT_PREFIX_ENV: str(mounts)} if mounts is not None else {}
            with GpuSampler(gpu_ids) as gpu:
                exit_code, deadline_hit, elapsed, rusage_peak = self._spawn(
                    job, policy, workspace, gpu_ids, cgroup, run_uid, run_gid, capture, extra_env
                )
            peak, oom_kills = cgroup.read()
        finally:
            cgroup.remove()
        usage = Usage(
            peak_memory_bytes=peak if peak is not None else rusage_peak,
            cpu_s=None,
            gpu_peak_memory_bytes=gpu.peak_memory_bytes,
            gpu_utilization_pct=gpu.mean_utilization_pct,
        )
        skipped: list[str] = []
        if job.outputs_dir is not None:
            skipped = extract_outputs(_tar_of(workspace), job.outputs_dir)
        blob, unread = read_events_file(workspace, int(policy.output_cap))
        status, reason = classify(exit_code, elapsed, policy, oom_killed=oom_kills > 0, host_deadline_hit=deadline_hit)
        return capture.result(
            status=status,
            reason=reason,
            exit_code=exit_code,
            events_blob=blob,
            events_unread=unread,
            usage=usage,
            outputs_dir=job.outputs_dir,
            outputs_skipped=skipped,
        )

    def _spawn(
        self,
        job: Job,
        policy: Policy,
        workspace: Path,
        gpu_ids: list[int],
        cgroup: JobCgroup,
        uid: int,
        gid: int,
        capture: Capture,
        extra_env: dict[str, str],
    ) -> tuple[int | None, bool, float, int | None]:
        argv = timeout_argv(job.command, policy, interpreter=self.python)
        isolate_net = policy.network == "none" and self._netns_mode == "direct"
        if policy.network == "none" and self._netns_mode == "userns":
            argv = ["unshare", "-rn", "--", *argv]
        repo_root = str(Path(__file__).resolve().parents[2])
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workspace),
            "PYTHONPATH": repo_root,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids),
            **job.env,
            **extra_env,
        }
        memory, pids = int(policy.memory), policy.pids
        use_rlimit_as = cgroup.path is None and not gpu_ids
        drop_privileges = self._can_drop

        def in_child() -> None:
            cgroup.add_self()
            if isolate_net:
                unshare_network()
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(policy.workspace_size),) * 2)
            if use_rlimit_as:
                # Without a cgroup the address-space limit is the only memory cap; CUDA
                # reserves huge virtual ranges, so it is not used when GPUs are granted.
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            if drop_privileges:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                resource.setrlimit(resource.RLIMIT_NPROC, (pids, pids))

        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=in_child,  # noqa: PLW1509
        )
        with self._lock:
            self._active.add(proc.pid)
        readers = [
            threading.Thread(target=_pump, args=(proc.stdout, capture.out), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, capture.err), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline_hit = False
        try:
            proc.wait(timeout=policy.host_deadline_s)
        except subprocess.TimeoutExpired:
            deadline_hit = True
        finally:
            # The whole process group goes, including anything the job left behind.
            _kill_group(proc.pid)
            proc.wait()
            with self._lock:
                self._active.discard(proc.pid)
        elapsed = time.monotonic() - t0
        for reader in readers:
            reader.join(timeout=reader_join_timeout_s)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return (None if deadline_hit else proc.returncode), deadline_hit, elapsed, peak_kib * 1024

    @override
    def kill_all(self) -> int:
        with self._lock:
            active = list(self._active)
        for pid in active:
            _kill_group(pid)
        return len(active)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _pump(stream: IO[bytes] | None, sink: CappedBuffer) -> None:
    if stream is None:
        return
    while chunk := stream.read1(stream_chunk_bytes):  # type: ignore[attr-defined]
        sink.write(chunk)


def _tar_of(root: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(root), arcname=".", recursive=True)
    buffer.seek(0)
    return buffer
