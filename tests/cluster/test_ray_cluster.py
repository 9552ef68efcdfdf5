"""`--executor ray` on a real two-node Ray cluster, each node (and the controller) in its own
network namespace: a digits matrix spread over both nodes, GPU ids from Ray, a node killed
mid-job, and a controller killed mid-run. See tests/netns_cluster.py for how the cluster is made.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.backends.docker import labels
from sandbox.policy import POLICIES_ENV
from tests.netns_cluster import NetnsCluster, netns_cluster, netns_supported

pytestmark = [pytest.mark.docker, pytest.mark.cluster]
CONTROLLER = [sys.executable, "-m", "controller"]
POLICIES = Path(__file__).resolve().parents[2] / "policies"
NODES = [("a", {"node_a": 1.0}, 1, 2), ("b", {"node_b": 1.0}, 1, 2)]
"""Two nodes, each 1 CPU and 2 (fake) GPUs: a GPU count is only a resource to Ray. The two
nodes' CPUs are this machine's two cores: declaring more would oversubscribe them, and
training threads that spin for a core they do not have run six times slower."""
RUN_ARGS = ["--budget", "2m", "--seeds", "2", "--parallel", "4", "--no-mlflow"]
WATCHDOG = "sandbox.cluster.watchdog"


@pytest.fixture(scope="module")
def cluster(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    why = netns_supported()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cluster tests: {why}")
        pytest.skip(why)
    # Training jobs of one CPU, to fit the one-CPU nodes (and, in the local run, the same jobs).
    policies = tmp_path_factory.mktemp("policies")
    for source in POLICIES.glob("*.yaml"):
        text = source.read_text()
        (policies / source.name).write_text(text.replace("cpus: 2\n", "cpus: 1\n") if source.stem == "train" else text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POLICIES_ENV, str(policies))
        with netns_cluster(NODES) as made:  # /tmp: Ray's unix socket paths under --temp-dir must stay short
            yield made


def _records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / "attempts").glob("[0-9]*/attempt.json"))]


def _run_containers(client: Any, run_id: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{labels.RUN}={run_id}"}, ignore_removed=True)


def _orphans(client: Any) -> list[Any]:
    from sandbox.backends.docker import owner_is_alive

    every = client.containers.list(all=True, filters={"label": labels.ATTEMPT}, ignore_removed=True)
    return [c for c in every if not owner_is_alive(c.labels or {})]


def _wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.25)


def _start(cluster: NetnsCluster, runs: Path, run_id: str, *extra: str) -> list[str]:
    return cluster.driver_argv(
        [*CONTROLLER, "start", *RUN_ARGS, "--executor", "ray", "--ray-address", cluster.address,
         "--runs-dir", str(runs), "--run-id", run_id, *extra]
    )  # fmt: skip


def _shape(record: dict[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(record), frozenset(record["result"])


def _check_totals(root: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json's totals are exactly the sum of the attempts it recorded."""
    state = json.loads((root / "run.json").read_text())
    totals = state["totals"]
    assert totals["attempts"] == len(records)
    by_status: dict[str, int] = {}
    for record in records:
        by_status[record["status"]] = by_status.get(record["status"], 0) + 1
    assert totals["by_status"] == by_status
    gpu_s = sum(r["result"]["duration_s"] * len(r["result"]["limits"]["gpus"] or []) for r in records
                if isinstance(r["result"]["limits"]["gpus"], list))  # fmt: skip
    assert totals["gpu_s"] == pytest.approx(gpu_s, abs=1e-6)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "an attempt key ran twice"
    return state


def test_a_digits_matrix_runs_on_both_nodes_with_the_results_of_a_local_run(
    cluster: NetnsCluster, tmp_path: Path, docker_client: Any
) -> None:
    ray_run = subprocess.run(_start(cluster, tmp_path, "onray"), capture_output=True, text=True, timeout=400, check=False)
    assert ray_run.returncode == 0, (ray_run.stdout[-2000:], ray_run.stderr[-3000:])
    local_run = subprocess.run(
        [*CONTROLLER, "start", *RUN_ARGS, "--runs-dir", str(tmp_path), "--run-id", "here"],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert local_run.returncode == 0, local_run.stderr[-3000:]
    on_ray, here = _records(tmp_path / "onray"), _records(tmp_path / "here")
    # attempts ran on both nodes, and each names it; a local attempt names none
    nodes = {r["result"]["node"] for r in on_ray}
    assert nodes == {n.address for n in cluster.nodes}, nodes
    assert all(r["result"]["node"] is None for r in here)
    # the same records, field for field, and the same jobs for the same plan
    assert {_shape(r) for r in on_ray} == {_shape(r) for r in here}
    # the same data and modules, then the same training jobs as far as both got (a 2-minute budget
    # ends each run wherever its speed left it)
    def keys(records: list[dict[str, Any]], kinds: set[str]) -> set[str]:
        return {r["key"] for r in records if r["kind"] in kinds and r["iteration"] <= 1}

    assert keys(on_ray, {"prepare", "guard"}) == keys(here, {"prepare", "guard"})
    ray_trained, here_trained = keys(on_ray, {"train"}), keys(here, {"train"})
    assert len(ray_trained) >= 4 and (ray_trained <= here_trained or here_trained <= ray_trained)
    # nothing failed on the cluster; only the budget may cut the last jobs short
    assert all(r["status"] in {"ok", "timeout", "killed"} for r in on_ray), [(r["number"], r["reason"]) for r in on_ray]
    first_look = [r for r in on_ray if r["kind"] == "train" and r["iteration"] <= 1 and r["seed"] in (0, 1)]
    assert len(first_look) >= 4 and all(r["status"] == "ok" for r in first_look), first_look
    state = _check_totals(tmp_path / "onray", on_ray)
    assert state["status"] == "finished" and state["config"]["executor"] == "ray"
    assert json.loads((tmp_path / "onray" / "best.json").read_text())["value"] > 0.8
    # the public data was shipped once and materialised on every node that trained; labels never left
    trained_on = {r["result"]["node"] for r in on_ray if r["kind"] == "train"}
    for node in cluster.nodes:
        cached = [p for p in cluster.cache_dir(node).glob("*") if not p.name.startswith(".")]
        if node.address in trained_on:
            assert len(cached) == 1 and any(cached[0].iterdir()), cached
        assert not any(p.name == "private" or "labels" in p.name for p in cluster.cache_dir(node).rglob("*"))
    # `controller status` counts jobs per node
    status = subprocess.run(
        [*CONTROLLER, "status", "onray", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    for node in cluster.nodes:
        assert node.address in status.stdout, status.stdout
    assert _run_containers(docker_client, "onray") == []
    assert _orphans(docker_client) == []


GPU_JOB = (
    "import os, time\n"
    "start = time.time()\n"
    "time.sleep(2.0)\n"
    "print(os.environ.get('CUDA_VISIBLE_DEVICES', ''), start, time.time())\n"
)


def test_gpu_ids_are_rays_assignment_and_never_shared_by_concurrent_jobs(cluster: NetnsCluster) -> None:
    code = f"""
import json, concurrent.futures as cf
from sandbox.backends import LocalBackendConfig
from sandbox.base import Job
from sandbox.cluster import RaySandbox
from sandbox.policy import load_policy

sandbox = RaySandbox(LocalBackendConfig(allow_weaker=True), address={cluster.address!r})
policy = load_policy("default").with_overrides(gpus=1, cpus=0.5, read_only_rootfs=False)
def one(i):
    result = sandbox.run(Job(command=["python3", "-c", {GPU_JOB!r}], run_id="gpus", attempt=str(i)), policy)
    return {{"status": str(result.status), "reason": result.reason, "node": result.node,
             "granted": result.limits.gpus, "stdout": result.stdout.strip()}}
with cf.ThreadPoolExecutor(4) as pool:
    print(json.dumps(list(pool.map(one, range(4)))))
"""
    jobs = json.loads(cluster.driver_run(code, timeout_s=180).strip().splitlines()[-1])
    assert all(j["status"] == "ok" for j in jobs), jobs
    spans = []
    for job in jobs:
        visible, start, end = job["stdout"].split()
        # the job saw exactly the ids Ray assigned, made explicit in its policy
        assert isinstance(job["granted"], list) and len(job["granted"]) == 1, job
        assert visible == ",".join(str(i) for i in job["granted"]), job
        spans.append((job["node"], job["granted"][0], float(start), float(end)))
    overlapping = 0
    for i, (node, gpu, start, end) in enumerate(spans):
        for other_node, other_gpu, other_start, other_end in spans[i + 1 :]:
            if node == other_node and start < other_end and other_start < end:
                overlapping += 1
                assert gpu != other_gpu, spans
    assert overlapping >= 1, f"no two jobs ran at once on one node, so nothing was tested: {spans}"


TINY_IMAGE = "sandlab-cluster-test:tiny"


def _tiny_image(client: Any, inputs_hash: str) -> None:
    """An image of one file, labelled like the runner, built without a registry or base."""
    import io
    import tarfile

    from sandbox.backends.docker.images import HASH_LABEL

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM scratch\nLABEL {HASH_LABEL}={inputs_hash}\nCOPY f /f\n"), ("f", "x")):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=TINY_IMAGE, rm=True)


def test_doctor_reap_and_image_shipping_reach_every_node(
    cluster: NetnsCluster, tmp_path: Path, docker_client: Any
) -> None:
    # an orphan: a labelled container whose owner process is long gone
    dead = subprocess.Popen(["true"])
    dead.wait()
    import socket

    from sandbox.backends import RUNNER_IMAGE

    orphan = docker_client.containers.run(
        RUNNER_IMAGE, ["sleep", "300"], detach=True, network_mode="none",
        labels={labels.RUN: "orphaned", labels.ATTEMPT: "0001", labels.OWNER_PID: str(dead.pid),
                labels.OWNER_HOST: socket.gethostname(), labels.OWNER_START: "1"},
    )  # fmt: skip
    try:
        reaped = subprocess.run(
            cluster.driver_argv([*CONTROLLER, "reap", "--executor", "ray", "--ray-address", cluster.address]),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert reaped.returncode == 0, reaped.stderr[-2000:]
        for node in cluster.nodes:
            assert f"node {node.address}:" in reaped.stdout, reaped.stdout
        assert "removed 1 orphaned" in reaped.stdout, reaped.stdout
        assert _run_containers(docker_client, "orphaned") == []
    finally:
        with contextlib.suppress(Exception):
            orphan.remove(force=True)
    doctor = subprocess.run(
        cluster.driver_argv([*CONTROLLER, "doctor", "--executor", "ray", "--ray-address", cluster.address]),
        capture_output=True, text=True, timeout=180, check=False, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert "ray cluster" in doctor.stdout, doctor.stdout + doctor.stderr
    for node in cluster.nodes:
        assert f"node {node.address}" in doctor.stdout and "1 CPU" in doctor.stdout, doctor.stdout
    # `images build --executor ray`: the runner is current here and on every node (they share this engine)
    built = subprocess.run(
        cluster.driver_argv([*CONTROLLER, "images", "build", "--runner-only", "--executor", "ray",
                             "--ray-address", cluster.address]),
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    for node in cluster.nodes:
        assert f"on node {node.address}: current" in built.stdout, built.stdout
    # the image: saved here, through the object store, loaded there and checked by its inputs hash
    _tiny_image(docker_client, "feedface")
    code = f"""
import json
from sandbox.backends.docker import connect
from sandbox.cluster import connect as join
from sandbox.cluster.admin import _each_node, check_nodes, node_load, save_chunks

ray, client = join({cluster.address!r}), connect()
missing = check_nodes(ray, "sandlab-nowhere:none", "x")
chunks = save_chunks(ray, client, {TINY_IMAGE!r})
client.images.remove({TINY_IMAGE!r}, force=True)
loads = [answer for _node, answer in _each_node(ray, node_load, {TINY_IMAGE!r}, "feedface", chunks, timeout_s=120)]
stale = check_nodes(ray, {TINY_IMAGE!r}, "0ther")
print(json.dumps({{"missing": [[c.ok, c.detail, c.fix] for c in missing], "loads": loads,
                  "stale": [[c.ok, c.detail] for c in stale]}}))
"""
    try:
        found = json.loads(cluster.driver_run(code, timeout_s=180).strip().splitlines()[-1])
        assert found["missing"] and all(not ok and "missing" in detail and "images build --executor ray" in fix
                                        for ok, detail, fix in found["missing"]), found["missing"]  # fmt: skip
        loads = found["loads"]
        assert all(load["current"] for load in loads), loads
        assert sum(load["loaded"] for load in loads) >= 1, loads  # the first node loaded it; the rest found it there
        assert all(not ok and "stale" in detail for ok, detail in found["stale"]), found["stale"]
    finally:
        with contextlib.suppress(Exception):
            docker_client.images.remove(TINY_IMAGE, force=True)


def test_a_task_cancelled_at_the_deadline_is_killed_and_its_container_removed(
    cluster: NetnsCluster, docker_client: Any
) -> None:
    code = f"""
import json, threading, time
from sandbox.backends import DockerBackendConfig
from sandbox.backends.docker import connect
from sandbox.base import Job
from sandbox.cluster import RaySandbox
from sandbox.policy import load_policy

sandbox, client = RaySandbox(DockerBackendConfig(), address={cluster.address!r}), connect()
found = {{}}
job = Job(command=["python3", "-c", "import time; time.sleep(120)"], run_id="cancelled", attempt="0001")
worker = threading.Thread(target=lambda: found.update(result=sandbox.run(job, load_policy("default"))))
worker.start()
deadline = time.monotonic() + 90
while not client.containers.list(filters={{"label": "sandlab.run=cancelled"}}, ignore_removed=True) and time.monotonic() < deadline:
    time.sleep(0.2)
started = time.monotonic()
killed = sandbox.kill_all()
worker.join(60)
result = found["result"]
print(json.dumps({{"killed": killed, "status": str(result.status), "reason": result.reason,
                  "returned_s": time.monotonic() - started}}))
"""
    answer = json.loads(cluster.driver_run(code, timeout_s=180).strip().splitlines()[-1])
    assert answer["killed"] == 1 and answer["status"] == "killed", answer
    assert answer["returned_s"] < 30, answer
    _wait_until(lambda: _run_containers(docker_client, "cancelled") == [], 30, "the cancelled job's container to go")


def _container_node(cluster: NetnsCluster, container: Any) -> Any:
    """The node whose Ray worker owns this container (by the owner pid's namespace)."""
    owner = int(container.labels[labels.OWNER_PID])
    for node in cluster.nodes:
        if owner in node.pids():
            return node
    return None


def _running_train(client: Any, cluster: NetnsCluster, run_id: str, progress: str) -> tuple[Any, str] | None:
    """(node, attempt) of a training job whose container runs now, from the controller's progress lines."""
    for container in client.containers.list(filters={"label": f"{labels.RUN}={run_id}"}, ignore_removed=True):
        attempt = container.labels.get(labels.ATTEMPT, "")
        node = _container_node(cluster, container)
        if node is not None and attempt.isdigit() and f"[{int(attempt):04d}] train" in progress:
            return node, attempt
    return None


def test_a_node_killed_mid_job_is_an_infra_error_retried_on_the_other_node(
    cluster: NetnsCluster, tmp_path: Path, docker_client: Any
) -> None:
    root = tmp_path / "nodekill"
    log = (tmp_path / "nodekill.log").open("w")
    proc = subprocess.Popen(_start(cluster, tmp_path, "nodekill"), stdout=log, stderr=subprocess.STDOUT)
    try:
        found: list[tuple[Any, str]] = []

        def training() -> bool:
            hit = _running_train(docker_client, cluster, "nodekill", (tmp_path / "nodekill.log").read_text())
            found.extend([hit] if hit else [])
            return hit is not None

        _wait_until(training, 240, "a training container")
        node, attempt = found[-1]
        finished = {p.parent.name: p.read_bytes() for p in (root / "attempts").glob("[0-9]*/attempt.json")}
        # The node dies: Ray's processes there, by PID (its raylet and workers). The watchdog stays, as
        # the containers do: on a real host both would die with the machine; here they share one engine.
        killed = [pid for pid in node.pids() if WATCHDOG not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, (tmp_path / "nodekill.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    other = next(n for n in cluster.nodes if n is not node)
    records = {f"{r['number']:04d}": r for r in _records(root)}
    retried = records[attempt]
    assert retried["status"] == "ok" and retried["result"]["node"] == other.address, retried["reason"]
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    retries = [e for e in events if e.get("event") == "attempt.infra_retry" and e.get("attempt") == int(attempt)]
    assert retries and "ray" in retries[0]["reason"].lower(), retries
    for name, data in finished.items():  # nothing that had finished is lost or redone
        assert (root / "attempts" / name / "attempt.json").read_bytes() == data
    _check_totals(root, list(records.values()))
    _wait_until(lambda: _run_containers(docker_client, "nodekill") == [], 30, "the dead node's container to go")
    assert _orphans(docker_client) == []
    cluster.restart(node)


def test_a_controller_killed_mid_run_leaves_no_container_and_resumes(
    cluster: NetnsCluster, tmp_path: Path, docker_client: Any
) -> None:
    root = tmp_path / "ctlkill"
    proc = subprocess.Popen(_start(cluster, tmp_path, "ctlkill"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_until(
        lambda: len(list((root / "attempts").glob("[0-9]*/attempt.json"))) >= 4
        and bool(_run_containers(docker_client, "ctlkill")),
        240,
        "four attempts and one running",
    )
    # `ip netns exec` execs the controller, so this pid is the controller itself
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.parent.name: p.read_bytes() for p in (root / "attempts").glob("[0-9]*/attempt.json")}
    _wait_until(lambda: _run_containers(docker_client, "ctlkill") == [], 60, "the dead controller's containers to go")
    resumed = subprocess.run(
        cluster.driver_argv([*CONTROLLER, "resume", "ctlkill", "--runs-dir", str(tmp_path)]),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name, data in before.items():
        assert (root / "attempts" / name / "attempt.json").read_bytes() == data
    state = _check_totals(root, _records(root))
    assert state["status"] == "finished" and state["resumes"] == 1
    assert _run_containers(docker_client, "ctlkill") == []
    assert _orphans(docker_client) == []
