"""Parallel jobs without oversubscription: host CPUs, memory and GPUs as a shared pool.

A job asks for what its policy says (cpus, memory, a number of GPUs) and blocks until the
pool can grant it. GPUs are granted as explicit device ids, never shared between running
jobs. The loop runs up to `parallel` jobs at once; the pool decides how many really fit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from controller.errors import BadInputError
from sandbox.policy import Policy


@dataclass(frozen=True)
class Grant:
    """What one running job holds."""

    cpus: float
    memory: int
    gpu_ids: tuple[int, ...]


def host_memory_bytes() -> int:
    """Physical memory of this host."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class ResourcePool:
    """CPUs, memory and GPU ids shared by the jobs of one run."""

    def __init__(
        self,
        cpus: float,
        memory: int,
        gpu_ids: list[int],
        *,
        assigns_gpus: bool = True,
        why_not: Callable[[Policy], str | None] | None = None,
    ) -> None:
        self.cpus, self.memory = cpus, memory
        self.free_cpus, self.free_memory = cpus, memory
        self.free_gpus = sorted(gpu_ids)
        self.all_gpus = tuple(sorted(gpu_ids))
        self.assigns_gpus = assigns_gpus
        """False on a cluster: GPUs are only counted here, and the executor (Ray) names the ids."""
        self.why_not = why_not
        """A cluster's own test of whether some node could run a policy at all."""
        self._cond = threading.Condition()

    @classmethod
    def for_host(cls, gpu_ids: list[int]) -> ResourcePool:
        return cls(float(os.cpu_count() or 1), host_memory_bytes(), gpu_ids)

    @classmethod
    def for_cluster(
        cls, cpus: float, memory: int, gpus: int, why_not: Callable[[Policy], str | None]
    ) -> ResourcePool:
        """A cluster's totals: jobs wait here until the cluster has room; Ray places them and names GPU ids."""
        return cls(cpus, memory, list(range(gpus)), assigns_gpus=False, why_not=why_not)

    def check_fits(self, policy: Policy) -> None:
        """Refuse, up front, a policy that could never run on this host (or on any node of the cluster)."""
        if self.why_not is not None:
            reason = self.why_not(policy)
            if reason is not None:
                raise BadInputError(reason)
            return
        if policy.gpu_count > len(self.all_gpus):
            msg = (
                f"policy {policy.name!r} needs {policy.gpu_count} GPU(s) per job but {len(self.all_gpus)} "
                "are available; lower --gpus or run on a GPU host"
            )
            raise BadInputError(msg)
        if int(policy.memory) > self.memory:
            msg = (
                f"policy {policy.name!r} needs {policy.memory.human_readable()} but the host has less; lower its memory"
            )
            raise BadInputError(msg)

    def _fits(self, cpus: float, memory: int, gpus: int) -> bool:
        return cpus <= self.free_cpus + 1e-9 and memory <= self.free_memory and gpus <= len(self.free_gpus)

    def acquire(self, policy: Policy) -> Grant:
        """Block until the policy's share is free; GPUs come back as explicit ids."""
        cpus = min(policy.cpus, self.cpus)  # a job larger than the host still runs, alone
        memory = min(int(policy.memory), self.memory)
        gpus = policy.gpu_count
        with self._cond:
            self._cond.wait_for(lambda: self._fits(cpus, memory, gpus))
            taken = tuple(self.free_gpus[:gpus])
            self.free_gpus = self.free_gpus[gpus:]
            self.free_cpus -= cpus
            self.free_memory -= memory
            return Grant(cpus, memory, taken)

    def release(self, grant: Grant) -> None:
        with self._cond:
            self.free_cpus += grant.cpus
            self.free_memory += grant.memory
            self.free_gpus = sorted(self.free_gpus + list(grant.gpu_ids))
            self._cond.notify_all()

    @contextmanager
    def hold(self, policy: Policy) -> Iterator[Policy]:
        """The policy with explicit GPU ids, for as long as the job runs."""
        grant = self.acquire(policy)
        try:
            yield policy.with_overrides(gpus=list(grant.gpu_ids)) if policy.gpu_count and self.assigns_gpus else policy
        finally:
            self.release(grant)
