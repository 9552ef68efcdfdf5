"""RaySandbox: the Sandbox seam, with each attempt a Ray task on some node of a cluster.

The controller stays where it is; only train and eval (and guard) attempts travel. Each
becomes one Ray task that asks for its policy's CPUs, memory and GPUs, so Ray places it,
and runs it on its node through that node's own backend (sandbox.cluster.node). Ray does
what Ray is for: placement, the object store, failure detection. sandlab keeps what is its
own: the policy, the result, the classification.

    workspace files   travel in the task's argument (bytes, through the object store)
    data mounts       packed once per run, put once, materialised per node by hash
    outputs           come back as a tar and are unpacked where the job asked
    GPUs              Ray assigns them; the node makes the ids explicit in the policy

Failures are Ray's to detect and sandlab's to classify: a node or worker that dies, an
object that is lost, the node-side runner crashing are `infra_error` (never the code's
fault, so the attempt runner retries them, on whichever node Ray picks); Ray itself never
retries (max_retries=0: there is one retry rule, the attempt runner's). A task cancelled at
the deadline is `killed`; the forced cancel kills its worker, and the worker's watchdog
removes its container.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from typing_extensions import override

from sandbox.backends import BackendConfig
from sandbox.backends.capture import Capture
from sandbox.base import Job, Sandbox
from sandbox.cluster.node import NodeAttempt, NodeReturn, ShippedMount, decode, run_attempt
from sandbox.cluster.shipping import pack_dir
from sandbox.errors import SandboxUnavailableError
from sandbox.limits import max_reason_chars
from sandbox.policy import Policy
from sandbox.results import AttemptResult, Status
from sandbox.staging import RESERVED_DIR, extract_outputs

log = structlog.get_logger("sandlab.cluster")

PROBE_TIMEOUT_S = 5.0
WAIT_POLL_S = 1.0
CANCEL_RETRY_S = 5.0
CANCEL_GIVE_UP_S = 30.0
INSTALL_HINT = "install the Ray extra: pip install 'sandlab[ray]'"


@dataclass(frozen=True)
class NodeResources:
    """One live node as Ray reports it."""

    node_id: str
    address: str
    cpus: float
    memory: int
    gpus: float
    custom: dict[str, float]


@dataclass(frozen=True)
class Capacity:
    """What a cluster offers jobs: totals for admission, the largest node for what can fit."""

    cpus: float
    memory: int
    gpus: int
    nodes: tuple[NodeResources, ...]

    def why_not(self, policy: Policy) -> str | None:
        """Why no single node could ever run a job of this policy, or None when one can."""
        for node in self.nodes:
            if policy.cpus <= node.cpus and int(policy.memory) <= node.memory and policy.gpu_count <= node.gpus:
                return None
        return (
            f"no node of the cluster has {policy.cpus:g} CPU(s), {policy.memory.human_readable()} and "
            f"{policy.gpu_count} GPU(s) for policy {policy.name!r}; "
            "lower the policy's limits or add a larger node"
        )


def import_ray() -> Any:
    """The ray module, or a one-line error naming the fix."""
    try:
        import ray
    except ImportError as exc:
        msg = f"--executor ray needs Ray ({exc}); {INSTALL_HINT}"
        raise SandboxUnavailableError(msg) from exc
    return ray


def connect(address: str | None) -> Any:
    """Join the cluster (`auto`, an address, RAY_ADDRESS, or a fresh local one when none is given)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    target = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {"namespace": "sandlab", "logging_level": logging.WARNING, "log_to_driver": False}
    if target is None:
        options["include_dashboard"] = False
    else:
        _probe(target)
    try:
        ray.init(address=target, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        msg = (
            f"cannot join the Ray cluster at {target or 'a new local instance'}: {exc}; start one with "
            "`ray start --head` or pass the head's address with --ray-address"
        )
        raise SandboxUnavailableError(msg) from exc
    return ray


def _probe(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at host:port (Ray itself retries long)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # `auto`, ray://…: Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        msg = (
            f"cannot join the Ray cluster at {address}: nothing answers there ({exc}); start one with "
            "`ray start --head` or pass the head's address with --ray-address"
        )
        raise SandboxUnavailableError(msg) from exc


def live_nodes(ray: Any) -> list[NodeResources]:
    """The cluster's live nodes with their resources."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = dict(node.get("Resources") or {})
        custom = {
            k: v for k, v in resources.items() if k not in {"CPU", "GPU", "memory", "object_store_memory"}
            and not k.startswith(("node:", "accelerator_type:"))
        }  # fmt: skip
        nodes.append(
            NodeResources(
                node_id=str(node.get("NodeID", "")),
                address=str(node.get("NodeManagerAddress", "")),
                cpus=float(resources.get("CPU", 0.0)),
                memory=int(resources.get("memory", 0)),
                gpus=float(resources.get("GPU", 0.0)),
                custom=custom,
            )
        )
    return nodes


class RaySandbox(Sandbox):
    """Runs each job as a Ray task on a node of the cluster, through that node's backend."""

    name = "ray"

    def __init__(self, backend: BackendConfig, *, address: str | None = None) -> None:
        # No warm pool on the nodes: each Ray worker would keep its own pool of idle containers
        # per shape, and a node runs many workers. Attempts start cold there (a container each).
        self.backend = backend.model_copy(update={"pool_size": 0}) if backend.type == "docker" else backend
        self.ray = connect(address)
        self._task = self.ray.remote(max_retries=0, retry_exceptions=False)(run_attempt)
        self._lock = threading.Lock()
        self._inflight: set[Any] = set()
        self._cancelled_at: dict[Any, float] = {}
        self._shipped: dict[str, ShippedMount] = {}
        self._ship_lock = threading.Lock()

    @property
    @override
    def seals_host_files(self) -> bool:
        """Jobs run on the nodes' engines, and owner-only files never leave this host (shipping refuses
        them); a node's Docker seals its own host. The local backend on a node promises nothing here."""
        return self.backend.type == "docker"

    @property
    @override
    def why_not_sealed(self) -> str:
        return "its nodes run jobs on the local backend, which this host cannot vouch for; use --backend docker"

    @property
    @override
    def isolates_concurrent_jobs(self) -> bool:
        """As the nodes' backend: Docker isolates concurrent jobs, the local backend does not."""
        return self.backend.type == "docker"

    def capacity(self) -> Capacity:
        """What the cluster has free now, for admission (CPUs and memory less what other Ray users
        hold at the start), and each node's size, for what can fit at all."""
        nodes = [n for n in live_nodes(self.ray) if n.cpus > 0]  # a head kept free of jobs offers none
        free = self.ray.available_resources()
        return Capacity(
            cpus=min(sum(n.cpus for n in nodes), float(free.get("CPU", 0.0))),
            memory=min(sum(n.memory for n in nodes), int(free.get("memory", 0))),
            # GPUs are counted whole: a count of free ones below a job's need would hold it forever.
            gpus=int(sum(n.gpus for n in nodes)),
            nodes=tuple(nodes),
        )

    def _ship(self, source: Path, target: str) -> ShippedMount:
        """The folder's bytes in the object store, once per run (per folder)."""
        key = str(source.resolve())
        with self._ship_lock:
            if key not in self._shipped:
                packed = pack_dir(source)
                ref = self.ray.put(packed.data)
                self._shipped[key] = ShippedMount(target=target, digest=packed.digest, ref=ref)
                log.info("cluster.data_shipped", source=key, digest=packed.digest[:12], bytes=len(packed.data))
            shipped = self._shipped[key]
        return shipped.model_copy(update={"target": target})

    def _attempt(self, job: Job, policy: Policy) -> NodeAttempt:
        files = dict(job.files)
        if job.workspace is not None:
            for path in sorted(job.workspace.rglob("*")):
                rel = path.relative_to(job.workspace)
                if path.is_file() and not path.is_symlink() and rel.parts[0] != RESERVED_DIR:  # as pack_workspace
                    files.setdefault(rel.as_posix(), path.read_bytes())
        mounts = [self._ship(Path(m.source), m.target) for m in policy.data_mounts if m.type == "bind"]
        return NodeAttempt(
            job=job.model_copy(update={"workspace": None, "files": files}),
            policy=policy,
            backend=self.backend.model_dump(),
            mounts=mounts,
        )

    @override
    def run(self, job: Job, policy: Policy) -> AttemptResult:
        capture = Capture(policy, backend=self.name)
        try:
            attempt = self._attempt(job, policy)
        except (OSError, ValueError) as exc:
            return capture.infra_error(f"cannot ship the job's data to the cluster: {exc}")
        ref = self._task.options(
            num_cpus=policy.cpus,
            memory=int(policy.memory),
            num_gpus=policy.gpu_count,
            scheduling_strategy="SPREAD",
        ).remote(attempt)
        with self._lock:
            self._inflight.add(ref)
        try:
            returned: NodeReturn | None = self._wait(ref)
        except self.ray.exceptions.TaskCancelledError:
            returned = None
        except self.ray.exceptions.RayTaskError as exc:
            return capture.infra_error(f"the node-side runner failed: {_first_line(exc)}")
        except self.ray.exceptions.RayError as exc:
            return capture.infra_error(f"ray: {type(exc).__name__}: {_first_line(exc)}")
        finally:
            with self._lock:
                self._inflight.discard(ref)
                self._cancelled_at.pop(ref, None)
        if returned is None:
            return capture.result(
                status=Status.killed,
                reason="cancelled by the controller (deadline or interrupt); its container was removed on the node",
                exit_code=None,
            )
        result = decode(returned)
        if job.outputs_dir is None:
            return result.model_copy(update={"outputs_dir": None})
        skipped = extract_outputs(io.BytesIO(returned.outputs), job.outputs_dir) if returned.outputs else []
        return result.model_copy(
            update={"outputs_dir": job.outputs_dir, "outputs_skipped": [*result.outputs_skipped, *skipped]}
        )

    def _wait(self, ref: Any) -> NodeReturn | None:
        """The task's return; None when it was cancelled and Ray never confirmed it.

        A cancel that races the task's start can be lost, so a cancelled task that still has
        not ended is cancelled again every CANCEL_RETRY_S, and given up on after CANCEL_GIVE_UP_S.
        """
        while True:
            done, _ = self.ray.wait([ref], timeout=WAIT_POLL_S)
            if done:
                return self.ray.get(ref)  # type: ignore[no-any-return]
            with self._lock:
                since = self._cancelled_at.get(ref)
            if since is None:
                continue
            waited = time.monotonic() - since
            if waited > CANCEL_GIVE_UP_S:
                log.warning("cluster.cancel_unconfirmed", waited_s=round(waited, 1))
                return None
            if waited > CANCEL_RETRY_S:
                self._cancel(ref)

    def _cancel(self, ref: Any) -> None:
        try:
            self.ray.cancel(ref, force=True)
        except Exception as exc:
            log.debug("cluster.cancel_failed", reason=str(exc))

    @override
    def kill_all(self) -> int:
        """Cancel every task in flight; a forced cancel kills the worker, whose watchdog removes its container."""
        now = time.monotonic()
        with self._lock:
            refs = list(self._inflight)
            for ref in refs:
                self._cancelled_at.setdefault(ref, now)
        for ref in refs:
            self._cancel(ref)
        return len(refs)

    @override
    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:max_reason_chars] if text else type(exc).__name__
