"""A pool of pre-started containers whose interpreter has already imported torch (docker only).

Each container is still used for exactly one job: the pool only moves the cost of
`docker create/start` and of `import torch` off the critical path, by paying it ahead of
time in the background. Containers are keyed by everything that shapes them (the policy
minus its timeout, which is applied per job by `timeout -k`, and the GPU ids).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from sandbox.backends.docker.engine import engine_error_text
from sandbox.policy import Policy

log = structlog.get_logger("sandlab.sandbox")

DEFAULT_PRELOAD = ("torch", "numpy")
WARM_COMMAND = ["python3", "-m", "sandbox.harness.warm"]


def pool_key(policy: Policy, gpu_ids: list[int]) -> str:
    """Identity of a container's shape: the policy without its per-job timing."""
    shape = policy.model_dump(exclude={"timeout", "kill_grace", "name"})
    return repr(sorted(shape.items())) + repr(gpu_ids)


def warm_command(preload: tuple[str, ...]) -> list[str]:
    """PID 1 of a pooled container."""
    command = list(WARM_COMMAND)
    for name in preload:
        command += ["--preload", name]
    return command


class WarmPool:
    """Keeps up to `size` warm containers per shape; refills in the background."""

    def __init__(
        self,
        create: Callable[[Policy, list[int], list[str], str], str],
        remove: Callable[[str], None],
        size: int,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
    ) -> None:
        self._create = create
        self._remove = remove
        self.size = size
        self.preload = preload
        self._ready: dict[str, list[str]] = {}
        self._filling: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, policy: Policy, gpu_ids: list[int], run_id: str = "pool") -> str | None:
        """A warm container for this shape, or None (and start warming some for next time)."""
        key = pool_key(policy, gpu_ids)
        with self._lock:
            ready = self._ready.setdefault(key, [])
            container_id = ready.pop(0) if ready else None
            missing = self.size - len(ready) - self._filling.get(key, 0)
            self._filling[key] = self._filling.get(key, 0) + max(missing, 0)
        for _ in range(max(missing, 0)):
            threading.Thread(target=self._fill, args=(key, policy, gpu_ids, run_id), daemon=True).start()
        return container_id

    def _fill(self, key: str, policy: Policy, gpu_ids: list[int], run_id: str) -> None:
        container_id: str | None = None
        try:
            container_id = self._create(policy, gpu_ids, warm_command(self.preload), run_id)
        except Exception as exc:
            # The pool is an optimisation: a job that finds it empty gets a cold container.
            log.warning("pool.fill_failed", run_id=run_id, reason=engine_error_text(exc))
            container_id = None
        with self._lock:
            self._filling[key] -= 1
            if container_id is not None and not self._closed:
                self._ready[key].append(container_id)
                container_id = None
        if container_id is not None:
            self._discard(container_id)

    def close(self) -> None:
        """Remove every idle pooled container."""
        with self._lock:
            self._closed = True
            idle = [c for ids in self._ready.values() for c in ids]
            self._ready.clear()
        for container_id in idle:
            self._discard(container_id)

    def _discard(self, container_id: str) -> None:
        try:
            self._remove(container_id)
        except Exception as exc:
            # The container keeps its owner labels: the reaper removes it once we are gone.
            log.warning("pool.remove_failed", container_id=container_id, reason=engine_error_text(exc))

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
