"""Attempt start on the local backend: a fresh interpreter per job (cold) vs the fork server.

Prints, for N interleaved trials on this machine:
  1. median wall time of a guard check whose module imports torch and torchvision (compile +
     import + smoke of a digits head, through the harness), cold vs forked from the
     preloaded server, and their ratio against the cold baseline (goal: preloaded <= 0.5 s);
  2. on a host with an NVIDIA GPU, median time from job submitted to CUDA ready in the job
     (torch.cuda.init() and a tiny tensor on the device, synchronised), cold vs preloaded,
     and their ratio.

Usage: .venv/bin/python benchmarks/fork_start.py [--trials 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from controller.tasks import load_task
from sandbox.backends.local import LocalSandbox
from sandbox.base import Job
from sandbox.gpus import detect_gpus
from sandbox.policy import Policy, load_policy

PRELOAD = ("torch", "torchvision")
GUARD_GOAL_S = 0.5

CUDA_READY = """
import time
import torch
torch.cuda.init()
torch.ones(1, device="cuda").add_(1)
torch.cuda.synchronize()
print(time.time())
"""


def guard_job(root: Path) -> Job:
    """A guard check of the digits head, whose module also imports torchvision (as augments do)."""
    task = load_task("digits")
    for name, data in task.code().items():
        (root / name).write_bytes(data)
    spec = task.slots["head"]
    module = root / spec.file
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text("import torchvision.transforms.v2  # noqa: F401\n" + task.baseline_code("head"))
    cmd = ["python3", "-m", "sandbox.harness", "guard", "--module", spec.file, "--entry", spec.entry]
    return Job(command=[*cmd, "--smoke", spec.smoke], workspace=root, run_id="bench")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def checked(sandbox: LocalSandbox, job: Job, policy: Policy) -> str:
    result = sandbox.run(job, policy)
    if not result.ok:
        raise SystemExit(f"benchmark attempt failed: {result.status} {result.reason}\n{result.stderr[-2000:]}")
    return result.stdout


def to_cuda_ready(sandbox: LocalSandbox, policy: Policy) -> float:
    """Seconds from submitting the job to the job having CUDA up on its device."""
    submitted = time.time()
    ready = float(checked(sandbox, Job(command=["python3", "-c", CUDA_READY], run_id="bench"), policy).split()[-1])
    return ready - submitted


def report(label: str, cold: list[float], forked: list[float], goal: str = "") -> None:
    m_cold, m_fork = statistics.median(cold), statistics.median(forked)
    print(f"{label}: cold {m_cold:.3f}s  fork server {m_fork:.3f}s  ratio {m_fork / m_cold:.2f}{goal}")
    print(f"  cold   {' '.join(f'{t:.3f}' for t in cold)}")
    print(f"  forked {' '.join(f'{t:.3f}' for t in forked)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    cold = LocalSandbox(allow_weaker=True, python=sys.executable)
    forked = LocalSandbox(allow_weaker=True, python=sys.executable, fork_server=True, preload=PRELOAD)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.node()}, "
        f"python {platform.python_version()}, trials {args.trials}"
    )
    policy = load_policy("default").with_overrides(timeout="120s")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            job = guard_job(Path(tmp))
            checked(cold, job, policy)  # warm the page cache for both, and the server's preload
            start = time.perf_counter()
            checked(forked, job, policy)
            first_s = time.perf_counter() - start
            print(f"fork server up (preloading {', '.join(PRELOAD)}) and its first job done in {first_s:.2f}s")
            cold_t, fork_t = [], []
            for _ in range(args.trials):
                cold_t.append(timed(lambda: checked(cold, job, policy)))
                fork_t.append(timed(lambda: checked(forked, job, policy)))
            verdict = "met" if statistics.median(fork_t) <= GUARD_GOAL_S else "NOT met"
            report("guard check importing torch+torchvision", cold_t, fork_t, f"  (goal <= {GUARD_GOAL_S}s: {verdict})")

        gpus = detect_gpus()
        if not gpus:
            print("job submitted -> CUDA ready: skipped, no NVIDIA GPU on this host")
            return
        gpu_policy = load_policy("gpu").with_overrides(gpus=[gpus[0].index], timeout="300s", memory="16GiB")
        to_cuda_ready(cold, gpu_policy)
        to_cuda_ready(forked, gpu_policy)
        cold_g, fork_g = [], []
        for _ in range(args.trials):
            cold_g.append(to_cuda_ready(cold, gpu_policy))
            fork_g.append(to_cuda_ready(forked, gpu_policy))
        report(f"job submitted -> CUDA ready on {gpus[0].name}", cold_g, fork_g)
    finally:
        forked.close()


if __name__ == "__main__":
    main()
