"""GPU discovery, device-id resolution and memory/utilization sampling via nvidia-smi.

nvidia-smi ships with every NVIDIA driver, so this needs no Python NVML binding. On a host
without GPUs every function here degrades to "no GPU" rather than failing.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import structlog

from sandbox.errors import SandboxUnavailableError
from sandbox.limits import MiB, gpu_sample_interval_s, max_reason_chars, nvidia_smi_timeout_s
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")


@dataclass(frozen=True)
class GpuInfo:
    """One visible GPU."""

    index: int
    name: str
    memory_total_mib: int
    driver: str


def nvidia_smi_query(fields: Sequence[str], gpu_ids: Sequence[int] = ()) -> list[list[str]] | None:
    """Rows of `nvidia-smi --query-gpu=FIELDS` (one a GPU, values stripped), for some GPUs or all.

    The one place that runs nvidia-smi. None when it cannot: absent (a CPU host, silently)
    or failing (logged as a warning, with its reason).
    """
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None  # a host without the NVIDIA driver: the normal case, not worth a log line
    cmd = [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    if gpu_ids:
        cmd.insert(1, f"--id={','.join(str(i) for i in gpu_ids)}")
    try:
        text = subprocess.run(cmd, capture_output=True, text=True, timeout=nvidia_smi_timeout_s, check=True).stdout
    except subprocess.CalledProcessError as exc:
        stderr = (exc.stderr or "").strip()[:max_reason_chars]
        log.warning("gpus.nvidia_smi_failed", reason=f"exit {exc.returncode}: {stderr}")
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("gpus.nvidia_smi_failed", reason=f"{type(exc).__name__}: {exc}")
        return None
    return [[part.strip() for part in line.split(",")] for line in text.strip().splitlines() if line.strip()]


def detect_gpus() -> list[GpuInfo]:
    """GPUs visible to this host, or [] when there is no driver."""
    rows = nvidia_smi_query(("index", "name", "memory.total", "driver_version")) or []
    gpus = []
    for row in rows:
        try:
            if len(row) == 4 and row[0].isdigit():
                gpus.append(GpuInfo(int(row[0]), row[1], int(float(row[2])), row[3]))
        except ValueError as exc:
            log.warning("gpus.unparsable_row", row=row, reason=str(exc))
    return gpus


def resolve_gpu_ids(policy: Policy, visible: list[int] | None = None) -> list[int]:
    """Explicit device ids for the policy; a count takes the first free-of-charge ids.

    The experiment scheduler passes explicit ids (it never oversubscribes); a bare count is
    for one-off `sandbox exec` calls.
    """
    if isinstance(policy.gpus, list):
        return list(policy.gpus)
    if policy.gpus == 0:
        return []
    ids = visible if visible is not None else [g.index for g in detect_gpus()]
    if len(ids) < policy.gpus:
        msg = (
            f"policy {policy.name!r} asks for {policy.gpus} GPU(s) but {len(ids)} are visible; "
            "use a CPU policy (default, train) or check `controller doctor`"
        )
        raise SandboxUnavailableError(msg)
    return ids[: policy.gpus]


class GpuSampler:
    """Samples used memory and utilization of some GPUs in a thread while a job runs."""

    def __init__(self, gpu_ids: list[int]) -> None:
        self.gpu_ids = gpu_ids
        self.peak_memory_bytes: int | None = None
        self._util: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def mean_utilization_pct(self) -> float | None:
        """Mean utilization over the samples, or None without GPUs."""
        return sum(self._util) / len(self._util) if self._util else None

    def __enter__(self) -> GpuSampler:
        if self.gpu_ids and shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=nvidia_smi_timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rows = nvidia_smi_query(("memory.used", "utilization.gpu"), self.gpu_ids)
            if rows is None:
                log.warning("gpus.sampling_stopped", gpu_ids=self.gpu_ids, reason="nvidia-smi failed (see above)")
                return
            used = 0
            for row in rows:
                try:
                    used += int(float(row[0])) * MiB
                    self._util.append(float(row[1]))
                except (ValueError, IndexError) as exc:
                    # "[N/A]" on some boards (MIG slices, say): skip the sample, keep sampling.
                    log.debug("gpus.unparsable_sample", row=row, reason=str(exc))
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, used)
            self._stop.wait(gpu_sample_interval_s)
