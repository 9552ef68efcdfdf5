"""What `--executor ray` adds to each job: Ray dispatch plus moving the job's bytes both ways.

The same matrix of jobs (arms x seeds, each staging the digits task's code plus a data mount
and writing an output file back) runs twice, interleaved: through DockerSandbox on this host
(the local executor), and through RaySandbox on a two-node Ray cluster whose nodes (and the
driver) each live in a network namespace of their own (tests/netns_cluster.py; needs root).
Both reach the same Docker engine, so the difference per job is Ray's dispatch, the object
store transfers and the node-side bookkeeping. Goal: under 0.3 s added per job.

Usage: sudo .venv/bin/python benchmarks/ray_overhead.py [--arms 3] [--seeds 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.netns_cluster import netns_cluster, netns_supported  # noqa: E402

GOAL_ADDED_S = 0.3
DRIVER = textwrap.dedent(
    """
    import json, os, statistics, sys, tempfile, time
    from pathlib import Path
    from controller.tasks import load_task
    from sandbox.backends import DockerBackendConfig
    from sandbox.backends.docker import DockerSandbox
    from sandbox.base import Job
    from sandbox.cluster import RaySandbox
    from sandbox.policy import load_policy

    arms, seeds, address = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    data = Path(tempfile.mkdtemp(prefix="bench-data-"))
    data.chmod(0o755)
    (data / "train.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (data / "train.bin").chmod(0o644)
    policy = load_policy("default").with_overrides(data_mounts=[{"source": str(data), "target": "/data/bench"}])
    files = load_task("digits").code()
    command = ["python3", "-c", "import os; open('out.bin', 'wb').write(os.urandom(1 << 20)); "
               "print(os.path.getsize('/data/bench/train.bin'))"]
    local = DockerSandbox(pool_size=0)
    remote = RaySandbox(DockerBackendConfig(pool_size=0), address=address)
    times = {"local": [], "ray": []}
    nodes = set()
    for arm in range(arms):
        for seed in range(seeds):
            for name, sandbox in (("local", local), ("ray", remote)):
                out = Path(tempfile.mkdtemp(prefix="bench-out-"))
                job = Job(command=command, files=files, outputs_dir=out, run_id="bench", attempt=f"{name}-{arm}-{seed}")
                start = time.perf_counter()
                result = sandbox.run(job, policy)
                times[name].append(time.perf_counter() - start)
                assert result.ok and (out / "out.bin").stat().st_size == 1 << 20, (result.status, result.reason)
                if result.node:
                    nodes.add(result.node)
    print(json.dumps({"times": times, "nodes": sorted(nodes)}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arms", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    why = netns_supported()
    if why is not None:
        sys.exit(f"cannot make a namespaced cluster here: {why}")
    nodes = [("a", {"node_a": 1.0}, 2, 0), ("b", {"node_b": 1.0}, 2, 0)]
    with netns_cluster(nodes) as cluster:
        script = Path("/tmp") / f"ray-bench-{cluster.tag}.py"
        script.write_text(DRIVER)
        out = cluster.driver_run(
            f"import runpy, sys; sys.argv = ['bench', '{args.arms}', '{args.seeds}', '{cluster.address}']; "
            f"runpy.run_path('{script}', run_name='__main__')",
            timeout_s=1800,
        )
        script.unlink()
    measured = json.loads(out.strip().splitlines()[-1])
    local, ray = measured["times"]["local"], measured["times"]["ray"]
    jobs = len(local)
    local_median, ray_median = statistics.median(local), statistics.median(ray)
    added = ray_median - local_median
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; {jobs} jobs per executor, interleaved")
    print(f"nodes used by ray: {', '.join(measured['nodes'])}")
    print(f"local executor (DockerSandbox here): median {local_median:.3f} s per job")
    print(f"ray executor (2 namespaced nodes):   median {ray_median:.3f} s per job")
    print(f"added per job: {added:+.3f} s (goal < {GOAL_ADDED_S} s); ratio ray/local {ray_median / local_median:.3f}")
    print("PASS" if added < GOAL_ADDED_S else "MISS")


if __name__ == "__main__":
    main()
