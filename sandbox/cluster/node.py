"""What runs on a cluster node, inside a Ray worker: one attempt through the node's own backend.

The controller sends a NodeAttempt (the job with its files as bytes, the policy, the backend's
config, and the data its mounts need, by hash); the worker runs it exactly as the controller
would run it locally, through the node's Docker engine (or the local backend where the user
allowed weaker isolation), and sends back the AttemptResult, the outputs as a tar, and the
node it ran on. GPU ids are Ray's assignment (`ray.get_gpu_ids()`), made explicit in the
policy so the container's device request names exactly them: there is no second scheme.

Each worker process builds its backend once and starts one watchdog (sandbox.cluster.watchdog)
that removes the worker's containers if the worker dies without cleaning up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sandbox.backends import BackendConfig, build_sandbox
from sandbox.base import Job, Sandbox
from sandbox.cluster.shipping import cached_path, materialise
from sandbox.policy import Policy
from sandbox.results import AttemptResult
from sandbox.staging import tar_folder


class ShippedMount(BaseModel):
    """A data mount whose source travels through the object store."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    target: str
    digest: str
    ref: Any = None
    """The ObjectRef of the packed folder's bytes (resolved on the node only when not cached)."""


class NodeAttempt(BaseModel):
    """Everything a node needs to run one attempt."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    job: Job
    policy: Policy
    backend: dict[str, Any]
    """The node's backend config (a BackendConfig as a dict)."""
    mounts: list[ShippedMount] = Field(default_factory=list)


class NodeReturn(BaseModel):
    """What comes back: the result as the node saw it, the outputs tar and where it ran."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result: str
    """AttemptResult as JSON (its outputs_dir is the node's, and is rewritten by the controller)."""
    outputs: bytes | None = None
    node: str


_BACKEND_ADAPTER: TypeAdapter[BackendConfig] = TypeAdapter(BackendConfig)
_sandboxes: dict[str, Sandbox] = {}
_lock = threading.Lock()
_watch_fd: int | None = None


def node_name() -> str:
    """How results name this node: its address, as Ray knows it."""
    try:
        import ray

        return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    except Exception:
        return socket.gethostname()


def ensure_watchdog() -> None:
    """Start this worker's watchdog once; it detaches, and outlives the worker by design."""
    global _watch_fd  # noqa: PLW0603 - one per worker process
    if _watch_fd is not None:
        return
    read_fd, write_fd = os.pipe()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cluster.watchdog", "--owner", str(os.getpid())],
        stdin=read_fd,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(read_fd)
    launcher.wait()  # it forks the watchdog off and exits at once
    _watch_fd = write_fd  # held, never written: closing it (by dying) wakes the watchdog


def sandbox_for(backend: dict[str, Any]) -> Sandbox:
    """This worker's backend for that config, built once."""
    config = _BACKEND_ADAPTER.validate_python(backend)
    key = config.model_dump_json()
    with _lock:
        if key not in _sandboxes:
            ensure_watchdog()
            _sandboxes[key] = build_sandbox(config)
        return _sandboxes[key]


def policy_on_node(policy: Policy, mounts: list[ShippedMount]) -> Policy:
    """The policy with this node's data folders and Ray's GPU ids."""
    changes: dict[str, Any] = {}
    if mounts:
        shipped = {m.target for m in mounts}
        kept = [m.model_dump() for m in policy.data_mounts if m.target not in shipped]
        for mount in mounts:
            path = cached_path(mount.digest)
            if path is None:
                import ray

                path = materialise(mount.digest, ray.get(mount.ref))
            kept.append({"source": str(path), "target": mount.target})
        changes["data_mounts"] = kept
    if policy.gpu_count:
        import ray

        changes["gpus"] = [int(i) for i in ray.get_gpu_ids()]
    return policy.with_overrides(**changes) if changes else policy


def run_attempt(attempt: NodeAttempt) -> NodeReturn:
    """Run one attempt on this node (the body of the Ray task)."""
    sandbox = sandbox_for(attempt.backend)
    policy = policy_on_node(attempt.policy, attempt.mounts)
    with tempfile.TemporaryDirectory(prefix="sandlab-node-") as scratch:
        outputs = Path(scratch) / "outputs" if attempt.job.outputs_dir is not None else None
        job = attempt.job.model_copy(update={"outputs_dir": outputs})
        result = sandbox.run(job, policy)
        packed = tar_folder(outputs) if outputs is not None and outputs.is_dir() else None
    return NodeReturn(result=result.model_dump_json(), outputs=packed, node=node_name())


def decode(returned: NodeReturn) -> AttemptResult:
    """The node's AttemptResult, named by its node."""
    result = AttemptResult.model_validate_json(returned.result)
    return result.model_copy(update={"node": returned.node})
