"""A real multi-node Ray cluster on one machine: every node in a network namespace of its own.

The controller's namespace holds the head, with no CPUs or GPUs for jobs: the controller's
host is a member of the cluster (its driver needs a local object store to receive results),
and jobs go to the worker nodes, each with its own resources and a custom resource naming it.

Ray binds to a machine's primary address even when told 127.0.0.1, and tests here may talk
only to loopback or to hosts they made themselves. So each node (and the controller) gets
a network namespace that this module creates, joined to the others by veth pairs on a
bridge that lives in yet another namespace of ours. Nothing touches the host's own network.

Every process a node runs lives in its namespace, so a node is stopped by the PIDs that
`ip netns pids` lists for it, never by name: `ray stop` or pkill would act machine-wide.
The Docker socket is a unix socket, so every node reaches the one engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.cluster.shipping import CACHE_ENV

SUBNET = "10.213"
HEAD_PORT = 6380
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # A private cluster in the test's own namespaces: no token. Without this, a token left in
    # ~/.ray/auth_token (by `ray get-auth-token --generate`, or an earlier local Ray) turns the
    # head's token authentication on, and every driver here is refused.
    "RAY_AUTH_MODE": "disabled",
    # Notice a dead node in about two seconds rather than thirty.
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def netns_supported() -> str | None:
    """Why a namespaced cluster cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is missing"
    probe = f"slprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{' '.join(argv)}: {done.stderr.strip()}"
        raise RuntimeError(msg)


@dataclass
class Node:
    """One Ray node: its namespace, address, resources and the `ray start --block` process."""

    name: str
    netns: str
    address: str
    resources: dict[str, float]
    num_cpus: int
    num_gpus: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        """Every process in this node's namespace (Ray's, its workers', and theirs)."""
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split() if p.isdigit()]

    def pids_named(self, needle: str) -> list[int]:
        found = []
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(pid)
        return found

    def kill(self, *, only: str | None = None) -> list[int]:
        """SIGKILL this node's processes (or those whose command line holds `only`)."""
        pids = self.pids_named(only) if only else self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids


@dataclass
class NetnsCluster:
    """A head node plus workers, and a namespace for the driver (the controller)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    python: str = sys.executable
    temp_root: Path = field(default_factory=lambda: Path("/tmp"))
    nodes: list[Node] = field(default_factory=list)
    driver_netns: str = ""
    driver_address: str = ""
    _bridge_ns: str = ""
    _namespaces: list[str] = field(default_factory=list)

    head: Node | None = None

    @property
    def address(self) -> str:
        """The GCS address a driver passes to ray.init / --ray-address."""
        assert self.head is not None
        return f"{self.head.address}:{HEAD_PORT}"

    def _namespace(self, role: str, index: int) -> tuple[str, str]:
        """A namespace with lo up, joined to the bridge; returns (name, address)."""
        name = f"sl{self.tag}{role}"
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)
        inner, outer = f"v{self.tag}{index}", f"b{self.tag}{index}"
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", name)
        _ip("link", "set", outer, "netns", self._bridge_ns)
        address = f"{SUBNET}.0.{10 + index}"
        _ip("addr", "add", f"{address}/24", "dev", inner, netns=name)
        _ip("link", "set", inner, "up", netns=name)
        _ip("link", "set", outer, "master", "br0", netns=self._bridge_ns)
        _ip("link", "set", outer, "up", netns=self._bridge_ns)
        return name, address

    def create_network(self, node_specs: Sequence[tuple[str, dict[str, float], int, int]]) -> None:
        """The bridge, the driver's namespace and one namespace per (name, resources, cpus, gpus)."""
        self._bridge_ns = f"sl{self.tag}br"
        _ip("netns", "add", self._bridge_ns)
        self._namespaces.append(self._bridge_ns)
        _ip("link", "add", "br0", "type", "bridge", netns=self._bridge_ns)
        _ip("link", "set", "br0", "up", netns=self._bridge_ns)
        self.driver_netns, self.driver_address = self._namespace("ctl", 0)
        self.head = Node("head", self.driver_netns, self.driver_address, {}, 0, 0)
        for index, (name, resources, cpus, gpus) in enumerate(node_specs, start=1):
            netns, address = self._namespace(f"n{index}", index)
            self.nodes.append(Node(name, netns, address, resources, cpus, gpus))

    def _ray_start(self, node: Node, *, head: bool) -> None:
        temp = self.temp_root / f"ray-{self.tag}-{node.name}"
        argv = [
            "ip", "netns", "exec", node.netns,
            str(Path(self.python).with_name("ray")), "start", "--block", "--disable-usage-stats",
            f"--node-ip-address={node.address}", f"--num-cpus={node.num_cpus}", f"--num-gpus={node.num_gpus}",
            f"--resources={json.dumps(node.resources)}", f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--temp-dir={temp}",
        ]  # fmt: skip
        if head:
            argv += ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}"]
        env = {
            **os.environ,
            **RAY_ENV,
            "PATH": f"{Path(self.python).parent}:{os.environ.get('PATH', '')}",
            CACHE_ENV: str(self.cache_dir(node)),  # each node its own data cache, as on separate hosts
        }
        log = (self.temp_root / f"ray-{self.tag}-{node.name}.log").open("wb")
        node.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def cache_dir(self, node: Node) -> Path:
        """Where this node materialises shipped data."""
        return self.temp_root / f"ray-{self.tag}-{node.name}-cache"

    def start(self, *, timeout_s: float = 120.0) -> None:
        """Start the head (in the controller's namespace), then the workers; wait until all are alive."""
        assert self.head is not None
        self._ray_start(self.head, head=True)
        self.wait_for_nodes(1, timeout_s=timeout_s)
        for node in self.nodes:
            self._ray_start(node, head=False)
        self.wait_for_nodes(1 + len(self.nodes), timeout_s=timeout_s)

    def restart(self, node: Node, *, timeout_s: float = 120.0) -> None:
        """Start a node again (after `kill`) and wait until the cluster has it back."""
        self._ray_start(node, head=False)
        self.wait_for_nodes(1 + len(self.nodes), timeout_s=timeout_s)

    def driver_run(self, code: str, *, timeout_s: float = 120.0) -> str:
        """Run python code in the driver's namespace; its stdout."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.driver_netns, self.python, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, **RAY_ENV},
        )
        if done.returncode != 0:
            msg = f"driver code failed ({done.returncode}): {done.stderr[-3000:]}"
            raise RuntimeError(msg)
        return done.stdout

    def alive_nodes(self) -> int:
        code = (
            "import ray, logging\n"
            f"ray.init(address={self.address!r}, logging_level=logging.ERROR, log_to_driver=False)\n"
            "print(sum(1 for n in ray.nodes() if n['Alive']))\n"
        )
        try:
            return int(self.driver_run(code, timeout_s=60).strip().splitlines()[-1])
        except (RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired):
            return 0

    def wait_for_nodes(self, count: int, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive_nodes() < count:
            if time.monotonic() > deadline:
                msg = f"the cluster did not reach {count} live node(s) in {timeout_s:g}s; see {self.temp_root}/ray-{self.tag}-*.log"
                raise RuntimeError(msg)
            time.sleep(1.0)

    def driver_argv(self, argv: Sequence[str]) -> list[str]:
        """argv run inside the driver's namespace."""
        return ["ip", "netns", "exec", self.driver_netns, *argv]

    def stop(self) -> None:
        """Kill every process in our namespaces by PID, then delete the namespaces."""
        for _ in range(3):
            pids = [pid for node in self.nodes for pid in node.pids()]
            pids += self._ns_pids(self.driver_netns) if self.driver_netns else []
            pids = [pid for pid in pids if pid != os.getpid()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        for node in [*self.nodes, *([self.head] if self.head else [])]:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=10)
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._namespaces.clear()
        for path in self.temp_root.glob(f"ray-{self.tag}-*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _ns_pids(netns: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split() if p.isdigit()]


@contextlib.contextmanager
def netns_cluster(node_specs: Sequence[tuple[str, dict[str, float], int, int]], **kwargs: object) -> Iterator[NetnsCluster]:
    """A started cluster, torn down (processes by PID, then namespaces) whatever happens."""
    cluster = NetnsCluster(**kwargs)  # type: ignore[arg-type]
    try:
        cluster.create_network(node_specs)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
