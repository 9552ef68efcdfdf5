"""The same training job inside the runner container and on the host, in one run.

Both sides run the digits task's real training script (baseline modules, fixed seed)
through sandlab's two backends: DockerSandbox (policy `train`) and LocalSandbox on the
host. The job itself measures its training throughput (samples/s, excluding interpreter
start-up), so the ratio isolates what the container costs the training loop.
Goal: container/host >= 0.95.

Needs torch on the host for the local side: `.venv/bin/pip install -e '.[local]'`.
Usage: .venv/bin/python benchmarks/container_vs_host.py [--repeats 3] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from controller.tasks import load_task
from sandbox.backends.docker import DockerSandbox
from sandbox.backends.local import LocalSandbox
from sandbox.base import Job, Sandbox
from sandbox.policy import load_policy


def prepare_data(sandbox: DockerSandbox, dest: Path) -> None:
    task = load_task("digits")
    cmd = ["python3", "-m", "sandbox.harness", "run", "--job", task.entrypoints.prepare]
    result = sandbox.run(
        Job(command=cmd, files=task.code(with_prepare=True), outputs_dir=dest, run_id="bench"), load_policy("train")
    )
    if not result.ok:
        raise SystemExit(f"data preparation failed: {result.reason}\n{result.stderr[-2000:]}")


def training_job(data: Path, epochs: int, threads: int) -> Job:
    task = load_task("digits")
    files = dict(task.code())
    for slot, spec in task.slots.items():
        files[spec.file] = task.baseline_code(slot).encode()
    config = {
        **task.defaults,
        "epochs": epochs,
        "seed": 0,
        "threads": threads,
        "num_classes": task.num_classes,
        "input_shape": list(task.input_shape),
    }
    files["config.json"] = json.dumps(config).encode()
    for split in ("train", "val"):
        files[f"data/{split}.npz"] = (data / "out" / "public" / f"{split}.npz").read_bytes()
    cmd = ["python3", "-m", "sandbox.harness", "run", "--job", task.entrypoints.train, "--config", "config.json"]
    return Job(command=cmd, files=files, run_id="bench")


def samples_per_s(sandbox: Sandbox, job: Job) -> float:
    result = sandbox.run(job, load_policy("train"))
    if not result.ok:
        raise SystemExit(f"{sandbox.name}: training failed: {result.reason}\n{result.stderr[-2000:]}")
    meta = json.loads(result.stdout.strip().splitlines()[-1])
    return float(meta["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("the host side needs torch: .venv/bin/pip install -e '.[local]'") from None
    docker = DockerSandbox()
    local = LocalSandbox(allow_weaker=True, python=sys.executable)
    threads = int(load_policy("train").cpus)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_data(docker, Path(tmp))
        job = training_job(Path(tmp), args.epochs, threads)
        inside, host = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both sides alike
            inside.append(samples_per_s(docker, job))
            host.append(samples_per_s(local, job))
    m_in, m_host = statistics.median(inside), statistics.median(host)
    print(
        f"machine: {platform.machine()}, {platform.node()}, {threads} threads, {args.epochs} epochs, "
        f"{args.repeats} repeats"
    )
    print(
        f"training throughput: container {m_in:.0f} samples/s  host {m_host:.0f} samples/s  "
        f"ratio {m_in / m_host:.3f} (goal >= 0.95)"
    )


if __name__ == "__main__":
    main()
