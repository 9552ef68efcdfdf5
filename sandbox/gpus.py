"""GPU discovery, device-id resolution and memory/utilization sampling via nvidia-smi.

nvidia-smi ships with every NVIDIA driver, so this needs no Python NVML binding. On a host
without GPUs every function here degrades to "no GPU" rather than failing.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from dataclasses import dataclass
from types import TracebackType

from sandbox.errors import SandboxUnavailableError
from sandbox.policy import Policy

SAMPLE_INTERVAL_S = 0.5
NVIDIA_SMI_TIMEOUT_S = 10


@dataclass(frozen=True)
class GpuInfo:
    """One visible GPU."""

    index: int
    name: str
    memory_total_mib: int
    driver: str


def detect_gpus() -> list[GpuInfo]:
    """GPUs visible to this host, or [] when there is no driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        text = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            gpus.append(GpuInfo(int(parts[0]), parts[1], int(float(parts[2])), parts[3]))
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
            self._thread.join(timeout=NVIDIA_SMI_TIMEOUT_S)

    def _loop(self) -> None:
        ids = ",".join(str(i) for i in self.gpu_ids)
        while not self._stop.is_set():
            try:
                text = subprocess.run(
                    [
                        "nvidia-smi",
                        f"--id={ids}",
                        "--query-gpu=memory.used,utilization.gpu",
                        "--format=csv,noheader,nounits",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=NVIDIA_SMI_TIMEOUT_S,
                    check=True,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return
            used = 0
            for line in text.strip().splitlines():
                mem, _, util = line.partition(",")
                used += int(float(mem)) * 1024**2
                self._util.append(float(util))
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, used)
            self._stop.wait(SAMPLE_INTERVAL_S)
