"""Sandbox overhead against plain `docker run`, and the warm pool against both.

Prints, for N interleaved trials on this machine:
  1. median latency of a trivial attempt (`python3 -c pass`) through DockerSandbox vs
     `docker run --rm sandlab-runner:latest python3 -c pass`, and their ratio (goal <= 1.25);
  2. a guard check that imports torch (compile + import + smoke of a digits head):
     cold DockerSandbox, `docker run` of the same import, and the warm pool (goal <= 0.5 s);
  3. guard-check throughput with 1 and 2 concurrent containers (cold and pooled).

Usage: .venv/bin/python benchmarks/sandbox_overhead.py [--trials 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from controller.tasks import load_task
from sandbox.backends import RUNNER_IMAGE
from sandbox.backends.docker import DockerSandbox
from sandbox.base import Job
from sandbox.policy import load_policy

IMAGE = RUNNER_IMAGE
POOL_WARMUP_S = 15.0


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def docker_run(*cmd: str) -> None:
    """The baseline exactly as the issue states it: `docker run --rm IMAGE CMD`."""
    subprocess.run(["docker", "run", "--rm", IMAGE, *cmd], check=True, capture_output=True)


def guard_workspace(root: Path) -> Job:
    task = load_task("digits")
    for name, data in task.code().items():
        (root / name).write_bytes(data)
    (root / "gen").mkdir(exist_ok=True)
    (root / "gen" / "head.py").write_text(task.baseline_code("head"))
    spec = task.slots["head"]
    cmd = [
        "python3",
        "-m",
        "sandbox.harness",
        "guard",
        "--module",
        spec.file,
        "--entry",
        spec.entry,
        "--smoke",
        spec.smoke,
    ]
    return Job(command=cmd, workspace=root, run_id="bench")


def checked(sandbox: DockerSandbox, job: Job) -> None:
    result = sandbox.run(job, load_policy("default"))
    if not result.ok:
        raise SystemExit(f"benchmark attempt failed: {result.status} {result.reason}\n{result.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    cold = DockerSandbox()
    pooled = DockerSandbox(pool_size=2)
    trivial = Job(command=["python3", "-c", "pass"], run_id="bench")
    print(f"machine: {platform.machine()}, {platform.node()}, python {platform.python_version()}, trials {args.trials}")

    # 1. trivial attempt vs docker run, interleaved
    checked(cold, trivial)
    docker_run("python3", "-c", "pass")
    ours, theirs = [], []
    for _ in range(args.trials):
        ours.append(timed(lambda: checked(cold, trivial)))
        theirs.append(timed(lambda: docker_run("python3", "-c", "pass")))
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    ratio = m_ours / m_theirs
    print(f"trivial attempt: DockerSandbox {m_ours:.3f}s  docker run {m_theirs:.3f}s  ratio {ratio:.2f} (goal <= 1.25)")

    with tempfile.TemporaryDirectory() as tmp:
        job = guard_workspace(Path(tmp))
        # 2. a guard check that imports torch
        pooled.pool.take(load_policy("default"), [], "bench")  # type: ignore[union-attr] - start warming
        time.sleep(POOL_WARMUP_S)
        cold_t, run_t, warm_t = [], [], []
        for _ in range(args.trials):
            cold_t.append(timed(lambda: checked(cold, job)))
            run_t.append(timed(lambda: docker_run("python3", "-c", "import torch, torchvision")))
            time.sleep(POOL_WARMUP_S / 2)  # let the pool refill, as it does between guard checks
            warm_t.append(timed(lambda: checked(pooled, job)))
        m_cold, m_run, m_warm = (statistics.median(x) for x in (cold_t, run_t, warm_t))
        print(
            f"guard check with torch: cold DockerSandbox {m_cold:.3f}s  docker run + import torch {m_run:.3f}s  "
            f"warm pool {m_warm:.3f}s  (goal <= 0.5s; pool/docker-run ratio {m_warm / m_run:.2f})"
        )

        # 3. throughput, 1 and 2 concurrent containers
        for workers in (1, 2):
            for name, sandbox in (("cold", cold), ("pooled", pooled)):
                n = 2 * args.trials
                start = time.perf_counter()
                with ThreadPoolExecutor(workers) as executor:
                    list(executor.map(lambda _, sb=sandbox: checked(sb, job), range(n)))
                rate = n / (time.perf_counter() - start)
                print(f"guard throughput, {workers} concurrent, {name}: {rate:.2f} checks/s")
    pooled.close()


if __name__ == "__main__":
    main()
