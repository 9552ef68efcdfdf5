"""The warm pool hands each pre-started container to exactly one job, per shape."""

from __future__ import annotations

import itertools
import threading
import time

from sandbox.backends.docker.pool import WarmPool
from sandbox.policy import Policy


def _wait_ready(pool: WarmPool, policy: Policy, count: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with pool._lock:  # the test peeks; the pool has no public count
            if sum(len(v) for v in pool._ready.values()) >= count:
                return
        time.sleep(0.01)
    raise AssertionError("the pool never filled")


def test_each_warm_container_serves_one_job_and_shapes_never_mix() -> None:
    counter = itertools.count(1)
    created: list[tuple[str, float]] = []
    lock = threading.Lock()

    def create(policy: Policy, gpu_ids: list[int], command: list[str], run_id: str) -> str:
        with lock:
            container_id = f"c{next(counter)}"
            created.append((container_id, policy.cpus))
        return container_id

    small, large = Policy(cpus=1), Policy(cpus=2)
    with WarmPool(create, lambda cid: None, size=1) as pool:
        assert pool.take(small, []) is None  # empty at first: the job goes cold, the pool starts filling
        _wait_ready(pool, small, 1)
        handed = [pool.take(small, []) for _ in range(1)]
        _wait_ready(pool, small, 1)
        handed.append(pool.take(small, []))
        assert None not in handed and len(set(handed)) == 2  # never the same container twice
        assert pool.take(large, []) is None  # another shape is not served a small container
    shapes = dict(created)
    assert all(shapes[c] == 1 for c in handed if c is not None)


def test_gpu_warm_containers_are_bound_to_the_granted_ids_and_never_cross_them() -> None:
    """A GPU shape's warm container carries the device request of the ids the resource pool
    granted, so a GPU job starts warm on exactly its own GPUs, never on a neighbour's."""
    counter = itertools.count(1)
    bound: dict[str, list[int]] = {}
    lock = threading.Lock()

    def create(policy: Policy, gpu_ids: list[int], command: list[str], run_id: str) -> str:
        with lock:
            container_id = f"g{next(counter)}"
            bound[container_id] = list(gpu_ids)
        return container_id

    gpu = Policy(name="gpu", gpus=1)
    with WarmPool(create, lambda cid: None, size=1) as pool:
        assert pool.take(gpu.with_overrides(gpus=[0]), [0]) is None
        assert pool.take(gpu.with_overrides(gpus=[1]), [1]) is None
        _wait_ready(pool, gpu, 2)
        on_one = pool.take(gpu.with_overrides(gpus=[1]), [1])
        on_zero = pool.take(gpu.with_overrides(gpus=[0]), [0])
    assert on_one is not None and bound[on_one] == [1]
    assert on_zero is not None and bound[on_zero] == [0]
