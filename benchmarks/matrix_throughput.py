"""A matrix of short training jobs: jobs/s sequential, with the warm pool, and 2 at a time.

The baseline is the plain sequential DockerSandbox (a cold container per job), measured in
the same run; every other line is printed as a ratio against it.

Usage: .venv/bin/python benchmarks/matrix_throughput.py [--jobs 8] [--epochs 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from container_vs_host import prepare_data, training_job

from sandbox.backends.docker import DockerSandbox
from sandbox.base import Job
from sandbox.policy import load_policy

POOL_WARMUP_S = 15.0


def run_matrix(sandbox: DockerSandbox, jobs: list[Job], workers: int) -> float:
    """Jobs per second for the whole matrix."""
    policy = load_policy("train").with_overrides(cpus=2 / workers)

    def one(job: Job) -> None:
        result = sandbox.run(job, policy)
        if not result.ok:
            raise SystemExit(f"job failed: {result.reason}\n{result.stderr[-2000:]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as executor:
        list(executor.map(one, jobs))
    return len(jobs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    cold = DockerSandbox()
    with tempfile.TemporaryDirectory() as tmp:
        prepare_data(cold, Path(tmp))
        jobs = [training_job(Path(tmp), args.epochs, threads=1) for _ in range(args.jobs)]
        baseline = run_matrix(cold, jobs, workers=1)
        print(f"machine: {platform.machine()}, {platform.node()}, {args.jobs} jobs of {args.epochs} epochs")
        print(f"sequential, cold containers: {baseline:.3f} jobs/s (baseline)")
        for workers in (1, 2):
            pooled = DockerSandbox(pool_size=workers)
            pooled.pool.take(load_policy("train").with_overrides(cpus=2 / workers), [], "bench")  # type: ignore[union-attr]
            time.sleep(POOL_WARMUP_S)
            rate = run_matrix(pooled, jobs, workers)
            pooled.close()
            print(f"{workers} at a time, warm pool: {rate:.3f} jobs/s  ratio {rate / baseline:.2f}")
        rate = run_matrix(cold, jobs, workers=2)
        print(f"2 at a time, cold containers: {rate:.3f} jobs/s  ratio {rate / baseline:.2f}")


if __name__ == "__main__":
    main()
