"""LocalSandbox: host subprocesses for machines with no container engine (GPU boxes).

This is weaker isolation and says so loudly. It enforces what a process can be given
without an engine: its own session and process group, rlimits, a fresh network namespace
(`unshare -n`) where the kernel allows, an unprivileged uid when started as root, and a
memory/pids cgroup when one is writable. It cannot give a read-only root filesystem or a
size-capped workspace; a policy asking for those is refused unless `allow_weaker` is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from typing_extensions import override

from sandbox.base import Job, Sandbox
from sandbox.classify import classify
from sandbox.errors import WeakerIsolationError
from sandbox.events import read_events_file
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.limits import stream_chunk_bytes
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Usage
from sandbox.staging import extract_outputs, pack_workspace

WARNING = (
    "WARNING: sandlab LocalSandbox runs generated code as host processes. There is no "
    "read-only root, no workspace cap and no engine-level isolation. Use Docker wherever "
    "you can."
)
_CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))


_CLONE_NEWNET = 0x40000000


def _unshare_network() -> None:
    """Move the calling process into a fresh network namespace (only loopback, down)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _network_isolation_mode() -> str | None:
    """'direct' (root: unshare in the child), 'userns' (unshare -rn wrapper), or None."""
    probes: list[tuple[str, list[str]]] = []
    if os.geteuid() == 0:
        probes.append(
            ("direct", [sys.executable, "-c", "import ctypes; assert ctypes.CDLL(None).unshare(0x40000000) == 0"])
        )
    unshare = shutil.which("unshare")
    if unshare is not None:
        probes.append(("userns", [unshare, "-rn", "true"]))
    for mode, cmd in probes:
        try:
            if subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode == 0:
                return mode
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def _unprivileged_python_works(python: str, uid: int = 1000) -> bool:
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
            timeout=30,
            preexec_fn=drop,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


class _Cgroup:
    """A memory (+pids) cgroup for one job, when the host lets us create one (root)."""

    def __init__(self, policy: Policy) -> None:
        self.path: Path | None = None
        self.v2 = False
        name = f"sandlab-{uuid.uuid4().hex[:12]}"
        for root in _CGROUP_ROOTS:
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
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


class LocalSandbox(Sandbox):
    """Runs jobs as host subprocesses; refuses what it cannot enforce unless allowed."""

    name = "local"

    def __init__(self, *, allow_weaker: bool = False, python: str | None = None) -> None:
        self.allow_weaker = allow_weaker
        self.python = python or sys.executable
        self._netns_mode = _network_isolation_mode()
        self._netns = self._netns_mode is not None
        self._is_root = os.geteuid() == 0
        self._can_drop = self._is_root and _unprivileged_python_works(self.python)
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
        if policy.data_mounts:
            gaps.append("data_mounts (datasets are read at their host paths, not read-only)")
        return gaps

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
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        out, err = CappedBuffer(int(policy.output_cap)), CappedBuffer(int(policy.output_cap))
        with tempfile.TemporaryDirectory(prefix="sandlab-local-") as scratch:
            workspace = Path(scratch) / "workspace"
            workspace.mkdir()
            uid, _, gid = policy.user.partition(":")
            run_uid = int(uid) if self._can_drop else os.getuid()
            run_gid = int(gid or uid) if self._can_drop else os.getgid()
            payload = pack_workspace(job.workspace, job.files, run_uid, run_gid)
            extract_outputs(io.BytesIO(payload), workspace)
            if self._can_drop:
                for path in [workspace, *workspace.rglob("*")]:
                    os.chown(path, run_uid, run_gid, follow_symlinks=False)
            cgroup = _Cgroup(policy)
            try:
                gpu_ids = resolve_gpu_ids(policy)
                with GpuSampler(gpu_ids) as gpu:
                    exit_code, deadline_hit, elapsed, rusage_peak = self._spawn(
                        job, policy, workspace, gpu_ids, cgroup, run_uid, run_gid, out, err
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
            blob = read_events_file(workspace)
        status, reason = classify(exit_code, elapsed, policy, oom_killed=oom_kills > 0, host_deadline_hit=deadline_hit)
        return AttemptResult.from_capture(
            status=status,
            reason=reason,
            exit_code=exit_code,
            duration_s=time.monotonic() - t0,
            started_at=started_at,
            out=out,
            err=err,
            events_blob=blob,
            usage=usage,
            limits=policy,
            outputs_dir=job.outputs_dir,
            outputs_skipped=skipped,
            backend="local",
            host=socket.gethostname(),
        )

    def _spawn(
        self,
        job: Job,
        policy: Policy,
        workspace: Path,
        gpu_ids: list[int],
        cgroup: _Cgroup,
        uid: int,
        gid: int,
        out: CappedBuffer,
        err: CappedBuffer,
    ) -> tuple[int | None, bool, float, int | None]:
        argv = ["timeout", "-k", f"{policy.kill_grace:g}s", f"{policy.timeout:g}s", *job.command]
        if argv[4] in {"python3", "python"}:
            argv[4] = self.python
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
        }
        memory, pids = int(policy.memory), policy.pids
        use_rlimit_as = cgroup.path is None and not gpu_ids
        drop_privileges = self._can_drop

        def in_child() -> None:
            cgroup.add_self()
            if isolate_net:
                _unshare_network()
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
            threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
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
            reader.join(timeout=5)
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
