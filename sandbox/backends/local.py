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

A job is started one of two ways, confined alike (`sandbox.harness.confine`): spawned, a
fresh `timeout -k` + interpreter each time; or, with `fork_server`, forked from a server
that has imported torch already (`local_fork`), which starts a torch-importing guard check
in a tenth of the time. The forked child is as fresh and single-use as a spawned one.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from typing_extensions import override

from sandbox.backends.capture import PYTHON_NAMES, Capture, timeout_argv
from sandbox.backends.local_fork import (
    DEFAULT_PRELOAD,
    ForkServer,
    ForkServerError,
    exit_code,
    wait_under_timeout,
)
from sandbox.backends.local_isolation import (
    JobCgroup,
    cgroup_limits,
    network_isolation_mode,
    unprivileged_python_works,
)
from sandbox.backends.local_mounts import MOUNT_PREFIX_ENV, stage_mounts, unseal
from sandbox.base import Job, Sandbox
from sandbox.classify import classify
from sandbox.errors import WeakerIsolationError
from sandbox.events import read_events_file
from sandbox.gpus import GpuSampler, resolve_gpu_ids
from sandbox.harness.confine import Confinement, confine
from sandbox.limits import reader_join_timeout_s, stream_chunk_bytes
from sandbox.policy import Policy
from sandbox.results import AttemptResult, CappedBuffer, Usage
from sandbox.staging import extract_outputs, pack_workspace, tar_folder

WARNING = (
    "WARNING: sandlab LocalSandbox runs generated code as host processes. There is no "
    "read-only root, no workspace cap and no engine-level isolation. Use Docker wherever "
    "you can."
)


class LocalSandbox(Sandbox):
    """Runs jobs as host subprocesses; refuses what it cannot enforce unless allowed."""

    name = "local"

    def __init__(
        self,
        *,
        allow_weaker: bool = False,
        python: str | None = None,
        fork_server: bool = False,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        self.allow_weaker = allow_weaker
        self.python = python or sys.executable
        self._netns_mode = network_isolation_mode()
        self._netns = self._netns_mode is not None
        self._is_root = os.geteuid() == 0
        self._can_drop = self._is_root and unprivileged_python_works(self.python)
        self._memory_cgroup, self._pids_cgroup = cgroup_limits()
        self._active: set[int] = set()
        self._lock = threading.Lock()
        self._base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # for the harness
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._fork: ForkServer | None = None
        if fork_server:
            # Started now: it preloads while the first job is being staged.
            self._fork = ForkServer(self.python, preload, self._base_env)
            self._fork.start()
        print(WARNING, file=sys.stderr)

    @property
    def fork_server(self) -> ForkServer | None:
        """The preloaded fork server jobs are started from, if this backend uses one."""
        return self._fork

    def unenforced(self, policy: Policy) -> list[str]:
        """The parts of the policy this host cannot enforce."""
        gaps = []
        if policy.read_only_rootfs:
            gaps.append("read_only_rootfs (the job can write wherever its user can)")
        gaps.append("workspace_size (only a per-file size limit)")
        if not self._memory_cgroup:
            gaps.append("cleanup (no writable cgroup: a daemon the job starts with setsid outlives it)")
            if policy.gpus:
                gaps.append("memory (no writable memory cgroup, and CUDA jobs get no address-space limit)")
        if not self._pids_cgroup:
            gaps.append(f"pids {policy.pids} (no writable pids cgroup here: the job may fork without bound)")
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

    @property
    @override
    def why_not_sealed(self) -> str:
        if self._is_root:
            return (
                f"jobs run as root: {self.python} cannot be run by an unprivileged uid; "
                "use an interpreter outside /root (e.g. a venv under /opt)"
            )
        return "jobs run as this very uid; run the controller as root"

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
                code, deadline_hit, elapsed, rusage_peak = self._spawn(
                    job, policy, workspace, gpu_ids, cgroup, run_uid, run_gid, capture, extra_env
                )
            peak, oom_kills = cgroup.read()
        except ForkServerError as exc:
            return capture.infra_error(str(exc))
        finally:
            cgroup.kill_remaining()  # a daemon that left the job's process group, say
            cgroup.remove()
        usage = Usage(
            peak_memory_bytes=peak if peak is not None else rusage_peak,
            cpu_s=None,
            gpu_peak_memory_bytes=gpu.peak_memory_bytes,
            gpu_utilization_pct=gpu.mean_utilization_pct,
        )
        skipped: list[str] = []
        if job.outputs_dir is not None:
            skipped = extract_outputs(io.BytesIO(tar_folder(workspace)), job.outputs_dir)
        blob, unread = read_events_file(workspace, int(policy.output_cap))
        status, reason = classify(code, elapsed, policy, oom_killed=oom_kills > 0, host_deadline_hit=deadline_hit)
        return capture.result(
            status=status,
            reason=reason,
            exit_code=code,
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
        env = {
            **self._base_env,
            "HOME": str(workspace),
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids),
            **job.env,
            **extra_env,
        }
        confinement = self._confinement(policy, gpu_ids, cgroup, uid, gid)
        network = confinement["network"]
        command = [self.python if job.command[0] in PYTHON_NAMES else job.command[0], *job.command[1:]]
        if self._fork is not None:
            return self._spawn_forked(command, policy, workspace, env, confinement, capture, cgroup)
        argv = timeout_argv(command, policy)
        if network == "userns":
            argv = ["unshare", "-rn", "--", *argv]  # the user namespace is unshare's to make
            confinement = {**confinement, "network": None}

        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: confine(confinement),  # noqa: PLW1509
        )
        with self._lock:
            self._active.add(proc.pid)
        readers = _readers(proc.stdout, proc.stderr, capture)
        deadline_hit = False
        try:
            proc.wait(timeout=policy.host_deadline_s)
        except subprocess.TimeoutExpired:
            deadline_hit = True
        finally:
            # The whole process group goes, including anything the job left behind, and
            # so does what left the group but not the cgroup (before the readers wait on it).
            _kill_group(proc.pid)
            cgroup.kill_remaining()
            proc.wait()
            with self._lock:
                self._active.discard(proc.pid)
        elapsed = time.monotonic() - t0
        for reader in readers:
            reader.join(timeout=reader_join_timeout_s)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # A group killed by timeout's SIGKILL takes timeout with it: report 137, as docker does.
        code = None if deadline_hit else exit_code(proc.returncode)
        return code, deadline_hit, elapsed, peak_kib * 1024

    def _confinement(self, policy: Policy, gpu_ids: list[int], cgroup: JobCgroup, uid: int, gid: int) -> Confinement:
        """What is done to the job's process before its code runs, on either path."""
        rlimits = [("RLIMIT_CORE", 0), ("RLIMIT_FSIZE", int(policy.workspace_size))]
        if cgroup.path is None and not gpu_ids:
            # Without a cgroup the address-space limit is the only memory cap; CUDA
            # reserves huge virtual ranges, so it is not used when GPUs are granted.
            rlimits.append(("RLIMIT_AS", int(policy.memory)))
        return {
            "cgroup_procs": cgroup.procs_files(),
            "network": self._netns_mode if policy.network == "none" else None,
            "rlimits": rlimits,
            "user": (uid, gid) if self._can_drop else None,
            "nproc": policy.pids if self._can_drop else None,
        }

    def _spawn_forked(
        self,
        command: list[str],
        policy: Policy,
        workspace: Path,
        env: dict[str, str],
        confinement: Confinement,
        capture: Capture,
        cgroup: JobCgroup,
    ) -> tuple[int | None, bool, float, int | None]:
        """The job as a fork of the preloaded server; timeouts as `timeout -k` gives them."""
        assert self._fork is not None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        readers = _readers(open(out_r, "rb"), open(err_r, "rb"), capture)  # noqa: SIM115 - the readers close them
        t0 = time.monotonic()
        try:
            with open(os.devnull, "rb") as devnull:
                job = self._fork.submit(command, workspace, env, confinement, (devnull.fileno(), out_w, err_w))
        finally:
            os.close(out_w)  # the server's child holds its own copies now (or never will)
            os.close(err_w)
        assert job.pid is not None
        with self._lock:
            self._active.add(job.pid)
        try:
            code, deadline_hit = wait_under_timeout(job, policy, t0)
            elapsed = time.monotonic() - t0
        finally:
            _kill_group(job.pid)
            cgroup.kill_remaining()
            with self._lock:
                self._active.discard(job.pid)
            for reader in readers:  # a lost job's output so far goes into its infra_error too
                reader.join(timeout=reader_join_timeout_s)
        return code, deadline_hit, elapsed, job.maxrss_bytes

    @override
    def kill_all(self) -> int:
        with self._lock:
            active = list(self._active)
        for pid in active:
            _kill_group(pid)
        return len(active)

    @override
    def close(self) -> None:
        if self._fork is not None:
            self._fork.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _readers(stdout: IO[bytes] | None, stderr: IO[bytes] | None, capture: Capture) -> list[threading.Thread]:
    readers = [
        threading.Thread(target=_pump, args=(stdout, capture.out), daemon=True),
        threading.Thread(target=_pump, args=(stderr, capture.err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    return readers


def _pump(stream: IO[bytes] | None, sink: CappedBuffer) -> None:
    if stream is None:
        return
    with stream:
        while chunk := stream.read1(stream_chunk_bytes):  # type: ignore[attr-defined]
            sink.write(chunk)
