import threading
import time

import pytest

from controller.errors import BadInputError
from controller.scheduler import ResourcePool
from sandbox.policy import Policy

GiB = 1024**3


def test_gpus_are_explicit_ids_and_never_shared() -> None:
    pool = ResourcePool(cpus=64, memory=512 * GiB, gpu_ids=[0, 1, 2, 3])
    policy = Policy(cpus=1, memory="1GiB", gpus=2)
    held: list[tuple[int, ...]] = []
    active: list[set[int]] = []
    lock = threading.Lock()
    peak = [0]

    def job() -> None:
        with pool.hold(policy) as granted:
            ids = set(granted.gpus)  # type: ignore[arg-type]
            with lock:
                assert all(not (ids & other) for other in active)  # no device in two jobs
                active.append(ids)
                held.append(tuple(sorted(ids)))
                peak[0] = max(peak[0], len(active))
            time.sleep(0.05)
            with lock:
                active.remove(ids)

    threads = [threading.Thread(target=job) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 6 and all(len(ids) == 2 for ids in held)
    assert peak[0] == 2  # 4 GPUs / 2 per job
    assert pool.free_gpus == [0, 1, 2, 3]


def test_cpu_and_memory_bound_concurrency() -> None:
    pool = ResourcePool(cpus=4, memory=10 * GiB, gpu_ids=[])
    policy = Policy(cpus=2, memory="6GiB")
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def job() -> None:
        with pool.hold(policy):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1  # two 6 GiB jobs do not fit in 10 GiB
    assert pool.free_cpus == 4 and pool.free_memory == 10 * GiB


def test_impossible_requests_are_refused_up_front() -> None:
    pool = ResourcePool(cpus=2, memory=8 * GiB, gpu_ids=[])
    with pytest.raises(BadInputError, match="GPU"):
        pool.check_fits(Policy(gpus=1))
    with pytest.raises(BadInputError, match="memory"):
        pool.check_fits(Policy(memory="16GiB"))
